//! A data directory written by the version before postcard (format 1), run
//! by this one as a real `geiger dev` process: its ledger and Raft log are
//! migrated on start, old draws are served byte for byte, and the old
//! chain goes on.
//!
//! The fixture (`fixtures/format-1/`) was made with `geiger dev` at commit
//! 0de75ae: 35 chained draws on one chain, a key rotation after the 30th,
//! then stopped. `last-draw.json` is what that version answered for
//! `GET /v1/draws/{id}` of the last draw.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use geiger_testkit::launcher::{free_port, DevProcess};
use serde_json::{json, Value};

/// The fixture customer's API key (`geiger dev` printed it then).
const API_KEY: &str = "gk_b773359a8c5933d9e3bf48dc7deb60040dd559001de6b24720ff7706fe4278c3";
const LAST_DRAW: &str = "dr_zfqlrgzi37y573xwszrsvjrc3rbvgci52643klri";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_ledger_written_before_postcard_opens_serves_its_draws_byte_for_byte_and_goes_on() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1");
    let dir = tempfile::tempdir().unwrap();
    let unpacked = Command::new("tar")
        .arg("xzf")
        .arg(fixtures.join("dev-data.tgz"))
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(unpacked.success());
    let port = free_port(Ipv4Addr::LOCALHOST).unwrap();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let binary = Path::new(env!("CARGO_BIN_EXE_geiger"));
    let dev = DevProcess::start(binary, dir, addr, API_KEY, &[]).expect("geiger dev starts");
    let http = reqwest::Client::new();
    let url = format!("http://{addr}");
    dev.wait_ready(&http, &url, Duration::from_secs(60)).await;

    let served = http
        .get(format!("{url}/v1/draws/{LAST_DRAW}"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let expected = std::fs::read(fixtures.join("last-draw.json")).unwrap();
    assert_eq!(
        served.bytes().await.unwrap().as_ref(),
        expected.as_slice(),
        "the old draw is not served byte for byte"
    );

    // The chain goes on from the old draw, under the same customer.
    let draw = http
        .post(format!("{url}/v1/draws"))
        .bearer_auth(API_KEY)
        .json(&json!({
            "previous": LAST_DRAW,
            "tag": "round 36",
            "spec": {"kind": "integers", "min": 1, "max": 49, "count": 6, "unique": true}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(draw.status(), 201);
    let draw: Value = draw.json().await.unwrap();
    assert_eq!(draw["draw"]["position"], 36);
    // And the old draw's `previous` is still spent.
    let again = http
        .post(format!("{url}/v1/draws"))
        .bearer_auth(API_KEY)
        .json(&json!({
            "previous": LAST_DRAW,
            "tag": "round 36 again",
            "spec": {"kind": "integers", "min": 1, "max": 6, "count": 1}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    drop(dev);
}
