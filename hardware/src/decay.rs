//! The decay source: a simulated Geiger–Müller counter, and the device-side
//! pipeline a decay counter's event times go through before any byte leaves
//! the device (docs/HEALTH.md, "The decay source"):
//!
//! 1. [`GmCounter`]: Poisson arrivals at the true count rate, a
//!    non-paralysable dead time after each registered event, and timestamps
//!    truncated to the timer's tick.
//! 2. [`Extractor`]: one raw bit per two successive, non-overlapping event
//!    intervals `(t1, t2)`: `t1 < t2` gives 0, `t1 > t2` gives 1, equal
//!    intervals give no bit (a tie). The intervals of a stationary counter
//!    are independent and identically distributed, so the two orders are
//!    equally likely whatever the rate, dead time or tick: 1 bit of entropy
//!    per raw bit in theory; the assessed claim is lower (see
//!    [`RAW_MIN_ENTROPY_PER_BIT`]).
//! 3. [`RawHealth`]: SP 800-90B's repetition count and adaptive proportion
//!    tests on the raw bits (binary samples, window 1024) at the assessed
//!    min-entropy, plus a developer-defined test on runs of ties (a stuck
//!    counter's intervals are all equal and yield no bits at all).
//! 4. [`RawPipeline`]: a start-up test (the first [`STARTUP_SAMPLES`] raw
//!    bits must pass and are not used), then the vetted conditioner of SP
//!    800-90B 3.1.5.1.1: SHA-256 over [`conditioner_input_bits`] raw bits,
//!    which carry twice the 256 bits it outputs.
//!
//! A real counter's event timestamps (`--source timestamps:PATH`) feed the
//! same [`RawPipeline::push_timestamp`].

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::health::{apt_cutoff, rct_cutoff};

/// True events per second reaching the tube (before dead time).
pub const DEFAULT_COUNT_RATE: f64 = 5_000.0;
/// A typical Geiger–Müller tube's dead time (tens to a few hundred µs).
pub const DEFAULT_DEAD_TIME: Duration = Duration::from_micros(100);
/// The timestamping timer's resolution.
pub const DEFAULT_TICK: Duration = Duration::from_micros(1);
/// Assessed min-entropy per raw bit. Theory gives 1 (the two orders of two
/// i.i.d. intervals are equally likely); the claim leaves room for a real
/// counter's imperfections (drift, afterpulses, comparator asymmetry) up to
/// P(bit) = 2^-0.9 ≈ 0.536, and sets both the health cutoffs and the
/// conditioner's input size.
pub const RAW_MIN_ENTROPY_PER_BIT: f64 = 0.9;
/// The raw tests' false-positive probability, as `-log2(alpha)`.
pub const RAW_ALPHA_LOG2: u32 = 40;
/// SP 800-90B's APT window for binary samples.
pub const RAW_APT_WINDOW: u32 = 1024;
/// Raw bits tested (and discarded) before any output, and again after any
/// failure.
pub const STARTUP_SAMPLES: u32 = 1024;
/// The tie-run test assumes P(tie) <= 1/4, i.e. 2 bits of "surprise" per
/// tie; a healthy counter's is far lower (≈ tick / (2 × mean interval),
/// 0.25% at the defaults).
const TIE_RUN_BITS_PER_TIE: u32 = 2;
/// Bits out of each conditioner block: one SHA-256 digest.
pub const OUTPUT_BITS: u32 = 256;
/// How much simulated time one `produce` call may cover before the caller
/// paces and retries: bounds the work done on the async runtime per step
/// (at most 10^6 events even at an absurd 10^7/s) and keeps a stuck
/// counter, which yields nothing, from spinning.
pub const MAX_SIM_STEP: Duration = Duration::from_millis(100);

/// Raw bits per conditioner block: enough to carry `2 × OUTPUT_BITS` bits of
/// min-entropy at `h` bits per raw bit (569 at the assessed 0.9).
pub fn conditioner_input_bits(h: f64) -> usize {
    (2.0 * f64::from(OUTPUT_BITS) / h.clamp(0.01, 1.0)).ceil() as usize
}

/// The simulated counter's physics and injected faults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecayConfig {
    /// True events per second at the tube, before dead time.
    pub count_rate: f64,
    /// Non-paralysable dead time after each registered event.
    pub dead_time: Duration,
    /// Timer resolution of the event timestamps.
    pub tick: Duration,
    pub fault: Option<CounterFault>,
}

impl Default for DecayConfig {
    fn default() -> Self {
        DecayConfig {
            count_rate: DEFAULT_COUNT_RATE,
            dead_time: DEFAULT_DEAD_TIME,
            tick: DEFAULT_TICK,
            fault: None,
        }
    }
}

