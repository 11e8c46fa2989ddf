//! `geiger-derive-v1`: the published, deterministic map from entropy bytes to
//! a draw's result. docs/DERIVATION.md is the normative text; this module is
//! its reference implementation, and the test vectors in
//! `protocol/tests/vectors.json` tie the two together.
//!
//! In short: entropy is read front to back as little-endian 64-bit words;
//! a value in `[0, s)` comes from Lemire's multiply-and-reject method (no
//! modulo bias); unique integers, selections and permutations use a partial
//! Fisher–Yates shuffle over a virtual array, so memory is O(k) even for
//! 6 of 10^12.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::spec::Spec;

/// The name recorded in every draw derived by this module.
pub const DERIVATION_V1: &str = "geiger-derive-v1";

/// What a draw produced. JSON: `{"values": [...]}` or `{"hex": "..."}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DrawResult {
    Values { values: Vec<i64> },
    Hex { hex: String },
}

/// A derived result and how much entropy, from the front, it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub result: DrawResult,
    /// Whole bytes: what the draw records and the pool gives up.
    pub consumed: usize,
    /// The bits actually read (v1 reads whole words, so `8 · consumed`;
    /// v2 may leave up to 7 bits of its last byte unread).
    pub consumed_bits: u64,
}

/// The entropy given ran out before the result was complete. Derivation is
/// deterministic, so the caller supplies a longer prefix of the same stream
/// and derives again; the answer for the shorter prefix is never partial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("entropy ran out after {available} bytes; supply more and derive again")]
pub struct NeedMoreEntropy {
    pub available: usize,
}

/// A cursor over the entropy bytes; it counts what it hands out.
struct EntropyReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl EntropyReader<'_> {
    fn word(&mut self) -> Result<u64, NeedMoreEntropy> {
        let end = self.pos + 8;
        let chunk = self.bytes.get(self.pos..end).ok_or(NeedMoreEntropy {
            available: self.bytes.len(),
        })?;
        self.pos = end;
        Ok(u64::from_le_bytes(chunk.try_into().expect("8 bytes")))
    }

    fn take(&mut self, n: usize) -> Result<&[u8], NeedMoreEntropy> {
        let end = self.pos + n;
        let chunk = self.bytes.get(self.pos..end).ok_or(NeedMoreEntropy {
            available: self.bytes.len(),
        })?;
        self.pos = end;
        Ok(chunk)
    }

    /// A uniform value in `[0, max_offset]` (that is, `s = max_offset + 1`
    /// outcomes). `s = 1` uses no entropy; `s = 2^64` uses one word as is;
    /// otherwise Lemire's method: `m = x * s` in 128 bits, reject while the
    /// low half is below `2^64 mod s`, answer the high half.
    fn uniform_inclusive(&mut self, max_offset: u64) -> Result<u64, NeedMoreEntropy> {
        if max_offset == 0 {
            return Ok(0);
        }
        if max_offset == u64::MAX {
            return self.word();
        }
        let s = max_offset + 1;
        let mut m = self.word()? as u128 * s as u128;
        if (m as u64) < s {
            let threshold = s.wrapping_neg() % s;
            while (m as u64) < threshold {
                m = self.word()? as u128 * s as u128;
            }
        }
        Ok((m >> 64) as u64)
    }

    /// The first `k` entries of a Fisher–Yates shuffle of the virtual array
    /// `[0, 1, ..., max_offset]`, storing only the swapped slots.
    fn partial_shuffle(&mut self, max_offset: u64, k: u32) -> Result<Vec<u64>, NeedMoreEntropy> {
        let mut swapped: HashMap<u64, u64> = HashMap::with_capacity(k as usize * 2);
        let mut out = Vec::with_capacity(k as usize);
        for i in 0..k as u64 {
            let j = i + self.uniform_inclusive(max_offset - i)?;
            let at_j = *swapped.get(&j).unwrap_or(&j);
            let at_i = *swapped.get(&i).unwrap_or(&i);
            swapped.insert(j, at_i);
            out.push(at_j);
        }
        Ok(out)
    }
}

