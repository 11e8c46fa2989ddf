//! `geiger-device` agents: where the binary is, and the process
//! ([`DeviceProcess`]: start, read its identity from the banner, kill,
//! restart on the same port and state so its sequence carries on).

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
        let status = Command::new(cargo)
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

/// A `geiger-device` agent process (running or not).
#[derive(Debug)]
pub struct DeviceProcess {
    pub binary: PathBuf,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// Extra flags (`--rate`, `--fault-stuck-after`, ...).
    pub args: Vec<String>,
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
    /// A device with its state in `state_dir`, not started yet.
    pub fn new(
        binary: &Path,
        state_dir: PathBuf,
        listen: SocketAddr,
        args: Vec<String>,
        log_path: PathBuf,
    ) -> Self {
        DeviceProcess {
            binary: binary.to_path_buf(),
            state_dir,
            listen,
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

impl Drop for DeviceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