impl DecayConfig {
    /// Registered counts per second: `n / (1 + n τ)` for a non-paralysable
    /// counter with true rate `n` and dead time `τ`.
    pub fn registered_rate(&self) -> f64 {
        self.count_rate / (1.0 + self.count_rate * self.dead_time.as_secs_f64())
    }

    /// Expected raw bits per second: one per two registered events, less ties.
    pub fn expected_raw_bits_per_second(&self) -> f64 {
        self.registered_rate() / 2.0 * (1.0 - self.expected_tie_probability())
    }

    /// P(two intervals fall in the same tick) ≈ Σ_k P(I = k)², which for an
    /// exponential interval spread over many ticks is ≈ tick × rate / 2
    /// (the dead time shifts both intervals alike and does not matter).
    pub fn expected_tie_probability(&self) -> f64 {
        let x = self.count_rate * self.tick.as_secs_f64();
        // Exact for the geometric distribution of whole ticks.
        let q = (-x).exp();
        (1.0 - q) / (1.0 + q)
    }

    /// Expected conditioned bytes per second after the start-up test.
    pub fn expected_output_bytes_per_second(&self) -> f64 {
        self.expected_raw_bits_per_second() / conditioner_input_bits(RAW_MIN_ENTROPY_PER_BIT) as f64
            * f64::from(OUTPUT_BITS / 8)
    }
}

/// A broken counter, for tests and drills.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CounterFault {
    /// After this many events, every interval is the same (a counter locked
    /// onto an oscillation instead of the sample).
    FixedIntervalAfter(u64),
    /// Raw bits are 1 with this probability (e.g. a comparator or timer
    /// that favours one order of the intervals).
    RawBias(f64),
}

/// A simulated Geiger–Müller counter: event timestamps in ticks.
#[derive(Debug)]
pub struct GmCounter {
    rng: StdRng,
    mean_gap_ns: f64,
    dead_ns: f64,
    tick_ns: f64,
    now_ns: f64,
    events: u64,
    fixed_after: Option<u64>,
}

impl GmCounter {
    pub fn new(config: &DecayConfig, rng: StdRng) -> Self {
        GmCounter {
            rng,
            // Clamped so a zero or absurd flag cannot make time stand still.
            mean_gap_ns: 1e9 / config.count_rate.clamp(1e-3, 1e8),
            dead_ns: config.dead_time.as_nanos() as f64,
            tick_ns: (config.tick.as_nanos() as f64).max(1.0),
            now_ns: 0.0,
            events: 0,
            fixed_after: match config.fault {
                Some(CounterFault::FixedIntervalAfter(n)) => Some(n),
                _ => None,
            },
        }
    }

    /// The next registered event's timestamp, in ticks.
    pub fn next_event(&mut self) -> u64 {
        let gap = match self.fixed_after {
            Some(n) if self.events >= n => self.dead_ns + self.mean_gap_ns,
            _ => {
                // The counter is blind for the dead time after a registered
                // event; true events form a Poisson process, which is
                // memoryless, so the next registered one comes an
                // exponential time after the dead time ends.
                let u: f64 = 1.0 - self.rng.gen::<f64>(); // (0, 1]
                self.dead_ns - u.ln() * self.mean_gap_ns
            }
        };
        self.now_ns += gap;
        self.events += 1;
        (self.now_ns / self.tick_ns) as u64
    }

    /// Simulated time since the counter started.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.now_ns as u64)
    }

    pub fn events(&self) -> u64 {
        self.events
    }
}

/// One raw sample: a bit, or a pair of equal intervals that yields none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawSample {
    Bit(u8),
    Tie,
}

/// Raw bits from event timestamps, by comparing successive, non-overlapping
/// pairs of intervals. Non-overlapping, so no interval takes part in two
/// bits and the bits stay independent.
#[derive(Debug, Default, Clone)]
pub struct Extractor {
    last: Option<u64>,
    first_interval: Option<u64>,
}

impl Extractor {
    pub fn push(&mut self, timestamp: u64) -> Option<RawSample> {
        let last = self.last.replace(timestamp)?;
        // A timestamp that goes backwards (a real timer's wrap or glitch)
        // reads as a zero interval rather than a huge one.
        let interval = timestamp.saturating_sub(last);
        let Some(t1) = self.first_interval.take() else {
            self.first_interval = Some(interval);
            return None;
        };
        Some(match t1.cmp(&interval) {
            std::cmp::Ordering::Less => RawSample::Bit(0),
            std::cmp::Ordering::Greater => RawSample::Bit(1),
            std::cmp::Ordering::Equal => RawSample::Tie,
        })
    }
}