/// Derives `spec`'s result from the front of `entropy`. The spec must be
/// valid (see [`Spec::validate`]); limits are not re-checked here.
pub fn derive(spec: &Spec, entropy: &[u8]) -> Result<Derived, NeedMoreEntropy> {
    let mut reader = EntropyReader {
        bytes: entropy,
        pos: 0,
    };
    let result = match *spec {
        Spec::Integers {
            min,
            max,
            count,
            unique,
        } => {
            // max - min fits in u64 for every min <= max, even the full i64 range.
            let max_offset = (max as i128 - min as i128) as u64;
            let offsets = if unique {
                reader.partial_shuffle(max_offset, count)?
            } else {
                (0..count)
                    .map(|_| reader.uniform_inclusive(max_offset))
                    .collect::<Result<Vec<_>, _>>()?
            };
            let values = offsets
                .into_iter()
                .map(|o| (min as i128 + o as i128) as i64)
                .collect();
            DrawResult::Values { values }
        }
        Spec::Permutation { n } => DrawResult::Values {
            values: one_based(reader.partial_shuffle(n as u64 - 1, n)?),
        },
        Spec::Selection { k, n } => DrawResult::Values {
            values: one_based(reader.partial_shuffle(n - 1, k)?),
        },
        Spec::Bytes { count } => DrawResult::Hex {
            hex: hex::encode(reader.take(count as usize)?),
        },
    };
    Ok(Derived {
        result,
        consumed: reader.pos,
        consumed_bits: reader.pos as u64 * 8,
    })
}

fn one_based(offsets: Vec<u64>) -> Vec<i64> {
    offsets.into_iter().map(|o| o as i64 + 1).collect()
}

/// The fewest entropy bytes `spec` can use: a good first guess for callers
/// that take bytes from a pool. Rejections may need more.
pub fn min_entropy_bytes(spec: &Spec) -> usize {
    let words_for = |max_offset: u64, k: u64| -> usize {
        // Steps whose remaining range has one value use no entropy.
        let trivial = k.saturating_sub(max_offset);
        ((k - trivial) * 8) as usize
    };
    match *spec {
        Spec::Integers {
            min,
            max,
            count,
            unique,
        } => {
            let max_offset = (max as i128 - min as i128) as u64;
            if unique {
                words_for(max_offset, count as u64)
            } else if max_offset == 0 {
                0
            } else {
                count as usize * 8
            }
        }
        Spec::Permutation { n } => words_for(n as u64 - 1, n as u64),
        Spec::Selection { k, n } => words_for(n - 1, k as u64),
        Spec::Bytes { count } => count as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(ws: &[u64]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn values(d: Derived) -> Vec<i64> {
        match d.result {
            DrawResult::Values { values } => values,
            DrawResult::Hex { .. } => panic!("expected values"),
        }
    }

    #[test]
    fn lemire_takes_the_high_half_of_the_product() {
        // s = 6: x = 2^63 gives m = 3 * 2^64, so value 3; low half 0 < 6 but
        // 0 >= threshold (2^64 mod 6 = 4)? No: 0 < 4, so it is rejected and the
        // next word decides.
        let spec = Spec::Integers {
            min: 1,
            max: 6,
            count: 1,
            unique: false,
        };
        let d = derive(&spec, &words(&[1 << 63, u64::MAX])).unwrap();
        assert_eq!(d.consumed, 16);
        assert_eq!(values(d), vec![6]);
        let d = derive(&spec, &words(&[(1 << 63) + 1])).unwrap();
        assert_eq!(d.consumed, 8);
        assert_eq!(values(d), vec![4]);
    }

    #[test]
    fn a_single_value_range_uses_no_entropy() {
        let spec = Spec::Integers {
            min: -5,
            max: -5,
            count: 3,
            unique: false,
        };
        let d = derive(&spec, &[]).unwrap();
        assert_eq!((values(d.clone()), d.consumed), (vec![-5, -5, -5], 0));
        assert_eq!(min_entropy_bytes(&spec), 0);
    }

    #[test]
    fn the_full_i64_range_uses_words_as_they_are() {
        let spec = Spec::Integers {
            min: i64::MIN,
            max: i64::MAX,
            count: 2,
            unique: false,
        };
        let d = derive(&spec, &words(&[0, u64::MAX])).unwrap();
        assert_eq!(values(d), vec![i64::MIN, i64::MAX]);
    }

    #[test]
    fn running_out_asks_for_more_and_never_returns_a_partial_result() {
        let spec = Spec::Permutation { n: 52 };
        let err = derive(&spec, &[7u8; 100]).unwrap_err();
        assert_eq!(err, NeedMoreEntropy { available: 100 });
        assert_eq!(min_entropy_bytes(&spec), 51 * 8);
    }

    #[test]
    fn six_of_a_trillion_is_instant_and_distinct() {
        let spec = Spec::Selection {
            k: 6,
            n: 1_000_000_000_000,
        };
        let entropy: Vec<u8> = (0..48u8).map(|i| i.wrapping_mul(37)).collect();
        let v = values(derive(&spec, &entropy).unwrap());
        let mut sorted = v.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 6);
        assert!(v.iter().all(|&x| (1..=1_000_000_000_000).contains(&x)));
    }
}
