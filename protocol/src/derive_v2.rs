//! `geiger-derive-v2`: the entropy-thrifty derivation. docs/DERIVATION.md
//! §9 is the normative text; this module is its reference implementation,
//! tied to the text by `protocol/tests/vectors_v2.json`.
//!
//! In short: entropy is a stream of bits, most significant bit of each byte
//! first. A uniform value in `[0, n)` comes from a fast-dice-roller style
//! sampler (double an interval bit by bit until it covers `n`, accept or
//! keep the leftover and continue), which wastes under two bits per call
//! where v1 spent a whole 64-bit word. The steps of one draw (each die, each
//! shuffle step) are packed greedily into groups whose product of ranges
//! fits in 2^64; one sampled value per group is split back into the steps
//! by mixed radix, so the waste is per group, not per value. A draw records
//! the whole bytes its bits fall in; the 0–7 bits of its last byte that the
//! derivation does not read are skipped, never used by anything.

use std::collections::HashMap;

use crate::derive::{Derived, DrawResult, NeedMoreEntropy};
use crate::spec::Spec;

/// The name recorded in every draw derived by this module.
pub const DERIVATION_V2: &str = "geiger-derive-v2";

/// The largest product of ranges one group may hold: 2^64.
const GROUP_LIMIT: u128 = 1 << 64;

/// A cursor over the entropy as a bit stream, most significant bit of each
/// byte first; it counts the bits it hands out.
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: u64,
}

impl BitReader<'_> {
    /// The next `k` bits (`k ≤ 64`) as an unsigned integer, the first bit
    /// read the most significant.
    fn bits(&mut self, k: u32) -> Result<u64, NeedMoreEntropy> {
        debug_assert!(k <= 64);
        if self.pos + k as u64 > self.bytes.len() as u64 * 8 {
            return Err(NeedMoreEntropy {
                available: self.bytes.len(),
            });
        }
        let mut x: u64 = 0;
        let mut left = k;
        while left > 0 {
            let byte = self.bytes[(self.pos / 8) as usize];
            let avail = 8 - (self.pos % 8) as u32;
            let take = avail.min(left);
            let chunk = (byte >> (avail - take)) as u64 & ((1u64 << take) - 1);
            // `take ≤ 8` and at most 64 bits are gathered in total, so the
            // shift never drops a bit that matters.
            x = (x << take) | chunk;
            self.pos += take as u64;
            left -= take;
        }
        Ok(x)
    }

    /// A uniform value in `[0, n)`, `1 ≤ n ≤ 2^64`. The pair `(c, v)`
    /// always holds "c is uniform in [0, v)": a bit doubles both, and once
    /// `v ≥ n` either `c < n` (the answer) or `c − n` is uniform in the
    /// leftover `[0, v − n)`, which is kept rather than thrown away.
    fn uniform(&mut self, n: u128) -> Result<u128, NeedMoreEntropy> {
        debug_assert!((1..=GROUP_LIMIT).contains(&n));
        let (mut v, mut c): (u128, u128) = (1, 0);
        loop {
            if v < n {
                // The fewest doublings that make v reach n, read at once:
                // the same bits, in the same order, as one at a time.
                let mut k = bit_length(n - 1) - bit_length(v);
                if v << k < n {
                    k += 1;
                }
                c = (c << k) | self.bits(k)? as u128;
                v <<= k;
            }
            if c < n {
                return Ok(c);
            }
            v -= n;
            c -= n;
        }
    }

    /// One uniform offset per range, in order: ranges are packed greedily
    /// into groups whose product stays at most 2^64, each group is one
    /// [`BitReader::uniform`] over the product, split by mixed radix with
    /// the group's first range as the least significant digit.
    fn offsets(&mut self, ranges: &[u128]) -> Result<Vec<u64>, NeedMoreEntropy> {
        let mut out = Vec::with_capacity(ranges.len());
        let mut start = 0;
        while start < ranges.len() {
            let mut product: u128 = 1;
            let mut end = start;
            while end < ranges.len() {
                match product.checked_mul(ranges[end]) {
                    Some(p) if p <= GROUP_LIMIT => {
                        product = p;
                        end += 1;
                    }
                    _ => break,
                }
            }
            let mut u = self.uniform(product)?;
            for &r in &ranges[start..end] {
                out.push((u % r) as u64);
                u /= r;
            }
            start = end;
        }
        Ok(out)
    }
}

fn bit_length(x: u128) -> u32 {
    128 - x.leading_zeros()
}

