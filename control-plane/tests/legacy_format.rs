//! Data written by the version before postcard (format 1: bincode values,
//! `GEIGER-SNAPSHOT-1`), read by this one. The fixture is a real backup
//! taken with `geiger ctl backup` from `geiger dev` at commit 0de75ae (35
//! chained draws, two signing keys, a chain opened with a `request_id`);
//! `format-1-last-draw.json` is what that version answered for the last
//! draw.

use std::io::Read;
use std::path::{Path, PathBuf};

use geiger_control_plane::codec::Codec;
use geiger_control_plane::snapshot;
use geiger_control_plane::state_machine::format::{self, META_FORMAT};
use geiger_control_plane::state_machine::reads;
use geiger_control_plane::state_machine::tables::{ALL, META};
use redb::{Database, TableHandle};

const LAST_DRAW: &str = "dr_zfqlrgzi37y573xwszrsvjrc3rbvgci52643klri";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// One entry of a snapshot file: table name, key, value.
type Frame = (String, Vec<u8>, Vec<u8>);

/// A snapshot file's magic and every frame, in file order.
fn frames(path: &Path) -> (Vec<u8>, Vec<Frame>) {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    let magic_len = b"GEIGER-SNAPSHOT-1\n".len();
    let magic = bytes[..magic_len].to_vec();
    let mut at = magic_len;
    let mut out = Vec::new();
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    while bytes[at] != 0 {
        let tag = bytes[at];
        let table = ALL.iter().find(|(t, _)| *t == tag).unwrap().1.name();
        let klen = u32_at(at + 1);
        let key = bytes[at + 5..at + 5 + klen].to_vec();
        let vat = at + 5 + klen;
        let vlen = u32_at(vat);
        let value = bytes[vat + 4..vat + 4 + vlen].to_vec();
        out.push((table.to_string(), key, value));
        at = vat + 4 + vlen;
    }
    (magic, out)
}

fn stored(db: &Database, table: &str, key: &[u8]) -> Option<Vec<u8>> {
    let def = ALL.iter().find(|(_, d)| d.name() == table).unwrap().1;
    let tx = db.begin_read().unwrap();
    let t = tx.open_table(def).unwrap();
    let v = t.get(key).unwrap();
    v.map(|v| v.value().to_vec())
}

#[test]
fn a_backup_taken_before_postcard_loads_in_the_current_format_with_every_draw_intact() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("format-1-backup.snap");
    let db_path = dir.path().join("state.redb");
    let (magic, old) = frames(&src);
    assert_eq!(magic, b"GEIGER-SNAPSHOT-1\n");

    let entries = snapshot::load(&src, &db_path, 1 << 20).unwrap();
    assert_eq!(entries, old.len() as u64);
    let db = Database::open(&db_path).unwrap();
    assert_eq!(
        stored(&db, "meta", META_FORMAT).as_deref(),
        Some(format::CURRENT)
    );

    // Every value is the old one re-encoded, and converts back to exactly
    // the bytes the old version wrote: the migration knows each type.
    let mut typed = 0;
    for (table, key, value) in &old {
        let now = stored(&db, table, key).unwrap_or_else(|| panic!("{table}: key lost"));
        let expected = format::convert(table, key, value, Codec::Legacy, Codec::Postcard).unwrap();
        assert_eq!(now, expected, "{table}");
        let back = format::convert(table, key, &now, Codec::Postcard, Codec::Legacy).unwrap();
        assert_eq!(&back, value, "{table}: not the legacy bytes again");
        if &now != value {
            typed += 1;
        }
    }
    assert!(typed > 50, "only {typed} values changed encoding");

    // Read through the ledger's own reads: the last draw's stored request
    // and response are the bytes the old version served.
    let draw = reads::draw(&db, LAST_DRAW).unwrap().expect("the last draw");
    let served = std::fs::read_to_string(fixture("format-1-last-draw.json")).unwrap();
    let response = String::from_utf8(draw.response.clone()).unwrap();
    let request = String::from_utf8(draw.request.clone()).unwrap();
    assert!(served.contains(&response), "response bytes changed");
    assert!(served.contains(&request), "request bytes changed");
    assert_eq!(draw.position, 35);
    let chain = reads::chain_draws(&db, &draw.chain, 0, 100).unwrap();
    assert_eq!(chain.len(), 35);
    assert_eq!(reads::keys(&db).unwrap().keys.len(), 2);
    assert!(reads::last_applied(&db).unwrap().is_some());
}

#[test]
fn a_snapshot_of_a_migrated_ledger_is_format_2_and_loads_identically() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.redb");
    snapshot::load(&fixture("format-1-backup.snap"), &first, 1 << 20).unwrap();
    let db = Database::open(&first).unwrap();
    let dumped = dir.path().join("again.snap");
    snapshot::dump(&db, &dumped).unwrap();
    let (magic, frames_again) = frames(&dumped);
    assert_eq!(magic, b"GEIGER-SNAPSHOT-2\n");
    let second = dir.path().join("second.redb");
    snapshot::load(&dumped, &second, 1 << 20).unwrap();
    let db2 = Database::open(&second).unwrap();
    for (table, key, value) in &frames_again {
        assert_eq!(stored(&db2, table, key).as_ref(), Some(value), "{table}");
    }
    // Nothing was migrated twice: a current database passes as it is.
    assert_eq!(
        format::ensure_current(&db2).unwrap(),
        format::Migration::Current
    );
}

#[test]
fn a_database_in_a_format_from_the_future_is_refused_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    snapshot::load(&fixture("format-1-backup.snap"), &path, 1 << 20).unwrap();
    let db = Database::open(&path).unwrap();
    let tx = db.begin_write().unwrap();
    tx.open_table(META)
        .unwrap()
        .insert(META_FORMAT, b"something-newer".as_slice())
        .unwrap();
    tx.commit().unwrap();
    let err = format::ensure_current(&db).unwrap_err();
    assert!(err.to_string().contains("something-newer"), "{err}");
}
