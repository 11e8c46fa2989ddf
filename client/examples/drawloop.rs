//! `drawloop`: the workload and the checker of the deployment tests
//! (deploy/local/test, deploy/local/restore-drill), on the SDK.
//!
//! ```text
//! drawloop run     URL[,URL...] API_KEY OUT_DIR   # draws until OUT_DIR/stop exists
//! drawloop compare ACKED_FILE NODE_URL...         # every acked draw byte-identical on every node
//! ```
//!
//! `run` opens `DRAWLOOP_CHAINS` chains (default 4) and draws `integers`
//! 6 of 49 on each in a loop, one task per chain, through the SDK (so a
//! hostname is resolved to every address and retried across them). It
//! writes `OUT_DIR/acked.jsonl` (one line per acknowledged draw: id, chain,
//! the exact 201 body) and `OUT_DIR/calls.jsonl` (one line per call: start
//! and end in Unix ms, ok, error). A 409 after a failed call (the failed
//! call had in fact committed) continues from the existing draw.
//! `DRAWLOOP_PAUSE_MS` pauses each task between draws (default 0).
//! `DRAWLOOP_CHAINS_FILE` reuses chain heads from an earlier run's
//! `heads.json` instead of opening new chains; `run` writes `heads.json`
//! when it stops.
//!
//! `compare` fetches every acked draw from every node given (no failover)
//! and checks that the embedded response is byte-identical to the 201 body
//! the client received (with `DRAWLOOP_VERIFY` set, it also verifies each
//! against the node's published keys, as `geiger verify` does); it prints
//! `compared N draws on M nodes: K mismatches, E errors` and exits non-zero
//! on any mismatch or error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use geiger_client::{ClientBuilder, ClientError};
use geiger_protocol::{DrawRequest, RecordId, Spec};

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

struct Out {
    acked: std::fs::File,
    calls: std::fs::File,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") if args.len() == 4 => run(&args[1], &args[2], Path::new(&args[3])).await,
        Some("compare") if args.len() >= 3 => compare(Path::new(&args[1]), &args[2..]).await,
        _ => {
            eprintln!(
                "usage: drawloop run URLS API_KEY OUT_DIR | drawloop compare ACKED NODE_URL..."
            );
            std::process::exit(2)
        }
    }
}

async fn run(urls: &str, api_key: &str, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let client = ClientBuilder::new(urls.split(',').map(str::to_string))
        .api_key(api_key)
        .attempt_timeout(Duration::from_secs(2))
        .deadline(Duration::from_secs(10))
        .build()?;
    let chains: usize = std::env::var("DRAWLOOP_CHAINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let heads: Vec<RecordId> = match std::env::var_os("DRAWLOOP_CHAINS_FILE") {
        Some(file) => serde_json::from_slice(&std::fs::read(file)?)?,
        None => {
            let mut heads = Vec::new();
            for i in 0..chains {
                let chain = client.create_chain(&format!("drawloop-{i}")).await?;
                heads.push(chain.response.chain.id);
            }
            heads
        }
    };
    println!(
        "drawing on {} chains via {:?}",
        heads.len(),
        client.addresses().await
    );
    let out = Arc::new(Mutex::new(Out {
        acked: std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("acked.jsonl"))?,
        calls: std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("calls.jsonl"))?,
    }));
    let pause = Duration::from_millis(
        std::env::var("DRAWLOOP_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let stop = dir.join("stop");
    let mut tasks = Vec::new();
    for (i, head) in heads.into_iter().enumerate() {
        let client = client.clone();
        let out = out.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut previous = head;
            let mut n = 0u64;
            while !stop.exists() {
                n += 1;
                let request = DrawRequest {
                    previous,
                    tag: format!("drawloop-{i}-{n}"),
                    spec: Spec::Integers {
                        min: 1,
                        max: 49,
                        count: 6,
                        unique: true,
                    },
                    request_id: None,
                };
                let start = now_ms();
                let result = client.draw(request).await;
                let end = now_ms();
                let (acked, call, pause_after_error) = match result {
                    Ok(issued) => {
                        let line = serde_json::json!({
                            "id": issued.response.draw.id.to_string(),
                            "chain": i,
                            "raw": String::from_utf8_lossy(&issued.raw),
                        });
                        previous = issued.response.draw.id;
                        (
                            Some(line),
                            serde_json::json!({"start": start, "end": end, "ok": true}),
                            false,
                        )
                    }
                    Err(e) => {
                        let call = serde_json::json!({"start": start, "end": end, "ok": false, "error": e.to_string()});
                        let again = match e {
                            ClientError::PreviousAlreadyUsed { existing } => {
                                previous = existing;
                                false
                            }
                            _ => true,
                        };
                        (None, call, again)
                    }
                };
                {
                    let mut o = out.lock().unwrap();
                    if let Some(line) = acked {
                        let _ = writeln!(o.acked, "{line}");
                    }
                    let _ = writeln!(o.calls, "{call}");
                }
                if pause_after_error {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } else if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            previous
        }));
    }
    let mut last = Vec::new();
    for t in tasks {
        last.push(t.await?);
    }
    std::fs::write(dir.join("heads.json"), serde_json::to_vec(&last)?)?;
    Ok(())
}

