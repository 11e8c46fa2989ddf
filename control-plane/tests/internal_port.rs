//! The internal port attacked over real sockets: as a stranger (no cluster
//! secret) and as someone holding only the cluster secret. A stranger's
//! declared body is refused before a byte of it is read; the cluster
//! secret alone carries a peer's business (Raft RPC, customer writes) but
//! no operator command.

use std::net::SocketAddr;
use std::time::Duration;

use geiger_control_plane::codec::Codec;
use geiger_control_plane::raft_network::{
    wire_path, AdminOp, ForwardedResult, ForwardedWrite, ADMIN_HEADER, PATH_ADMIN, PATH_APPEND,
    PATH_VOTE, PATH_WRITE, SECRET_HEADER,
};
use geiger_control_plane::{api_key_hash, Command, Member};
use geiger_testkit::in_process::{default_tune, TestCluster, TEST_ADMIN_TOKEN, TEST_SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends a request head declaring `content_length` body bytes, sends none
/// of them, and returns the status line of the answer, or `None` if no
/// answer came within 3 s (what a server that reads the body first does).
async fn head_only(
    addr: SocketAddr,
    path: &str,
    content_length: u64,
    secret: Option<&str>,
) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let secret = secret
        .map(|s| format!("{SECRET_HEADER}: {s}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/octet-stream\r\n\
         content-length: {content_length}\r\n{secret}\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut answer))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&answer[..n]).into_owned();
    text.lines().next().map(str::to_string)
}

async fn post(
    addr: SocketAddr,
    path: &str,
    body: Vec<u8>,
    admin: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header(SECRET_HEADER, TEST_SECRET)
        .body(body);
    if let Some(admin) = admin {
        request = request.header(ADMIN_HEADER, admin);
    }
    request.send().await.unwrap()
}

fn forwarded(codec: Codec, command: Command) -> Vec<u8> {
    codec
        .encode(&ForwardedWrite {
            commands: vec![command],
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_declaring_a_huge_body_is_refused_before_any_of_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(dir.path(), 1, default_tune)
        .await
        .unwrap();
    let addr = cluster.nodes[0].addr;
    for path in [PATH_WRITE, PATH_APPEND, PATH_VOTE] {
        for secret in [None, Some("wrong-secret")] {
            let answer = head_only(addr, path, 256 << 20, secret).await;
            assert_eq!(
                answer.as_deref(),
                Some("HTTP/1.1 401 Unauthorized"),
                "{path} with {secret:?}: the body must not be awaited"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_declaring_a_body_over_the_paths_cap_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(dir.path(), 1, default_tune)
        .await
        .unwrap();
    let addr = cluster.nodes[0].addr;
    // A vote is a few hundred bytes; its cap is 64 KiB.
    let answer = head_only(addr, PATH_VOTE, 1 << 20, Some(TEST_SECRET)).await;
    assert_eq!(answer.as_deref(), Some("HTTP/1.1 413 Payload Too Large"));
    let answer = head_only(addr, PATH_WRITE, 1 << 30, Some(TEST_SECRET)).await;
    assert_eq!(answer.as_deref(), Some("HTTP/1.1 413 Payload Too Large"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_secret_alone_creates_no_customer_rotates_no_key_and_adds_no_member() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(dir.path(), 1, default_tune)
        .await
        .unwrap();
    cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let cp = cluster.node(0);
    let addr = cluster.nodes[0].addr;
    let keys_before = serde_json::to_string(&cp.keys().unwrap()).unwrap();
    let key_hash = api_key_hash("sk_attacker");

    let create = |codec| {
        forwarded(
            codec,
            Command::CreateCustomer {
                id: "cu_attacker".into(),
                name: "Attacker".into(),
                key_sha256: key_hash,
            },
        )
    };
    // Both wire formats: the legacy paths serve members not yet upgraded.
    for codec in [Codec::Postcard, Codec::Legacy] {
        let write = wire_path(codec, PATH_WRITE);
        let rotate = forwarded(codec, Command::RotateKey { secret: [0x42; 32] });
        for (what, body) in [("create customer", create(codec)), ("rotate key", rotate)] {
            for admin in [None, Some("not-the-admin-token")] {
                let answer = post(addr, &write, body.clone(), admin).await;
                assert_eq!(
                    answer.status(),
                    403,
                    "{what} with admin {admin:?} ({codec:?})"
                );
            }
        }
        let add = codec
            .encode(&AdminOp::AddLearner {
                id: 9,
                member: Member {
                    rpc_addr: "127.0.0.1:1".into(),
                    api_addr: "127.0.0.1:2".into(),
                    zone: "z".into(),
                    cloud: "c".into(),
                    region: "r".into(),
                },
            })
            .unwrap();
        let admin_path = wire_path(codec, PATH_ADMIN);
        assert_eq!(post(addr, &admin_path, add, None).await.status(), 403);
    }

    // Nothing changed.
    assert!(cp.customer_by_key_hash(&key_hash).unwrap().is_none());
    assert_eq!(
        serde_json::to_string(&cp.keys().unwrap()).unwrap(),
        keys_before
    );
    assert_eq!(cp.status().unwrap().members.len(), 1);

    // With the admin credential the same call goes through: the refusal
    // above was for want of it, not for anything else.
    let write = wire_path(Codec::Postcard, PATH_WRITE);
    let answer = post(
        addr,
        &write,
        create(Codec::Postcard),
        Some(TEST_ADMIN_TOKEN),
    )
    .await;
    assert_eq!(answer.status(), 200);
    let outcome: ForwardedResult = Codec::Postcard
        .decode(&answer.bytes().await.unwrap())
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(cp.customer_by_key_hash(&key_hash).unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_secret_carries_a_peers_customer_writes_in_either_wire_format() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(dir.path(), 1, default_tune)
        .await
        .unwrap();
    cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let addr = cluster.nodes[0].addr;
    // The legacy format at the legacy path is what a member older than
    // postcard sends during a rolling upgrade; it is answered in kind.
    for codec in [Codec::Postcard, Codec::Legacy] {
        let chain = forwarded(
            codec,
            Command::CreateChain {
                customer: "cu_test".into(),
                tag: format!("roulette {codec:?}"),
            },
        );
        let answer = post(addr, &wire_path(codec, PATH_WRITE), chain, None).await;
        assert_eq!(answer.status(), 200, "{codec:?}");
        let outcome: ForwardedResult = codec.decode(&answer.bytes().await.unwrap()).unwrap();
        assert!(outcome.is_ok(), "{codec:?}: {outcome:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_passes_an_operators_command_on_with_the_admin_credential() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::start(dir.path(), 3, default_tune)
        .await
        .unwrap();
    let leader = cluster
        .wait_for_leader(Duration::from_secs(10))
        .await
        .unwrap();
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let key_hash = api_key_hash("sk_through_a_follower");
    cluster
        .node(follower)
        .write(Command::CreateCustomer {
            id: "cu_follower".into(),
            name: "Through a follower".into(),
            key_sha256: key_hash,
        })
        .await
        .unwrap();
    cluster.node(follower).rotate_key().await.unwrap();
    assert!(cluster
        .node(leader)
        .customer_by_key_hash(&key_hash)
        .unwrap()
        .is_some());
}
