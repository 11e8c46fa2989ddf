//! This replica's snapshots as files: building one from a read
//! transaction while apply goes on, making it current (metadata written
//! and renamed atomically, older files removed), receiving one and
//! installing it as a fresh state database. The file format itself is
//! [`crate::snapshot`]'s.

use std::io;
use std::path::Path;
use std::sync::Arc;

use openraft::{ErrorVerb, RaftSnapshotBuilder, Snapshot};
use redb::Durability;

use super::tx::{ApplyCache, Tx};
use super::{
    blocking, open_db, snap_err, Shared, CURRENT_META, INCOMING_SNAPSHOT, INSTALLING_FILE,
    STATE_FILE,
};
use crate::codec::Codec;
use crate::types::{SnapshotMeta, StorageError, TypeConfig};

/// Makes sure the snapshot's bytes are in `incoming` and on disk. Normally
/// `snapshot` is the file [`begin_receiving_snapshot`] created there and the
/// chunks were written into it; but openraft may hand over any file holding
/// the data (its storage test suite passes the sender's file), so when it is
/// a different file its contents are copied in first.
///
/// [`begin_receiving_snapshot`]: openraft::storage::RaftStateMachine::begin_receiving_snapshot
pub(super) async fn receive_into_incoming(
    incoming: &Path,
    mut snapshot: Box<tokio::fs::File>,
) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    use tokio::io::AsyncSeekExt;
    let given = snapshot.metadata().await?;
    let ours = tokio::fs::metadata(incoming).await.ok();
    let same = ours.is_some_and(|m| m.dev() == given.dev() && m.ino() == given.ino());
    if same {
        // fsync: the received bytes are on disk before we build state from them.
        return snapshot.sync_all().await;
    }
    snapshot.seek(io::SeekFrom::Start(0)).await?;
    let mut out = tokio::fs::File::create(incoming).await?;
    tokio::io::copy(&mut *snapshot, &mut out).await?;
    // fsync: as above.
    out.sync_all().await
}

/// Loads the incoming snapshot into a new database and swaps it in.
pub(super) fn install(shared: &Shared, meta: &SnapshotMeta) -> io::Result<ApplyCache> {
    let dir = shared.snapshot_dir();
    let incoming = dir.join(INCOMING_SNAPSHOT);
    let installing = shared.dir.join(INSTALLING_FILE);
    let entries = crate::snapshot::load(&incoming, &installing, shared.cache_bytes)?;
    // Keep the snapshot as our current one, so we can serve it onwards.
    let seq = shared
        .builds
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file_name = format!("installed-{}-{seq}.snap", meta.snapshot_id);
    std::fs::rename(&incoming, dir.join(&file_name))?;
    std::fs::rename(&installing, shared.dir.join(STATE_FILE))?;
    sync_dir(&shared.dir)?;
    write_meta(&dir, meta, &file_name)?;
    let db = open_db(&shared.dir.join(STATE_FILE), shared.cache_bytes).map_err(io::Error::other)?;
    let cache = {
        let tx = db.begin_write().map_err(io::Error::other)?;
        let cache =
            ApplyCache::load(&Tx::new(&tx), shared.kek.clone()).map_err(io::Error::other)?;
        tx.abort().map_err(io::Error::other)?;
        cache
    };
    shared.swap(db);
    tracing::info!(entries, "snapshot loaded into a fresh state database");
    Ok(cache)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    // fsync of the directory: the renames above survive a crash.
    std::fs::File::open(dir)?.sync_all()
}

/// Makes `file_name` the current snapshot: the metadata names its file, and
/// replacing it is one atomic rename, so a reader never pairs one snapshot's
/// data with another's metadata. Older snapshot files are then removed
/// (a sender still streaming one keeps its open handle).
fn write_meta(dir: &Path, meta: &SnapshotMeta, file_name: &str) -> io::Result<()> {
    let tmp = dir.join("current.meta.tmp");
    let mut bytes = META_FILE_MAGIC.to_vec();
    bytes.extend(crate::codec::encode(&(meta, file_name)).map_err(io::Error::other)?);
    let mut f = std::fs::File::create(&tmp)?;
    io::Write::write_all(&mut f, &bytes)?;
    f.sync_all()?;
    std::fs::rename(tmp, dir.join(CURRENT_META))?;
    sync_dir(dir)?;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".snap") && name != file_name {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

pub(super) async fn current_snapshot(
    shared: &Shared,
) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
    let dir = shared.snapshot_dir();
    let meta_bytes = match tokio::fs::read(dir.join(CURRENT_META)).await {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(snap_err(ErrorVerb::Read, e)),
    };
    // Without the magic: written by a version before postcard.
    let (codec, body) = match meta_bytes.strip_prefix(META_FILE_MAGIC) {
        Some(body) => (Codec::Postcard, body),
        None => (Codec::Legacy, meta_bytes.as_slice()),
    };
    let (meta, file_name): (SnapshotMeta, String) = codec
        .decode(body)
        .map_err(|e| snap_err(ErrorVerb::Read, e))?;
    let file = tokio::fs::File::open(dir.join(file_name))
        .await
        .map_err(|e| snap_err(ErrorVerb::Read, e))?;
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(file),
    }))
}

/// The first bytes of `current.meta` in the current format.
const META_FILE_MAGIC: &[u8] = b"GEIGER-SNAPMETA-2\n";

/// Builds snapshots from a read transaction, concurrently with apply.
pub struct SnapshotBuilder {
    pub(super) shared: Arc<Shared>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let shared = self.shared.clone();
        let meta = blocking(ErrorVerb::Write, move || {
            build(&shared).map_err(|e| e.to_string())
        })
        .await?;
        let snapshot = current_snapshot(&self.shared)
            .await?
            .ok_or_else(|| snap_err(ErrorVerb::Read, "snapshot vanished after build"))?;
        tracing::info!(snapshot = %meta.snapshot_id, last = ?meta.last_log_id, "snapshot built");
        Ok(snapshot)
    }
}

fn build(shared: &Shared) -> io::Result<SnapshotMeta> {
    let db = shared.db();
    // fsync: everything applied so far becomes durable, so the state can
    // never fall behind the snapshot whose log is about to be purged.
    let mut tx = db.begin_write().map_err(io::Error::other)?;
    tx.set_durability(Durability::Immediate);
    tx.commit().map_err(io::Error::other)?;
    let dir = shared.snapshot_dir();
    let seq = shared
        .builds
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("building-{seq}.tmp"));
    // The log id and membership come from the same read transaction as the
    // tables, though apply may have moved on meanwhile.
    let dumped = crate::snapshot::dump(&db, &tmp)?;
    let last_log_id = dumped.last_applied;
    let snapshot_id = format!(
        "{}-{}-{seq}",
        last_log_id.map_or(0, |l| l.leader_id.term),
        last_log_id.map_or(0, |l| l.index)
    );
    let meta = SnapshotMeta {
        last_log_id,
        last_membership: dumped.membership,
        snapshot_id: snapshot_id.clone(),
    };
    let file_name = format!("{snapshot_id}.snap");
    std::fs::rename(&tmp, dir.join(&file_name))?;
    write_meta(&dir, &meta, &file_name)?;
    tracing::debug!(entries = dumped.entries, "snapshot written");
    Ok(meta)
}
