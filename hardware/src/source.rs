//! Entropy sources a device agent can front, and the faults it can inject.
//!
//! - `sim`: the operating system's randomness (getrandom via `OsRng`),
//!   rate-limited so a simulated device behaves like real hardware (default
//!   32 KiB/s) rather than like an infinitely fast one.
//! - `file:PATH`: any entropy character device (e.g. `/dev/hwrng`). Reads
//!   block, possibly for long, so they run on a dedicated thread and never
//!   on the async runtime.
//! - `decay`: a simulated Geiger–Müller counter whose event times go through
//!   raw-bit extraction, raw health tests and a SHA-256 conditioner on the
//!   device ([`crate::decay`]); paced to real time by its simulated clock.
//! - `timestamps:PATH`: a real counter delivering event timestamps (text,
//!   one integer per line, in the counter's ticks) on a serial or character
//!   device or a pipe; through the very same pipeline as `decay`.
//!
//! Fault modes, for tests and drills: output stuck on one byte after N
//! bytes, bits biased towards 1, and periodic stalls. (Dropping the
//! connection is a link fault; the agent does that.)

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::{OsRng, StdRng};
use rand::{Rng, RngCore, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::decay::{DecayConfig, DecaySim, RawCounts, RawPipeline, MAX_SIM_STEP};

/// Default simulator rate: a few tens of KiB/s, like a decay counter with a
/// strong source.
pub const DEFAULT_SIM_RATE: u64 = 32 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    Sim,
    File(PathBuf),
    /// A simulated decay counter (docs/HEALTH.md, "The decay source").
    Decay(DecayConfig),
    /// A real counter's event timestamps, one integer (ticks) per line.
    Timestamps(PathBuf),
}

impl FromStr for SourceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "sim" {
            Ok(SourceKind::Sim)
        } else if s == "decay" {
            Ok(SourceKind::Decay(DecayConfig::default()))
        } else if let Some(path) = s.strip_prefix("file:").filter(|p| !p.is_empty()) {
            Ok(SourceKind::File(PathBuf::from(path)))
        } else if let Some(path) = s.strip_prefix("timestamps:").filter(|p| !p.is_empty()) {
            Ok(SourceKind::Timestamps(PathBuf::from(path)))
        } else {
            Err(format!(
                "unknown source {s:?}: use `sim`, `decay`, `file:PATH` or `timestamps:PATH`"
            ))
        }
    }
}

/// Faults injected into the byte stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// After this many bytes, repeat the last byte forever.
    pub stuck_after: Option<u64>,
    /// Replace the output with bits that are 1 with this probability.
    pub bias_one: Option<f64>,
    /// Every `.0`, produce nothing for `.1`.
    pub stall: Option<(Duration, Duration)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    pub kind: SourceKind,
    /// Bytes per second; `None` is as fast as the source goes.
    pub rate: Option<u64>,
    pub faults: Faults,
}

