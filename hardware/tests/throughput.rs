//! How fast one link can go, end to end (read, sign, frame, TLS, TCP,
//! verify, health-test), and what the TLS channel costs against the same
//! frames on plain TCP, in one run. Ignored by default; run with
//! `cargo test --release -p geiger-hardware --test throughput -- --ignored --nocapture --test-threads 1`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use geiger_hardware::agent::{Agent, AgentConfig};
use geiger_hardware::channel::{self, MemberNodes, PinnedDeviceKey};
use geiger_hardware::frame::{read_frame, Frame};
use geiger_hardware::{
    LinkConfig, LinkEvent, LinkSession, SignedChunk, SourceConfig, TrustedNodes,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RUN: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn link_throughput_with_an_unlimited_source() {
    let node = SigningKey::from_bytes(&[42; 32]);
    for chunk_size in [4096usize, 65536] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AgentConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().to_path_buf(),
            SourceConfig {
                rate: None,
                ..SourceConfig::sim()
            },
            TrustedNodes::fixed([node.verifying_key()]),
        );
        config.chunk_size = chunk_size;
        let agent = Agent::bind(config).await.unwrap();
        let addr = agent.local_addr().unwrap();
        let key = agent.public_key();
        let stats = agent.stats();
        tokio::spawn(agent.run_until(std::future::pending()));
        let mut cfg = LinkConfig::new(addr.to_string(), 1, key, node.clone());
        cfg.health.alpha_log2 = 40;
        let mut s = LinkSession::connect(cfg).await.unwrap();
        let started = Instant::now();
        let mut bytes = 0u64;
        let mut chunks = 0u64;
        while started.elapsed() < RUN {
            match s.next_event().await {
                Some(LinkEvent::Chunk(c)) => {
                    bytes += c.chunk().bytes.len() as u64;
                    chunks += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let secs = started.elapsed().as_secs_f64();
        s.close().await;
        println!(
            "link end to end over TLS, chunk {chunk_size} B: {:.1} MiB/s, {:.0} chunks/s; {} TLS handshake(s) for {} session(s)",
            bytes as f64 / secs / (1024.0 * 1024.0),
            chunks as f64 / secs,
            stats.handshakes(),
            stats.sessions()
        );
    }
}

/// Sends pre-signed chunk frames as fast as `w` takes them, for `RUN`.
async fn blast<W: AsyncWrite + Unpin>(mut w: W, frame: Vec<u8>) {
    let started = Instant::now();
    while started.elapsed() < RUN + Duration::from_millis(200) {
        if w.write_all(&frame).await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// Reads and decodes chunk frames for `RUN`; returns bytes of chunk data
/// per second.
async fn drain<R: AsyncRead + Unpin>(mut r: R) -> f64 {
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed() < RUN {
        match read_frame(&mut r).await {
            Ok(Frame::Chunk(c)) => bytes += c.bytes.len() as u64,
            other => panic!("unexpected {other:?}"),
        }
    }
    bytes as f64 / started.elapsed().as_secs_f64()
}

/// The transport alone: the same chunk frames over plain TCP (version 1's
/// transport) and over the link's TLS 1.3 channel, in one run, so the ratio
/// is the channel's cost without the source, signing or health tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn the_tls_channel_against_plain_tcp_for_the_same_frames() {
    let device = SigningKey::from_bytes(&[1; 32]);
    let node = SigningKey::from_bytes(&[42; 32]);
    for chunk_size in [4096usize, 65536] {
        let chunk = SignedChunk::sign(&device, 1, 1, vec![0x5a; chunk_size]);
        let frame = Frame::Chunk(chunk).encode();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sender = tokio::spawn({
            let frame = frame.clone();
            async move {
                let (tcp, _) = listener.accept().await.unwrap();
                tcp.set_nodelay(true).unwrap();
                blast(tcp, frame).await;
            }
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let plain = drain(tokio::io::BufReader::new(tcp)).await;
        sender.abort();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let members = MemberNodes::new(TrustedNodes::fixed([node.verifying_key()]));
        let server = channel::server_config(&device, members).unwrap();
        let sender = tokio::spawn({
            let frame = frame.clone();
            async move {
                let (tcp, _) = listener.accept().await.unwrap();
                tcp.set_nodelay(true).unwrap();
                let tls = tokio_rustls::TlsAcceptor::from(Arc::new(server))
                    .accept(tcp)
                    .await
                    .unwrap();
                blast(tls, frame).await;
            }
        });
        let client =
            channel::client_config(&node, PinnedDeviceKey::new(&device.verifying_key())).unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(channel::server_name(), tcp)
            .await
            .unwrap();
        let encrypted = drain(tokio::io::BufReader::new(tls)).await;
        sender.abort();

        let mib = |b: f64| b / (1024.0 * 1024.0);
        println!(
            "transport, chunk {chunk_size} B: plain TCP {:.0} MiB/s ({:.0} chunks/s), TLS 1.3 {:.0} MiB/s ({:.0} chunks/s), TLS/plain = {:.2}",
            mib(plain),
            plain / chunk_size as f64,
            mib(encrypted),
            encrypted / chunk_size as f64,
            encrypted / plain
        );
    }
}
