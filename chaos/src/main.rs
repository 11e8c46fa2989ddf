//! `geiger-chaos --profile ci|soak --seed N --report DIR`: starts a local
//! multi-zone cluster behind the fault proxy, runs the workload while the
//! nemesis injects its seeded faults, heals everything, checks the
//! invariants and writes DIR/report.json, DIR/summary.txt,
//! DIR/timeline.png and DIR/requests.jsonl (every request and response).
//!
//! Exit status: 0 when no invariant is violated, 1 when one is, 2 when the
//! harness itself could not run. Availability figures are reported, never
//! asserted.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use geiger_chaos::checker;
use geiger_chaos::launcher::{self, Cluster, ClusterConfig, ADMIN_TOKEN};
use geiger_chaos::nemesis::{self, FaultKind, Profile};
use geiger_chaos::plot;
use geiger_chaos::proxy::{Endpoint, LinkRule};
use geiger_chaos::report::{self, Report};
use geiger_chaos::workload::{self, WorkloadConfig};
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(
    name = "geiger-chaos",
    version,
    about = "Fault harness for geiger: faults, workload, invariant checks, availability report"
)]
struct Args {
    /// `ci` (about 2 minutes, every fault kind once) or `soak` (30 minutes).
    #[arg(long, value_enum, default_value = "ci")]
    profile: Profile,
    /// Seed of the fault schedule and the workload's choices: the same seed
    /// replays the same schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for the report (created; the cluster's data and logs go to
    /// DIR/cluster, replaced on each run).
    #[arg(long)]
    report: PathBuf,
    /// The `geiger` binary (default: next to this one).
    #[arg(long)]
    geiger_bin: Option<PathBuf>,
    /// The `geiger-device` binary (default: next to this one).
    #[arg(long)]
    device_bin: Option<PathBuf>,
    /// TTF font for the timeline's text.
    #[arg(long, default_value = plot::DEFAULT_FONT)]
    font: PathBuf,
    /// Override the profile's workload length, in seconds (schedule faults
    /// past it are dropped); for quick local tries.
    #[arg(long)]
    duration_s: Option<u64>,
    /// Requests per second per worker.
    #[arg(long, default_value_t = 4.0)]
    rate: f64,
    /// Concurrent workers (clients).
    #[arg(long, default_value_t = 6)]
    workers: usize,
    /// The nodes' `raft.profile`. `cross_cloud` by default: the placement
    /// spans two clouds, which is what docs/CONFIG.md prescribes it for.
    #[arg(long, default_value = "cross_cloud", value_parser = ["lan", "regional", "cross_cloud"])]
    raft_profile: String,
    /// Run only these fault kinds of the schedule (comma-separated names
    /// such as `partition_zone,kill_leader`), each in its scheduled slot
    /// order, to reproduce one fault on its own.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// One-way delay added to every link between nodes of different clouds
    /// (the distance between sites; the round trip is twice this), kept
    /// through every fault's heal.
    #[arg(long, default_value_t = 0)]
    site_delay_ms: u64,
    /// Print the fault schedule (JSON) and exit without starting anything:
    /// the same profile and seed always print the same plan.
    #[arg(long)]
    plan: bool,
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,geiger_client=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(true) => std::process::exit(0),
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("geiger-chaos could not complete the run: {e:#}");
            std::process::exit(2);
        }
    }
}

