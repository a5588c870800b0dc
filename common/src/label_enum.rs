//! A fixed set of label values declared once: the enum, every value in order (`ALL`, for series
//! created at zero so that `rate()` works from the start), its label text and `Display`. A
//! closed set keeps a label's cardinality bounded whatever the outside world answers.

/// Declares `enum $name { $variant => "text", … }` with `ALL`, `as_str` and `Display`;
/// attributes (docs) on the enum and on each variant are kept.
#[macro_export]
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        $vis enum $name { $( $(#[$vmeta])* $variant, )* }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; [$($text),*].len()] = [$($name::$variant),*];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    label_enum! {
        /// A test set.
        enum Colour {
            /// The first.
            Red => "red",
            Green => "green",
        }
    }

    #[test]
    fn all_as_str_and_display_follow_the_declaration() {
        assert_eq!(Colour::ALL, [Colour::Red, Colour::Green]);
        assert_eq!(Colour::Green.as_str(), "green");
        assert_eq!(Colour::Red.to_string(), "red");
        assert!(Colour::Red < Colour::Green);
    }
}
