//! The public HTTP API end to end, over real HTTP against a 3-node cluster
//! of real `geiger node` processes fed by a real `geiger-device`: every
//! endpoint's success and error paths, draws through followers, byte-for-byte
//! lookups on every node, and the client SDK riding out a killed node.

mod common;

use std::time::Duration;

use common::{Cluster, Device, ADMIN_TOKEN};
use geiger_client::{ClientBuilder, ClientError};
use geiger_protocol::{DrawRequest, RecordId, Spec};
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

struct Setup {
    cluster: Cluster,
    _device: Device,
    leader: u64,
}

/// A 3-node cluster with one device whose entropy has reached the pool.
async fn cluster_with_entropy() -> Setup {
    cluster_of_with_entropy(3).await
}

/// `nodes` nodes with one device whose entropy has reached the pool.
async fn cluster_of_with_entropy(nodes: u64) -> Setup {
    let cluster = Cluster::start(common::one_per_zone(nodes), "");
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let device = Device::start(&cluster.dir.path().join("device"), &["--rate", "262144"]);
    let (status, body) = cluster
        .post(leader, "/v1/admin/links", &device.registration())
        .await
        .unwrap();
    assert!(
        status == 201 || status == 200,
        "link registration: {status} {body}"
    );
    cluster
        .wait_until(Duration::from_secs(30), "entropy in the pool", || async {
            let s = cluster.status(leader).await?;
            (s["pool_bytes"].as_u64()? > 100_000).then_some(())
        })
        .await;
    Setup {
        cluster,
        _device: device,
        leader,
    }
}

async fn create_customer(cluster: &Cluster, node: u64, name: &str) -> String {
    let (status, body) = cluster
        .post(node, "/v1/admin/customers", &json!({ "name": name }))
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    body["api_key"].as_str().unwrap().to_string()
}

