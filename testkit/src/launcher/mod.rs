//! The process launcher: real `geiger node` and `geiger-device` processes
//! on loopback, for the node's end-to-end tests, its benchmarks and the
//! fault harness. One implementation of what they all need: free ports
//! ([`ports`]), node config files and node processes ([`node`]), device
//! agents ([`device`]), single-node `geiger dev` processes ([`dev`]),
//! signals, and log tails.
//!
//! Each caller keeps its own orchestration on top (the tests' small
//! cluster, the harness's proxied multi-zone one); how a process is
//! configured, started, signalled, stopped and read back lives here.

pub mod dev;
pub mod device;
pub mod faketime;
pub mod node;
pub mod ports;

use std::path::Path;

pub use dev::DevProcess;
pub use device::{device_binary, trust_nodes, DeviceProcess};
pub use node::{BootstrapMember, NodeConfig, NodeProcess};
pub use ports::free_port;

/// Why a process could not be launched.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("device agent printed an unexpected banner: {0:?}")]
    Banner(String),
    #[error("node link key: {0}")]
    LinkKey(String),
}

/// Names what failed: `.map_err(io("writing a node config"))`.
pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Io { what, source }
}

/// The signals the launcher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Freeze: the process keeps its sockets, answers nothing.
    Stop,
    /// Thaw a stopped process.
    Cont,
    /// Ask for a clean shutdown.
    Term,
    /// kill -9.
    Kill,
}

/// Sends `signal` to `pid` (a process this test spawned).
pub fn signal(pid: u32, signal: Signal) {
    let sig = match signal {
        Signal::Stop => libc::SIGSTOP,
        Signal::Cont => libc::SIGCONT,
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    // SAFETY: kill(2) on a pid we spawned; no memory is shared.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// The last `lines` lines of a process log, without backtrace frames
/// (which would push the error itself out of the tail), under a header
/// naming the file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("at ")
                || t.split_once(": ")
                    .is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
        })
        .collect();
    let mut out = format!("----- {} -----\n", path.display());
    for l in &kept[kept.len().saturating_sub(lines)..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_tail_keeps_the_last_lines_and_drops_backtrace_frames() {
        let dir = std::env::temp_dir().join(format!("testkit-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.log");
        std::fs::write(
            &path,
            "one\ntwo\nError: boom\n   0: geiger::main\n      at src/main.rs:3\nthree\n",
        )
        .unwrap();
        let tail = log_tail(&path, 2);
        assert!(tail.ends_with("Error: boom\nthree\n"), "{tail}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
