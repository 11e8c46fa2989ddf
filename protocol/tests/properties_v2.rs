//! Property tests of `geiger-derive-v2`: whatever the entropy, results are
//! in range, unique where required, permutations are permutations; the
//! derivation never reads past the bits it reports (changing any later bit
//! changes nothing, the recorded bytes alone suffice, one byte fewer does
//! not); equal inputs give equal outputs.

use geiger_protocol::derive::DrawResult;
use geiger_protocol::{derive_v2, Spec};
use proptest::prelude::*;

fn values(result: DrawResult) -> Vec<i64> {
    match result {
        DrawResult::Values { values } => values,
        DrawResult::Hex { .. } => panic!("values expected"),
    }
}

fn distinct(v: &[i64]) -> bool {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.windows(2).all(|w| w[0] != w[1])
}

/// Plenty of entropy for the sizes below.
fn entropy() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 8 * 400)
}

fn any_spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        (any::<i64>(), any::<u64>(), 1u32..40, any::<bool>()).prop_map(
            |(min, span, count, unique)| {
                let max = (min as i128 + span as i128).min(i64::MAX as i128) as i64;
                let unique = unique && (max as i128 - min as i128) >= count as i128;
                Spec::Integers {
                    min,
                    max,
                    count,
                    unique,
                }
            }
        ),
        (1i64..40, 1u32..40).prop_map(|(max, count)| Spec::Integers {
            min: 1,
            max,
            count,
            unique: false
        }),
        (1u32..120).prop_map(|n| Spec::Permutation { n }),
        (1u32..40, 0u64..(1 << 53) - 41).prop_map(|(k, extra)| Spec::Selection {
            k,
            n: k as u64 + extra
        }),
        (1u32..200).prop_map(|count| Spec::Bytes { count }),
    ]
}

proptest! {
    #[test]
    fn integers_lie_in_their_range(min in any::<i64>(), span in any::<u64>(), count in 1u32..50, e in entropy()) {
        let max = (min as i128 + span as i128).min(i64::MAX as i128) as i64;
        let spec = Spec::Integers { min, max, count, unique: false };
        let v = values(derive_v2(&spec, &e).unwrap().result);
        prop_assert_eq!(v.len(), count as usize);
        prop_assert!(v.iter().all(|x| (min..=max).contains(x)));
    }

    #[test]
    fn unique_integers_are_distinct_even_in_tight_ranges(min in -1000i64..1000, extra in 0u32..5, count in 1u32..60, e in entropy()) {
        let max = min + count as i64 - 1 + extra as i64;
        let spec = Spec::Integers { min, max, count, unique: true };
        let v = values(derive_v2(&spec, &e).unwrap().result);
        prop_assert_eq!(v.len(), count as usize);
        prop_assert!(distinct(&v));
        prop_assert!(v.iter().all(|x| (min..=max).contains(x)));
    }

    #[test]
    fn permutations_are_permutations(n in 1u32..200, e in entropy()) {
        let mut v = values(derive_v2(&Spec::Permutation { n }, &e).unwrap().result);
        v.sort_unstable();
        prop_assert_eq!(v, (1..=n as i64).collect::<Vec<_>>());
    }

    #[test]
    fn selections_are_distinct_and_in_range(k in 1u32..100, extra in 0u64..1_000_000_000_000, e in entropy()) {
        let n = k as u64 + extra;
        let v = values(derive_v2(&Spec::Selection { k, n }, &e).unwrap().result);
        prop_assert_eq!(v.len(), k as usize);
        prop_assert!(distinct(&v));
        prop_assert!(v.iter().all(|&x| x >= 1 && x as u64 <= n));
    }

    #[test]
    fn bytes_are_the_entropy_prefix(count in 1u32..300, e in entropy()) {
        let d = derive_v2(&Spec::Bytes { count }, &e).unwrap();
        prop_assert_eq!((d.consumed, d.consumed_bits), (count as usize, count as u64 * 8));
        prop_assert_eq!(d.result, DrawResult::Hex { hex: hex::encode(&e[..count as usize]) });
    }

    #[test]
    fn no_bit_after_the_reported_ones_is_read(spec in any_spec(), e in entropy(), flip in any::<u32>()) {
        prop_assume!(spec.validate().is_ok());
        let d = derive_v2(&spec, &e).unwrap();
        prop_assert_eq!(d.consumed as u64, d.consumed_bits.div_ceil(8));
        // Flipping any later bit, in the last byte or beyond, changes nothing.
        let total = e.len() as u64 * 8;
        if d.consumed_bits < total {
            let bit = d.consumed_bits + flip as u64 % (total - d.consumed_bits);
            let mut other = e.clone();
            other[(bit / 8) as usize] ^= 0x80 >> (bit % 8);
            prop_assert_eq!(&derive_v2(&spec, &other).unwrap(), &d);
        }
        // The recorded bytes alone give the same result; one fewer does not.
        prop_assert_eq!(&derive_v2(&spec, &e[..d.consumed]).unwrap(), &d);
        if d.consumed > 0 {
            prop_assert!(derive_v2(&spec, &e[..d.consumed - 1]).is_err());
        }
    }

    #[test]
    fn equal_inputs_give_equal_outputs(spec in any_spec(), e in entropy()) {
        prop_assume!(spec.validate().is_ok());
        let copy = e.clone();
        prop_assert_eq!(derive_v2(&spec, &e), derive_v2(&spec.clone(), &copy));
    }
}