/// Which raw test fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RawFailure {
    #[error("raw repetition count test: bit {value} repeated {run} times (cutoff {cutoff})")]
    RepetitionCount { value: u8, run: u32, cutoff: u32 },
    #[error(
        "raw adaptive proportion test: bit {value} occurred {count} times in a window of {window} (cutoff {cutoff})"
    )]
    AdaptiveProportion {
        value: u8,
        count: u32,
        window: u32,
        cutoff: u32,
    },
    #[error("tie run test: {run} interval pairs in a row were equal (cutoff {cutoff})")]
    TieRun { run: u32, cutoff: u32 },
    /// More ties than the tests assume: the counter's rate is too high for
    /// its timer (dead-time saturation), and the bits it still yields are
    /// not what the cutoffs were set for.
    #[error(
        "saturation test: {ties} of {window} interval pairs tied (cutoff {cutoff}): the count rate is too high for the timer; use a finer tick or a weaker sample"
    )]
    Saturated { ties: u32, window: u32, cutoff: u32 },
}

/// The cutoffs of the raw tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawCutoffs {
    pub rct: u32,
    pub apt: u32,
    pub tie_run: u32,
    /// Ties among [`RAW_APT_WINDOW`] interval pairs that fail the
    /// saturation test: P(tie) above the 1/4 the tie-run test assumes.
    pub saturation: u32,
}

impl RawCutoffs {
    /// At min-entropy `h` per raw bit and `alpha = 2^-alpha_log2`.
    pub fn new(h: f64, alpha_log2: u32) -> Self {
        let h = h.clamp(0.01, 1.0);
        RawCutoffs {
            rct: rct_cutoff(h, alpha_log2),
            apt: apt_cutoff(RAW_APT_WINDOW, h, alpha_log2),
            tie_run: rct_cutoff(f64::from(TIE_RUN_BITS_PER_TIE), alpha_log2),
            saturation: apt_cutoff(RAW_APT_WINDOW, f64::from(TIE_RUN_BITS_PER_TIE), alpha_log2),
        }
    }
}

impl Default for RawCutoffs {
    fn default() -> Self {
        RawCutoffs::new(RAW_MIN_ENTROPY_PER_BIT, RAW_ALPHA_LOG2)
    }
}

/// Continuous health tests on the raw samples.
#[derive(Debug, Clone)]
pub struct RawHealth {
    cutoffs: RawCutoffs,
    rct_value: Option<u8>,
    rct_run: u32,
    apt_first: u8,
    apt_count: u32,
    apt_seen: u32,
    tie_run: u32,
    /// Interval pairs (bits and ties) and ties in the saturation test's
    /// current window.
    pairs_seen: u32,
    pair_ties: u32,
}

impl RawHealth {
    pub fn new(cutoffs: RawCutoffs) -> Self {
        RawHealth {
            cutoffs,
            rct_value: None,
            rct_run: 0,
            apt_first: 0,
            apt_count: 0,
            apt_seen: 0,
            tie_run: 0,
            pairs_seen: 0,
            pair_ties: 0,
        }
    }

    pub fn cutoffs(&self) -> RawCutoffs {
        self.cutoffs
    }

    pub fn feed(&mut self, sample: RawSample) -> Option<RawFailure> {
        // The saturation test: ties per window of interval pairs. It runs
        // first, so a saturated counter is named as such rather than by
        // the tie-run test, whose cutoff assumes P(tie) <= 1/4.
        if self.pairs_seen == RAW_APT_WINDOW {
            self.pairs_seen = 0;
            self.pair_ties = 0;
        }
        self.pairs_seen += 1;
        if sample == RawSample::Tie {
            self.pair_ties += 1;
            if self.pair_ties >= self.cutoffs.saturation {
                return Some(RawFailure::Saturated {
                    ties: self.pair_ties,
                    window: RAW_APT_WINDOW,
                    cutoff: self.cutoffs.saturation,
                });
            }
        }
        let b = match sample {
            RawSample::Tie => {
                // Ties are not samples of the bit tests: they neither
                // extend nor break a run of bits.
                self.tie_run = self.tie_run.saturating_add(1);
                return (self.tie_run >= self.cutoffs.tie_run).then_some(RawFailure::TieRun {
                    run: self.tie_run,
                    cutoff: self.cutoffs.tie_run,
                });
            }
            RawSample::Bit(b) => b & 1,
        };
        self.tie_run = 0;
        let mut failure = None;
        if self.rct_value == Some(b) {
            self.rct_run = self.rct_run.saturating_add(1);
        } else {
            self.rct_value = Some(b);
            self.rct_run = 1;
        }
        // `>=`: a stuck source fails on every further repeat.
        if self.rct_run >= self.cutoffs.rct {
            failure = Some(RawFailure::RepetitionCount {
                value: b,
                run: self.rct_run,
                cutoff: self.cutoffs.rct,
            });
        }
        if self.apt_seen == 0 {
            self.apt_first = b;
            self.apt_count = 1;
            self.apt_seen = 1;
            return failure;
        }
        self.apt_seen += 1;
        if b == self.apt_first {
            self.apt_count += 1;
            if self.apt_count == self.cutoffs.apt {
                failure.get_or_insert(RawFailure::AdaptiveProportion {
                    value: b,
                    count: self.apt_count,
                    window: RAW_APT_WINDOW,
                    cutoff: self.cutoffs.apt,
                });
            }
        }
        if self.apt_seen == RAW_APT_WINDOW {
            self.apt_seen = 0;
        }
        failure
    }
}

