//! Configuration spellings of the option enums (`"lower"`, `"strip"`, `"ms"`, …), so task files
//! and the coordinator parse them with the same words the reference uses (§4).

use std::str::FromStr;

use crate::ident::Capitalization;
use crate::mapping::{BitAs, DatetimePrecision, HierarchyidAs, RowversionAs, SpatialAs, XmlAs};
use crate::text::InvalidTextPolicy;

macro_rules! choices {
    ($($ty:ty { $($variant:ident = $word:literal $(| $alias:literal)*),+ $(,)? })+) => {$(
        impl $ty {
            /// Every accepted spelling, canonical ones first.
            pub const CHOICES: &'static [&'static str] = &[$($word),+];

            /// The canonical configuration word.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $word),+ }
            }
        }

        impl FromStr for $ty {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                match text.trim().to_ascii_lowercase().as_str() {
                    $($word $(| $alias)* => Ok(Self::$variant),)+
                    other => Err(format!("{other:?} is not one of: {}", Self::CHOICES.join(", "))),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}

choices! {
    Capitalization { Lower = "lower", Source = "source" | "preserve", Upper = "upper" }
    InvalidTextPolicy { Error = "error", Strip = "strip", Replace = "replace" }
    DatetimePrecision { Milliseconds = "ms" | "milliseconds", Exact = "exact" }
    BitAs { Boolean = "boolean" | "bool", Smallint = "smallint" }
    RowversionAs { Bytea = "bytea", Bigint = "bigint" }
    HierarchyidAs { Text = "text", Bytea = "bytea" }
    SpatialAs { ByteaWkb = "bytea_wkb" | "bytea", Postgis = "postgis" }
    XmlAs { Xml = "xml", Text = "text" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for word in Capitalization::CHOICES {
            assert_eq!(word.parse::<Capitalization>().unwrap().as_str(), *word);
        }
        assert_eq!(
            "Preserve".parse::<Capitalization>().unwrap(),
            Capitalization::Source
        );
        assert_eq!(
            "strip".parse::<InvalidTextPolicy>().unwrap(),
            InvalidTextPolicy::Strip
        );
        let err = "loud".parse::<InvalidTextPolicy>().unwrap_err();
        assert!(err.contains("error, strip, replace"), "{err}");
        assert_eq!(SpatialAs::Postgis.to_string(), "postgis");
    }
}