/// Waits until every node has applied the leader's log as it stood when
/// the wait began, so the checker reads a settled ledger.
async fn wait_converged(cluster: &Cluster, within: Duration) -> Result<(), String> {
    let deadline = std::time::Instant::now() + within;
    let mut target = None;
    let mut lagging = Vec::new();
    while std::time::Instant::now() < deadline {
        if target.is_none() {
            if let Some(l) = cluster.leader().await {
                target = cluster
                    .status(l)
                    .await
                    .and_then(|s| s["last_log_index"].as_u64());
            }
        }
        if let Some(t) = target {
            lagging.clear();
            for id in cluster.ids() {
                let applied = cluster
                    .status(id)
                    .await
                    .and_then(|s| s["last_applied_index"].as_u64());
                if applied.is_none_or(|a| a < t) {
                    lagging.push((id, applied));
                }
            }
            if lagging.is_empty() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!(
        "not converged within {within:?}: target {target:?}, lagging {lagging:?}"
    ))
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let placement = launcher::default_placement();
    let devices = 2;
    let mut schedule = nemesis::schedule(args.profile, args.seed, &placement, devices);
    let known: Vec<&str> = FaultKind::CORE
        .iter()
        .chain(FaultKind::EXTRA.iter())
        .map(|k| k.name())
        .collect();
    if let Some(unknown) = args.only.iter().find(|k| !known.contains(&k.as_str())) {
        bail!(
            "--only: unknown fault kind `{unknown}`; known: {}",
            known.join(", ")
        );
    }
    if !args.only.is_empty() {
        schedule
            .faults
            .retain(|f| args.only.iter().any(|k| k == f.kind.name()));
        for (i, f) in schedule.faults.iter_mut().enumerate() {
            f.at_ms = 10_000 + i as u64 * 11_000;
        }
        schedule.duration_ms = 10_000 + schedule.faults.len() as u64 * 11_000 + 8_000;
    }
    if let Some(s) = args.duration_s {
        schedule.duration_ms = s * 1000;
        let end = schedule.duration_ms;
        schedule
            .faults
            .retain(|f| f.at_ms + f.hold_ms + 2_000 < end);
    }
    if args.plan {
        println!("{}", serde_json::to_string_pretty(&schedule)?);
        return Ok(true);
    }
    std::fs::create_dir_all(&args.report).context("creating the report directory")?;
    let cluster_dir = args.report.join("cluster");
    if cluster_dir.exists() {
        std::fs::remove_dir_all(&cluster_dir)
            .context("clearing the previous run's cluster directory")?;
    }
    let geiger_bin = args.geiger_bin.clone().unwrap_or_else(|| sibling("geiger"));
    let device_bin = args
        .device_bin
        .clone()
        .unwrap_or_else(|| sibling("geiger-device"));
    for bin in [&geiger_bin, &device_bin] {
        if !bin.exists() {
            bail!(
                "{} not found: build it (cargo build -p geiger-node -p geiger-hardware) or pass --geiger-bin/--device-bin",
                bin.display()
            );
        }
    }
    let config = ClusterConfig {
        dir: cluster_dir,
        geiger_bin,
        device_bin,
        placement: placement.clone(),
        devices,
        device_rate: 32_768,
        // A small reserve (128 KiB per device, refilled below 64 KiB) keeps
        // the owners pulling from the devices all the time: with a full
        // pool an owner stops reading, and a device made to emit stuck
        // output would never have its chunks health-tested. It still rides
        // out a link fault of several seconds at the workload's demand.
        extra_toml: format!(
            "[raft]\nprofile = \"{}\"\n\n[hardware]\npool_high_water_bytes = 131072\npool_low_water_bytes = 65536\n",
            args.raft_profile
        ),
    };
    tracing::info!(profile = ?args.profile, seed = args.seed, faults = schedule.faults.len(), "starting the cluster");
    let mut cluster = Cluster::start(config)
        .await
        .context("starting the cluster")?;
    let api_key = cluster.api_key.clone().context("no customer key")?;
    if args.site_delay_ms > 0 {
        let between_sites = LinkRule {
            delay: Duration::from_millis(args.site_delay_ms),
            ..LinkRule::default()
        };
        set_between_sites(&cluster, &placement, between_sites);
    }

    // Some entropy in the pool before the clock starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while cluster.pool_bytes().await.unwrap_or(0) < 65_536 {
        if std::time::Instant::now() > deadline {
            eprintln!("{}", cluster.log_tails(30));
            bail!("the entropy pool did not fill within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let wl = WorkloadConfig {
        workers: args.workers,
        rate_per_worker: args.rate,
        own_chains_per_worker: 2,
        shared_chains: 2,
        shared_fraction: 0.2,
        bad_fraction: 0.02,
        seed: args.seed,
        attempt_timeout: Duration::from_millis(1_500),
        deadline: Duration::from_secs(6),
    };
    let client = workload::build_client(&cluster.endpoints(), &api_key, &wl)?;
    let prepared = workload::prepare(client, &wl)
        .await
        .context("opening the chains")?;

    let t0 = Instant::now();
    let t0_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let duration = Duration::from_millis(schedule.duration_ms);
    let wl_task = {
        let wl = wl.clone();
        tokio::spawn(async move { workload::run(prepared, &wl, t0, duration).await })
    };
    let events = nemesis::run(&mut cluster, &schedule, t0).await;
    let result = wl_task.await.context("the workload task")?;
    let mut notes = nemesis::heal_everything(&mut cluster);
    // The distance between sites is what faults are measured under, not
    // what the ledger is read back under: with 50 ms between sites, reading
    // back a two-minute run did not finish in five minutes; without, in
    // about one.
    if args.site_delay_ms > 0 {
        set_between_sites(&cluster, &placement, LinkRule::default());
    }
    tracing::info!(
        requests = result.records.len(),
        "workload done; healing and checking"
    );

    if cluster
        .wait_for_leader(Duration::from_secs(60))
        .await
        .is_err()
    {
        notes.push("no leader within 60 s after healing".into());
    }
    if let Err(e) = wait_converged(&cluster, Duration::from_secs(90)).await {
        notes.push(e);
    }
    let nodes: BTreeMap<u64, String> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, cluster.url(id)))
        .collect();
    let mut obs = checker::collect(&nodes, ADMIN_TOKEN, &result.records, &result.chains)
        .await
        .context("reading the ledger back")?;
    obs.chunk_size = Some(4096);
    obs.t0_unix_ms = Some(t0_unix_ms);
    let check = checker::check(&result.records, &result.chains, &obs);

    let duration_ms = schedule.duration_ms as f64;
    let placement_status = match cluster.leader().await {
        Some(l) => cluster
            .status(l)
            .await
            .map(|s| s["placement"].clone())
            .unwrap_or_default(),
        None => serde_json::Value::Null,
    };
    if placement_status["survives_cloud_loss"] == false {
        notes.push(
            "the placement does not survive losing one cloud (5 voters in 2 clouds: one holds 3): a partition leaves that cloud's side a quorum, but its loss (all its nodes down) would stop the cluster".into(),
        );
    }
    let report = Report {
        profile: format!("{:?}", args.profile).to_lowercase(),
        seed: args.seed,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_unix_ms: result.started_unix_ms,
        duration_ms: schedule.duration_ms,
        placement: serde_json::json!({ "nodes": placement, "report": placement_status }),
        figures: report::figures(&result.records, duration_ms),
        faults: report::recoveries(&result.records, &events, duration_ms),
        timeline: report::timeline(&result.records, duration_ms),
        check,
        proxy: cluster.proxy.stats(),
        schedule: schedule.clone(),
        notes,
    };
    write_requests(&args.report.join("requests.jsonl"), &result.records)?;
    report::write(&args.report, &report)?;
    let title = format!(
        "geiger-chaos {} seed {}: {} offered, {} ok, {} failed, longest gap {:.1} s — {}",
        report.profile,
        report.seed,
        report.figures.offered,
        report.figures.succeeded,
        report.figures.failed,
        report.figures.longest_gap_ms / 1000.0,
        if report.check.passed() {
            "invariants hold"
        } else {
            "INVARIANT VIOLATED"
        }
    );
    if let Err(e) = plot::timeline(
        &args.report.join("timeline.png"),
        &args.font,
        &title,
        &report.timeline,
        &report.faults,
    ) {
        eprintln!("timeline.png not written: {e}");
    }
    print!("{}", report::summary(&report));
    if !report.check.passed() || report::unmet_expectations(&report) > 0 {
        std::fs::write(args.report.join("log-tails.txt"), cluster.log_tails(60))
            .context("writing log tails")?;
    }
    cluster.shutdown();
    Ok(report.check.passed() && report::unmet_expectations(&report) == 0)
}

fn write_requests(path: &Path, records: &[workload::RequestRecord]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    for r in records {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Makes `rule` the baseline of every link between nodes of different
/// clouds (the distance between sites; a clear rule removes it).
fn set_between_sites(cluster: &Cluster, placement: &[launcher::Placement], rule: LinkRule) {
    for a in placement {
        for b in placement.iter().filter(|b| b.cloud != a.cloud) {
            cluster
                .proxy
                .set_baseline(Endpoint::Node(a.id), Endpoint::Node(b.id), rule);
        }
    }
}