/// The ranges of the steps of `spec`, in the order they are drawn (`None`
/// for `bytes`, which reads its bytes as they are).
fn step_ranges(spec: &Spec) -> Option<Vec<u128>> {
    let shuffle = |max_offset: u64, k: u32| -> Vec<u128> {
        (0..k as u128).map(|i| max_offset as u128 + 1 - i).collect()
    };
    match *spec {
        Spec::Integers {
            min,
            max,
            count,
            unique,
        } => {
            let max_offset = (max as i128 - min as i128) as u64;
            Some(if unique {
                shuffle(max_offset, count)
            } else {
                vec![max_offset as u128 + 1; count as usize]
            })
        }
        Spec::Permutation { n } => Some(shuffle(n as u64 - 1, n)),
        Spec::Selection { k, n } => Some(shuffle(n - 1, k)),
        Spec::Bytes { .. } => None,
    }
}

/// The first `offsets.len()` entries of a Fisher–Yates shuffle of the
/// virtual array `[0, 1, …]`: step `i` swaps slot `i` with slot
/// `i + offsets[i]`. Only swapped slots are stored.
fn shuffle_with(offsets: &[u64]) -> Vec<u64> {
    let mut swapped: HashMap<u64, u64> = HashMap::with_capacity(offsets.len() * 2);
    let mut out = Vec::with_capacity(offsets.len());
    for (i, &o) in offsets.iter().enumerate() {
        let i = i as u64;
        let j = i + o;
        let at_j = *swapped.get(&j).unwrap_or(&j);
        let at_i = *swapped.get(&i).unwrap_or(&i);
        swapped.insert(j, at_i);
        out.push(at_j);
    }
    out
}

/// Derives `spec`'s result from the front of `entropy` by
/// `geiger-derive-v2`. The spec must be valid (see [`Spec::validate`]).
/// `consumed_bits` is exactly the bits read; `consumed` the whole bytes
/// they fall in, which is what a draw records and the pool gives up.
pub fn derive_v2(spec: &Spec, entropy: &[u8]) -> Result<Derived, NeedMoreEntropy> {
    let mut reader = BitReader {
        bytes: entropy,
        pos: 0,
    };
    let result = match (spec, step_ranges(spec)) {
        (&Spec::Bytes { count }, _) => {
            let n = count as usize;
            let bytes = entropy.get(..n).ok_or(NeedMoreEntropy {
                available: entropy.len(),
            })?;
            reader.pos = n as u64 * 8;
            DrawResult::Hex {
                hex: hex::encode(bytes),
            }
        }
        (&Spec::Integers { min, unique, .. }, Some(ranges)) => {
            let offsets = reader.offsets(&ranges)?;
            let offsets = if unique {
                shuffle_with(&offsets)
            } else {
                offsets
            };
            DrawResult::Values {
                values: offsets
                    .into_iter()
                    .map(|o| (min as i128 + o as i128) as i64)
                    .collect(),
            }
        }
        (_, Some(ranges)) => DrawResult::Values {
            values: shuffle_with(&reader.offsets(&ranges)?)
                .into_iter()
                .map(|o| o as i64 + 1)
                .collect(),
        },
        (_, None) => unreachable!("only bytes has no steps"),
    };
    Ok(Derived {
        result,
        consumed: reader.pos.div_ceil(8) as usize,
        consumed_bits: reader.pos,
    })
}

/// The groups of `spec` (see [`BitReader::offsets`]): `(count, log2 of the
/// outcomes)`. `bytes` has no groups: it reads its bits as they are.
pub fn groups_and_information(spec: &Spec) -> (u64, f64) {
    let Some(ranges) = step_ranges(spec) else {
        let Spec::Bytes { count } = *spec else {
            unreachable!()
        };
        return (0, count as f64 * 8.0);
    };
    let mut groups = 0u64;
    let mut product: u128 = 1;
    let mut info = 0.0;
    for &r in &ranges {
        info += (r as f64).log2();
        match product.checked_mul(r) {
            Some(p) if p <= GROUP_LIMIT && groups > 0 => product = p,
            _ => {
                groups += 1;
                product = r;
            }
        }
    }
    (groups, info)
}

