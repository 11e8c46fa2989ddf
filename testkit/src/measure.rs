//! What the benchmarks print about their own process: CPU time and
//! resident memory, read from `/proc/self`.

use std::time::Duration;

/// CPU time (user + system) this process has used, from /proc/self/stat
/// (zero where that is unreadable). For the benchmarks.
pub fn process_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the full line: 11 and 12 here,
    // in clock ticks of 10 ms.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// This process's `VmRSS:` line from /proc/self/status (empty where
/// unreadable). For the benchmarks.
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
