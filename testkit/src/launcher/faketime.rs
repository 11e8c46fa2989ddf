//! A wrong wall clock for one process: libfaketime (Debian's `faketime`
//! package) preloaded, with its monotonic clock left alone, so timers and
//! timeouts run true and only what the process reads as the date is off.

use std::path::PathBuf;

/// The environment variables that set them.
pub const VARIABLES: [&str; 3] = ["LD_PRELOAD", "FAKETIME", "FAKETIME_DONT_FAKE_MONOTONIC"];

/// libfaketime's preload library, wherever the architecture puts it.
pub fn library() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .flatten()
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists())
}

/// The environment that shifts a process's wall clock by `offset` (in
/// libfaketime's syntax: `+1h`, `-30s`, `+1d`); `None` without libfaketime.
pub fn clock_shifted(offset: &str) -> Option<Vec<(String, String)>> {
    let lib = library()?;
    Some(vec![
        (VARIABLES[0].to_string(), lib.display().to_string()),
        (VARIABLES[1].to_string(), offset.to_string()),
        (VARIABLES[2].to_string(), "1".to_string()),
    ])
}
