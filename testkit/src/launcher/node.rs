//! `geiger node` processes: the config file a node is started with
//! ([`NodeConfig`]) and the process itself ([`NodeProcess`]: start, kill,
//! SIGTERM with a grace period, SIGSTOP/SIGCONT, restart). A process is
//! killed when its handle drops (resumed first if paused), so a failing
//! test leaves nothing running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{io, signal, LaunchError, Signal};

/// One `[[bootstrap]]` entry: a voter of the initial cluster.
#[derive(Debug, Clone)]
pub struct BootstrapMember {
    pub id: u64,
    pub api_addr: String,
    /// What the other nodes dial: the node's internal listener, or a proxy
    /// in front of it.
    pub rpc_addr: String,
    pub zone: String,
    pub cloud: String,
    pub region: String,
}

/// Everything a node's config file says.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: u64,
    pub data_dir: PathBuf,
    pub cluster_name: String,
    pub zone: String,
    pub cloud: String,
    pub region: String,
    pub api: SocketAddr,
    pub rpc: SocketAddr,
    /// `internal.advertise`, when peers reach this node through a proxy.
    pub advertise: Option<SocketAddr>,
    pub admin_token: String,
    pub cluster_secret: String,
    /// Whole extra sections (e.g. `"[hardware]\n..."`); must not repeat
    /// `[labels]`, `[api]` or `[internal]`.
    pub extra_toml: String,
    pub bootstrap: Vec<BootstrapMember>,
}

impl NodeConfig {
    /// This node as a `[[bootstrap]]` entry, reached at `rpc_addr`.
    pub fn as_bootstrap(&self) -> BootstrapMember {
        BootstrapMember {
            id: self.id,
            api_addr: self.api.to_string(),
            rpc_addr: self.advertise.unwrap_or(self.rpc).to_string(),
            zone: self.zone.clone(),
            cloud: self.cloud.clone(),
            region: self.region.clone(),
        }
    }

    /// The TOML file `geiger node --config` reads (docs/CONFIG.md).
    pub fn to_toml(&self) -> String {
        let advertise = self
            .advertise
            .map(|a| format!("advertise = \"{a}\"\n"))
            .unwrap_or_default();
        let mut t = format!(
            r#"node_id = {id}
data_dir = "{data}"
cluster_name = "{cluster}"

[labels]
zone = "{zone}"
cloud = "{cloud}"
region = "{region}"

[api]
listen = "{api}"
admin_token = "{token}"

[internal]
listen = "{rpc}"
{advertise}cluster_secret = "{secret}"

{extra}
"#,
            id = self.id,
            data = self.data_dir.display(),
            cluster = self.cluster_name,
            zone = self.zone,
            cloud = self.cloud,
            region = self.region,
            api = self.api,
            token = self.admin_token,
            rpc = self.rpc,
            secret = self.cluster_secret,
            extra = self.extra_toml,
        );
        for m in &self.bootstrap {
            t.push_str(&format!(
                "\n[[bootstrap]]\nid = {}\napi_addr = \"{}\"\nrpc_addr = \"{}\"\nzone = \"{}\"\ncloud = \"{}\"\nregion = \"{}\"\n",
                m.id, m.api_addr, m.rpc_addr, m.zone, m.cloud, m.region
            ));
        }
        t
    }
}

/// A `geiger node` process (running or not) with its config file and log.
#[derive(Debug)]
pub struct NodeProcess {
    pub binary: PathBuf,
    pub config_path: PathBuf,
    /// stdout and stderr, appended across restarts.
    pub log_path: PathBuf,
    /// Extra environment for the process.
    pub env: Vec<(String, String)>,
    /// Ask the kernel to kill the node when the thread that spawned it
    /// ends (`PR_SET_PDEATHSIG`), so even a harness killed by -9 leaves
    /// nothing behind. Only for callers that spawn from a thread that
    /// lives as long as they do.
    pub die_with_parent: bool,
    pub child: Option<Child>,
    pub paused: bool,
}

impl NodeProcess {
    /// Writes `config` to `config_path`; nothing is started yet.
    pub fn prepare(
        binary: &Path,
        config: &NodeConfig,
        config_path: PathBuf,
        log_path: PathBuf,
    ) -> Result<Self, LaunchError> {
        // It holds the admin token and cluster secret: private, as the node
        // requires of a configuration file with secrets in it.
        std::fs::write(&config_path, config.to_toml()).map_err(io("writing a node config"))?;
        std::fs::set_permissions(
            &config_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(io("making a node config private"))?;
        Ok(NodeProcess {
            binary: binary.to_path_buf(),
            config_path,
            log_path,
            env: Vec::new(),
            die_with_parent: false,
            child: None,
            paused: false,
        })
    }

    /// Starts the node (it must not be running).
    pub fn spawn(&mut self) -> Result<(), LaunchError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io("opening a node log"))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("node")
            .arg("--config")
            .arg(&self.config_path)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("node log"))?)
            .stderr(log);
        if self.die_with_parent {
            die_with_parent(&mut command);
        }
        let child = command
            .spawn()
            .map_err(io(format!("starting {}", self.binary.display())))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Running and not paused.
    pub fn is_live(&self) -> bool {
        self.child.is_some() && !self.paused
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL.
    pub fn terminate(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                signal(child.id(), Signal::Cont);
            }
            signal(child.id(), Signal::Term);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGSTOP: frozen with its sockets open, like a long GC pause or a VM
    /// stall. Nothing happens if the node is not running.
    pub fn pause(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, Signal::Stop);
            self.paused = true;
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, Signal::Cont);
        }
        self.paused = false;
    }

    /// Kills the node if it runs and starts it again: same config, same data.
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.kill();
        self.spawn()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if self.paused {
            self.resume();
        }
        self.kill();
    }
}

/// Makes the child die with the spawning thread, even one killed by -9.
pub(crate) fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_config_names_its_listeners_and_every_bootstrap_voter() {
        let config = NodeConfig {
            id: 2,
            data_dir: "/tmp/n2".into(),
            cluster_name: "test".into(),
            zone: "zone-2".into(),
            cloud: "cloud-a".into(),
            region: "region-a".into(),
            api: "127.0.0.1:10001".parse().unwrap(),
            rpc: "127.0.0.1:10002".parse().unwrap(),
            advertise: Some("127.0.0.1:10003".parse().unwrap()),
            admin_token: "tok".into(),
            cluster_secret: "sec".into(),
            extra_toml: "[hardware]\npool_high_water_bytes = 1\n".into(),
            bootstrap: Vec::new(),
        };
        let mut with_voters = config.clone();
        with_voters.bootstrap = vec![config.as_bootstrap()];
        let toml = with_voters.to_toml();
        assert!(toml.contains("listen = \"127.0.0.1:10002\"\nadvertise = \"127.0.0.1:10003\"\n"));
        assert!(toml.contains("[hardware]\npool_high_water_bytes = 1\n"));
        assert!(toml.contains("[[bootstrap]]\nid = 2\napi_addr = \"127.0.0.1:10001\"\nrpc_addr = \"127.0.0.1:10003\"\n"));
        assert!(!config.to_toml().contains("[[bootstrap]]"));
    }
}