impl SourceConfig {
    pub fn sim() -> Self {
        SourceConfig {
            kind: SourceKind::Sim,
            rate: Some(DEFAULT_SIM_RATE),
            faults: Faults::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open entropy source {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the entropy source failed: {0}")]
    Read(std::io::Error),
    #[error("the entropy source ended")]
    Ended,
}

/// What the source has produced since it opened, for the agent's metrics.
/// Raw counters stay zero for sources without a raw stage (`sim`, `file:`).
#[derive(Debug)]
pub struct SourceStats {
    opened: std::time::Instant,
    events: AtomicU64,
    raw_bits: AtomicU64,
    raw_ties: AtomicU64,
    raw_rejected: AtomicU64,
    raw_failures: AtomicU64,
    output_bytes: AtomicU64,
}

impl Default for SourceStats {
    fn default() -> Self {
        SourceStats {
            opened: std::time::Instant::now(),
            events: AtomicU64::new(0),
            raw_bits: AtomicU64::new(0),
            raw_ties: AtomicU64::new(0),
            raw_rejected: AtomicU64::new(0),
            raw_failures: AtomicU64::new(0),
            output_bytes: AtomicU64::new(0),
        }
    }
}

/// A snapshot of [`SourceStats`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceSnapshot {
    pub seconds: f64,
    /// Registered counter events.
    pub events: u64,
    pub raw_bits: u64,
    pub raw_ties: u64,
    /// Raw samples (bits, or ties that failed the tie-run test) discarded
    /// because a raw health test failed.
    pub raw_rejected: u64,
    pub raw_failures: u64,
    /// Bytes handed to the chunk path (conditioned, for `decay`).
    pub output_bytes: u64,
}

impl From<SourceSnapshot> for crate::frame::SourceReport {
    fn from(s: SourceSnapshot) -> Self {
        crate::frame::SourceReport {
            uptime_ms: (s.seconds * 1000.0) as u64,
            events: s.events,
            raw_samples: s.raw_bits + s.raw_ties,
            raw_bits: s.raw_bits,
            raw_rejected: s.raw_rejected,
            output_bytes: s.output_bytes,
        }
    }
}

impl SourceStats {
    pub fn snapshot(&self) -> SourceSnapshot {
        SourceSnapshot {
            seconds: self.opened.elapsed().as_secs_f64(),
            events: self.events.load(Ordering::Relaxed),
            raw_bits: self.raw_bits.load(Ordering::Relaxed),
            raw_ties: self.raw_ties.load(Ordering::Relaxed),
            raw_rejected: self.raw_rejected.load(Ordering::Relaxed),
            raw_failures: self.raw_failures.load(Ordering::Relaxed),
            output_bytes: self.output_bytes.load(Ordering::Relaxed),
        }
    }

    fn set_raw(&self, events: u64, c: RawCounts) {
        self.events.store(events, Ordering::Relaxed);
        self.raw_bits.store(c.raw_bits, Ordering::Relaxed);
        self.raw_ties.store(c.ties, Ordering::Relaxed);
        self.raw_rejected.store(c.rejected, Ordering::Relaxed);
        self.raw_failures.store(c.failures, Ordering::Relaxed);
    }
}

/// The decay simulator and what it produced ahead of its (real) time.
struct DecayState {
    sim: Box<DecaySim>,
    pending: Vec<u8>,
    /// When `pending` may be released: the simulated time it took, laid
    /// onto real time.
    ready_at: Option<Instant>,
    watch: RawWatch,
}

/// A real counter's timestamps and the pipeline they go through.
struct TimestampState {
    rx: mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
    /// The line being read (bounded: a timestamp is at most 20 digits).
    line: Vec<u8>,
    events: u64,
    pipeline: Box<RawPipeline>,
    watch: RawWatch,
}

/// Publishes a raw pipeline's counts and logs its health on transitions
/// only (a stuck counter fails thousands of times a second).
#[derive(Default)]
struct RawWatch {
    failures_seen: u64,
    /// A failure was logged and no start-up test has passed since.
    failing: bool,
    /// A start-up test ever passed.
    started: bool,
}

impl RawWatch {
    fn observe(&mut self, events: u64, pipeline: &RawPipeline, stats: &SourceStats) {
        stats.set_raw(events, pipeline.counts());
        let failures = pipeline.counts().failures;
        if failures > self.failures_seen && !self.failing {
            if let Some(failure) = pipeline.last_failure() {
                tracing::warn!(%failure, "decay source failed a raw health test: output withheld until a new start-up test passes");
            }
            self.failing = true;
        }
        self.failures_seen = failures;
        if pipeline.healthy() && (self.failing || !self.started) {
            tracing::info!("decay source passed its start-up test");
            self.failing = false;
            self.started = true;
        }
    }
}

enum Inner {
    Sim,
    Decay(DecayState),
    Timestamps(TimestampState),
    /// Blocks from the reader thread; the thread stops when this is dropped.
    File {
        rx: mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
        pending: Vec<u8>,
    },
}

/// An open source. `read` is cancel-safe: bytes gathered before a cancelled
/// call are kept for the next one.
pub struct Source {
    inner: Inner,
    rate: Option<u64>,
    next_at: Option<Instant>,
    faults: Faults,
    emitted: u64,
    last: u8,
    bias_rng: StdRng,
    started: Instant,
    stats: Arc<SourceStats>,
}

impl Source {
    pub fn open(config: &SourceConfig) -> Result<Self, SourceError> {
        let inner = match &config.kind {
            SourceKind::Sim => Inner::Sim,
            SourceKind::Decay(decay) => Inner::Decay(DecayState {
                sim: Box::new(DecaySim::new(
                    decay,
                    StdRng::from_rng(OsRng)
                        .map_err(|e| SourceError::Read(std::io::Error::other(e)))?,
                )),
                pending: Vec::new(),
                ready_at: None,
                watch: RawWatch::default(),
            }),
            SourceKind::Timestamps(path) => {
                let file = File::open(path).map_err(|source| SourceError::Open {
                    path: path.clone(),
                    source,
                })?;
                Inner::Timestamps(TimestampState {
                    rx: spawn_reader(file, path.clone()),
                    line: Vec::new(),
                    events: 0,
                    pipeline: Box::default(),
                    watch: RawWatch::default(),
                })
            }
            SourceKind::File(path) => {
                let file = File::open(path).map_err(|source| SourceError::Open {
                    path: path.clone(),
                    source,
                })?;
                Inner::File {
                    rx: spawn_reader(file, path.clone()),
                    pending: Vec::new(),
                }
            }
        };
        Ok(Source {
            inner,
            rate: config.rate.filter(|&r| r > 0),
            next_at: None,
            faults: config.faults.clone(),
            emitted: 0,
            last: 0,
            bias_rng: StdRng::from_rng(OsRng).unwrap_or_else(|_| StdRng::seed_from_u64(0)),
            started: Instant::now(),
            stats: Arc::new(SourceStats::default()),
        })
    }

    /// The source's production counters, shared with the agent's metrics.
    pub fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }

    /// Reads exactly `n` bytes, waiting for the rate limit and any stall.
    pub async fn read(&mut self, n: usize) -> Result<Vec<u8>, SourceError> {
        self.wait_for_stall().await;
        if let Some(at) = self.next_at {
            tokio::time::sleep_until(at).await;
        }
        let mut bytes = match &mut self.inner {
            Inner::Sim => {
                let mut buf = vec![0u8; n];
                OsRng
                    .try_fill_bytes(&mut buf)
                    .map_err(|e| SourceError::Read(std::io::Error::other(e)))?;
                buf
            }
            Inner::Decay(d) => read_decay(d, n, &self.stats).await,
            Inner::Timestamps(t) => read_timestamps(t, n, &self.stats).await?,
            Inner::File { rx, pending } => {
                while pending.len() < n {
                    match rx.recv().await {
                        Some(Ok(block)) => pending.extend_from_slice(&block),
                        Some(Err(e)) => return Err(SourceError::Read(e)),
                        None => return Err(SourceError::Ended),
                    }
                }
                let rest = pending.split_off(n);
                std::mem::replace(pending, rest)
            }
        };
        if let Some(rate) = self.rate {
            // Pace from the later of "now" and the previous deadline: an idle
            // device does not bank a burst, as a real counter would not.
            let now = Instant::now();
            let base = self.next_at.map_or(now, |at| at.max(now));
            self.next_at = Some(base + Duration::from_secs_f64(n as f64 / rate as f64));
        }
        self.apply_faults(&mut bytes);
        self.stats
            .output_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    async fn wait_for_stall(&mut self) {
        let Some((every, stall_for)) = self.faults.stall else {
            return;
        };
        let period = every + stall_for;
        if period.is_zero() {
            return;
        }
        let elapsed = self.started.elapsed();
        let into = Duration::from_nanos((elapsed.as_nanos() % period.as_nanos()) as u64);
        if into >= every {
            let resume = Instant::now() + (period - into);
            tracing::info!(
                for_ms = (period - into).as_millis() as u64,
                "source stalls (fault mode)"
            );
            tokio::time::sleep_until(resume).await;
        }
    }

    fn apply_faults(&mut self, bytes: &mut [u8]) {
        if let Some(p) = self.faults.bias_one {
            let p = p.clamp(0.0, 1.0);
            for b in bytes.iter_mut() {
                *b = (0..8).fold(0u8, |acc, _| {
                    (acc << 1) | u8::from(self.bias_rng.gen_bool(p))
                });
            }
        }
        if let Some(after) = self.faults.stuck_after {
            for b in bytes.iter_mut() {
                if self.emitted >= after {
                    *b = self.last;
                }
                self.last = *b;
                self.emitted += 1;
            }
        }
    }
}

/// Runs the simulated counter until `n` conditioned bytes are ready, and
/// releases them when the simulated time they took has passed in real time.
/// Cancel-safe: every await leaves `d` consistent, and bytes gathered before
/// a cancelled call wait in `pending` for the next one.
async fn read_decay(d: &mut DecayState, n: usize, stats: &SourceStats) -> Vec<u8> {
    loop {
        if let Some(at) = d.ready_at {
            tokio::time::sleep_until(at).await;
        }
        if d.pending.len() >= n {
            let rest = d.pending.split_off(n);
            return std::mem::replace(&mut d.pending, rest);
        }
        // Bounded by MAX_SIM_STEP of simulated time, so a counter that
        // yields nothing (stuck) is paced too instead of spinning here.
        let (bytes, took) = d.sim.produce(n - d.pending.len(), MAX_SIM_STEP);
        d.pending.extend_from_slice(&bytes);
        // Like the rate limit: pace from the later of now and the previous
        // deadline, so an idle device does not bank a burst.
        let now = Instant::now();
        d.ready_at = Some(d.ready_at.map_or(now, |at| at.max(now)) + took);
        d.watch
            .observe(d.sim.counter().events(), d.sim.pipeline(), stats);
    }
}

/// Reads timestamps until `n` conditioned bytes are ready. Cancel-safe:
/// the only await is the channel's `recv`, and each block it returns is
/// processed before the next await.
async fn read_timestamps(
    t: &mut TimestampState,
    n: usize,
    stats: &SourceStats,
) -> Result<Vec<u8>, SourceError> {
    while t.pipeline.ready() < n {
        let block = match t.rx.recv().await {
            Some(Ok(block)) => block,
            Some(Err(e)) => return Err(SourceError::Read(e)),
            None => return Err(SourceError::Ended),
        };
        for &b in &block {
            if b != b'\n' {
                if t.line.len() >= 64 {
                    return Err(SourceError::Read(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "a timestamp line longer than 64 bytes",
                    )));
                }
                t.line.push(b);
                continue;
            }
            let text = String::from_utf8_lossy(&t.line);
            let text = text.trim();
            if !text.is_empty() && !text.starts_with('#') {
                let ts: u64 = text.parse().map_err(|_| {
                    SourceError::Read(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("not a timestamp: {text:?}"),
                    ))
                })?;
                t.events += 1;
                t.pipeline.push_timestamp(ts);
            }
            t.line.clear();
        }
        t.watch.observe(t.events, &t.pipeline, stats);
    }
    Ok(t.pipeline.take(n))
}

