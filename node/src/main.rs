//! `geiger`: the one binary operators, auditors and developers run.

use geiger_node::verify_command;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "geiger",
    version,
    about = "Auditable randomness from radioactive decay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify a draw offline: signature, ID, entropy and re-derivation.
    Verify(verify_command::VerifyArgs),
    /// One node with a simulated device on an embedded default (not built yet).
    Dev,
    /// Run a cluster node from a config file (not built yet).
    Node,
    /// Operator commands (not built yet).
    Ctl,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Verify(args) => verify_command::run(args)?,
        Command::Dev | Command::Node | Command::Ctl => {
            eprintln!("geiger: this command is not built yet; see the open issues");
            2
        }
    };
    std::process::exit(code);
}