async fn compare(acked: &Path, nodes: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(acked)?;
    let draws: Vec<(RecordId, String)> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("acked lines are JSON");
            (
                v["id"].as_str().unwrap().parse().expect("an ID"),
                v["raw"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let draws = Arc::new(draws);
    let mut mismatches = 0usize;
    let mut errors = 0usize;
    let mismatch_log: PathBuf = acked.with_extension("mismatches");
    let mut log = std::fs::File::create(&mismatch_log)?;
    let mut per_node = Vec::new();
    for node in nodes {
        // One node, no failover: the point is what this node holds.
        let client = ClientBuilder::new([node.clone()])
            .verify(std::env::var_os("DRAWLOOP_VERIFY").is_some())
            .deadline(Duration::from_secs(5))
            .build()?;
        let draws = draws.clone();
        let node = node.clone();
        per_node.push(tokio::spawn(async move {
            (node, look_up_all(&client, &draws).await)
        }));
    }
    for handle in per_node {
        let (node, outcomes) = handle.await?;
        for (id, outcome) in outcomes {
            match outcome {
                Ok(true) => {}
                Ok(false) => {
                    mismatches += 1;
                    writeln!(log, "{node} {id}: response differs")?;
                }
                Err(e) => {
                    errors += 1;
                    writeln!(log, "{node} {id}: {e}")?;
                }
            }
        }
    }
    println!(
        "compared {} draws on {} nodes: {mismatches} mismatches, {errors} errors",
        draws.len(),
        nodes.len()
    );
    if mismatches + errors > 0 {
        // The first few go to the output too, so a CI log shows the cause.
        let details = std::fs::read_to_string(&mismatch_log).unwrap_or_default();
        for line in details.lines().take(5) {
            eprintln!("  {line}");
        }
        eprintln!("details in {}", mismatch_log.display());
        std::process::exit(1);
    }
    Ok(())
}

/// Looks every draw up on one node, 32 at a time.
async fn look_up_all(
    client: &geiger_client::Client,
    draws: &[(RecordId, String)],
) -> Vec<(RecordId, Result<bool, ClientError>)> {
    let mut out = Vec::with_capacity(draws.len());
    for batch in draws.chunks(32) {
        let mut handles = Vec::new();
        for (id, raw) in batch {
            let client = client.clone();
            let id = *id;
            let raw = raw.clone();
            handles.push(tokio::spawn(async move {
                let found = client.get_draw(&id).await;
                (id, found.map(|l| l.response_raw == raw.as_bytes()))
            }));
        }
        for h in handles {
            out.push(h.await.expect("a lookup task does not panic"));
        }
    }
    out
}
