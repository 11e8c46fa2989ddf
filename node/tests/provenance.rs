//! Provenance anyone can check, with real processes (docs/DERIVATION.md
//! §10): three `geiger node`s fed by a `geiger-device` with small chunks; a
//! draw's chunk is refused while it has unused bytes and served once
//! exhausted, the same by every replica; `geiger verify --chunks` passes the draw, says "pending"
//! before, and fails a doctored chunk or a tampered draw.
//!
//! `GEIGER_TEST_KEEP=1` keeps the logs.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{one_per_zone, Cluster, Device};
use serde_json::{json, Value};

/// Small chunks, so a few hundred bytes of draws exhaust one.
const CHUNK: u64 = 256;

fn geiger(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_geiger"))
        .args(args)
        .output()
        .expect("geiger runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn write(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(value).unwrap()).unwrap();
    path.to_string_lossy().into_owned()
}

async fn customer_and_chain(cluster: &Cluster, via: u64) -> (String, String) {
    let (status, customer) = cluster
        .post(via, "/v1/admin/customers", &json!({ "name": "provenance" }))
        .await
        .unwrap();
    assert_eq!(status, 201, "{customer}");
    let key = customer["api_key"].as_str().unwrap().to_string();
    let r = cluster
        .http
        .post(format!("{}/v1/chains", cluster.url(via)))
        .bearer_auth(&key)
        .json(&json!({ "tag": "provenance" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let chain: Value = r.json().await.unwrap();
    (key, chain["id"].as_str().unwrap().to_string())
}

/// A `bytes` draw after `previous`, retried while the pool is still empty.
async fn draw(cluster: &Cluster, via: u64, key: &str, previous: &str, count: u32) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = cluster
            .http
            .post(format!("{}/v1/draws", cluster.url(via)))
            .bearer_auth(key)
            .json(&json!({"previous": previous, "tag": "t", "spec": {"kind": "bytes", "count": count}}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status == 201 {
            return body;
        }
        assert!(
            status == 503 && Instant::now() < deadline,
            "draw: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_draws_chunk_is_secret_until_exhausted_then_geiger_verify_checks_it_and_catches_doctoring(
) {
    let cluster = Cluster::start(one_per_zone(3), "");
    let dir = tempfile::tempdir().unwrap();
    let device = Device::start(
        &dir.path().join("dev"),
        &["--rate", "65536", "--chunk-size", &CHUNK.to_string()],
    );
    // Everything goes through the leader, which has applied what it answers.
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let (status, answer) = cluster
        .post(leader, "/v1/admin/links", &device.registration())
        .await
        .unwrap();
    assert_eq!(status, 201, "{answer}");
    let (key, chain) = customer_and_chain(&cluster, leader).await;
    let url = cluster.url(leader);
    let keys = format!("{url}/v1/keys");

    // A first draw of 16 bytes: the front of one chunk, the rest unused.
    let first = draw(&cluster, leader, &key, &chain, 16).await;
    let segment = first["draw"]["entropy"]["segments"][0].clone();
    let (dev, seq) = (
        segment["device"].as_str().unwrap().to_string(),
        segment["chunk_seq"].as_u64().unwrap(),
    );
    assert_eq!(dev, device.id.to_string());
    assert_eq!(segment["length"], 16);
    let chunk_path = format!("/v1/chunks/{dev}/{seq}");
    let (status, refused) = cluster.get(leader, &chunk_path).await.unwrap();
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "chunk_not_exhausted");
    let entropy = first["draw"]["entropy"]["hex"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!refused.to_string().contains(&entropy[..8]), "{refused}");
    let (status, unknown) = cluster
        .get(leader, &format!("/v1/chunks/{dev}/{}", u64::MAX))
        .await
        .unwrap();
    assert_eq!(status, 404, "{unknown}");
    assert_eq!(unknown["error"]["code"], "not_found");

    // The device key is published beside the signing keys.
    let (_, published) = cluster.get(leader, "/v1/keys").await.unwrap();
    let devices = published["devices"].as_array().expect("devices listed");
    assert!(
        devices
            .iter()
            .any(|d| d["device"] == dev.as_str() && d["valid_until"].is_null()),
        "{published}"
    );

    let first_file = write(dir.path(), "first.json", &first);
    let (code, out) = geiger(&["verify", &first_file, "--keys", &keys, "--chunks", &url]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("pending segment 1"), "{out}");
    assert!(out.contains("provenance pending for 1 segment"), "{out}");

    // Later draws use up the rest of the chunk: now it is public.
    let second = draw(
        &cluster,
        leader,
        &key,
        first["draw"]["id"].as_str().unwrap(),
        2 * CHUNK as u32,
    )
    .await;
    let (status, chunk) = cluster.get(leader, &chunk_path).await.unwrap();
    assert_eq!(status, 200, "{chunk}");
    // Every replica kept the same bytes when it applied the draw.
    for id in cluster.ids() {
        let same = cluster
            .wait_until(
                Duration::from_secs(10),
                "the chunk on every replica",
                || async {
                    let (status, body) = cluster.get(id, &chunk_path).await.ok()?;
                    (status == 200).then_some(body)
                },
            )
            .await;
        assert_eq!(same, chunk, "node {id}");
    }
    let bytes = chunk["hex"].as_str().unwrap();
    assert_eq!(bytes.len() as u64, 2 * CHUNK);
    assert_eq!(&bytes[..32], entropy);

    let (code, out) = geiger(&["verify", &first_file, "--keys", &keys, "--chunks", &url]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok   segment 1"), "{out}");
    assert!(out.ends_with("VERIFIED\n"), "{out}");

    // The same check offline, against saved copies: genuine, then doctored.
    let keys_file = write(dir.path(), "keys.json", &published);
    let genuine = dir.path().join("genuine");
    std::fs::create_dir(&genuine).unwrap();
    write(&genuine, &format!("{dev}-{seq}.json"), &chunk);
    let genuine = genuine.to_string_lossy().into_owned();
    let (code, out) = geiger(&[
        "verify",
        &first_file,
        "--keys",
        &keys_file,
        "--chunks",
        &genuine,
    ]);
    assert_eq!(code, 0, "{out}");

    let doctored = dir.path().join("doctored");
    std::fs::create_dir(&doctored).unwrap();
    let mut changed = chunk.clone();
    let flipped = if bytes.starts_with('0') { "1" } else { "0" };
    changed["hex"] = json!(format!("{flipped}{}", &bytes[1..]));
    write(&doctored, &format!("{dev}-{seq}.json"), &changed);
    let doctored = doctored.to_string_lossy().into_owned();
    let (code, out) = geiger(&[
        "verify",
        &first_file,
        "--keys",
        &keys_file,
        "--chunks",
        &doctored,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED segment 1"), "{out}");

    // The chunk claimed public before the draw was issued.
    let early = dir.path().join("early");
    std::fs::create_dir(&early).unwrap();
    let mut changed = chunk.clone();
    changed["exhausted_at"] = json!("2020-01-01T00:00:00.000Z");
    write(&early, &format!("{dev}-{seq}.json"), &changed);
    let early = early.to_string_lossy().into_owned();
    let (code, out) = geiger(&[
        "verify",
        &first_file,
        "--keys",
        &keys_file,
        "--chunks",
        &early,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("before the draw was issued"), "{out}");

    // The next chunk, signed and genuine, passed off as this one.
    let next = second["draw"]["entropy"]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["chunk_seq"].as_u64().unwrap())
        .find(|s| *s > seq)
        .expect("the second draw reached the next chunk");
    let (status, other) = cluster
        .get(leader, &format!("/v1/chunks/{dev}/{next}"))
        .await
        .unwrap();
    assert_eq!(status, 200, "the second draw used all of it: {other}");
    let swapped = dir.path().join("swapped");
    std::fs::create_dir(&swapped).unwrap();
    write(&swapped, &format!("{dev}-{seq}.json"), &other);
    let swapped = swapped.to_string_lossy().into_owned();
    let (code, out) = geiger(&[
        "verify",
        &first_file,
        "--keys",
        &keys_file,
        "--chunks",
        &swapped,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not the segment's"), "{out}");

    // A key set that does not list the device: its signature proves nothing.
    let mut no_devices = published.clone();
    no_devices.as_object_mut().unwrap().remove("devices");
    let bare_keys = write(dir.path(), "bare-keys.json", &no_devices);
    let (code, out) = geiger(&[
        "verify",
        &first_file,
        "--keys",
        &bare_keys,
        "--chunks",
        &genuine,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("publishes no such key"), "{out}");

    // A draw whose recorded entropy was changed fails.
    let mut tampered = first.clone();
    let flipped = if entropy.starts_with('0') { "1" } else { "0" };
    tampered["draw"]["entropy"]["hex"] = json!(format!("{flipped}{}", &entropy[1..]));
    tampered["draw"]["result"]["hex"] = tampered["draw"]["entropy"]["hex"].clone();
    let tampered = write(dir.path(), "tampered.json", &tampered);
    let (code, out) = geiger(&[
        "verify", &tampered, "--keys", &keys_file, "--chunks", &genuine,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED"), "{out}");
}
