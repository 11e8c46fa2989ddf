//! `geiger dev` as a process: one node with a simulated device on a port
//! of the caller's choosing, its data in a directory the caller may fill
//! first (certificates, say). For benchmarks and tests that want a whole
//! single-node geiger over real sockets without writing a cluster config.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{io, LaunchError};

/// A running `geiger dev`, killed when dropped.
pub struct DevProcess {
    child: Child,
    /// Holds `data/` (the node's) and whatever the caller put there.
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl DevProcess {
    /// Starts `binary dev --listen addr` with its data under `dir/data`, the
    /// customer key `api_key`, and `env` on top (`GEIGER_API__TLS__...`).
    pub fn start(
        binary: &Path,
        dir: tempfile::TempDir,
        addr: SocketAddr,
        api_key: &str,
        env: &[(&str, OsString)],
    ) -> Result<DevProcess, LaunchError> {
        let mut cmd = Command::new(binary);
        cmd.args(["dev", "--listen", &addr.to_string(), "--data-dir"])
            .arg(dir.path().join("data"))
            .env("GEIGER_DEV_API_KEY", api_key)
            .env("GEIGER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = cmd
            .spawn()
            .map_err(io(format!("starting {}", binary.display())))?;
        Ok(DevProcess { child, dir, addr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `url`'s `/readyz` answers 200 through `client` (which
    /// decides plain HTTP or TLS and what it trusts); panics after `within`.
    pub async fn wait_ready(&self, client: &reqwest::Client, url: &str, within: Duration) {
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                started.elapsed() < within,
                "geiger dev at {url} not ready within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
