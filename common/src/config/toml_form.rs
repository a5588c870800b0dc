//! How key values are written in the file: durations as "2s" / "150ms" / "1m 30s" strings,
//! everything else as serde reads and writes it. Used through `#[serde(with = …)]`, so the raw
//! sections can be both read from the file and written back by the printer.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Weighting;

/// A value type a config key can hold.
pub(crate) trait TomlForm: Sized {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
    fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
}

macro_rules! as_serde_does {
    ($($ty:ty),*) => {$(
        impl TomlForm for $ty {
            fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                <$ty>::deserialize(d)
            }
            fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.serialize(s)
            }
        }
    )*};
}

as_serde_does!(u32, u64, f64, String, Weighting);

impl TomlForm for Duration {
    fn read<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        duration(d)
    }
    fn write<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*self).to_string())
    }
}

/// Parses a duration written as "2s", "150ms", "1m 30s".
///
/// The message never repeats the text: it may come from a `${VAR}` holding a secret.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|_| {
        serde::de::Error::custom(
            "invalid duration; write it like \"2s\", \"150ms\" or \"1m 30s\" (units: ms, s, m, h, d)",
        )
    })
}

/// `#[serde(with = …)]` for a key that always has a value in its raw section.
pub(crate) mod required {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>, T: TomlForm>(d: D) -> Result<T, D::Error> {
        T::read(d)
    }

    pub fn serialize<S: Serializer, T: TomlForm>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        value.write(s)
    }
}

/// `#[serde(with = …)]` for an optional key; pair it with `default` and
/// `skip_serializing_if = "Option::is_none"` (TOML has no null).
pub(crate) mod optional {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>, T: TomlForm>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        T::read(d).map(Some)
    }

    pub fn serialize<S: Serializer, T: TomlForm>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => value.write(s),
            None => s.serialize_none(),
        }
    }
}
