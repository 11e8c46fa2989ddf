//! Property tests: whatever the entropy, results are in range, unique where
//! required, permutations are permutations; validation and parsing never
//! panic on any input.

use geiger_protocol::derive::{derive, DrawResult};
use geiger_protocol::{DrawRequest, Spec};
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

/// Plenty of entropy for the sizes below, so `NeedMoreEntropy` is not hit
/// except with astronomically many rejections.
fn entropy() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 8 * 400)
}

proptest! {
    #[test]
    fn integers_lie_in_their_range(min in any::<i64>(), span in any::<u64>(), count in 1u32..50, e in entropy()) {
        let max = (min as i128 + span as i128).min(i64::MAX as i128) as i64;
        let spec = Spec::Integers { min, max, count, unique: false };
        prop_assert!(spec.validate().is_ok());
        let v = values(derive(&spec, &e).unwrap().result);
        prop_assert_eq!(v.len(), count as usize);
        prop_assert!(v.iter().all(|x| (min..=max).contains(x)));
    }

    #[test]
    fn unique_integers_are_distinct_even_in_tight_ranges(min in -1000i64..1000, extra in 0u32..5, count in 1u32..60, e in entropy()) {
        let max = min + count as i64 - 1 + extra as i64;
        let spec = Spec::Integers { min, max, count, unique: true };
        prop_assert!(spec.validate().is_ok());
        let v = values(derive(&spec, &e).unwrap().result);
        prop_assert_eq!(v.len(), count as usize);
        prop_assert!(distinct(&v));
        prop_assert!(v.iter().all(|x| (min..=max).contains(x)));
    }

    #[test]
    fn permutations_are_permutations(n in 1u32..200, e in entropy()) {
        let mut v = values(derive(&Spec::Permutation { n }, &e).unwrap().result);
        v.sort_unstable();
        prop_assert_eq!(v, (1..=n as i64).collect::<Vec<_>>());
    }

    #[test]
    fn selections_are_distinct_and_in_range(k in 1u32..100, extra in 0u64..1_000_000_000_000, e in entropy()) {
        let n = k as u64 + extra;
        let v = values(derive(&Spec::Selection { k, n }, &e).unwrap().result);
        prop_assert_eq!(v.len(), k as usize);
        prop_assert!(distinct(&v));
        prop_assert!(v.iter().all(|&x| x >= 1 && x as u64 <= n));
    }

    #[test]
    fn bytes_are_the_entropy_prefix(count in 1u32..300, e in entropy()) {
        let d = derive(&Spec::Bytes { count }, &e).unwrap();
        prop_assert_eq!(d.consumed, count as usize);
        prop_assert_eq!(d.result, DrawResult::Hex { hex: hex::encode(&e[..count as usize]) });
    }

    #[test]
    fn validation_never_panics(min in any::<i64>(), max in any::<i64>(), count in any::<u32>(), unique in any::<bool>(), k in any::<u32>(), n in any::<u64>()) {
        let _ = Spec::Integers { min, max, count, unique }.validate();
        let _ = Spec::Selection { k, n }.validate();
        let _ = Spec::Permutation { n: count }.validate();
        let _ = Spec::Bytes { count }.validate();
    }

    #[test]
    fn parsing_and_validating_arbitrary_json_never_panics(text in ".{0,200}") {
        if let Ok(req) = serde_json::from_str::<DrawRequest>(&text) {
            let _ = req.validate();
        }
    }

    #[test]
    fn parsing_arbitrary_request_shaped_json_never_panics(min in any::<i64>(), max in any::<i64>(), count in any::<i64>(), kind in "integers|permutation|selection|bytes|x") {
        let text = format!(r#"{{"previous":"ch_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","tag":"t","spec":{{"kind":"{kind}","min":{min},"max":{max},"count":{count},"n":{count},"k":{count},"unique":true}}}}"#);
        if let Ok(req) = serde_json::from_str::<DrawRequest>(&text) {
            let _ = req.validate();
        }
    }
}
