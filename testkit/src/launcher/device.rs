//! `geiger-device` agents: where the binary is, the process
//! ([`DeviceProcess`]: start, read its identity from the banner, kill,
//! restart on the same port and state so its sequence carries on), and the
//! trusted-nodes file that lets a cluster's nodes in ([`trust_nodes`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::node::die_with_parent;
use super::{io, LaunchError};

/// The `geiger-device` binary next to `geiger` (in the same target
/// directory), built on demand (`cargo build -p geiger-hardware --bin
/// geiger-device`, with `--release` when `geiger` is the release build, as
/// under `cargo bench`). Panics if it can be neither found nor built: test
/// code only.
pub fn device_binary(geiger: &Path) -> PathBuf {
    let dir = geiger.parent().expect("target dir");
    let path = dir.join(format!("geiger-device{}", std::env::consts::EXE_SUFFIX));
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        // Always ask cargo: it is a no-op when the binary is up to date.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let target_dir = dir.parent().expect("profile dir's parent");
        let mut args = vec!["build", "-p", "geiger-hardware", "--bin", "geiger-device"];
        if dir.file_name() == Some(std::ffi::OsStr::new("release")) {
            args.push("--release");
        }
        let mut build = Command::new(cargo);
        // A test or bench runs with the variables cargo sets for its own
        // package (CARGO_MANIFEST_DIR, CARGO_PKG_*, OUT_DIR...). Passed on,
        // they reach dependencies' build scripts that watch them (ring's
        // watches CARGO_MANIFEST_DIR), so this build and the next `cargo
        // bench` each found the other's artifacts stale and rebuilt half
        // the release tree, minutes every run.
        for (name, _) in std::env::vars_os() {
            if is_package_variable(&name.to_string_lossy()) {
                build.env_remove(name);
            }
        }
        let status = build
            .args(&args)
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status();
        if !matches!(status, Ok(s) if s.success()) && !path.exists() {
            panic!("could not build geiger-device: {status:?}");
        }
    });
    path
}

/// Whether `name` is one of the variables cargo sets for the package
/// under test (as opposed to the user's own cargo settings, such as
/// `CARGO_HOME` or `CARGO_BUILD_JOBS`, which the nested build keeps).
fn is_package_variable(name: &str) -> bool {
    const PREFIXES: [&str; 3] = ["CARGO_PKG_", "CARGO_BIN_EXE_", "CARGO_MANIFEST_"];
    const NAMES: [&str; 6] = [
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// A `geiger-device` agent process (running or not).
#[derive(Debug)]
pub struct DeviceProcess {
    pub binary: PathBuf,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// Extra flags (`--rate`, `--fault-stuck-after`, ...).
    pub args: Vec<String>,
    /// The file of node link keys the agent trusts (`--trusted-nodes`).
    pub trusted_nodes: PathBuf,
    /// stderr, appended across restarts.
    pub log_path: PathBuf,
    /// `dev_…`, from the banner.
    pub id: String,
    /// Hex Ed25519 public key, from the banner.
    pub public_key: String,
    /// As [`super::NodeProcess::die_with_parent`].
    pub die_with_parent: bool,
    pub child: Option<Child>,
}

impl DeviceProcess {
    /// A device with its state in `state_dir`, trusting the node link keys
    /// in `trusted_nodes` (see [`trust_nodes`]), not started yet.
    pub fn new(
        binary: &Path,
        state_dir: PathBuf,
        listen: SocketAddr,
        trusted_nodes: PathBuf,
        args: Vec<String>,
        log_path: PathBuf,
    ) -> Self {
        DeviceProcess {
            binary: binary.to_path_buf(),
            state_dir,
            listen,
            trusted_nodes,
            args,
            log_path,
            id: String::new(),
            public_key: String::new(),
            die_with_parent: false,
            child: None,
        }
    }

    /// Starts the agent and reads its identity from the first line it
    /// prints (`listening=ADDR device=dev_… public_key=HEX`).
    pub fn spawn(&mut self) -> Result<(), LaunchError> {
        std::fs::create_dir_all(&self.state_dir).map_err(io("creating a device directory"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io("opening a device log"))?;
        let mut command = Command::new(&self.binary);
        if self.die_with_parent {
            die_with_parent(&mut command);
        }
        let mut child = command
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--trusted-nodes")
            .arg(&self.trusted_nodes)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(io(format!("starting {}", self.binary.display())))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LaunchError::Banner("no stdout".into()));
        };
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        for field in line.split_whitespace() {
            if let Some(v) = field.strip_prefix("device=") {
                self.id = v.to_string();
            } else if let Some(v) = field.strip_prefix("public_key=") {
                self.public_key = v.to_string();
            }
        }
        if read.is_err() || !self.id.starts_with("dev_") || self.public_key.len() != 64 {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LaunchError::Banner(line));
        }
        // Keep draining stdout so the agent never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills it (-9) and starts it again on the same port and state.
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.kill();
        self.spawn()
    }

    /// The JSON body for `POST /v1/admin/links`, registering the link at
    /// `address` (the agent's own, or a proxy in front of it).
    pub fn registration(&self, address: &str) -> Value {
        serde_json::json!({
            "device": self.id,
            "address": address,
            "public_key": self.public_key,
        })
    }
}

/// Gives each node data directory in `data_dirs` its device link key
/// (`link.key`, created if missing, as `geiger node` would on its first
/// start) and writes their public keys to `trusted_file`, the list a device
/// agent serves. Nodes added later: call again with every directory.
pub fn trust_nodes(trusted_file: &Path, data_dirs: &[PathBuf]) -> Result<(), LaunchError> {
    let mut text = String::from("# device link keys of the cluster's nodes\n");
    for dir in data_dirs {
        let key = geiger_hardware::device_store::load_or_create_key_file(dir, "link.key")
            .map_err(|e| LaunchError::LinkKey(e.to_string()))?;
        let public = geiger_hardware::device_store::public_key_hex(&key.verifying_key());
        text.push_str(&format!("{public}  # {}\n", dir.display()));
    }
    // Replaced whole, so an agent reading it never sees half a list.
    let tmp = trusted_file.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(io("writing the trusted node keys"))?;
    std::fs::rename(&tmp, trusted_file).map_err(io("writing the trusted node keys"))
}

impl Drop for DeviceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nested_build_drops_the_package_variables_and_keeps_the_users_cargo_settings() {
        for name in [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_PKG_NAME",
            "CARGO_BIN_EXE_geiger",
            "CARGO_CRATE_NAME",
            "OUT_DIR",
        ] {
            assert!(is_package_variable(name), "{name} is dropped");
        }
        for name in ["CARGO_HOME", "CARGO_BUILD_JOBS", "CARGO_TARGET_DIR", "PATH"] {
            assert!(!is_package_variable(name), "{name} is kept");
        }
    }

    #[test]
    fn trusting_nodes_gives_each_its_own_key_and_keeps_it_on_a_second_call() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = [dir.path().join("node-1"), dir.path().join("node-2")];
        let file = dir.path().join("trusted-nodes");
        trust_nodes(&file, &nodes).unwrap();
        let first = std::fs::read_to_string(&file).unwrap();
        let keys = geiger_hardware::channel::parse_trusted(&first).unwrap();
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0], keys[1]);
        // The key a node will present is the one listed.
        let node_1 =
            geiger_hardware::device_store::load_or_create_key_file(&nodes[0], "link.key").unwrap();
        assert_eq!(keys[0], node_1.verifying_key().to_bytes());
        trust_nodes(&file, &nodes).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), first);
    }
}
