//! `geiger restore`: turns a backup (the snapshot format streamed by
//! `GET /v1/admin/backup`) into the data directory of a voter of a **new**
//! cluster (deploy/README.md, "Restore").
//!
//! Run on every new voter, into an empty data directory, with that voter's
//! configuration: a new `cluster_secret` (the cluster's identity on the
//! wire, so no old member can talk to the new cluster) and `[[bootstrap]]`
//! naming the new voters. It
//!
//! 1. loads the backup into `state.redb` (the snapshot loader a follower
//!    uses to install a snapshot);
//! 2. replaces the stored Raft membership and the member labels with the
//!    new voters: the old members are not members of the new cluster;
//! 3. retires the unused entropy pool. Those bytes were unused at backup
//!    time, but the old cluster may have drawn with them afterwards;
//!    drawing with them again would use a byte twice. Each retired chunk is
//!    recorded in the quarantine table (reason `retired_at_restore`), so
//!    it stays accounted for; a retired signed chunk is exhausted, so its
//!    bytes are published like any used-up chunk's (docs/DERIVATION.md §10);
//! 4. expires every link lease and raises its fencing epoch by
//!    [`EPOCH_JUMP`]: the devices refuse epochs older than the newest they
//!    saw, and the old cluster may have moved leases after the backup;
//! 5. stores a Raft vote at the backup's last log term: openraft starts the
//!    node with the backup's last log id as its last log id, so the first
//!    new leader must be elected at a higher term than that entry's.
//!
//! Every draw, chain, customer, API key, signing key and quarantine record
//! up to the backup's log index is kept byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context};
use geiger_control_plane::log_store::LogStore;
use geiger_control_plane::snapshot;
use geiger_control_plane::state_machine::tables::{
    u64_key, DeviceState, ExhaustedChunk, PoolChunk, PoolState, QuarantinedChunk, DEVICES,
    EXHAUSTED, LEASES, MEMBERS, META, META_LAST_APPLIED, META_MEMBERSHIP, META_POOL, POOL,
    PROVENANCE, QUARANTINE,
};
use geiger_control_plane::types::{LogId, StoredMembership, Vote};
use geiger_control_plane::{Lease, Member, NodeId};
use openraft::storage::RaftLogStorage;
use redb::{Database, ReadableTable};
use sha2::{Digest, Sha256};

use crate::config::NodeConfig;

/// Added to every lease's fencing epoch: far beyond what an old cluster can
/// reach between a backup and its loss (each lease move adds one).
pub const EPOCH_JUMP: u64 = 1 << 20;

/// The redb page cache while loading (the node's own setting applies once
/// it runs).
const CACHE_BYTES: usize = 32 << 20;

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub log_index: u64,
    pub log_term: u64,
    pub entries: u64,
    pub voters: Vec<NodeId>,
    pub retired_chunks: u64,
    pub retired_bytes: u64,
    /// Retired chunks that were signed, now published as exhausted.
    pub revealed_chunks: u64,
    pub leases: u64,
}

impl std::fmt::Display for Restored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "restored log index {} (term {}): {} records; new voters {:?}; {} unused pool chunks ({} bytes) retired; {} link leases expired with epochs raised by {}",
            self.log_index,
            self.log_term,
            self.entries,
            self.voters,
            self.retired_chunks,
            self.retired_bytes,
            self.leases,
            EPOCH_JUMP
        )
    }
}

