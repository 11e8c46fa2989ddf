//! `geiger-device`: fronts one entropy device on-prem and serves it to the
//! owning node over the link protocol (docs/LINK.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use geiger_hardware::agent::{serve_metrics, Agent, AgentConfig};
use geiger_hardware::channel::TrustedNodes;
use geiger_hardware::decay::{CounterFault, DecayConfig};
use geiger_hardware::device_store::{public_key_hex, DEFAULT_MAX_EPOCH_STEP};
use geiger_hardware::source::{Faults, SourceConfig, SourceKind, DEFAULT_SIM_RATE};

#[derive(Debug, Parser)]
#[command(
    name = "geiger-device",
    version,
    about = "Serve one entropy device to its owning geiger node"
)]
struct Args {
    /// Address to listen on for the owning node.
    #[arg(long, env = "GEIGER_DEVICE_LISTEN", default_value = "127.0.0.1:7400")]
    listen: SocketAddr,
    /// Directory for the device key, sequence counter and newest epoch.
    #[arg(long, env = "GEIGER_DEVICE_STATE_DIR")]
    state_dir: PathBuf,
    /// File of the cluster nodes' link public keys (hex, one per line, `#`
    /// comments): the only clients served. Read again when it changes.
    #[arg(long, env = "GEIGER_DEVICE_TRUSTED_NODES", required_unless_present_any = ["print_key", "reset_epoch"])]
    trusted_nodes: Option<PathBuf>,
    /// The largest step past the newest epoch seen that a Hello may take.
    #[arg(long, env = "GEIGER_DEVICE_MAX_EPOCH_STEP", default_value_t = DEFAULT_MAX_EPOCH_STEP)]
    max_epoch_step: u64,
    /// Trusted members whose signatures a new session's lease must carry;
    /// default: a majority of the trusted-nodes file.
    #[arg(long, env = "GEIGER_DEVICE_LEASE_QUORUM")]
    lease_quorum: Option<usize>,
    /// Address for `GET /metrics` (handshakes, sessions, refusals, source
    /// production); off when unset.
    #[arg(long, env = "GEIGER_DEVICE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// `sim` (OS randomness, rate-limited), `decay` (a simulated Geiger–Müller
    /// counter, conditioned on the device; docs/HEALTH.md), `file:PATH` (a
    /// character device such as /dev/hwrng) or `timestamps:PATH` (a real
    /// counter's event timestamps, one integer per line, through the same
    /// extraction, raw tests and conditioner as `decay`).
    #[arg(long, env = "GEIGER_DEVICE_SOURCE", default_value = "sim")]
    source: SourceKind,
    /// Bytes per second the source may produce; 0 = unlimited. Default: 32768
    /// for `sim`, unlimited for a file or `decay` (paced by its count rate).
    #[arg(long, env = "GEIGER_DEVICE_RATE")]
    rate: Option<u64>,
    /// `decay`: true events per second at the tube, before dead time.
    #[arg(long, env = "GEIGER_DEVICE_COUNT_RATE", default_value_t = geiger_hardware::decay::DEFAULT_COUNT_RATE)]
    count_rate: f64,
    /// `decay`: the counter's non-paralysable dead time.
    #[arg(long, env = "GEIGER_DEVICE_DEAD_TIME", default_value = "100us", value_parser = humantime::parse_duration)]
    dead_time: Duration,
    /// `decay`: the event timer's resolution.
    #[arg(long, env = "GEIGER_DEVICE_TICK", default_value = "1us", value_parser = humantime::parse_duration)]
    tick: Duration,
    /// Fault (`decay`): after this many events, every interval is the same.
    #[arg(
        long,
        env = "GEIGER_DEVICE_FAULT_FIXED_INTERVAL_AFTER",
        conflicts_with = "fault_raw_bias"
    )]
    fault_fixed_interval_after: Option<u64>,
    /// Fault (`decay`): raw bits are 1 with this probability.
    #[arg(long, env = "GEIGER_DEVICE_FAULT_RAW_BIAS")]
    fault_raw_bias: Option<f64>,
    /// Bytes per chunk (1..=65536).
    #[arg(long, env = "GEIGER_DEVICE_CHUNK_SIZE", default_value_t = 4096)]
    chunk_size: usize,
    /// Sequence numbers reserved per fsync.
    #[arg(long, env = "GEIGER_DEVICE_SEQ_RESERVE", default_value_t = 1024)]
    seq_reserve: u64,
    /// Sent chunks kept in memory to re-send to the next owner.
    #[arg(long, env = "GEIGER_DEVICE_RETAIN_CHUNKS", default_value_t = 256)]
    retain_chunks: usize,
    /// Heartbeat interval.
    #[arg(long, env = "GEIGER_DEVICE_HEARTBEAT", default_value = "1s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// End a session after this long without a frame from the node.
    #[arg(long, env = "GEIGER_DEVICE_IDLE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Fault: after this many bytes, output one byte value forever.
    #[arg(long, env = "GEIGER_DEVICE_FAULT_STUCK_AFTER")]
    fault_stuck_after: Option<u64>,
    /// Fault: output bits that are 1 with this probability.
    #[arg(long, env = "GEIGER_DEVICE_FAULT_BIAS")]
    fault_bias: Option<f64>,
    /// Fault: let the source run this long, then stall it ...
    #[arg(long, env = "GEIGER_DEVICE_FAULT_STALL_EVERY", value_parser = humantime::parse_duration, requires = "fault_stall_for")]
    fault_stall_every: Option<Duration>,
    /// ... for this long, and repeat.
    #[arg(long, env = "GEIGER_DEVICE_FAULT_STALL_FOR", value_parser = humantime::parse_duration, requires = "fault_stall_every")]
    fault_stall_for: Option<Duration>,
    /// Fault: drop each session's connection after this long.
    #[arg(long, env = "GEIGER_DEVICE_FAULT_DROP_EVERY", value_parser = humantime::parse_duration)]
    fault_drop_every: Option<Duration>,
    /// Print the device id and public key (creating the key if needed) and exit.
    #[arg(long)]
    print_key: bool,
    /// Operator recovery, with the agent stopped: set the newest epoch seen
    /// to this value (the link's lease epoch in the ledger) and exit.
    #[arg(long, conflicts_with = "print_key")]
    reset_epoch: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    for (flag, p) in [
        ("--fault-bias", args.fault_bias),
        ("--fault-raw-bias", args.fault_raw_bias),
    ] {
        if let Some(p) = p {
            anyhow::ensure!(
                (0.0..=1.0).contains(&p),
                "{flag} must be a probability in [0, 1]"
            );
        }
    }
    anyhow::ensure!(
        args.count_rate.is_finite() && args.count_rate > 0.0 && args.count_rate <= 1e7,
        "--count-rate must be in (0, 10000000]"
    );
    anyhow::ensure!(!args.tick.is_zero(), "--tick must not be zero");
    if args.print_key {
        let key = geiger_hardware::device_store::load_or_create_key(&args.state_dir)
            .context("loading the device key")?;
        let vk = key.verifying_key();
        println!(
            "device={} public_key={}",
            geiger_hardware::DeviceId::of(&vk),
            public_key_hex(&vk)
        );
        return Ok(());
    }

    if let Some(epoch) = args.reset_epoch {
        // The lock: never under a running agent, which holds the epoch in memory.
        let _lock = geiger_hardware::device_store::lock_state_dir(&args.state_dir)
            .context("the agent must be stopped to reset its epoch")?;
        let mut store = geiger_hardware::device_store::EpochStore::open(&args.state_dir)
            .context("opening the epoch store")?;
        let previous = store.reset(epoch).context("writing the epoch")?;
        tracing::warn!(previous, epoch, "newest epoch reset by the operator");
        println!("epoch.highest {previous} -> {epoch}");
        return Ok(());
    }
    let trusted_path = args
        .trusted_nodes
        .clone()
        .context("--trusted-nodes is required")?;
    let trusted =
        TrustedNodes::from_file(&trusted_path).context("reading the trusted node keys")?;

    let rate = match (args.rate, &args.source) {
        (Some(0), _) => None,
        (Some(r), _) => Some(r),
        (None, SourceKind::Sim) => Some(DEFAULT_SIM_RATE),
        (None, SourceKind::File(_) | SourceKind::Decay(_) | SourceKind::Timestamps(_)) => None,
    };
    let kind = match args.source.clone() {
        SourceKind::Decay(_) => SourceKind::Decay(DecayConfig {
            count_rate: args.count_rate,
            dead_time: args.dead_time,
            tick: args.tick,
            fault: match (args.fault_fixed_interval_after, args.fault_raw_bias) {
                (Some(n), _) => Some(CounterFault::FixedIntervalAfter(n)),
                (None, Some(p)) => Some(CounterFault::RawBias(p)),
                (None, None) => None,
            },
        }),
        other => other,
    };
    let source = SourceConfig {
        kind,
        rate,
        faults: Faults {
            stuck_after: args.fault_stuck_after,
            bias_one: args.fault_bias,
            stall: args.fault_stall_every.zip(args.fault_stall_for),
        },
    };
    let mut config = AgentConfig::new(args.listen, args.state_dir.clone(), source, trusted);
    config.max_epoch_step = args.max_epoch_step;
    config.lease_quorum = args.lease_quorum;
    config.chunk_size = args.chunk_size;
    config.seq_reserve = args.seq_reserve;
    config.retain_chunks = args.retain_chunks;
    config.heartbeat = args.heartbeat;
    config.idle_timeout = args.idle_timeout;
    config.drop_every = args.fault_drop_every;

    let agent = Agent::bind(config)
        .await
        .context("starting the device agent")?;
    let addr = agent.local_addr().context("reading the bound address")?;
    let _metrics = match args.metrics_listen {
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("binding the metrics listener on {at}"))?;
            Some(tokio::spawn(serve_metrics(listener, agent.stats())))
        }
        None => None,
    };
    // One line on stdout, for scripts and tests (logs go to stderr).
    println!(
        "listening={addr} device={} public_key={}",
        agent.device_id(),
        public_key_hex(&agent.public_key())
    );
    agent.run_until(shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