/// A raw request with full control over headers and body.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: Option<&str>,
    content_type: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut r = http.request(method, url);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some(ct) = content_type {
        r = r.header(CONTENT_TYPE, ct);
    }
    if let Some(b) = body {
        r = r.body(b);
    }
    let response = r.send().await.expect("the node answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        panic!(
            "not the JSON error shape: {}",
            String::from_utf8_lossy(body)
        )
    });
    assert!(v["error"]["message"].is_string(), "no message: {v}");
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_as_the_contract_says() {
    let Setup {
        cluster, leader, ..
    } = cluster_with_entropy().await;
    let http = reqwest::Client::new();
    let follower = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    let url = |id: u64, path: &str| format!("{}{path}", cluster.url(id));
    let json_ct = Some("application/json");
    use reqwest::Method;

    // Operators: the admin token is required.
    let (s, _, b) = send(
        &http,
        Method::GET,
        url(follower, "/v1/cluster/status"),
        None,
        None,
        None,
    )
    .await;
    assert_eq!((s, error_code(&b).as_str()), (401, "unauthorized"));
    let (s, _, b) = send(
        &http,
        Method::GET,
        url(follower, "/v1/cluster/status"),
        Some(ADMIN_TOKEN),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let status: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(status["voters"].as_array().unwrap().len(), 3);
    assert_eq!(status["placement"]["survives_zone_loss"], true);
    // The pool depth per device, in bytes and in seconds of demand (none
    // yet). The Health actor refreshes it every 500 ms, so wait for a tick.
    assert_eq!(status["devices"].as_array().unwrap().len(), 1);
    let seconds = cluster
        .wait_until(
            Duration::from_secs(10),
            "pool seconds in the status",
            || async {
                let s = cluster.status(follower).await?;
                let m = s["pool_seconds_of_demand"].as_object()?.clone();
                (m.len() == 1).then_some(m)
            },
        )
        .await;
    assert!(
        seconds.values().all(Value::is_null),
        "no draws yet, no demand: {seconds:?}"
    );
    let key = create_customer(&cluster, follower, "casino").await;
    let other_key = create_customer(&cluster, leader, "lottery").await;

    // Chains.
    let (s, _, b) = send(
        &http,
        Method::POST,
        url(follower, "/v1/chains"),
        None,
        json_ct,
        Some(br#"{"tag":"t"}"#.to_vec()),
    )
    .await;
    assert_eq!((s, error_code(&b).as_str()), (401, "unauthorized"));
    let (s, _, b) = send(
        &http,
        Method::POST,
        url(follower, "/v1/chains"),
        Some(&key),
        Some("text/plain"),
        Some(br#"{"tag":"t"}"#.to_vec()),
    )
    .await;
    assert_eq!(
        (s, error_code(&b).as_str()),
        (415, "unsupported_media_type")
    );
    let (s, _, b) = send(
        &http,
        Method::POST,
        url(follower, "/v1/chains"),
        Some(&key),
        json_ct,
        Some(br#"{"tag":"#.to_vec()),
    )
    .await;
    assert_eq!((s, error_code(&b).as_str()), (400, "invalid_json"));
    let (s, _, b) = send(
        &http,
        Method::POST,
        url(follower, "/v1/chains"),
        Some(&key),
        json_ct,
        Some(br#"{"tag":"a\nb"}"#.to_vec()),
    )
    .await;
    assert_eq!((s, error_code(&b).as_str()), (422, "invalid_request"));
    let (s, headers, b) = send(
        &http,
        Method::POST,
        url(follower, "/v1/chains"),
        Some(&key),
        json_ct,
        Some(br#"{"tag":"blackjack 4"}"#.to_vec()),
    )
    .await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
    let genesis: Value = serde_json::from_slice(&b).unwrap();
    let chain_id = genesis["id"].as_str().unwrap().to_string();
    assert_eq!(
        headers["location"],
        format!("/v1/chains/{chain_id}").as_str()
    );
    let (_, _, b) = send(
        &http,
        Method::POST,
        url(leader, "/v1/chains"),
        Some(&other_key),
        json_ct,
        Some(br#"{"tag":"lotto"}"#.to_vec()),
    )
    .await;
    let other_chain: Value = serde_json::from_slice(&b).unwrap();

    // A chain request retried with its `request_id`, through another node:
    // the same chain, byte for byte, not a second one.
    let once = br#"{"tag":"baccarat","request_id":"open-7"}"#.to_vec();
    let (s, headers, first) = send(
        &http,
        Method::POST,
        url(follower, "/v1/chains"),
        Some(&key),
        json_ct,
        Some(once.clone()),
    )
    .await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&first));
    assert!(headers.get("geiger-replayed").is_none());
    let (s, headers, again) = send(
        &http,
        Method::POST,
        url(leader, "/v1/chains"),
        Some(&key),
        json_ct,
        Some(once),
    )
    .await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&again));
    assert_eq!(headers["geiger-replayed"], "true");
    assert_eq!(again, first);
    let (s, _, b) = send(
        &http,
        Method::POST,
        url(leader, "/v1/chains"),
        Some(&key),
        json_ct,
        Some(br#"{"tag":"t","request_id":"no spaces"}"#.to_vec()),
    )
    .await;
    assert_eq!((s, error_code(&b).as_str()), (422, "invalid_request"));

    // A draw sent to a follower.
    let request = json!({"previous": chain_id, "tag": "hand 1", "request_id": "r-1",
        "spec": {"kind": "integers", "min": 1, "max": 6, "count": 5, "unique": false}});
    let request_bytes = serde_json::to_vec(&request).unwrap();
    let (s, headers, first_body) = send(
        &http,
        Method::POST,
        url(follower, "/v1/draws"),
        Some(&key),
        json_ct,
        Some(request_bytes.clone()),
    )
    .await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&first_body));
    let draw: geiger_protocol::DrawResponse = serde_json::from_slice(&first_body).unwrap();
    let draw_id = draw.draw.id.to_string();
    assert_eq!(headers["location"], format!("/v1/draws/{draw_id}").as_str());
    assert!(headers.get("geiger-replayed").is_none());
    assert_eq!(draw.draw.body.position, 1);

    // It verifies against the published keys.
    let (s, _, keys) = send(
        &http,
        Method::GET,
        url(leader, "/v1/keys"),
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let keys: geiger_protocol::KeySet = serde_json::from_slice(&keys).unwrap();
    geiger_protocol::verify_draw(&draw, &keys, None).expect("the draw verifies");

    // Looked up on every node: the original request and the 201 body, byte for byte.
    for id in cluster.ids() {
        let (s, _, b) = send(
            &http,
            Method::GET,
            url(id, &format!("/v1/draws/{draw_id}")),
            None,
            None,
            None,
        )
        .await;
        assert_eq!(s, 200, "node {id}");
        let raw: serde_json::Map<String, Value> = serde_json::from_slice(&b).unwrap();
        assert_eq!(raw["request"], request, "node {id}");
        let text = String::from_utf8(b.clone()).unwrap();
        let embedded = text
            .strip_prefix(&format!(
                "{{\"request\":{},\"response\":",
                String::from_utf8(request_bytes.clone()).unwrap()
            ))
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or_else(|| panic!("node {id}: unexpected lookup layout {text}"));
        assert_eq!(embedded.as_bytes(), first_body.as_slice(), "node {id}");
    }

    // A retry of the same request is an idempotent replay of the same bytes.
    let (s, headers, replay) = send(
        &http,
        Method::POST,
        url(leader, "/v1/draws"),
        Some(&key),
        json_ct,
        Some(request_bytes.clone()),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(replay, first_body);
    assert_eq!(headers["geiger-replayed"], "true");

    // Another request on the same previous is refused and names the draw.
    let reroll =
        json!({"previous": chain_id, "tag": "hand 1 again", "spec": {"kind": "bytes", "count": 8}});
    let (s, _, b) = send(
        &http,
        Method::POST,
        url(follower, "/v1/draws"),
        Some(&key),
        json_ct,
        Some(serde_json::to_vec(&reroll).unwrap()),
    )
    .await;
    assert_eq!((s, error_code(&b).as_str()), (409, "previous_already_used"));
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["existing_id"], draw_id.as_str());

    // Bad draws change nothing.
    let bad = |spec: Value| {
        serde_json::to_vec(&json!({"previous": draw_id, "tag": "x", "spec": spec})).unwrap()
    };
    let (s, _, b) = send(
        &http,
        Method::POST,
        url(follower, "/v1/draws"),
        Some(&key),
        json_ct,
        Some(bad(
            json!({"kind": "integers", "min": 6, "max": 1, "count": 1}),
        )),
    )
    .await;
    assert_eq!((s, error_code(&b).as_str()), (422, "invalid_request"));
    let (s, _, b) = send(
        &http,
        Method::POST,
        url(follower, "/v1/draws"),
        Some(&key),
        json_ct,
        Some(bad(json!({"kind": "dice"}))),
    )
    .await;
    assert_eq!((s, error_code(&b).as_str()), (400, "invalid_json"));
    let unknown = RecordId::for_body(geiger_protocol::RecordKind::Draw, b"nothing");
    let (s, _, b) = send(
        &http,
        Method::POST,
        url(follower, "/v1/draws"),
        Some(&key),
        json_ct,
        Some(
            serde_json::to_vec(
                &json!({"previous": unknown, "tag": "x", "spec": {"kind": "bytes", "count": 1}}),
            )
            .unwrap(),
        ),
    )
    .await;
    assert_eq!((s, error_code(&b).as_str()), (404, "not_found"));
    let (s, _, b) = send(&http, Method::POST, url(follower, "/v1/draws"), Some(&key), json_ct,
        Some(serde_json::to_vec(&json!({"previous": other_chain["id"], "tag": "x", "spec": {"kind": "bytes", "count": 1}})).unwrap())).await;
    assert_eq!((s, error_code(&b).as_str()), (403, "forbidden"));
    let (s, _, b) = send(
        &http,
        Method::POST,
        url(follower, "/v1/draws"),
        Some(&key),
        json_ct,
        Some(vec![b' '; 70_000]),
    )
    .await;
    assert_eq!((s, error_code(&b).as_str()), (413, "payload_too_large"));
    let (s, _, b) = send(
        &http,
        Method::GET,
        url(follower, "/v1/nowhere"),
        None,
        None,
        None,
    )
    .await;
    assert_eq!((s, error_code(&b).as_str()), (404, "not_found"));
    let (s, _, b) = send(
        &http,
        Method::DELETE,
        url(follower, "/v1/draws"),
        None,
        None,
        None,
    )
    .await;
    assert_eq!((s, error_code(&b).as_str()), (405, "method_not_allowed"));
    let (s, _, b) = send(
        &http,
        Method::GET,
        url(follower, "/v1/draws/dr_notanid"),
        None,
        None,
        None,
    )
    .await;
    assert_eq!((s, error_code(&b).as_str()), (404, "not_found"));

    // The chain, its draws, paginated.
    let mut previous = draw_id.clone();
    for i in 2..=4 {
        let r = json!({"previous": previous, "tag": format!("hand {i}"), "spec": {"kind": "permutation", "n": 52}});
        let (s, _, b) = send(
            &http,
            Method::POST,
            url(i % 3 + 1, "/v1/draws"),
            Some(&key),
            json_ct,
            Some(serde_json::to_vec(&r).unwrap()),
        )
        .await;
        assert_eq!(s, 201, "{}", String::from_utf8_lossy(&b));
        let v: Value = serde_json::from_slice(&b).unwrap();
        previous = v["draw"]["id"].as_str().unwrap().to_string();
    }
    let (s, _, b) = send(
        &http,
        Method::GET,
        url(follower, &format!("/v1/chains/{chain_id}")),
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let chain: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        (chain["length"].as_u64(), chain["head"].as_str()),
        (Some(4), Some(previous.as_str()))
    );
    assert_eq!(chain["genesis"], genesis);
    let (s, _, b) = send(
        &http,
        Method::GET,
        url(leader, &format!("/v1/chains/{chain_id}/draws?limit=3")),
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let page: Value = serde_json::from_slice(&b).unwrap();
    let positions: Vec<u64> = page["draws"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["draw"]["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![1, 2, 3]);
    assert_eq!(page["next_after"], 3);
    let (_, _, b) = send(
        &http,
        Method::GET,
        url(leader, &format!("/v1/chains/{chain_id}/draws?after=3")),
        None,
        None,
        None,
    )
    .await;
    let page: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(page["draws"].as_array().unwrap().len(), 1);
    assert!(page.get("next_after").is_none());
    let (s, _, b) = send(
        &http,
        Method::GET,
        url(leader, &format!("/v1/chains/{chain_id}/draws?limit=0")),
        None,
        None,
        None,
    )
    .await;
    assert_eq!((s, error_code(&b).as_str()), (422, "invalid_request"));

    // Every chain of a customer is listed publicly, in creation order.
    let customer = genesis["chain"]["customer"].as_str().unwrap();
    for _ in 0..2 {
        let (s, _, _) = send(
            &http,
            Method::POST,
            url(leader, "/v1/chains"),
            Some(&key),
            json_ct,
            Some(br#"{"tag":"more"}"#.to_vec()),
        )
        .await;
        assert_eq!(s, 201);
    }
    let (s, _, b) = send(
        &http,
        Method::GET,
        url(
            follower,
            &format!("/v1/customers/{customer}/chains?limit=2"),
        ),
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let listed: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(listed["chains"][0]["id"], chain_id.as_str());
    assert_eq!(listed["chains"].as_array().unwrap().len(), 2);
    let after = listed["next_after"].as_u64().expect("a second page");
    let (_, _, b) = send(
        &http,
        Method::GET,
        url(
            follower,
            &format!("/v1/customers/{customer}/chains?after={after}"),
        ),
        None,
        None,
        None,
    )
    .await;
    let rest: Value = serde_json::from_slice(&b).unwrap();
    // blackjack 4, baccarat (once, though asked twice), more, more.
    assert_eq!(rest["chains"].as_array().unwrap().len(), 2);
    assert!(rest.get("next_after").is_none());

    // Health, metrics and the API description.
    let (s, _, _) = send(
        &http,
        Method::GET,
        url(follower, "/healthz"),
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    cluster
        .wait_until(Duration::from_secs(10), "readiness", || async {
            let (s, _, _) = send(
                &http,
                Method::GET,
                url(follower, "/readyz"),
                None,
                None,
                None,
            )
            .await;
            (s == 200).then_some(())
        })
        .await;
    let (s, _, b) = send(
        &http,
        Method::GET,
        url(follower, "/metrics"),
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let metrics = String::from_utf8(b).unwrap();
    assert!(
        metrics.contains("geiger_draws_total{kind=\"integers\",outcome=\"created\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("outcome=\"previous_already_used\"} 1"),
        "{metrics}"
    );
    let (s, _, b) = send(
        &http,
        Method::GET,
        url(follower, "/v1/openapi.json"),
        None,
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let doc: Value = serde_json::from_slice(&b).unwrap();
    for path in [
        "/v1/draws",
        "/v1/draws/{id}",
        "/v1/chains",
        "/v1/chains/{id}/draws",
        "/v1/keys",
        "/v1/cluster/status",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_draws_on_one_previous_issue_exactly_one() {
    let Setup {
        cluster, leader, ..
    } = cluster_with_entropy().await;
    let key = create_customer(&cluster, leader, "casino").await;
    let client = ClientBuilder::new(cluster.ids().iter().map(|id| cluster.url(*id)))
        .api_key(key)
        .build()
        .unwrap();
    let chain = client.create_chain("contended").await.unwrap().response.id;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .draw(DrawRequest {
                        previous: chain,
                        tag: format!("attempt {i}"),
                        spec: Spec::Bytes { count: 16 },
                        request_id: Some(format!("attempt-{i}")),
                    })
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut existing = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(issued) => winners.push(issued.response.draw.id),
            Err(ClientError::PreviousAlreadyUsed { existing: id }) => existing.push(id),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one draw is issued");
    assert_eq!(existing.len(), 49);
    assert!(
        existing.iter().all(|id| *id == winners[0]),
        "every refusal names the winner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sdk_survives_a_node_killed_mid_run() {
    let Setup {
        mut cluster,
        leader,
        _device,
    } = cluster_with_entropy().await;
    let key = create_customer(&cluster, leader, "casino").await;
    let client = ClientBuilder::new(cluster.ids().iter().map(|id| cluster.url(*id)))
        .api_key(key)
        .deadline(Duration::from_secs(20))
        .build()
        .unwrap();
    let chain = client.create_chain("survivor").await.unwrap().response.id;
    let mut previous = chain;
    let mut issued = Vec::new();
    for i in 0..40 {
        if i == 15 {
            // Kill the leader: the hardest node to lose mid-run.
            let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
            cluster.kill(leader);
        }
        let draw = client
            .draw(DrawRequest {
                previous,
                tag: format!("round {i}"),
                spec: Spec::Selection { k: 6, n: 49 },
                request_id: None,
            })
            .await
            .unwrap_or_else(|e| panic!("draw {i} failed: {e}"));
        assert_eq!(draw.response.draw.body.position, i + 1);
        previous = draw.response.draw.id;
        issued.push(draw);
    }
    // Every draw is readable, byte-identical, from every surviving node.
    for id in cluster.live() {
        let node = ClientBuilder::new([cluster.url(id)]).build().unwrap();
        for d in &issued {
            let lookup = node.get_draw(&d.response.draw.id).await.unwrap();
            assert_eq!(lookup.response_raw, d.raw, "node {id}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_over_its_rate_limit_gets_429_with_retry_after_and_nothing_changes() {
    let cluster = Cluster::start_with_env(
        common::one_per_zone(1),
        "",
        vec![
            ("GEIGER_API__RATE_PER_SECOND".into(), "0.2".into()),
            ("GEIGER_API__RATE_BURST".into(), "2".into()),
        ],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let key = create_customer(&cluster, leader, "hasty").await;
    let http = reqwest::Client::new();
    let create = || {
        send(
            &http,
            reqwest::Method::POST,
            format!("{}/v1/chains", cluster.url(leader)),
            Some(&key),
            Some("application/json"),
            Some(br#"{"tag":"t"}"#.to_vec()),
        )
    };
    let (status, _, first) = create().await;
    assert_eq!(status, 201);
    assert_eq!(create().await.0, 201);
    let (status, headers, body) = create().await;
    assert_eq!((status, error_code(&body).as_str()), (429, "rate_limited"));
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=5).contains(&wait), "Retry-After {wait}");
    // Only the two accepted requests opened chains.
    let first: Value = serde_json::from_slice(&first).unwrap();
    let customer = first["chain"]["customer"].as_str().unwrap();
    let (_, _, b) = send(
        &http,
        reqwest::Method::GET,
        format!("{}/v1/customers/{customer}/chains", cluster.url(leader)),
        None,
        None,
        None,
    )
    .await;
    let listed: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(listed["chains"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geiger_ctl_prints_the_cluster_and_creates_customers() {
    let cluster = Cluster::start(common::one_per_zone(1), "");
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_geiger"))
            .arg("ctl")
            .args(["--url", &cluster.url(leader), "--admin-token", ADMIN_TOKEN])
            .args(args)
            .output()
            .expect("geiger ctl runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, out) = ctl(&["status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("leader {leader}")), "{out}");
    assert!(out.contains("zone-1"), "{out}");
    assert!(
        out.contains("survives loss of a node: NO"),
        "one voter survives nothing: {out}"
    );
    let (code, out) = ctl(&["customer", "create", "casino royale"]);
    assert_eq!(code, Some(0), "{out}");
    let key = out
        .split_whitespace()
        .find(|w| w.starts_with("gk_"))
        .unwrap_or_else(|| panic!("no key printed: {out}"));
    // The printed key works.
    let client = ClientBuilder::new([cluster.url(leader)])
        .api_key(key)
        .build()
        .unwrap();
    client.create_chain("from ctl").await.unwrap();
    // A wrong token is refused, with a non-zero exit.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geiger"))
        .args([
            "ctl",
            "--url",
            &cluster.url(leader),
            "--admin-token",
            "wrong-token-0123456789",
            "status",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn geiger_ctl_prints_every_members_link_key_for_the_devices_and_nothing_if_one_is_silent() {
    let mut cluster = Cluster::start(common::one_per_zone(3), "");
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let ctl = |cluster: &Cluster| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_geiger"))
            .arg("ctl")
            .args(["--url", &cluster.url(leader), "--admin-token", ADMIN_TOKEN])
            .args(["link", "trusted-nodes"])
            .output()
            .expect("geiger ctl runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, out, err) = ctl(&cluster);
    assert_eq!(code, Some(0), "{out}{err}");
    // The test kit gives every node the same link key; each line is the
    // member's own answer about itself.
    let key = hex::encode(common::test_link_key().verifying_key().as_bytes());
    for id in cluster.ids() {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&key)
                    && l.contains(&format!("# node {id} (voter, zone-{id}"))),
            "{out}"
        );
    }
    assert_eq!(
        out.lines().filter(|l| !l.starts_with('#')).count(),
        3,
        "{out}"
    );
    // A member that cannot answer for itself fails the command, and no
    // partial list is printed.
    let silent = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    cluster.kill(silent);
    let (code, out, err) = ctl(&cluster);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!("no link key from node {silent}")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_a_fast_503_with_retry_after_not_a_growing_queue() {
    let cluster = Cluster::start_with_env(
        common::one_per_zone(1),
        "",
        vec![
            ("GEIGER_API__WORKERS".into(), "1".into()),
            ("GEIGER_API__QUEUE".into(), "1".into()),
        ],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;
    let key = create_customer(&cluster, leader, "busy").await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/chains", cluster.url(leader));
    let started = std::time::Instant::now();
    let attempts: Vec<_> = (0..64)
        .map(|_| {
            let (http, url, key) = (http.clone(), url.clone(), key.clone());
            tokio::spawn(async move {
                send(
                    &http,
                    reqwest::Method::POST,
                    url,
                    Some(&key),
                    Some("application/json"),
                    Some(br#"{"tag":"t"}"#.to_vec()),
                )
                .await
            })
        })
        .collect();
    let (mut created, mut refused) = (0, 0);
    for a in attempts {
        let (status, headers, body) = a.await.unwrap();
        match status {
            201 => created += 1,
            503 => {
                assert_eq!(error_code(&body), "unavailable");
                assert!(headers.contains_key("retry-after"));
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&body)),
        }
    }
    assert!(
        created >= 1 && refused >= 1,
        "created {created}, refused {refused}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "overload answers quickly"
    );
    // Every 201 is a chain; no 503 made one.
    let first = {
        let (_, _, b) = send(
            &http,
            reqwest::Method::POST,
            url.clone(),
            Some(&key),
            Some("application/json"),
            Some(br#"{"tag":"last"}"#.to_vec()),
        )
        .await;
        serde_json::from_slice::<Value>(&b).unwrap()
    };
    let customer = first["chain"]["customer"].as_str().unwrap();
    let (_, _, b) = send(
        &http,
        reqwest::Method::GET,
        format!("{}/v1/customers/{customer}/chains", cluster.url(leader)),
        None,
        None,
        None,
    )
    .await;
    let listed: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(listed["chains"].as_array().unwrap().len(), created + 1);
}

/// A JSON POST with the customer's key.
async fn post_json(
    http: &reqwest::Client,
    cluster: &Cluster,
    node: u64,
    key: &str,
    path: &str,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    send(
        http,
        reqwest::Method::POST,
        format!("{}{path}", cluster.url(node)),
        Some(key),
        Some("application/json"),
        Some(body.as_bytes().to_vec()),
    )
    .await
}

/// A 422 `request_id_reused` in the error shape, naming `field`.
fn assert_request_id_reused(status: u16, body: &[u8], field: &str) {
    assert_eq!(
        (status, error_code(body).as_str()),
        (422, "request_id_reused"),
        "{}",
        String::from_utf8_lossy(body)
    );
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["error"]["field"], field, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_reused_with_another_body_gets_422_request_id_reused_and_changes_nothing() {
    let Setup {
        cluster, leader, ..
    } = cluster_of_with_entropy(1).await;
    let key = create_customer(&cluster, leader, "strict").await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        send(
            &http,
            reqwest::Method::GET,
            format!("{}{path}", cluster.url(leader)),
            None,
            None,
            None,
        )
    };

    // A chain request_id reused with another tag: refused, no second chain.
    let (s, _, first_chain) = post_json(
        &http,
        &cluster,
        leader,
        &key,
        "/v1/chains",
        r#"{"tag":"lotto","request_id":"open-1"}"#,
    )
    .await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&first_chain));
    let genesis: Value = serde_json::from_slice(&first_chain).unwrap();
    let chain = genesis["id"].as_str().unwrap().to_string();
    let customer = genesis["chain"]["customer"].as_str().unwrap().to_string();
    let (s, headers, b) = post_json(
        &http,
        &cluster,
        leader,
        &key,
        "/v1/chains",
        r#"{"tag":"keno","request_id":"open-1"}"#,
    )
    .await;
    assert_request_id_reused(s, &b, "tag");
    assert!(headers.get("geiger-replayed").is_none());
    let (s, _, b) = get(format!("/v1/customers/{customer}/chains")).await;
    assert_eq!(s, 200);
    let listed: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(listed["chains"].as_array().unwrap().len(), 1, "{listed}");
    // The exact repeat, keys in another order, still replays the bytes.
    let (s, headers, again) = post_json(
        &http,
        &cluster,
        leader,
        &key,
        "/v1/chains",
        r#"{ "request_id": "open-1", "tag": "lotto" }"#,
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(headers["geiger-replayed"], "true");
    assert_eq!(again, first_chain);

    // A draw request_id reused with another spec or another tag: refused,
    // nothing drawn, the chain's head unchanged.
    let original = format!(
        r#"{{"previous":"{chain}","tag":"hand 1","request_id":"r-1","spec":{{"kind":"integers","min":1,"max":6,"count":2}}}}"#
    );
    let (s, _, first_draw) = post_json(&http, &cluster, leader, &key, "/v1/draws", &original).await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&first_draw));
    let draw: geiger_protocol::DrawResponse = serde_json::from_slice(&first_draw).unwrap();
    let other_spec = format!(
        r#"{{"previous":"{chain}","tag":"hand 1","request_id":"r-1","spec":{{"kind":"bytes","count":8}}}}"#
    );
    let (s, headers, b) = post_json(&http, &cluster, leader, &key, "/v1/draws", &other_spec).await;
    assert_request_id_reused(s, &b, "spec");
    assert!(headers.get("geiger-replayed").is_none());
    let (s, _, b) = post_json(
        &http,
        &cluster,
        leader,
        &key,
        "/v1/draws",
        &original.replace("hand 1", "hand 2"),
    )
    .await;
    assert_request_id_reused(s, &b, "tag");
    let (s, _, b) = get(format!("/v1/chains/{chain}")).await;
    assert_eq!(s, 200);
    let view: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(view["length"], 1, "{view}");
    assert_eq!(view["head"], draw.draw.id.to_string(), "{view}");
    // The exact repeat (with the default spelled out) replays the bytes.
    let (s, headers, replay) = post_json(
        &http,
        &cluster,
        leader,
        &key,
        "/v1/draws",
        &original.replace(r#""count":2}"#, r#""count":2,"unique":false}"#),
    )
    .await;
    assert_eq!(s, 201, "{}", String::from_utf8_lossy(&replay));
    assert_eq!(headers["geiger-replayed"], "true");
    assert_eq!(replay, first_draw);

    // The refused draws count as invalid under the kind they asked for,
    // never as replays.
    let (s, _, b) = get("/metrics".to_string()).await;
    assert_eq!(s, 200);
    let metrics = String::from_utf8(b).unwrap();
    for line in [
        r#"geiger_draws_total{kind="integers",outcome="created"} 1"#,
        r#"geiger_draws_total{kind="integers",outcome="replayed"} 1"#,
        r#"geiger_draws_total{kind="integers",outcome="invalid"} 1"#,
        r#"geiger_draws_total{kind="bytes",outcome="invalid"} 1"#,
    ] {
        assert!(metrics.contains(line), "no `{line}` in\n{metrics}");
    }
    assert!(
        metrics.contains(r#"geiger_draws_total{kind="bytes",outcome="replayed"} 0"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_gets_the_json_error_shape_not_an_empty_body() {
    let cluster = Cluster::start(common::one_per_zone(1), "");
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let http = reqwest::Client::new();

    let long_target = format!("{}/v1/draws/dr_{}", cluster.url(1), "a".repeat(20_000));
    let (status, _, body) = send(&http, reqwest::Method::GET, long_target, None, None, None).await;
    assert_eq!(status, 414);
    assert_eq!(error_code(&body), "uri_too_long");

    let mut many = http.get(format!("{}/v1/keys", cluster.url(1)));
    for i in 0..100 {
        many = many.header(format!("x-filler-{i}"), "x");
    }
    let reply = many.send().await.unwrap();
    assert_eq!(reply.status(), 431);
    assert_eq!(
        error_code(&reply.bytes().await.unwrap()),
        "headers_too_large"
    );

    let big = http
        .get(format!("{}/v1/keys", cluster.url(1)))
        .header("x-filler", "y".repeat(40_000))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 431);
    assert_eq!(error_code(&big.bytes().await.unwrap()), "headers_too_large");

    // Within the bounds, the same requests are served.
    let (status, _, _) = send(
        &http,
        reqwest::Method::GET,
        format!("{}/v1/keys", cluster.url(1)),
        None,
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
}

/// Sends `raw` on a fresh connection and reads until the server closes it.
async fn raw_exchange(addr: &str, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = socket.write_all(raw).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status and the error code of the last answer in `answers`.
fn last_answer(answers: &str) -> (u16, String) {
    let (status, answer) = answers
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| Some((answers.get(at + 9..at + 12)?.parse().ok()?, &answers[at..])))
        .last()
        .expect("no answer at all");
    let (_, body) = answer.split_once("\r\n\r\n").expect("no end of head");
    (status, error_code(body.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_hyper_itself_refuses_still_gets_the_json_error_shape() {
    let cluster = Cluster::start(common::one_per_zone(1), "");
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let addr = cluster.nodes[&1].spec.api_addr();

    // Past hyper's own limits: a target over 65,534 bytes, a head over its
    // 128 KiB buffer.
    let target = format!(
        "GET /v1/draws/{} HTTP/1.1\r\nhost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let answer = raw_exchange(&addr, target.as_bytes()).await;
    assert_eq!(
        last_answer(&answer),
        (414, "uri_too_long".into()),
        "{answer}"
    );
    let head = format!(
        "GET /v1/keys HTTP/1.1\r\nhost: x\r\nx-filler: {}\r\n\r\n",
        "y".repeat(200_000)
    );
    let answer = raw_exchange(&addr, head.as_bytes()).await;
    assert_eq!(
        last_answer(&answer),
        (431, "headers_too_large".into()),
        "{answer}"
    );

    // Heads that are not HTTP/1.1, after a good request on the same
    // keep-alive connection, which is answered as usual.
    for bad in [
        "G@T /v1/keys HTTP/1.1\r\nhost: x\r\n\r\n",
        "GET /v1/keys HTTP/9.1\r\nhost: x\r\n\r\n",
        "GET /v1/keys HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n",
    ] {
        let raw = format!("GET /v1/keys HTTP/1.1\r\nhost: x\r\n\r\n{bad}");
        let answer = raw_exchange(&addr, raw.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        assert_eq!(
            last_answer(&answer),
            (400, "malformed_request".into()),
            "{bad:?} got {answer}"
        );
    }
}
