//! How fast one link can go, end to end (read, sign, frame, TCP, verify,
//! health-test). Ignored by default; run with
//! `cargo test -p geiger-hardware --test throughput -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use geiger_hardware::agent::{Agent, AgentConfig};
use geiger_hardware::{LinkConfig, LinkEvent, LinkSession, SourceConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn link_throughput_with_an_unlimited_source() {
    for chunk_size in [4096usize, 65536] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AgentConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().to_path_buf(),
            SourceConfig {
                rate: None,
                ..SourceConfig::sim()
            },
        );
        config.chunk_size = chunk_size;
        let agent = Agent::bind(config).await.unwrap();
        let addr = agent.local_addr().unwrap();
        let key = agent.public_key();
        tokio::spawn(agent.run_until(std::future::pending()));
        let mut cfg = LinkConfig::new(addr.to_string(), 1, key);
        cfg.health.alpha_log2 = 40;
        let mut s = LinkSession::connect(cfg).await.unwrap();
        let started = Instant::now();
        let mut bytes = 0u64;
        let mut chunks = 0u64;
        while started.elapsed() < Duration::from_secs(3) {
            match s.next_event().await {
                Some(LinkEvent::Chunk(c)) => {
                    bytes += c.chunk().bytes.len() as u64;
                    chunks += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "chunk {chunk_size} B: {:.1} MiB/s, {:.0} chunks/s",
            bytes as f64 / secs / (1024.0 * 1024.0),
            chunks as f64 / secs
        );
    }
}
