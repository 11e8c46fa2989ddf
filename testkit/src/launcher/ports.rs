//! Ports for the processes a test starts, checked free by binding them.
//!
//! Taken from below the kernel's ephemeral range (32768 and up on Linux),
//! which is where every outgoing connection gets its local port: a port
//! released there could go to some client's connection before the node
//! binds it, and the node then failed to start (a CI run lost a node that
//! way). Each test process walks its own stretch (by pid) so parallel
//! test processes seldom try the same port, and the bind check skips any
//! that another one holds.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

const FIRST: u32 = 10_000;
const SPAN: u32 = 22_000;

/// A port on `ip` that was free a moment ago, from `10000..32000`.
pub fn free_port(ip: Ipv4Addr) -> std::io::Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 220) * 100;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % SPAN) as u16;
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port on {ip} in {FIRST}..{}", FIRST + SPAN),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_below_the_ephemeral_range_and_differ() {
        let a = free_port(Ipv4Addr::LOCALHOST).unwrap();
        let b = free_port(Ipv4Addr::LOCALHOST).unwrap();
        assert_ne!(a, b);
        for p in [a, b] {
            assert!((10_000..32_000).contains(&p), "{p}");
        }
    }
}
