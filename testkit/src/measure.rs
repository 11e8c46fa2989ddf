//! What the benchmarks and measuring tests read about processes: CPU time
//! (of a process, or of each of its threads, by name), bytes written to
//! storage and resident memory, from Linux's `/proc`; and the one way they
//! all take percentiles.

use std::collections::BTreeMap;
use std::time::Duration;

/// User plus system CPU time in a `/proc/.../stat` line (zero where it is
/// unreadable).
fn stat_cpu_time(stat: &str) -> Duration {
    // Fields after the command name, which is in parentheses and may hold
    // spaces: utime and stime are the 14th and 15th fields of the line,
    // 11 and 12 here, in clock ticks.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Duration::from_micros((ticks(11) + ticks(12)) * 1_000_000 / hz)
}

/// CPU time (user + system) this process has used.
pub fn process_cpu_time() -> Duration {
    stat_cpu_time(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// CPU time (user + system) process `pid` has used (zero once it is gone).
pub fn cpu_time_of(pid: u32) -> Duration {
    stat_cpu_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// The `write_bytes:` field of a `/proc/.../io` text (zero where absent).
fn io_write_bytes(io: &str) -> u64 {
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes process `pid` has caused to be written to storage so far: pages
/// it dirtied in the page cache (whoever flushes them) and direct writes,
/// from `/proc/<pid>/io` (zero where unreadable: another user's process
/// without root, or a kernel without I/O accounting). What a write costs
/// the disk, which a B-tree's copy-on-write pages multiply.
pub fn storage_writes_of(pid: u32) -> u64 {
    io_write_bytes(&std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default())
}

/// Context switches (voluntary and forced) of process `pid`'s live threads
/// so far: how often it wakes, a steadier measure of background work than
/// CPU time on a shared machine.
pub fn context_switches_of(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        total += status
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

/// CPU time of each of process `pid`'s live threads, summed by thread name
/// (`tokio-runtime-w`, `raft-log-writer`, ...): where a process spends it.
pub fn cpu_time_by_thread(pid: u32) -> BTreeMap<String, Duration> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let name = match (stat.find('('), stat.rfind(')')) {
            (Some(a), Some(b)) if a < b => stat[a + 1..b].to_string(),
            _ => continue,
        };
        *out.entry(name).or_default() += stat_cpu_time(&stat);
    }
    out
}

/// This process's `VmRSS:` line from /proc/self/status (empty where
/// unreadable).
pub fn resident_memory_line() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// The `q`-quantile (`0.0..=1.0`) of `sorted` by nearest rank: the
/// smallest sample that at least a `q` share of the samples do not exceed.
/// `None` when there are no samples.
pub fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_writes_are_read_from_the_write_bytes_line() {
        let io = "rchar: 100\nwchar: 8192\nsyscr: 3\nsyscw: 2\nread_bytes: 0\n\
                  write_bytes: 12288\ncancelled_write_bytes: 4096\n";
        assert_eq!(io_write_bytes(io), 12288);
        assert_eq!(io_write_bytes(""), 0);
    }

    #[test]
    fn a_file_this_process_writes_and_syncs_counts_as_its_storage_writes() {
        if !std::path::Path::new("/proc/self/io").exists() {
            eprintln!("skipped: this kernel has no /proc/<pid>/io");
            return;
        }
        let pid = std::process::id();
        let dir = tempfile::tempdir().unwrap();
        let before = storage_writes_of(pid);
        let file = dir.path().join("written");
        std::fs::write(&file, vec![7u8; 1 << 20]).unwrap();
        std::fs::File::open(&file).unwrap().sync_all().unwrap();
        let written = storage_writes_of(pid) - before;
        // Other tests in this process may write too, so at least, not exactly.
        assert!(written >= 1 << 20, "{written} bytes");
    }

    #[test]
    fn percentiles_are_the_nearest_rank_sample() {
        let samples: Vec<u32> = (1..=1000).collect();
        assert_eq!(nearest_rank(&samples, 0.5), Some(500));
        assert_eq!(nearest_rank(&samples, 0.99), Some(990));
        assert_eq!(nearest_rank(&samples, 0.999), Some(999));
        assert_eq!(nearest_rank(&samples, 1.0), Some(1000));
        assert_eq!(nearest_rank(&samples, 0.0), Some(1));
        assert_eq!(nearest_rank(&[7u32], 0.99), Some(7));
        assert_eq!(nearest_rank::<u32>(&[], 0.5), None);
    }

    #[test]
    fn this_process_and_its_threads_account_for_the_cpu_it_burns() {
        // Judged against this thread's own CPU time: other tests run in
        // parallel threads that come and go, so the process burns more
        // than this thread, and the live threads may hold less than the
        // process has used.
        let this_thread =
            || stat_cpu_time(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
        let process_before = process_cpu_time();
        let thread_before = this_thread();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while this_thread() - thread_before < Duration::from_millis(200)
            && start.elapsed() < Duration::from_secs(20)
        {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        assert_ne!(x, 42);
        let burned = this_thread() - thread_before;
        assert!(burned >= Duration::from_millis(200), "{burned:?}");
        let me = std::process::id();
        let process = cpu_time_of(me) - process_before;
        assert!(process >= burned, "{process:?} < {burned:?}");
        let threads: Duration = cpu_time_by_thread(me).values().sum();
        assert!(threads >= burned, "{threads:?} < {burned:?}");
        assert_eq!(cpu_time_of(u32::MAX), Duration::ZERO);
    }
}
