//! The public listener against clients that try to hold it open, over real
//! sockets to a real `geiger node`: slow request heads, idle keep-alive
//! connections, bodies that never finish, and one source opening more
//! connections than its share, each bounded by `[api.connections]`; and an
//! honest client from another address served throughout.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{Cluster, ADMIN_TOKEN};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const LIMITS: &str = "[api.connections]
header_read_timeout_ms = 1000
body_read_timeout_ms = 1000
stall_timeout_ms = 3000
max_connections = 512
max_connections_per_source = 8
";

async fn one_node() -> Cluster {
    let cluster = Cluster::start(common::one_per_zone(1), LIMITS);
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    cluster
}

fn api_addr(cluster: &Cluster) -> SocketAddr {
    cluster.node(1).spec.api_addr().parse().unwrap()
}

/// A connection from `127.0.0.<last>`, so that each test client has a
/// source address of its own.
async fn connect_from(last: u8, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), 0)))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the server closes the connection (or resets it); returns
/// what it sent and how long that took. Gives up after `within`.
async fn read_until_closed(
    stream: &mut TcpStream,
    within: Duration,
) -> Option<(Vec<u8>, Duration)> {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((got, started.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_off_at_the_header_timeout() {
    let cluster = one_node().await;
    let mut slow = connect_from(2, api_addr(&cluster)).await;
    let head =
        b"GET /healthz HTTP/1.1\r\nHost: geiger\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut closed_after = None;
    for byte in head {
        if slow.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed_after = match closed_after {
        Some(t) => t,
        None => {
            read_until_closed(&mut slow, Duration::from_secs(5))
                .await
                .expect("the slow head was still open 5 s after its last byte");
            started.elapsed()
        }
    };
    assert!(
        closed_after < Duration::from_millis(4000),
        "a slow head stayed open {closed_after:?} with a 1 s header timeout"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let cluster = one_node().await;
    let mut idle = connect_from(3, api_addr(&cluster)).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: geiger\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed_after) = read_until_closed(&mut idle, Duration::from_secs(5))
        .await
        .expect("an idle keep-alive connection was still open after 5 s");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        closed_after >= Duration::from_millis(900),
        "closed before the timeout: {closed_after:?}"
    );
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408_in_json_and_an_unauthenticated_one_is_never_read() {
    let cluster = one_node().await;
    let (status, body) = cluster
        .post(1, "/v1/admin/customers", &json!({ "name": "slow-body" }))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let key = body["api_key"].as_str().unwrap().to_string();

    // With a key: 6 of 100,000 announced bytes, then nothing.
    let mut slow = connect_from(4, api_addr(&cluster)).await;
    let head = format!(
        "POST /v1/chains HTTP/1.1\r\nHost: geiger\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"tag\""
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let (answer, after) = read_until_closed(&mut slow, Duration::from_secs(5))
        .await
        .expect("a body that never finished was still open after 5 s");
    let answer = String::from_utf8_lossy(&answer).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let json: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["error"]["code"], "request_timeout", "{answer}");
    assert!(after < Duration::from_secs(4), "answered after {after:?}");

    // Without a key: refused from the head alone, before any body byte.
    let mut anonymous = connect_from(5, api_addr(&cluster)).await;
    anonymous
        .write_all(
            b"POST /v1/chains HTTP/1.1\r\nHost: geiger\r\nContent-Type: application/json\r\n\
              Content-Length: 100000\r\n\r\n",
        )
        .await
        .unwrap();
    let mut first = [0u8; 12];
    tokio::time::timeout(Duration::from_millis(900), anonymous.read_exact(&mut first))
        .await
        .expect("no answer before the body deadline: the body was waited for")
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 401");
}

#[tokio::test]
async fn one_source_past_its_share_is_refused_while_another_source_is_served() {
    let cluster = one_node().await;
    let addr = api_addr(&cluster);
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut c = connect_from(6, addr).await;
        // A byte of a head, so each is a connection hyper is serving.
        c.write_all(b"G").await.unwrap();
        held.push(c);
    }
    let mut ninth = connect_from(6, addr).await;
    let _ = ninth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n")
        .await;
    let (answer, after) = read_until_closed(&mut ninth, Duration::from_secs(2))
        .await
        .expect("the connection past the per-source cap was served");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert!(
        after < Duration::from_millis(900),
        "closed only after {after:?} (the header timeout is 1 s)"
    );

    let mut honest = connect_from(7, addr).await;
    honest
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut honest, Duration::from_secs(2))
        .await
        .expect("an honest client from another address got no answer");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));

    let metrics = reqwest::get(format!("{}/metrics", cluster.url(1)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("geiger_api_connections_refused_total{reason=\"source_limit\"} 1"),
        "{metrics}"
    );
    drop(held);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let cluster = one_node().await;
    let status = reqwest::Client::new()
        .get(format!("{}/v1/cluster/status", cluster.url(1)))
        .header("authorization", format!("bearer {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}
