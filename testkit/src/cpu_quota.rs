//! A CPU quota for one process: a cgroup of its own whose CFS bandwidth is
//! a fraction of one core.
//!
//! Benchmarks run every member of a cluster on one small machine, where
//! the members take CPU from each other. Deployed, each member has a
//! machine of its own, and the busiest one runs out first. Giving every
//! member the same quota lets one machine stand in for that shape: the
//! member that needs the most CPU per write is the one that throttles.
//!
//! Works on cgroup v2 (`cpu.max`, when the root offers the `cpu`
//! controller) or on cgroup v1's `cpu` hierarchy (`cpu.cfs_quota_us`).
//! Needs root. Dropping the quota moves the process back to the root group
//! (if it still runs) and removes the group.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The CFS period. Short, so that a member which has used its share waits
/// milliseconds, not a tenth of a second, before it runs again.
const PERIOD_US: u64 = 10_000;

/// Which cgroup interface this machine offers for CPU bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hierarchy {
    V2,
    V1,
}

impl Hierarchy {
    fn root(self) -> &'static Path {
        match self {
            Hierarchy::V2 => Path::new("/sys/fs/cgroup"),
            Hierarchy::V1 => Path::new("/sys/fs/cgroup/cpu"),
        }
    }

    fn detect() -> Option<Hierarchy> {
        let v2 = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").ok();
        if v2.is_some_and(|c| c.split_whitespace().any(|c| c == "cpu")) {
            return Some(Hierarchy::V2);
        }
        Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
            .exists()
            .then_some(Hierarchy::V1)
    }
}

/// One process held to `cores` of CPU until this is dropped.
#[derive(Debug)]
pub struct CpuQuota {
    hierarchy: Hierarchy,
    group: PathBuf,
    pid: u32,
}

impl CpuQuota {
    /// Puts `pid` (all its threads) in a new group `name` limited to
    /// `cores` of CPU (0.5 is half of one core), at least a tenth: the
    /// kernel's smallest quota is 1 ms, of each 10 ms period here.
    pub fn limit(name: &str, pid: u32, cores: f64) -> io::Result<CpuQuota> {
        if !(cores > 0.0 && cores.is_finite()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a CPU quota is a positive number of cores, not {cores}"),
            ));
        }
        let hierarchy = Hierarchy::detect().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "no cgroup interface for CPU bandwidth",
            )
        })?;
        let quota_us = ((cores * PERIOD_US as f64) as u64).max(1_000);
        let group = hierarchy.root().join(name);
        match fs::create_dir(&group) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        // From here on, Drop undoes whatever was done.
        let quota = CpuQuota {
            hierarchy,
            group,
            pid,
        };
        match hierarchy {
            Hierarchy::V2 => {
                fs::write(
                    quota.group.join("cpu.max"),
                    format!("{quota_us} {PERIOD_US}"),
                )?;
            }
            Hierarchy::V1 => {
                fs::write(quota.group.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
                fs::write(quota.group.join("cpu.cfs_quota_us"), quota_us.to_string())?;
            }
        }
        fs::write(quota.group.join("cgroup.procs"), pid.to_string())?;
        Ok(quota)
    }

    /// How many times the group has used up its share and waited.
    pub fn throttled_periods(&self) -> u64 {
        // Both interfaces name it alike in `cpu.stat`.
        fs::read_to_string(self.group.join("cpu.stat"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("nr_throttled")?.trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        // A process that has exited left the group already; one that runs
        // on goes back to the root, or the group cannot be removed.
        let root = self.hierarchy.root().join("cgroup.procs");
        let _ = fs::write(root, self.pid.to_string());
        let _ = fs::remove_dir(&self.group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_quota_of_no_cores_is_refused_before_any_group_is_made() {
        let e = CpuQuota::limit("geiger-test-no-cores", std::process::id(), 0.0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = CpuQuota::limit("geiger-test-no-cores", std::process::id(), f64::NAN).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_busy_process_under_a_fifth_of_a_core_gets_no_more_than_that() {
        let mut spinner = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap();
        let pid = spinner.id();
        let quota = match CpuQuota::limit("geiger-test-spinner", pid, 0.2) {
            Ok(q) => q,
            // Without root or a cgroup interface there is nothing to test;
            // the benchmarks that use quotas say so and skip them too.
            Err(e) => {
                let _ = spinner.kill();
                let _ = spinner.wait();
                eprintln!("skipped: {e}");
                return;
            }
        };
        let before = crate::measure::cpu_time_of(pid);
        std::thread::sleep(Duration::from_secs(2));
        let used = crate::measure::cpu_time_of(pid) - before;
        let throttled = quota.throttled_periods();
        drop(quota);
        let _ = spinner.kill();
        let _ = spinner.wait();
        // 0.4 s of CPU in 2 s; a margin for the accounting at the edges.
        assert!(
            used < Duration::from_millis(600),
            "the spinner used {used:?} of CPU in 2 s under a fifth of a core"
        );
        assert!(throttled > 0, "a busy loop never met its quota");
        assert!(!Hierarchy::detect()
            .unwrap()
            .root()
            .join("geiger-test-spinner")
            .exists());
    }
}