/// Restores `backup` into `config.data_dir`, which must hold no ledger.
pub async fn restore(backup: &Path, config: &NodeConfig) -> anyhow::Result<Restored> {
    let voters: BTreeMap<NodeId, Member> = config
        .bootstrap
        .iter()
        .map(|b| {
            (
                b.id,
                Member {
                    rpc_addr: b.rpc_addr.clone(),
                    api_addr: b.api_addr.clone(),
                    zone: b.zone.clone(),
                    cloud: b.cloud.clone(),
                    region: b.region.clone(),
                },
            )
        })
        .collect();
    if !voters.contains_key(&config.node_id) {
        bail!(
            "a restore starts a new cluster: [[bootstrap]] must name its voters, node {} among them",
            config.node_id
        );
    }
    let dir = &config.data_dir;
    let state = dir.join("state.redb");
    let log = dir.join("raft-log.redb");
    for existing in [&state, &log] {
        if existing.exists() {
            bail!(
                "{} exists: restore only into an empty data directory (old members never rejoin)",
                existing.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;

    let kek = config.signing.key_encryption_key()?;
    let (backup, state_path, voters_for_sm) = (backup.to_path_buf(), state.clone(), voters.clone());
    let loaded = tokio::task::spawn_blocking(move || -> anyhow::Result<Restored> {
        let entries = snapshot::load(&backup, &state_path, CACHE_BYTES)
            .with_context(|| format!("loading the backup {}", backup.display()))?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .open(&state_path)
            .context("opening the restored ledger")?;
        // The signing key comes back only with the KEK it was sealed under.
        geiger_control_plane::state_machine::check_current_key(&db, kek.as_ref()).map_err(|e| {
            anyhow::anyhow!(
                "{e}: start the restore with the key-encryption key of the backed-up cluster \
                 (signing.key_encryption_key_file; docs/RUNBOOK.md)"
            )
        })?;
        let mut restored = rewrite_for_new_cluster(&db, voters_for_sm)?;
        restored.entries = entries;
        Ok(restored)
    })
    .await?;
    let mut restored = match loaded {
        Ok(r) => r,
        Err(e) => {
            // A half-loaded ledger must not be mistaken for a restored one.
            let _ = std::fs::remove_file(&state);
            return Err(e);
        }
    };

    let mut log_store = LogStore::open(&log, CACHE_BYTES).context("creating the Raft log")?;
    log_store
        .save_vote(&Vote::new(restored.log_term, config.node_id))
        .await
        .context("storing the vote")?;
    restored.voters = voters.keys().copied().collect();
    Ok(restored)
}

/// Steps 2 to 4 of the module documentation, in one write transaction.
fn rewrite_for_new_cluster(
    db: &Database,
    voters: BTreeMap<NodeId, Member>,
) -> anyhow::Result<Restored> {
    let tx = db.begin_write()?;
    let mut restored = Restored {
        log_index: 0,
        log_term: 0,
        entries: 0,
        voters: Vec::new(),
        retired_chunks: 0,
        retired_bytes: 0,
        revealed_chunks: 0,
        leases: 0,
    };
    {
        let mut meta = tx.open_table(META)?;
        let last: Option<LogId> = match meta.get(META_LAST_APPLIED)? {
            Some(v) => geiger_control_plane::codec::decode::<Option<LogId>>(v.value())?,
            None => None,
        };
        let Some(last) = last else {
            bail!("the backup holds no applied entry: nothing to restore");
        };
        restored.log_index = last.index;
        restored.log_term = last.leader_id.term;
        let ids: BTreeSet<NodeId> = voters.keys().copied().collect();
        let membership = StoredMembership::new(
            Some(last),
            openraft::Membership::new(vec![ids], voters.clone()),
        );
        meta.insert(
            META_MEMBERSHIP,
            geiger_control_plane::codec::encode(&membership)?.as_slice(),
        )?;

        // The pool: every chunk from the cursor on is retired.
        let pool: PoolState = match meta.get(META_POOL)? {
            Some(v) => geiger_control_plane::codec::decode(v.value())?,
            None => PoolState::default(),
        };
        let mut pool_table = tx.open_table(POOL)?;
        let mut devices = tx.open_table(DEVICES)?;
        let mut quarantine = tx.open_table(QUARANTINE)?;
        let provenance = tx.open_table(PROVENANCE)?;
        let mut exhausted = tx.open_table(EXHAUSTED)?;
        let at_ms = geiger_protocol::now_unix_ms();
        for seq in pool.head..pool.next {
            let Some(raw) = pool_table.remove(u64_key(seq).as_slice())? else {
                continue;
            };
            let chunk: PoolChunk = geiger_control_plane::codec::decode(raw.value())?;
            drop(raw);
            let unused = if seq == pool.head {
                chunk.bytes.len() as u64 - u64::from(pool.head_offset)
            } else {
                chunk.bytes.len() as u64
            };
            let mut key = chunk.device.as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(&u64_key(chunk.seq));
            let record = QuarantinedChunk {
                length: chunk.bytes.len() as u32,
                sha256: Sha256::digest(&chunk.bytes).into(),
                reason: "retired_at_restore".into(),
                at_ms,
            };
            quarantine.insert(
                key.as_slice(),
                geiger_control_plane::codec::encode(&record)?.as_slice(),
            )?;
            // Discarded for good: a signed chunk is now exhausted, so its
            // bytes become public like any used-up chunk's, and draws that
            // used its first bytes become checkable (docs/DERIVATION.md §10).
            // The old cluster is fenced for good before a restore.
            if provenance.get(key.as_slice())?.is_some() {
                let revealed = ExhaustedChunk {
                    bytes: chunk.bytes.clone(),
                    exhausted_at_ms: at_ms,
                };
                exhausted.insert(
                    key.as_slice(),
                    geiger_control_plane::codec::encode(&revealed)?.as_slice(),
                )?;
                restored.revealed_chunks += 1;
            }
            let mut device: DeviceState = match devices.get(chunk.device.as_bytes())? {
                Some(v) => geiger_control_plane::codec::decode(v.value())?,
                None => DeviceState::default(),
            };
            device.pooled_bytes = device.pooled_bytes.saturating_sub(unused);
            device.quarantined_chunks += 1;
            devices.insert(
                chunk.device.as_bytes(),
                geiger_control_plane::codec::encode(&device)?.as_slice(),
            )?;
            restored.retired_chunks += 1;
            restored.retired_bytes += unused;
        }
        let empty = PoolState {
            head: pool.next,
            head_offset: 0,
            next: pool.next,
            bytes: 0,
        };
        meta.insert(
            META_POOL,
            geiger_control_plane::codec::encode(&empty)?.as_slice(),
        )?;

        // Member labels: the new voters only.
        let mut members = tx.open_table(MEMBERS)?;
        let old: Vec<Vec<u8>> = members
            .iter()?
            .map(|r| r.map(|(k, _)| k.value().to_vec()))
            .collect::<Result<_, _>>()?;
        for key in old {
            members.remove(key.as_slice())?;
        }
        for (id, member) in &voters {
            members.insert(
                u64_key(*id).as_slice(),
                geiger_control_plane::codec::encode(member)?.as_slice(),
            )?;
        }

        // Leases: expired, epochs far above the old cluster's.
        let mut leases = tx.open_table(LEASES)?;
        let all: Vec<(Vec<u8>, Lease)> = leases
            .iter()?
            .map(|r| {
                let (k, v) = r?;
                Ok((
                    k.value().to_vec(),
                    geiger_control_plane::codec::decode(v.value())?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        for (key, mut lease) in all {
            lease.epoch += EPOCH_JUMP;
            lease.expires_at_ms = 0;
            leases.insert(
                key.as_slice(),
                geiger_control_plane::codec::encode(&lease)?.as_slice(),
            )?;
            restored.leases += 1;
        }
    }
    tx.commit()?;
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, node_id: u64, voters: &[u64]) -> NodeConfig {
        let mut text = format!(
            "node_id = {node_id}\ndata_dir = \"{}\"\n[api]\nadmin_token = \"restore-test-token-0123\"\n[internal]\ncluster_secret = \"restore-test-secret-0123\"\n",
            dir.join("data").display()
        );
        for v in voters {
            text.push_str(&format!(
                "[[bootstrap]]\nid = {v}\napi_addr = \"127.0.0.1:80{v:02}\"\nrpc_addr = \"127.0.0.1:90{v:02}\"\nzone = \"z{v}\"\ncloud = \"c{v}\"\nregion = \"r\"\n"
            ));
        }
        let path = dir.join("node.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        NodeConfig::load(Some(&path)).unwrap()
    }

    #[tokio::test]
    async fn a_restore_needs_bootstrap_voters_naming_this_node() {
        let dir = tempfile::tempdir().unwrap();
        let err = restore(
            &dir.path().join("backup.snap"),
            &config(dir.path(), 4, &[1, 2, 3]),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("node 4 among them"), "{err}");
        assert!(!dir.path().join("data").exists(), "nothing was written");
    }

    #[tokio::test]
    async fn a_restore_refuses_a_data_directory_that_holds_a_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 1, &[1, 2, 3]);
        std::fs::create_dir_all(&cfg.data_dir).unwrap();
        std::fs::write(cfg.data_dir.join("raft-log.redb"), b"old").unwrap();
        let err = restore(&dir.path().join("backup.snap"), &cfg)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("empty data directory"), "{err}");
        assert_eq!(
            std::fs::read(cfg.data_dir.join("raft-log.redb")).unwrap(),
            b"old"
        );
    }

    /// Exhausted chunks are kept byte for byte; the retired pool's signed
    /// chunks join them (nothing draws from them again), unsigned ones not.
    #[test]
    fn a_restore_keeps_exhausted_chunks_and_reveals_the_retired_signed_ones() {
        use geiger_control_plane::state_machine::tables::{device_seq_key, ALL};
        use geiger_control_plane::ChunkProvenance;
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("state.redb")).unwrap();
        let chunk = |seq: u64| PoolChunk {
            device: "dev_a".into(),
            seq,
            bytes: vec![seq as u8; 8],
        };
        let provenance = ChunkProvenance {
            timestamp_ms: 1,
            sha256: [0; 32],
            signature: vec![0; 64],
            length: 8,
        };
        let put = |tx: &redb::WriteTransaction, table, key: &[u8], value: Vec<u8>| {
            tx.open_table(table)
                .unwrap()
                .insert(key, value.as_slice())
                .unwrap();
        };
        let tx = db.begin_write().unwrap();
        for (_, table) in ALL {
            tx.open_table(table).unwrap();
        }
        let last = Some(LogId::new(openraft::CommittedLeaderId::new(3, 1), 40));
        put(
            &tx,
            META,
            META_LAST_APPLIED,
            geiger_control_plane::codec::encode(&last).unwrap(),
        );
        let pool = PoolState {
            head: 1,
            head_offset: 3,
            next: 3,
            bytes: 13,
        };
        put(
            &tx,
            META,
            META_POOL,
            geiger_control_plane::codec::encode(&pool).unwrap(),
        );
        // Chunk 0 was used up before the backup; 1 (partly used) and 2 are
        // the pool; 0 and 1 are signed, 2 is not.
        let old = ExhaustedChunk {
            bytes: vec![0; 8],
            exhausted_at_ms: 9,
        };
        put(
            &tx,
            EXHAUSTED,
            &device_seq_key("dev_a", 0),
            geiger_control_plane::codec::encode(&old).unwrap(),
        );
        for seq in [0, 1] {
            put(
                &tx,
                PROVENANCE,
                &device_seq_key("dev_a", seq),
                geiger_control_plane::codec::encode(&provenance).unwrap(),
            );
        }
        for seq in [1, 2] {
            put(
                &tx,
                POOL,
                &u64_key(seq),
                geiger_control_plane::codec::encode(&chunk(seq)).unwrap(),
            );
        }
        tx.commit().unwrap();

        let voters = BTreeMap::from([(1, Member::default())]);
        let restored = rewrite_for_new_cluster(&db, voters).unwrap();
        assert_eq!((restored.retired_chunks, restored.revealed_chunks), (2, 1));
        let tx = db.begin_read().unwrap();
        let exhausted = tx.open_table(EXHAUSTED).unwrap();
        let get = |seq: u64| {
            exhausted
                .get(device_seq_key("dev_a", seq).as_slice())
                .unwrap()
                .map(|v| {
                    geiger_control_plane::codec::decode::<ExhaustedChunk>(v.value())
                        .unwrap()
                        .bytes
                })
        };
        assert_eq!(get(0), Some(vec![0; 8]));
        assert_eq!(get(1), Some(vec![1; 8]));
        assert_eq!(get(2), None);
    }

    #[tokio::test]
    async fn a_backup_from_before_postcard_restores_into_a_new_cluster_with_its_draws() {
        // A real format 1 backup and the key-encryption key of the cluster
        // it came from (control-plane/tests/legacy_format.rs says how
        // they were made).
        let fixtures =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../control-plane/tests/fixtures");
        let dir = tempfile::tempdir().unwrap();
        let kek = dir.path().join("kek");
        std::fs::copy(fixtures.join("format-1-kek"), &kek).unwrap();
        std::fs::set_permissions(&kek, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let mut cfg = config(dir.path(), 1, &[1, 2, 3]);
        cfg.signing.key_encryption_key_file = kek.display().to_string();
        let restored = restore(&fixtures.join("format-1-backup.snap"), &cfg)
            .await
            .unwrap();
        assert_eq!(restored.log_index, 64);
        assert_eq!(restored.voters, vec![1, 2, 3]);
        let db = Database::open(cfg.data_dir.join("state.redb")).unwrap();
        let draw = geiger_control_plane::state_machine::reads::draw(
            &db,
            "dr_zfqlrgzi37y573xwszrsvjrc3rbvgci52643klri",
        )
        .unwrap()
        .expect("the backup's last draw");
        assert_eq!(draw.position, 35);
        let pool = geiger_control_plane::state_machine::reads::pool(&db)
            .unwrap()
            .0;
        assert_eq!(pool.bytes, 0, "the unused pool is retired");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_backup_is_refused_before_anything_else_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 1, &[1]);
        let fake = dir.path().join("backup.snap");
        std::fs::write(&fake, b"not a snapshot at all").unwrap();
        let err = restore(&fake, &cfg).await.unwrap_err();
        assert!(format!("{err:#}").contains("bad magic"), "{err:#}");
        assert!(!cfg.data_dir.join("raft-log.redb").exists());
    }
}
