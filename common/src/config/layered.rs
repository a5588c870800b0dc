//! A section whose keys can each be set at several levels (a chain's own key, then `[policy]`,
//! then the built-in default) is declared once, as a list of keys; this macro writes everything
//! else from that list, so a new key is one line plus its doc comment.

/// From `pub struct Name, raw RawName { /// doc  key: Type [= default], … }` this declares:
/// - `Name`, the validated section with every key set (and `Default` when every key has one);
/// - `RawName`, the same keys as the file writes them, each optional (durations as "2s");
/// - `RawName::KEYS`, the key names;
/// - `RawName::resolve`, each key from the first layer that sets it, else from a fallback;
/// - `From<&Name> for RawName`, every key set, for printing the section back as TOML.
macro_rules! layered_section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident, raw $raw:ident {
            $( $(#[$field_meta:meta])* $key:ident : $ty:ty = $default:expr, )*
        }
    ) => {
        layered_section! {
            @section $(#[$meta])* $name, $raw, $( $(#[$field_meta])* $key: $ty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $( $key: $default, )* }
            }
        }
    };
    (
        $(#[$meta:meta])*
        pub struct $name:ident, raw $raw:ident {
            $( $(#[$field_meta:meta])* $key:ident : $ty:ty, )*
        }
    ) => {
        layered_section! {
            @section $(#[$meta])* $name, $raw, $( $(#[$field_meta])* $key: $ty, )*
        }
    };
    (
        @section $(#[$meta:meta])* $name:ident, $raw:ident,
        $( $(#[$field_meta:meta])* $key:ident : $ty:ty, )*
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[$field_meta])* pub $key: $ty, )*
        }

        #[doc = concat!("The keys of [`", stringify!($name), "`] as written in the file, each optional.")]
        #[derive(Default, serde::Deserialize, serde::Serialize)]
        #[serde(deny_unknown_fields, default)]
        pub(super) struct $raw {
            $(
                #[serde(
                    with = "crate::config::toml_form::optional",
                    skip_serializing_if = "Option::is_none"
                )]
                pub(super) $key: Option<$ty>,
            )*
        }

        impl $raw {
            /// The key names, for moving keys between tables (unused by some sections).
            #[allow(dead_code)]
            pub(super) const KEYS: &'static [&'static str] = &[$(stringify!($key)),*];

            /// Each key from the first of `layers` that sets it, else from `fallback`.
            pub(super) fn resolve(layers: &[&Self], fallback: $name) -> $name {
                $name {
                    $(
                        $key: layers
                            .iter()
                            .find_map(|layer| layer.$key.clone())
                            .unwrap_or(fallback.$key),
                    )*
                }
            }
        }

        impl From<&$name> for $raw {
            fn from(section: &$name) -> Self {
                Self { $( $key: Some(section.$key.clone()), )* }
            }
        }
    };
}
