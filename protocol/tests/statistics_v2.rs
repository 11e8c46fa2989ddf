//! Statistical checks of `geiger-derive-v2`, with a fixed-seed ChaCha20
//! stream as the entropy, each draw starting where the previous one's
//! recorded bytes end (as draws take the pool). Each check is a Pearson
//! chi-square test at a 1e-6 false-alarm level; the same check on a
//! truncating mapping must fail, which shows it has teeth.

use geiger_protocol::derive::DrawResult;
use geiger_protocol::{derive_v2, Spec};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Upper critical values of chi-square at p = 1e-6, by degrees of freedom
/// (the distribution's quantile, computed from the regularized incomplete
/// gamma function).
fn critical_value(dof: usize) -> f64 {
    match dof {
        1 => 23.928,
        2 => 27.631,
        3 => 30.665,
        5 => 35.888,
        7 => 40.522,
        15 => 56.493,
        16 => 58.324,
        23 => 70.550,
        35 => 89.947,
        _ => panic!("no critical value tabulated for {dof} degrees of freedom"),
    }
}

fn chi_square(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

fn is_uniform(counts: &[u64]) -> bool {
    chi_square(counts) < critical_value(counts.len() - 1)
}

/// A stream of `len` pseudo-random bytes, fixed by `seed`.
fn entropy(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// Runs `draws` draws of `spec` one after another over one stream and
/// returns their values.
fn draw_values(spec: &Spec, draws: usize, seed: u64, bytes_each: usize) -> Vec<Vec<i64>> {
    let e = entropy(seed, draws * bytes_each + 4096);
    let mut rest: &[u8] = &e;
    (0..draws)
        .map(|_| {
            let d = derive_v2(spec, rest).expect("enough entropy");
            rest = &rest[d.consumed..];
            match d.result {
                DrawResult::Values { values } => values,
                DrawResult::Hex { .. } => unreachable!(),
            }
        })
        .collect()
}

/// `samples` integers in [min, max], in draws of 10,000.
fn integers(min: i64, max: i64, samples: usize, seed: u64) -> Vec<i64> {
    let spec = Spec::Integers {
        min,
        max,
        count: 10_000,
        unique: false,
    };
    let draws = samples.div_ceil(10_000);
    let mut out: Vec<i64> = draw_values(&spec, draws, seed, 10_000 * 10)
        .into_iter()
        .flatten()
        .collect();
    out.truncate(samples);
    out
}

/// Counts values in `buckets` equal-width buckets over [min, max].
fn bucket_counts(values: &[i64], min: i64, max: i64, buckets: usize) -> Vec<u64> {
    let range = (max as i128 - min as i128 + 1) as u128;
    let mut counts = vec![0u64; buckets];
    for &v in values {
        let offset = (v as i128 - min as i128) as u128;
        counts[(offset * buckets as u128 / range) as usize] += 1;
    }
    counts
}

fn check_range(min: i64, max: i64, buckets: usize, samples: usize, seed: u64) {
    let values = integers(min, max, samples, seed);
    assert!(values.iter().all(|v| (min..=max).contains(v)));
    let counts = bucket_counts(&values, min, max, buckets);
    assert!(is_uniform(&counts), "[{min}, {max}]: {counts:?}");
}

#[test]
fn a_die_is_uniform() {
    check_range(1, 6, 6, 120_000, 1);
}

#[test]
fn seventeen_values_just_above_sixteen_are_uniform() {
    check_range(0, 16, 17, 170_000, 2);
}

#[test]
fn two_to_the_32_plus_1_values_are_uniform() {
    check_range(0, 1 << 32, 8, 80_000, 3);
}

#[test]
fn two_to_the_63_plus_8_values_are_uniform() {
    check_range(-8, i64::MAX, 8, 80_000, 4);
}

#[test]
fn three_quarters_of_two_to_the_64_values_are_uniform() {
    check_range(i64::MIN, (1 << 62) - 1, 6, 60_000, 5);
}

#[test]
fn the_full_i64_range_and_one_less_are_uniform() {
    check_range(i64::MIN, i64::MAX, 8, 80_000, 6);
    check_range(i64::MIN + 1, i64::MAX, 8, 80_000, 7);
}

#[test]
fn two_dice_drawn_as_one_group_are_uniform_over_all_36_pairs() {
    let spec = Spec::Integers {
        min: 1,
        max: 6,
        count: 2,
        unique: false,
    };
    let mut counts = vec![0u64; 36];
    for v in draw_values(&spec, 72_000, 8, 2) {
        counts[((v[0] - 1) * 6 + v[1] - 1) as usize] += 1;
    }
    assert!(is_uniform(&counts), "{counts:?}");
}

/// Reading 3 bits and reducing them mod 6 (a truncating shortcut) gives 0
/// and 1 twice the chance of the rest: the same check must see it.
#[test]
fn the_same_check_catches_a_truncating_mapping() {
    let e = entropy(9, 60_000);
    let mut counts = vec![0u64; 6];
    for byte in e {
        counts[((byte >> 5) % 6) as usize] += 1;
    }
    assert!(!is_uniform(&counts), "{counts:?}");
}

#[test]
fn every_position_of_a_shuffle_is_uniform_and_so_is_every_ordering() {
    let n = 4usize;
    let mut by_position = vec![vec![0u64; n]; n];
    let mut by_ordering = std::collections::HashMap::<Vec<i64>, u64>::new();
    for values in draw_values(&Spec::Permutation { n: n as u32 }, 48_000, 10, 2) {
        for (pos, &v) in values.iter().enumerate() {
            by_position[pos][(v - 1) as usize] += 1;
        }
        *by_ordering.entry(values).or_default() += 1;
    }
    for counts in &by_position {
        assert!(is_uniform(counts), "{counts:?}");
    }
    assert_eq!(by_ordering.len(), 24);
    let counts: Vec<u64> = by_ordering.into_values().collect();
    assert!(is_uniform(&counts), "{counts:?}");
}

#[test]
fn every_card_is_equally_likely_at_the_top_and_bottom_of_a_deck() {
    let mut top = vec![0u64; 52];
    let mut bottom = vec![0u64; 52];
    for values in draw_values(&Spec::Permutation { n: 52 }, 32_000, 11, 32) {
        top[(values[0] - 1) as usize] += 1;
        bottom[(values[51] - 1) as usize] += 1;
    }
    // 52 cards in 4 buckets of 13 (dof 3).
    for counts in [top, bottom] {
        let grouped: Vec<u64> = counts.chunks(13).map(|c| c.iter().sum()).collect();
        assert!(is_uniform(&grouped), "{grouped:?}");
    }
}

#[test]
fn a_lotto_selection_picks_every_number_equally_often() {
    let mut counts = vec![0u64; 48];
    for values in draw_values(&Spec::Selection { k: 6, n: 48 }, 20_000, 12, 8) {
        for v in values {
            counts[(v - 1) as usize] += 1;
        }
    }
    let grouped: Vec<u64> = counts.chunks(3).map(|c| c.iter().sum()).collect();
    assert!(is_uniform(&grouped), "{grouped:?}");
}

#[test]
fn unique_integers_near_the_i64_limits_are_uniform_in_each_position() {
    let (min, max) = (i64::MAX - (1 << 32), i64::MAX);
    let spec = Spec::Integers {
        min,
        max,
        count: 3,
        unique: true,
    };
    let mut by_position = vec![Vec::new(); 3];
    for values in draw_values(&spec, 40_000, 13, 16) {
        let mut sorted = values.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), 3);
        for (pos, v) in values.into_iter().enumerate() {
            by_position[pos].push(v);
        }
    }
    for values in &by_position {
        let counts = bucket_counts(values, min, max, 8);
        assert!(is_uniform(&counts), "{counts:?}");
    }
}

#[test]
fn bytes_are_uniform_in_their_high_nibble() {
    let e = entropy(14, 40_000);
    let d = derive_v2(&Spec::Bytes { count: 40_000 }, &e).unwrap();
    let DrawResult::Hex { hex } = d.result else {
        unreachable!()
    };
    let mut counts = vec![0u64; 16];
    for b in hex::decode(hex).unwrap() {
        counts[(b >> 4) as usize] += 1;
    }
    assert!(is_uniform(&counts), "{counts:?}");
}