/// Running totals of one pipeline, for the agent's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RawCounts {
    pub raw_bits: u64,
    pub ties: u64,
    /// Raw samples thrown away because a test failed: the failing sample
    /// (a bit, or a tie that failed the tie-run test) and every bit
    /// gathered since the last output block or start-up pass.
    pub rejected: u64,
    /// Raw bits that passed a start-up test (tested, never output).
    pub startup_bits: u64,
    pub failures: u64,
    pub output_bytes: u64,
}

/// Raw samples in, full-entropy conditioned bytes out.
#[derive(Debug, Clone)]
pub struct RawPipeline {
    extractor: Extractor,
    health: RawHealth,
    startup_remaining: u32,
    input_bits: usize,
    block: Vec<u8>,
    block_bits: usize,
    out: Vec<u8>,
    counts: RawCounts,
    last_failure: Option<RawFailure>,
}

impl Default for RawPipeline {
    fn default() -> Self {
        RawPipeline::new(RAW_MIN_ENTROPY_PER_BIT, RAW_ALPHA_LOG2)
    }
}

impl RawPipeline {
    pub fn new(h: f64, alpha_log2: u32) -> Self {
        let input_bits = conditioner_input_bits(h);
        RawPipeline {
            extractor: Extractor::default(),
            health: RawHealth::new(RawCutoffs::new(h, alpha_log2)),
            startup_remaining: STARTUP_SAMPLES,
            input_bits,
            block: Vec::with_capacity(input_bits.div_ceil(8)),
            block_bits: 0,
            out: Vec::new(),
            counts: RawCounts::default(),
            last_failure: None,
        }
    }

    pub fn cutoffs(&self) -> RawCutoffs {
        self.health.cutoffs()
    }

    pub fn counts(&self) -> RawCounts {
        self.counts
    }

    /// True once the start-up test has passed and no test failed since.
    pub fn healthy(&self) -> bool {
        self.startup_remaining == 0
    }

    /// The most recent failure, if any.
    pub fn last_failure(&self) -> Option<RawFailure> {
        self.last_failure
    }

    /// Conditioned bytes ready so far.
    pub fn ready(&self) -> usize {
        self.out.len()
    }

    /// Takes up to `n` conditioned bytes.
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.out.len());
        let rest = self.out.split_off(n);
        std::mem::replace(&mut self.out, rest)
    }

    /// One event timestamp (in ticks) from any counter.
    pub fn push_timestamp(&mut self, timestamp: u64) {
        if let Some(sample) = self.extractor.push(timestamp) {
            self.push_sample(sample);
        }
    }

    /// One raw sample, already extracted.
    pub fn push_sample(&mut self, sample: RawSample) {
        match sample {
            RawSample::Bit(_) => self.counts.raw_bits += 1,
            RawSample::Tie => self.counts.ties += 1,
        }
        if let Some(failure) = self.health.feed(sample) {
            // Nothing gathered since the last good block can be trusted:
            // drop it, and serve nothing until a fresh start-up test passes.
            self.counts.failures += 1;
            self.counts.rejected +=
                self.block_bits as u64 + u64::from(STARTUP_SAMPLES - self.startup_remaining) + 1;
            self.block.clear();
            self.block_bits = 0;
            self.startup_remaining = STARTUP_SAMPLES;
            self.last_failure = Some(failure);
            return;
        }
        let RawSample::Bit(b) = sample else {
            return;
        };
        if self.startup_remaining > 0 {
            self.startup_remaining -= 1;
            if self.startup_remaining == 0 {
                self.counts.startup_bits += u64::from(STARTUP_SAMPLES);
            }
            return;
        }
        if self.block_bits % 8 == 0 {
            self.block.push(0);
        }
        if let Some(last) = self.block.last_mut() {
            *last |= (b & 1) << (7 - self.block_bits % 8);
        }
        self.block_bits += 1;
        if self.block_bits == self.input_bits {
            // SP 800-90B 3.1.5.1.1 vetted conditioning: SHA-256 over a
            // fixed-length input (the last byte zero-padded) carrying
            // 2 × 256 bits of min-entropy at the assessed rate.
            self.out.extend_from_slice(&Sha256::digest(&self.block));
            self.counts.output_bytes += u64::from(OUTPUT_BITS / 8);
            self.block.clear();
            self.block_bits = 0;
        }
    }
}

