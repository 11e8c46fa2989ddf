//! Load without a valid credential, against real `geiger node` processes:
//! unknown API keys cost shared catch-ups with the leader rather than one
//! each, requests without a credential are limited per source address, and
//! a draw without a key is refused from its head, before its body.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

fn client_from(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn metric(cluster: &Cluster, id: u64, name: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", cluster.url(id)))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[tokio::test]
async fn a_flood_of_unknown_keys_at_a_follower_shares_its_catch_ups_with_the_leader() {
    let cluster = Cluster::start(common::one_per_zone(3), "");
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
    // Every node applies the membership before the flood, so only the flood
    // is counted.
    let (status, body) = cluster
        .post(leader, "/v1/admin/customers", &json!({ "name": "known" }))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let known_key = body["api_key"].as_str().unwrap().to_string();

    let before = metric(&cluster, follower, "geiger_auth_catch_ups_total").await;
    let url = format!("{}/v1/chains", cluster.url(follower));
    // 50 concurrent clients (one address, fewer connections than its cap),
    // 10 unknown keys each.
    let http = client_from(20);
    let requests = (0..50u64).map(|client| {
        let (url, http) = (url.clone(), http.clone());
        async move {
            let mut statuses = Vec::new();
            for i in 0..10u64 {
                let key = format!("gk_{:064x}", 0xdead_0000 + client * 10 + i);
                let reply = http
                    .post(&url)
                    .bearer_auth(key)
                    .json(&json!({ "tag": "t" }))
                    .send()
                    .await
                    .unwrap();
                statuses.push(reply.status().as_u16());
            }
            statuses
        }
    });
    let statuses: Vec<u16> = futures_join_all(requests).await.concat();
    assert_eq!(statuses.len(), 500);
    assert!(statuses.iter().all(|&s| s == 401), "{statuses:?}");
    let catch_ups = metric(&cluster, follower, "geiger_auth_catch_ups_total").await - before;
    eprintln!("500 unknown keys at a follower: {catch_ups} catch-ups with the leader");
    assert!(
        catch_ups <= 50.0,
        "500 unknown keys cost {catch_ups} catch-ups with the leader"
    );

    // A key created through the leader works at once on the follower.
    let (status, body) = cluster
        .post(leader, "/v1/admin/customers", &json!({ "name": "fresh" }))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    let fresh = body["api_key"].as_str().unwrap().to_string();
    for key in [fresh, known_key] {
        let status = client_from(21)
            .post(&url)
            .bearer_auth(key)
            .json(&json!({ "tag": "t" }))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 201);
    }
    // On the leader an unknown key needs no catch-up at all.
    let before = metric(&cluster, leader, "geiger_auth_catch_ups_total").await;
    let status = client_from(22)
        .post(format!("{}/v1/chains", cluster.url(leader)))
        .bearer_auth(format!("gk_{:064x}", 7))
        .json(&json!({ "tag": "t" }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    assert_eq!(
        metric(&cluster, leader, "geiger_auth_catch_ups_total").await,
        before
    );
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn requests_without_a_credential_are_limited_per_source_address_and_health_checks_are_not() {
    // A share small enough to spend however slow the machine is.
    let cluster = Cluster::start_with_env(
        common::one_per_zone(1),
        "",
        vec![
            ("GEIGER_API__ANONYMOUS_RATE_PER_SECOND".into(), "5".into()),
            ("GEIGER_API__ANONYMOUS_RATE_BURST".into(), "20".into()),
        ],
    );
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let keys_url = format!("{}/v1/keys", cluster.url(1));
    let noisy = client_from(30);
    let mut limited: Option<Value> = None;
    for _ in 0..200 {
        let reply = noisy.get(&keys_url).send().await.unwrap();
        if reply.status() == 429 {
            assert!(reply.headers().contains_key("retry-after"));
            limited = Some(reply.json().await.unwrap());
            break;
        }
    }
    let limited = limited.expect("200 anonymous requests from one address were never limited");
    assert_eq!(limited["error"]["code"], "rate_limited");
    // The same address's health checks, and another address, still pass.
    let ready = noisy
        .get(format!("{}/healthz", cluster.url(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let other = client_from(31).get(&keys_url).send().await.unwrap();
    assert_eq!(other.status(), 200);
    assert!(metric(&cluster, 1, "geiger_api_source_rate_limited_total").await >= 1.0);
}

#[tokio::test]
async fn a_draw_without_a_key_is_refused_before_its_body_is_read() {
    let cluster = Cluster::start(common::one_per_zone(1), "");
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let addr: SocketAddr = cluster.node(1).spec.api_addr().parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, 32), 0)))
        .unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/draws HTTP/1.1\r\nHost: g\r\nContent-Type: application/json\r\n\
              Content-Length: 60000\r\n\r\n{\"previous\"",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut head))
        .await
        .expect("no answer within 2 s: the server waited for the body")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 401", "after {:?}", started.elapsed());
}

#[tokio::test]
async fn with_a_metrics_token_set_metrics_are_read_only_with_that_token_or_the_admin_token() {
    const METRICS_TOKEN: &str = "test-metrics-token-0123456789";
    let cluster = Cluster::start_with_env(
        common::one_per_zone(1),
        "",
        vec![("GEIGER_API__METRICS_TOKEN".into(), METRICS_TOKEN.into())],
    );
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let url = format!("{}/metrics", cluster.url(1));
    let http = reqwest::Client::new();
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = http
        .get(&url)
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    for token in [METRICS_TOKEN, common::ADMIN_TOKEN] {
        let reply = http.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(reply.status(), 200);
        assert!(reply.text().await.unwrap().contains("geiger_"));
    }
    // A customer's API key is no metrics credential.
    let (status, created) = cluster
        .post(
            1,
            "/v1/admin/customers",
            &json!({ "name": "metrics-reader" }),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    let api_key = created["api_key"].as_str().unwrap();
    let as_customer = http.get(&url).bearer_auth(api_key).send().await.unwrap();
    assert_eq!(as_customer.status(), 401);
}