fn spawn_reader(mut file: File, path: PathBuf) -> mpsc::Receiver<Result<Vec<u8>, std::io::Error>> {
    // Capacity 2: the thread reads at most two blocks ahead, then blocks on
    // the channel, so an idle link does not drain the device into memory.
    let (tx, rx) = mpsc::channel(2);
    let spawned = std::thread::Builder::new()
        .name("entropy-reader".into())
        .spawn(move || loop {
            let mut buf = vec![0u8; 4096];
            let msg = match file.read(&mut buf) {
                Ok(0) => {
                    tracing::warn!(path = %path.display(), "entropy source reached end of file");
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    Ok(buf)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = msg.is_err();
            if tx.blocking_send(msg).is_err() || failed {
                return;
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the entropy reader thread");
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_parse() {
        assert_eq!("sim".parse::<SourceKind>(), Ok(SourceKind::Sim));
        assert_eq!(
            "file:/dev/hwrng".parse::<SourceKind>(),
            Ok(SourceKind::File("/dev/hwrng".into()))
        );
        assert!("file:".parse::<SourceKind>().is_err());
        assert!("hwrng".parse::<SourceKind>().is_err());
    }

    #[tokio::test]
    async fn the_simulator_is_rate_limited() {
        let mut s = Source::open(&SourceConfig {
            rate: Some(64 * 1024),
            ..SourceConfig::sim()
        })
        .unwrap();
        let start = std::time::Instant::now();
        for _ in 0..5 {
            assert_eq!(s.read(4096).await.unwrap().len(), 4096);
        }
        // Four waits of 4096 / 65536 s after the first read.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(240), "took {took:?}");
        // Only rules out an unpaced source; a busy machine adds time.
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }

    #[tokio::test]
    async fn a_real_counters_timestamps_go_through_the_same_pipeline_as_the_simulation() {
        use crate::decay::GmCounter;
        // Timestamps from the simulated counter, written as a real counter
        // would deliver them, give exactly the simulation's output.
        let config = DecayConfig::default();
        let mut counter = GmCounter::new(&config, StdRng::seed_from_u64(41));
        let mut text = String::from("# event times in µs\n");
        for _ in 0..20_000 {
            text.push_str(&format!("{}\n", counter.next_event()));
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.txt");
        std::fs::write(&path, text).unwrap();
        let mut s = Source::open(&SourceConfig {
            kind: format!("timestamps:{}", path.display()).parse().unwrap(),
            rate: None,
            faults: Faults::default(),
        })
        .unwrap();
        let from_file = s.read(256).await.unwrap();
        let mut sim = DecaySim::new(&config, StdRng::seed_from_u64(41));
        let (simulated, _) = sim.produce(256, Duration::from_secs(100));
        assert_eq!(from_file, simulated);
        assert!(s.stats().snapshot().raw_bits > 1024 + 8 * 569);
        // 20,000 events give ≈ 10,000 raw bits ≈ 500 bytes: then it ends.
        assert!(matches!(s.read(4096).await, Err(SourceError::Ended)));
    }

    #[tokio::test]
    async fn a_line_that_is_not_a_timestamp_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.txt");
        std::fs::write(&path, "1\n2\nthree\n").unwrap();
        let mut s = Source::open(&SourceConfig {
            kind: SourceKind::Timestamps(path),
            rate: None,
            faults: Faults::default(),
        })
        .unwrap();
        let err = s.read(32).await.unwrap_err();
        assert!(err.to_string().contains("three"), "{err}");
    }

    #[test]
    fn decay_parses_with_the_default_counter() {
        assert_eq!(
            "decay".parse::<SourceKind>(),
            Ok(SourceKind::Decay(DecayConfig::default()))
        );
    }

    #[tokio::test]
    async fn a_decay_source_is_paced_by_its_simulated_clock_and_reports_its_production() {
        // A fast counter (100,000 raw bits/s) so the test takes well under
        // a second: 3,200 bytes are 100 conditioner blocks of 569 raw bits
        // after the 1,024-bit start-up test, ≈ 0.58 s of simulated time.
        let decay = DecayConfig {
            count_rate: 200_000.0,
            dead_time: Duration::ZERO,
            tick: Duration::from_nanos(10),
            fault: None,
        };
        let mut s = Source::open(&SourceConfig {
            kind: SourceKind::Decay(decay),
            rate: None,
            faults: Faults::default(),
        })
        .unwrap();
        let start = std::time::Instant::now();
        let bytes = s.read(3_200).await.unwrap();
        let took = start.elapsed();
        assert_eq!(bytes.len(), 3_200);
        assert!(took >= Duration::from_millis(450), "took {took:?}");
        assert!(took < Duration::from_secs(15), "took {took:?}");
        let snap = s.stats().snapshot();
        assert_eq!(snap.output_bytes, 3_200);
        assert!(snap.raw_bits >= 1_024 + 100 * 569, "{snap:?}");
        assert!(snap.events >= 2 * snap.raw_bits, "{snap:?}");
        assert_eq!((snap.raw_failures, snap.raw_rejected), (0, 0));
        let rates = crate::frame::SourceReport::from(snap);
        assert!(rates.raw_bits_per_second() > 0.0 && rates.rejected_fraction() == 0.0);
    }

    #[tokio::test]
    async fn a_stuck_decay_counter_produces_nothing_and_counts_its_failures() {
        let decay = DecayConfig {
            fault: Some(crate::decay::CounterFault::FixedIntervalAfter(0)),
            ..DecayConfig::default()
        };
        let mut s = Source::open(&SourceConfig {
            kind: SourceKind::Decay(decay),
            rate: None,
            faults: Faults::default(),
        })
        .unwrap();
        let read = tokio::time::timeout(Duration::from_millis(1500), s.read(32)).await;
        assert!(read.is_err(), "a stuck counter produced output");
        let snap = s.stats().snapshot();
        assert_eq!(snap.raw_bits, 0);
        assert!(snap.raw_failures > 100, "{snap:?}");
        assert!(
            crate::frame::SourceReport::from(snap).rejected_fraction() > 0.9,
            "{snap:?}"
        );
        assert_eq!(snap.output_bytes, 0);
    }

    #[tokio::test]
    async fn a_stuck_source_repeats_one_byte_after_n_bytes() {
        let mut s = Source::open(&SourceConfig {
            rate: None,
            faults: Faults {
                stuck_after: Some(10),
                ..Faults::default()
            },
            ..SourceConfig::sim()
        })
        .unwrap();
        let a = s.read(16).await.unwrap();
        let b = s.read(16).await.unwrap();
        assert!(a[10..].iter().chain(&b).all(|&x| x == a[9]));
    }

    #[tokio::test]
    async fn a_biased_source_has_the_configured_share_of_ones() {
        let mut s = Source::open(&SourceConfig {
            rate: None,
            faults: Faults {
                bias_one: Some(0.9),
                ..Faults::default()
            },
            ..SourceConfig::sim()
        })
        .unwrap();
        let bytes = s.read(4096).await.unwrap();
        let ones: u32 = bytes.iter().map(|b| b.count_ones()).sum();
        let share = f64::from(ones) / (4096.0 * 8.0);
        assert!((0.88..0.92).contains(&share), "share of ones {share}");
    }

    #[tokio::test]
    async fn a_character_device_is_read_off_the_runtime() {
        let mut s = Source::open(&SourceConfig {
            kind: SourceKind::File("/dev/urandom".into()),
            rate: None,
            faults: Faults::default(),
        })
        .unwrap();
        assert_eq!(s.read(10_000).await.unwrap().len(), 10_000);
    }

    #[tokio::test]
    async fn a_missing_device_is_a_clear_error() {
        let err = Source::open(&SourceConfig {
            kind: SourceKind::File("/nonexistent/hwrng".into()),
            rate: None,
            faults: Faults::default(),
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("/nonexistent/hwrng"));
    }
}
