//! What a draw asks for, and the hard limits every request is checked
//! against before anything is written. The limits keep every draw record
//! (replicated to every voter and kept forever) under about 200 KiB, and keep
//! every value exactly representable in JSON clients that use doubles where
//! the value's range allows it.

use serde::{Deserialize, Serialize};

/// Most values one draw may return (integers `count`, selection `k`,
/// permutation `n`).
pub const MAX_VALUES: u32 = 10_000;
/// Most raw bytes one `bytes` draw may return.
pub const MAX_BYTES: u32 = 65_536;
/// Largest `n` of a selection: 2^53 - 1, the largest integer a JSON number
/// parsed as an IEEE double still holds exactly.
pub const MAX_SELECTION_N: u64 = (1 << 53) - 1;

/// The four kinds of draw. The JSON form carries `kind` as a tag:
/// `{"kind": "integers", "min": 1, "max": 6, "count": 2, "unique": false}`.
/// Its OpenAPI schema, with the limits, is written in [`crate::schema`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Spec {
    /// `count` values in `[min, max]`; distinct when `unique`.
    Integers {
        min: i64,
        max: i64,
        count: u32,
        #[serde(default)]
        unique: bool,
    },
    /// A uniformly random ordering of `1..=n`.
    Permutation { n: u32 },
    /// `k` distinct values of `1..=n`, in the order drawn.
    Selection { k: u32, n: u64 },
    /// `count` raw bytes.
    Bytes { count: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("`count` must be between 1 and {max}, got {got}")]
    CountOutOfRange { got: u32, max: u32 },
    #[error("`min` ({min}) must not be greater than `max` ({max})")]
    MinAboveMax { min: i64, max: i64 },
    #[error(
        "`unique` needs at least `count` ({count}) values in [min, max], which holds only {range}"
    )]
    RangeTooSmallForUnique { count: u32, range: u128 },
    #[error("`n` must be between 1 and {max}, got {got}")]
    NOutOfRange { got: u64, max: u64 },
    #[error("`k` must be between 1 and {max}, got {got}")]
    KOutOfRange { got: u32, max: u32 },
    #[error("`k` ({k}) must not be greater than `n` ({n})")]
    KAboveN { k: u32, n: u64 },
}

impl SpecError {
    /// The field the error is about, for machine-readable error bodies.
    pub fn field(&self) -> &'static str {
        match self {
            SpecError::CountOutOfRange { .. } | SpecError::RangeTooSmallForUnique { .. } => "count",
            SpecError::MinAboveMax { .. } => "min",
            SpecError::NOutOfRange { .. } => "n",
            SpecError::KOutOfRange { .. } | SpecError::KAboveN { .. } => "k",
        }
    }
}

impl Spec {
    /// Checks every hard limit. Total: never panics, whatever the values.
    pub fn validate(&self) -> Result<(), SpecError> {
        match *self {
            Spec::Integers {
                min,
                max,
                count,
                unique,
            } => {
                check_count(count, MAX_VALUES)?;
                if min > max {
                    return Err(SpecError::MinAboveMax { min, max });
                }
                let range = (max as i128 - min as i128 + 1) as u128;
                if unique && (count as u128) > range {
                    return Err(SpecError::RangeTooSmallForUnique { count, range });
                }
                Ok(())
            }
            Spec::Permutation { n } => {
                if n == 0 || n > MAX_VALUES {
                    return Err(SpecError::NOutOfRange {
                        got: n as u64,
                        max: MAX_VALUES as u64,
                    });
                }
                Ok(())
            }
            Spec::Selection { k, n } => {
                if n == 0 || n > MAX_SELECTION_N {
                    return Err(SpecError::NOutOfRange {
                        got: n,
                        max: MAX_SELECTION_N,
                    });
                }
                if k == 0 || k > MAX_VALUES {
                    return Err(SpecError::KOutOfRange {
                        got: k,
                        max: MAX_VALUES,
                    });
                }
                if k as u64 > n {
                    return Err(SpecError::KAboveN { k, n });
                }
                Ok(())
            }
            Spec::Bytes { count } => check_count(count, MAX_BYTES),
        }
    }

    /// The short name of the kind, as in the JSON tag and in metrics labels.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Spec::Integers { .. } => "integers",
            Spec::Permutation { .. } => "permutation",
            Spec::Selection { .. } => "selection",
            Spec::Bytes { .. } => "bytes",
        }
    }
}

fn check_count(count: u32, max: u32) -> Result<(), SpecError> {
    if count == 0 || count > max {
        return Err(SpecError::CountOutOfRange { got: count, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(min: i64, max: i64, count: u32, unique: bool) -> Spec {
        Spec::Integers {
            min,
            max,
            count,
            unique,
        }
    }

    #[test]
    fn the_full_i64_range_is_allowed_without_overflow() {
        assert_eq!(
            ints(i64::MIN, i64::MAX, MAX_VALUES, true).validate(),
            Ok(())
        );
    }

    #[test]
    fn each_limit_is_enforced_with_its_own_error() {
        assert!(matches!(
            ints(1, 6, 0, false).validate(),
            Err(SpecError::CountOutOfRange { .. })
        ));
        assert!(matches!(
            ints(1, 6, MAX_VALUES + 1, false).validate(),
            Err(SpecError::CountOutOfRange { .. })
        ));
        assert_eq!(
            ints(7, 6, 1, false).validate(),
            Err(SpecError::MinAboveMax { min: 7, max: 6 })
        );
        assert_eq!(
            ints(1, 6, 7, true).validate(),
            Err(SpecError::RangeTooSmallForUnique { count: 7, range: 6 })
        );
        assert_eq!(ints(1, 6, 6, true).validate(), Ok(()));
        assert_eq!(ints(1, 6, 7, false).validate(), Ok(()));
        assert!(Spec::Permutation { n: 0 }.validate().is_err());
        assert!(Spec::Permutation { n: MAX_VALUES + 1 }.validate().is_err());
        assert_eq!(
            Spec::Selection { k: 7, n: 6 }.validate(),
            Err(SpecError::KAboveN { k: 7, n: 6 })
        );
        assert!(Spec::Selection {
            k: 1,
            n: MAX_SELECTION_N + 1
        }
        .validate()
        .is_err());
        assert_eq!(
            Spec::Selection {
                k: 6,
                n: 1_000_000_000_000
            }
            .validate(),
            Ok(())
        );
        assert!(Spec::Bytes {
            count: MAX_BYTES + 1
        }
        .validate()
        .is_err());
    }

    #[test]
    fn the_json_form_is_tagged_by_kind_and_rejects_unknown_fields() {
        let spec: Spec =
            serde_json::from_str(r#"{"kind":"integers","min":1,"max":6,"count":2}"#).unwrap();
        assert_eq!(spec, ints(1, 6, 2, false));
        assert!(serde_json::from_str::<Spec>(r#"{"kind":"bytes","count":2,"extra":1}"#).is_err());
        assert!(serde_json::from_str::<Spec>(r#"{"kind":"dice","count":2}"#).is_err());
        assert!(serde_json::from_str::<Spec>(r#"{"kind":"bytes","count":-1}"#).is_err());
    }
}