/// A simulated counter and its pipeline, fast-forwarded on demand.
#[derive(Debug)]
pub struct DecaySim {
    counter: GmCounter,
    pipeline: RawPipeline,
    bias: Option<f64>,
    extractor: Extractor,
}

impl DecaySim {
    pub fn new(config: &DecayConfig, rng: StdRng) -> Self {
        DecaySim {
            counter: GmCounter::new(config, rng),
            pipeline: RawPipeline::default(),
            bias: match config.fault {
                Some(CounterFault::RawBias(p)) => Some(p.clamp(0.0, 1.0)),
                _ => None,
            },
            extractor: Extractor::default(),
        }
    }

    pub fn pipeline(&self) -> &RawPipeline {
        &self.pipeline
    }

    pub fn counter(&self) -> &GmCounter {
        &self.counter
    }

    /// One registered event through extraction and the pipeline.
    pub fn step(&mut self) {
        let t = self.counter.next_event();
        let Some(mut sample) = self.extractor.push(t) else {
            return;
        };
        if let (Some(p), RawSample::Bit(_)) = (self.bias, sample) {
            sample = RawSample::Bit(u8::from(self.counter.rng.gen_bool(p)));
        }
        self.pipeline.push_sample(sample);
    }

    /// Runs the counter until `n` conditioned bytes are ready or `budget`
    /// of simulated time has passed; returns what is ready (up to `n`) and
    /// the simulated time spent.
    pub fn produce(&mut self, n: usize, budget: Duration) -> (Vec<u8>, Duration) {
        let start = self.counter.elapsed();
        while self.pipeline.ready() < n && self.counter.elapsed() - start < budget {
            self.step();
        }
        (self.pipeline.take(n), self.counter.elapsed() - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn sim(config: DecayConfig, seed: u64) -> DecaySim {
        DecaySim::new(&config, StdRng::seed_from_u64(seed))
    }

    #[test]
    fn the_conditioner_input_carries_twice_the_output_entropy() {
        assert_eq!(conditioner_input_bits(1.0), 512);
        assert_eq!(conditioner_input_bits(0.9), 569);
        let bits = conditioner_input_bits(RAW_MIN_ENTROPY_PER_BIT);
        assert!(bits as f64 * RAW_MIN_ENTROPY_PER_BIT >= 2.0 * f64::from(OUTPUT_BITS));
    }

    #[test]
    fn the_raw_cutoffs_are_the_documented_numbers() {
        assert_eq!(
            RawCutoffs::default(),
            RawCutoffs {
                rct: 46,
                apt: 661,
                tie_run: 21,
                saturation: 358,
            }
        );
    }

    #[test]
    fn intervals_are_compared_in_non_overlapping_pairs() {
        let mut e = Extractor::default();
        // Intervals 5, 7 | 3, 3 | 9, 2.
        let out: Vec<_> = [0u64, 5, 12, 15, 18, 27, 29]
            .iter()
            .filter_map(|&t| e.push(t))
            .collect();
        assert_eq!(out, [RawSample::Bit(0), RawSample::Tie, RawSample::Bit(1)]);
    }

    #[test]
    fn the_registered_rate_matches_the_dead_time_formula() {
        // Fast-forwarded, not paced: 200,000 events.
        for rate in [1_000.0, 5_000.0, 10_000.0] {
            let config = DecayConfig {
                count_rate: rate,
                ..DecayConfig::default()
            };
            let mut c = GmCounter::new(&config, StdRng::seed_from_u64(7));
            for _ in 0..200_000 {
                c.next_event();
            }
            let measured = c.events() as f64 / c.elapsed().as_secs_f64();
            let expected = config.registered_rate();
            // The relative standard error of 200,000 exponential-ish
            // intervals is under 0.23%; 1% is > 4 sigma.
            assert!(
                (measured / expected - 1.0).abs() < 0.01,
                "rate {rate}: measured {measured}, expected {expected}"
            );
        }
    }

    #[test]
    fn intervals_past_the_dead_time_are_exponential() {
        // P(I - dead > x) = exp(-n x): check the survival at 0.5, 1 and 2
        // mean gaps, and that no interval is shorter than the dead time.
        let config = DecayConfig::default();
        let mut c = GmCounter::new(&config, StdRng::seed_from_u64(11));
        let mean_gap_ticks = 1e6 / config.count_rate; // 1 µs ticks
        let dead_ticks = 100.0;
        let n = 200_000;
        let mut last = c.next_event();
        let mut above = [0u32; 3];
        let mut shortest = u64::MAX;
        for _ in 0..n {
            let t = c.next_event();
            let i = t - last;
            last = t;
            shortest = shortest.min(i);
            for (k, m) in [0.5, 1.0, 2.0].iter().enumerate() {
                if i as f64 - dead_ticks > m * mean_gap_ticks {
                    above[k] += 1;
                }
            }
        }
        // Truncation to ticks may shorten an interval by one tick.
        assert!(shortest + 1 >= 100, "shortest interval {shortest} ticks");
        for (k, m) in [0.5f64, 1.0, 2.0].iter().enumerate() {
            let got = f64::from(above[k]) / f64::from(n);
            let want = (-m).exp();
            assert!(
                (got - want).abs() < 0.01,
                "survival at {m}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn raw_bits_are_unbiased_and_ties_as_rare_as_predicted() {
        let config = DecayConfig::default();
        let mut s = sim(config, 3);
        for _ in 0..400_000 {
            s.step();
        }
        let c = s.pipeline().counts();
        let mut ones = 0u64;
        // Count ones directly from a second, identical run's extractor.
        let mut counter = GmCounter::new(&config, StdRng::seed_from_u64(3));
        let mut e = Extractor::default();
        for _ in 0..400_000 {
            if let Some(RawSample::Bit(1)) = e.push(counter.next_event()) {
                ones += 1;
            }
        }
        let share = ones as f64 / c.raw_bits as f64;
        // ~200,000 bits: sd of the share 0.0011; 0.005 is > 4 sigma.
        assert!((share - 0.5).abs() < 0.005, "share of ones {share}");
        let tie = c.ties as f64 / (c.ties + c.raw_bits) as f64;
        let want = config.expected_tie_probability();
        assert!((tie - want).abs() < 0.001, "ties {tie} vs {want}");
        // The min-entropy estimate from the most common value (SP 800-90B
        // 6.3.1 without the confidence bound) is well above the claim.
        let h = -(share.max(1.0 - share)).log2();
        assert!(h > RAW_MIN_ENTROPY_PER_BIT, "estimated H {h}");
    }

    #[test]
    fn conditioned_output_passes_monobit_and_byte_chi_square() {
        let mut s = sim(DecayConfig::default(), 5);
        let (bytes, _) = s.produce(64 * 1024, Duration::from_secs(100_000));
        assert_eq!(bytes.len(), 64 * 1024);
        let ones: u64 = bytes.iter().map(|b| u64::from(b.count_ones())).sum();
        let n = bytes.len() as f64 * 8.0;
        // Monobit: |ones - n/2| / sqrt(n/4) < 4.
        let z = (ones as f64 - n / 2.0) / (n / 4.0).sqrt();
        assert!(z.abs() < 4.0, "monobit z = {z}");
        let mut counts = [0u32; 256];
        for &b in &bytes {
            counts[b as usize] += 1;
        }
        let e = bytes.len() as f64 / 256.0;
        let chi2: f64 = counts.iter().map(|&c| (f64::from(c) - e).powi(2) / e).sum();
        // 255 degrees of freedom: P(chi2 > 340) ≈ 3 × 10^-4.
        assert!((180.0..340.0).contains(&chi2), "chi-square {chi2}");
        // And the node's own tests accept it.
        let mut node = crate::health::HealthTests::new(crate::health::HealthConfig::default());
        assert_eq!(node.check(&bytes), Ok(()));
        // Dice derived from it the way draws are (geiger-derive-v1) are
        // uniform by the project's derivation check (protocol/tests/
        // statistics.rs): chi-square under the p = 1e-6 critical value.
        let spec = geiger_protocol::Spec::Integers {
            min: 1,
            max: 6,
            count: 7_000,
            unique: false,
        };
        let values = match geiger_protocol::derive::derive(&spec, &bytes)
            .expect("enough entropy")
            .result
        {
            geiger_protocol::derive::DrawResult::Values { values } => values,
            other => panic!("unexpected result {other:?}"),
        };
        let mut faces = [0u32; 6];
        for v in values {
            faces[(v - 1) as usize] += 1;
        }
        let e = 7_000.0 / 6.0;
        let chi2: f64 = faces.iter().map(|&c| (f64::from(c) - e).powi(2) / e).sum();
        assert!(chi2 < 35.888, "dice chi-square {chi2}: {faces:?}");
    }

    /// Raw bits in a device-day at the default count rate.
    fn raw_bits_per_day() -> f64 {
        DecayConfig::default().expected_raw_bits_per_second() * 86_400.0
    }

    fn run_healthy(raw_bits: u64, seed: u64) -> RawCounts {
        let mut s = sim(DecayConfig::default(), seed);
        while s.pipeline().counts().raw_bits < raw_bits {
            s.step();
            // Drain, so the output buffer stays small.
            if s.pipeline.ready() > 1 << 20 {
                s.pipeline.take(usize::MAX);
            }
        }
        s.pipeline().counts()
    }

    #[test]
    fn a_healthy_counter_never_fails_the_raw_tests() {
        // A quarter of a device-day of raw bits (3.6 × 10^7, ≈ 6 s in a
        // debug build); the full day is the ignored test below.
        let c = run_healthy(raw_bits_per_day() as u64 / 4, 13);
        assert_eq!(c.failures, 0, "{c:?}");
        assert_eq!(c.rejected, 0);
        assert!(raw_bits_per_day() > 1.4e8);
    }

    #[test]
    #[ignore = "measurement: a device-day of raw bits, minutes in a debug build"]
    fn a_healthy_counter_runs_a_device_day_without_a_failure() {
        let c = run_healthy(raw_bits_per_day() as u64, 17);
        eprintln!("device-day: {c:?}");
        assert_eq!(c.failures, 0, "{c:?}");
    }

    #[test]
    fn output_waits_for_the_start_up_test() {
        let mut s = sim(DecayConfig::default(), 19);
        while s.pipeline().counts().raw_bits < u64::from(STARTUP_SAMPLES) {
            assert!(!s.pipeline().healthy());
            s.step();
            assert_eq!(s.pipeline().ready(), 0);
        }
        assert!(s.pipeline().healthy());
        let (bytes, _) = s.produce(32, Duration::from_secs(10));
        assert_eq!(bytes.len(), 32);
        assert_eq!(s.pipeline().counts().startup_bits, 1024);
        assert!(s.pipeline().counts().raw_bits >= 1024 + 569);
    }

    #[test]
    fn a_counter_stuck_on_fixed_intervals_is_caught_by_the_tie_run_test() {
        let config = DecayConfig {
            fault: Some(CounterFault::FixedIntervalAfter(10_000)),
            ..DecayConfig::default()
        };
        let mut s = sim(config, 23);
        while s.counter().events() < 10_000 {
            s.step();
        }
        assert!(s.pipeline().ready() > 0, "healthy before the fault");
        assert_eq!(s.pipeline().counts().failures, 0);
        let events_at_fault = s.counter().events();
        while s.pipeline().counts().failures == 0 {
            s.step();
        }
        // 21 ties take 42 events (plus up to 2 to finish the pair in
        // progress): ≈ 13 ms at 3,333 registered counts/s.
        let took = s.counter().events() - events_at_fault;
        assert!(took <= 44, "caught after {took} events");
        assert!(matches!(
            s.pipeline().last_failure(),
            Some(RawFailure::TieRun { .. })
        ));
        // Nothing more comes out while it stays stuck (once what was
        // conditioned before the fault is taken).
        s.pipeline.take(usize::MAX);
        let (after, _) = s.produce(32, Duration::from_secs(60));
        assert!(after.is_empty());
        assert!(s.pipeline().counts().failures > 1000);
    }

    #[test]
    fn a_saturated_counter_is_named_by_the_saturation_test_within_one_window() {
        // 10^7 true counts/s on 1 µs ticks: the tube is dead nearly all
        // the time, every interval is the dead time plus a fraction of a
        // tick, and about half the pairs tie.
        let config = DecayConfig {
            count_rate: 1e7,
            ..DecayConfig::default()
        };
        let mut s = sim(config, 29);
        while s.pipeline().counts().failures == 0 {
            s.step();
            assert!(
                s.counter().events() < 4 * u64::from(RAW_APT_WINDOW) + 4,
                "not caught within one window of interval pairs: {:?}",
                s.pipeline().counts()
            );
        }
        assert!(
            matches!(
                s.pipeline().last_failure(),
                Some(RawFailure::Saturated { .. })
            ),
            "{:?}",
            s.pipeline().last_failure()
        );
        // It stays flagged while it stays saturated: nothing is served.
        s.pipeline.take(usize::MAX);
        let (after, _) = s.produce(32, Duration::from_secs(5));
        assert!(after.is_empty());
    }

    #[test]
    #[ignore = "measurement: the tie probability of the simulated counter by true rate"]
    fn measure_tie_probability_by_rate() {
        for rate in [1e4, 1e5, 5e5, 1e6, 2e6, 5e6, 1e7] {
            let config = DecayConfig {
                count_rate: rate,
                ..DecayConfig::default()
            };
            let mut s = sim(config, 37);
            while s.pipeline().counts().raw_bits + s.pipeline().counts().ties < 1_000_000 {
                s.step();
            }
            let c = s.pipeline().counts();
            eprintln!(
                "true rate {rate:>9.0}/s: P(tie) {:.4} (formula {:.4}), raw failures {}",
                c.ties as f64 / (c.raw_bits + c.ties) as f64,
                config.expected_tie_probability(),
                c.failures
            );
        }
    }

    #[test]
    fn a_counter_at_a_quarter_tie_probability_passes_the_saturation_test() {
        // The edge of what the tests assume, P(tie) just under 1/4 (about
        // 5.1 × 10^5 true counts/s on 1 µs ticks), is not called saturated
        // in a device-hour of its raw samples.
        let mut health = RawHealth::new(RawCutoffs::default());
        let mut rng = StdRng::seed_from_u64(31);
        for _ in 0..(1u64 << 24) {
            let sample = if rng.gen_bool(0.24) {
                RawSample::Tie
            } else {
                RawSample::Bit(rng.gen_range(0..2))
            };
            if let Some(f @ RawFailure::Saturated { .. }) = health.feed(sample) {
                panic!("{f}");
            }
        }
    }

    #[test]
    fn a_biased_counter_is_caught_within_a_few_windows() {
        // A window fails only if its first bit is the favoured value, so
        // P(1) = 0.7 escapes a window with probability 0.3, and 0.65 with
        // ≈ 0.58 (docs/HEALTH.md): 5 and 10 windows miss with P < 0.005.
        for (p, windows) in [(0.7, 5), (0.65, 10)] {
            let config = DecayConfig {
                fault: Some(CounterFault::RawBias(p)),
                ..DecayConfig::default()
            };
            let mut s = sim(config, 29);
            while s.pipeline().counts().failures == 0
                && s.pipeline().counts().raw_bits < u64::from(RAW_APT_WINDOW) * windows
            {
                s.step();
            }
            assert!(
                matches!(
                    s.pipeline().last_failure(),
                    Some(RawFailure::AdaptiveProportion { value: 1, .. })
                ),
                "P(1) = {p}: {:?} after {} bits",
                s.pipeline().last_failure(),
                s.pipeline().counts().raw_bits
            );
        }
    }

    #[test]
    fn a_counter_whose_intervals_only_grow_fails_the_repetition_count_test() {
        let mut p = RawPipeline::default();
        // Intervals 1, 2, 3, ...: every pair reads t1 < t2, all zeros.
        let mut t = 0u64;
        for i in 1..=200u64 {
            t += i;
            p.push_timestamp(t);
        }
        assert_eq!(
            p.last_failure(),
            Some(RawFailure::RepetitionCount {
                value: 0,
                run: 99,
                cutoff: 46
            })
        );
        assert_eq!(p.counts().failures, 99 - 45);
    }

    #[test]
    #[ignore = "measurement: raw and conditioned throughput at 1,000 and 10,000 counts/s"]
    fn measure_throughput() {
        for rate in [1_000.0, 5_000.0, 10_000.0] {
            let config = DecayConfig {
                count_rate: rate,
                ..DecayConfig::default()
            };
            let mut s = sim(config, 31);
            let wall = std::time::Instant::now();
            let (bytes, took) = s.produce(64 * 1024, Duration::from_secs(1_000_000));
            let wall = wall.elapsed();
            let c = s.pipeline().counts();
            let secs = took.as_secs_f64();
            eprintln!(
                "true rate {rate}/s: registered {:.1}/s, raw {:.1} bits/s (expected {:.1}), \
                 conditioned {:.2} B/s (expected {:.2}), ties {:.3}%, simulated {:.0} s in {:.2} s wall \
                 ({:.0}x real time)",
                s.counter().events() as f64 / secs,
                c.raw_bits as f64 / secs,
                config.expected_raw_bits_per_second(),
                bytes.len() as f64 / secs,
                config.expected_output_bytes_per_second(),
                100.0 * c.ties as f64 / (c.ties + c.raw_bits) as f64,
                secs,
                wall.as_secs_f64(),
                secs / wall.as_secs_f64(),
            );
        }
    }
}