/// A first guess at the entropy bytes `spec` needs, for callers that take
/// bytes from a pool: the fewest bits each group can use plus two, rounded
/// up to bytes. Usually enough; when not, derive again with more.
pub fn entropy_bytes_estimate_v2(spec: &Spec) -> usize {
    let Some(ranges) = step_ranges(spec) else {
        let Spec::Bytes { count } = *spec else {
            unreachable!()
        };
        return count as usize;
    };
    let mut bits: u64 = 0;
    let mut product: u128 = 1;
    let mut flush = |p: u128| {
        if p > 1 {
            bits += bit_length(p - 1) as u64 + 2;
        }
    };
    for &r in &ranges {
        match product.checked_mul(r) {
            Some(p) if p <= GROUP_LIMIT => product = p,
            _ => {
                flush(product);
                product = r;
            }
        }
    }
    flush(product);
    bits.div_ceil(8) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(d: &Derived) -> Vec<i64> {
        match &d.result {
            DrawResult::Values { values } => values.clone(),
            DrawResult::Hex { .. } => panic!("expected values"),
        }
    }

    fn die(count: u32) -> Spec {
        Spec::Integers {
            min: 1,
            max: 6,
            count,
            unique: false,
        }
    }

    #[test]
    fn bits_are_read_most_significant_first() {
        let mut r = BitReader {
            bytes: &[0b1010_0000, 0xff],
            pos: 0,
        };
        assert_eq!(r.bits(1).unwrap(), 1);
        assert_eq!(r.bits(2).unwrap(), 0b01);
        assert_eq!(r.bits(9).unwrap(), 0b0_0000_1111);
        assert_eq!(r.pos, 12);
        assert!(r.bits(5).is_err());
    }

    #[test]
    fn one_die_reads_three_bits_when_they_are_below_six() {
        // 0b100 = 4 < 6: the answer is offset 4, value 5, from 3 bits.
        let d = derive_v2(&die(1), &[0b1000_0000]).unwrap();
        assert_eq!((values(&d), d.consumed_bits, d.consumed), (vec![5], 3, 1));
    }

    #[test]
    fn a_rejected_die_keeps_its_leftover_and_reads_only_two_more_bits() {
        // 0b111 = 7 ≥ 6: leftover c = 1 of v = 2; bits 0, 1 give c = 0b101 =
        // 5 of v = 8; 5 < 6, so offset 5, value 6, after 5 bits.
        let d = derive_v2(&die(1), &[0b1110_1000]).unwrap();
        assert_eq!((values(&d), d.consumed_bits), (vec![6], 5));
    }

    #[test]
    fn two_dice_are_one_group_of_thirty_six() {
        // 6 bits 0b000111 = 7 < 36: offsets 7 mod 6 = 1 and 7 div 6 = 1.
        let d = derive_v2(&die(2), &[0b0001_1100]).unwrap();
        assert_eq!((values(&d), d.consumed_bits), (vec![2, 2], 6));
        assert_eq!(groups_and_information(&die(2)).0, 1);
    }

    #[test]
    fn a_single_value_range_and_a_permutation_of_one_use_no_entropy() {
        let spec = Spec::Integers {
            min: -5,
            max: -5,
            count: 3,
            unique: false,
        };
        let d = derive_v2(&spec, &[]).unwrap();
        assert_eq!((values(&d), d.consumed), (vec![-5, -5, -5], 0));
        let d = derive_v2(&Spec::Permutation { n: 1 }, &[]).unwrap();
        assert_eq!((values(&d), d.consumed), (vec![1], 0));
    }

    #[test]
    fn the_full_i64_range_reads_sixty_four_bits_as_they_are() {
        let spec = Spec::Integers {
            min: i64::MIN,
            max: i64::MAX,
            count: 2,
            unique: false,
        };
        let mut e = vec![0u8; 8];
        e.extend_from_slice(&[0xff; 8]);
        let d = derive_v2(&spec, &e).unwrap();
        assert_eq!(values(&d), vec![i64::MIN, i64::MAX]);
        assert_eq!(d.consumed_bits, 128);
    }

    #[test]
    fn running_out_asks_for_more_and_never_returns_a_partial_result() {
        let spec = Spec::Permutation { n: 52 };
        assert_eq!(
            derive_v2(&spec, &[7u8; 20]).unwrap_err(),
            NeedMoreEntropy { available: 20 }
        );
        assert!(entropy_bytes_estimate_v2(&spec) >= 29);
    }

    #[test]
    fn a_deck_packs_into_few_groups() {
        let (groups, info) = groups_and_information(&Spec::Permutation { n: 52 });
        assert!(groups <= 5, "{groups}");
        assert!((info - 225.58).abs() < 0.01, "{info}");
    }
}
