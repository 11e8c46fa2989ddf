//! Statistical checks of derivation, with a fixed-seed ChaCha20 stream as
//! the entropy so results are reproducible. Each check is a Pearson
//! chi-square test at a 1e-6 false-alarm level, so a pass is not luck and a
//! failure is not noise. The same check, run on a deliberately
//! modulo-biased mapping, must fail: that is what shows the check has teeth.

use geiger_protocol::derive::{derive, DrawResult};
use geiger_protocol::Spec;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Upper critical values of chi-square at p = 1e-6, by degrees of freedom
/// (from the distribution's quantile function; standard tables).
fn critical_value(dof: usize) -> f64 {
    match dof {
        1 => 23.928,
        2 => 27.631,
        3 => 30.664,
        5 => 35.888,
        7 => 40.522,
        15 => 55.325,
        23 => 68.001,
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

fn entropy(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// Draws `samples` integers in [min, max] through geiger-derive-v1, in
/// batches of 10,000 (the per-draw limit).
fn derived_integers(min: i64, max: i64, samples: usize, seed: u64) -> Vec<i64> {
    let mut out = Vec::with_capacity(samples);
    let mut batch = 0u64;
    while out.len() < samples {
        let spec = Spec::Integers {
            min,
            max,
            count: 10_000,
            unique: false,
        };
        // Three times the minimum: ample for ranges that reject about half the words.
        let e = entropy(seed.wrapping_mul(1_000_003) + batch, 10_000 * 8 * 3);
        match derive(&spec, &e).expect("enough entropy").result {
            DrawResult::Values { values } => out.extend(values),
            DrawResult::Hex { .. } => unreachable!(),
        }
        batch += 1;
    }
    out.truncate(samples);
    out
}

/// The classic mistake: `min + word % range`. Biased whenever the range
/// does not divide 2^64.
fn modulo_integers(min: i64, max: i64, samples: usize, seed: u64) -> Vec<i64> {
    let range = (max as i128 - min as i128 + 1) as u128;
    let e = entropy(seed, samples * 8);
    e.chunks_exact(8)
        .map(|w| {
            let word = u64::from_le_bytes(w.try_into().unwrap()) as u128;
            (min as i128 + (word % range) as i128) as i64
        })
        .collect()
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

#[test]
fn a_die_is_uniform() {
    let values = derived_integers(1, 6, 120_000, 1);
    assert!(is_uniform(&bucket_counts(&values, 1, 6, 6)));
}

#[test]
fn an_awkward_range_of_three_values_is_uniform() {
    let values = derived_integers(-1, 1, 90_000, 2);
    assert!(is_uniform(&bucket_counts(&values, -1, 1, 3)));
}

/// [-8, 2^63 - 1] holds 2^63 + 8 values, the "awkward" example:
/// just over half of 2^64, so almost every other word is rejected.
#[test]
fn a_range_of_two_to_the_63_plus_8_values_is_uniform() {
    let values = derived_integers(-8, i64::MAX, 80_000, 3);
    assert!(is_uniform(&bucket_counts(&values, -8, i64::MAX, 8)));
}

/// [i64::MIN, 2^62 - 1] holds 3 * 2^62 values, three quarters of 2^64: the
/// range where modulo reduction is at its worst, giving the lowest third of
/// the range twice the chance of the rest.
const WIDE_MIN: i64 = i64::MIN;
const WIDE_MAX: i64 = (1 << 62) - 1;

#[test]
fn a_range_of_three_quarters_of_two_to_the_64_is_uniform() {
    let values = derived_integers(WIDE_MIN, WIDE_MAX, 60_000, 6);
    assert!(is_uniform(&bucket_counts(&values, WIDE_MIN, WIDE_MAX, 6)));
}

#[test]
fn the_same_check_catches_a_modulo_biased_mapping() {
    let values = modulo_integers(WIDE_MIN, WIDE_MAX, 60_000, 6);
    let counts = bucket_counts(&values, WIDE_MIN, WIDE_MAX, 6);
    assert!(
        !is_uniform(&counts),
        "modulo reduction passed the uniformity check: {counts:?}"
    );
}

#[test]
fn every_position_of_a_shuffle_is_uniform_and_so_is_every_ordering() {
    let n = 4usize;
    let mut by_position = vec![vec![0u64; n]; n];
    let mut by_ordering = std::collections::HashMap::<Vec<i64>, u64>::new();
    let e = entropy(4, 48_000 * 8 * (n - 1));
    for words in e.chunks_exact(8 * (n - 1)) {
        let d = derive(&Spec::Permutation { n: n as u32 }, words).unwrap();
        let DrawResult::Values { values } = d.result else {
            unreachable!()
        };
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
fn a_lotto_selection_picks_every_number_equally_often() {
    let (k, n) = (6u32, 48u64);
    let mut counts = vec![0u64; n as usize];
    let e = entropy(5, 20_000 * 8 * k as usize * 2);
    let mut rest: &[u8] = &e;
    for _ in 0..20_000 {
        let d = derive(&Spec::Selection { k, n }, rest).unwrap();
        let DrawResult::Values { values } = d.result else {
            unreachable!()
        };
        for v in values {
            counts[(v - 1) as usize] += 1;
        }
        rest = &rest[d.consumed..];
    }
    // 48 numbers grouped in 16 buckets of 3 (tabulated dof 15).
    let grouped: Vec<u64> = counts.chunks(3).map(|c| c.iter().sum()).collect();
    assert!(is_uniform(&grouped), "{grouped:?}");
}
