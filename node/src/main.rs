//! `geiger`: the one binary operators, auditors and developers run. Thin:
//! it parses the command line and hands over to `geiger_node`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use geiger_node::config::NodeConfig;
use geiger_node::node::Node;
use geiger_node::{ctl, dev, verify_command};

/// mimalloc rather than the system allocator: every draw allocates and frees
/// many small buffers on every replica (JSON, postcard, redb pages), and
/// glibc's malloc was about a tenth of the control plane's CPU. The
/// control-plane benchmark uses the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "geiger",
    version,
    about = "Auditable randomness from radioactive decay"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "GEIGER_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One node with a simulated device on an embedded default, for trying geiger.
    Dev {
        /// The API listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the dev ledger lives (kept across runs).
        #[arg(long, default_value = "geiger-dev-data")]
        data_dir: PathBuf,
    },
    /// Run a cluster node (docs/CONFIG.md).
    Node {
        #[arg(long, short)]
        config: PathBuf,
        /// Load and validate the configuration (file and `GEIGER_*`
        /// variables), print what it says, and exit without starting.
        #[arg(long)]
        check: bool,
        /// Print this node's device link public key (hex; creating
        /// DATA_DIR/link.key if missing) and exit: the line each device
        /// lists in its --trusted-nodes file (docs/LINK.md).
        #[arg(long, conflicts_with = "check")]
        print_link_key: bool,
    },
    /// Turn a backup (`geiger ctl backup`) into the empty data directory of
    /// a voter of a NEW cluster: the config's new cluster secret and
    /// `[[bootstrap]]` voters (deploy/README.md, "Restore").
    Restore {
        /// The backup file.
        #[arg(long)]
        backup: PathBuf,
        /// This new voter's configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Operator commands against a running cluster.
    Ctl(ctl::CtlArgs),
    /// Verify a draw offline: signature, ID, entropy and re-derivation.
    Verify(verify_command::VerifyArgs),
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GEIGER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn wait_for_shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler installs");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> anyhow::Result<()> {
    geiger_control_plane::memory::disable_transparent_huge_pages();
    let cli = Cli::parse();
    if let Command::Verify(args) = cli.command {
        std::process::exit(verify_command::run(args)?);
    }
    init_logging(cli.log_json);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Node {
                config,
                check,
                print_link_key,
            } => {
                let config = NodeConfig::load(Some(&config))?;
                if print_link_key {
                    let key = geiger_node::node::link_key(&config.data_dir)
                        .context("reading or creating the link key")?;
                    println!("{}", hex::encode(key.verifying_key().as_bytes()));
                    return Ok(());
                }
                if check {
                    println!("{}", config.summary());
                    return Ok(());
                }
                let node = Node::start(config).await.context("starting the node")?;
                wait_for_shutdown().await;
                tracing::info!("shutting down");
                node.shutdown().await;
                Ok(())
            }
            Command::Dev { listen, data_dir } => {
                let running = dev::start(listen, data_dir).await?;
                wait_for_shutdown().await;
                running.shutdown().await;
                Ok(())
            }
            Command::Restore { backup, config } => {
                let config = NodeConfig::load(Some(&config))?;
                let started = std::time::Instant::now();
                let restored = geiger_node::restore::restore(&backup, &config).await?;
                println!("{restored} in {:.1} s", started.elapsed().as_secs_f64());
                Ok(())
            }
            Command::Ctl(args) => {
                let code = ctl::run(args).await?;
                std::process::exit(code)
            }
            Command::Verify(_) => unreachable!("handled before the runtime starts"),
        }
    })
}
