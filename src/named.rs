//! Enums spelled in the config by a fixed set of words (`algorithm`,
//! `allowlist`, `on_redis_error`): `named_enum!` writes their `FromStr` and
//! `Display` from one table, so the words are listed once. It lives below
//! `rule` and `limiter`, which both use it.

/// A word that names none of an enum's variants.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {got:?} (expected one of: {})", expected.join(", "))]
pub struct UnknownName {
    /// What the word was meant to name, e.g. "algorithm".
    pub what: &'static str,
    pub got: String,
    pub expected: &'static [&'static str],
}

macro_rules! named_enum {
    ($ty:ident, $what:literal, { $($text:literal => $variant:ident),+ $(,)? }) => {
        impl ::std::str::FromStr for $ty {
            type Err = $crate::named::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($ty::$variant),)+
                    other => Err($crate::named::UnknownName {
                        what: $what,
                        got: other.to_string(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(match self { $($ty::$variant => $text,)+ })
            }
        }
    };
}
pub(crate) use named_enum;
