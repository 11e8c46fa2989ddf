//! `geiger verify` run as a process, as an auditor would: it passes genuine
//! records, fails tampered ones, and says why.

use std::path::Path;
use std::process::Command;

use geiger_protocol::record::format_timestamp;
use geiger_protocol::sample::{self, SAMPLE_TIME_MS};
use geiger_protocol::{DrawRequest, KeySet, Signer, Spec};

fn geiger(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_geiger"))
        .args(args)
        .output()
        .expect("geiger runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn write(dir: &Path, name: &str, value: &impl serde::Serialize) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(value).unwrap()).unwrap();
    path.to_string_lossy().into_owned()
}

struct Fixture {
    _dir: tempfile::TempDir,
    keys: String,
    chain: String,
    lookup: String,
    tampered: String,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::from_secret([9; 32]);
    let keys = KeySet {
        keys: vec![signer.key_info(format_timestamp(SAMPLE_TIME_MS), None)],
        devices: Vec::new(),
    };
    let chain = sample::genesis(&signer);
    let spec = Spec::Selection { k: 6, n: 49 };
    let draw = sample::draw_after(&signer, &chain, chain.id, 1, spec.clone());
    let request = DrawRequest {
        previous: chain.id,
        tag: draw.draw.body.tag.clone(),
        spec,
        request_id: draw.draw.body.request_id.clone(),
    };
    let lookup = serde_json::json!({ "request": request, "response": draw });
    let mut tampered = lookup.clone();
    tampered["response"]["draw"]["result"]["values"][0] = serde_json::json!(49);
    Fixture {
        keys: write(dir.path(), "keys.json", &keys),
        chain: write(dir.path(), "chain.json", &chain),
        lookup: write(dir.path(), "lookup.json", &lookup),
        tampered: write(dir.path(), "tampered.json", &tampered),
        _dir: dir,
    }
}

#[test]
fn a_genuine_draw_verifies_with_exit_code_zero() {
    let f = fixture();
    let (code, out) = geiger(&[
        "verify",
        &f.lookup,
        "--keys",
        &f.keys,
        "--previous",
        &f.chain,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("re-derives"), "{out}");
    assert!(out.contains("follows ch_"), "{out}");
    assert!(out.contains("VERIFIED"), "{out}");
}

#[test]
fn a_chain_genesis_verifies_too() {
    let f = fixture();
    let (code, out) = geiger(&["verify", &f.chain, "--keys", &f.keys]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_tampered_draw_fails_with_the_reason() {
    let f = fixture();
    let (code, out) = geiger(&["verify", &f.tampered, "--keys", &f.keys]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED"), "{out}");
}

#[test]
fn input_that_is_not_a_record_is_an_error_not_a_pass() {
    let f = fixture();
    let (code, out) = geiger(&["verify", &f.keys, "--keys", &f.keys]);
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("VERIFIED"), "{out}");
}

/// Both derivation versions verify through the command: a v1 record from
/// before v2 and a v2 one; a v2 record with a changed result fails.
#[test]
fn geiger_verify_checks_v1_and_v2_draws_alike() {
    use geiger_protocol::Derivation;
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::from_secret([9; 32]);
    let keys = KeySet {
        keys: vec![signer.key_info(format_timestamp(SAMPLE_TIME_MS), None)],
        devices: Vec::new(),
    };
    let keys = write(dir.path(), "keys.json", &keys);
    let chain = sample::genesis(&signer);
    for derivation in [Derivation::V1, Derivation::V2] {
        let spec = Spec::Permutation { n: 52 };
        let draw = sample::draw_after_with(&signer, &chain, chain.id, 1, spec, derivation);
        let name = derivation.name();
        let path = write(dir.path(), &format!("{name}.json"), &draw);
        let (code, out) = geiger(&["verify", &path, "--keys", &keys]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains(&format!("{name} re-derives")), "{out}");

        let mut tampered = serde_json::to_value(&draw).unwrap();
        tampered["draw"]["result"]["values"][0] = serde_json::json!(53);
        let path = write(dir.path(), &format!("{name}-tampered.json"), &tampered);
        let (code, out) = geiger(&["verify", &path, "--keys", &keys]);
        assert_ne!(code, 0, "{out}");
    }
}
