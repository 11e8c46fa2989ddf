//! What a device keeps on disk: its key pair, the sequence counter and the
//! newest fencing epoch it has seen. All three must survive a crash, or the
//! guarantees built on them (one identity, never a repeated sequence, never
//! an older owner after a newer one) do not hold.
//!
//! Files in the state directory:
//! - `device.key`: the 32-byte Ed25519 secret in hex, created once, mode 0600;
//! - `seq.next`: the first sequence number not yet reserved, decimal;
//! - `epoch.highest`: the newest epoch accepted, decimal.
//!
//! Counters are replaced atomically (write a temporary file, fsync it,
//! rename over the old one, fsync the directory), so a crash leaves either
//! the old or the new value, never a torn one.
//!
//! Sequence numbers are reserved in blocks: before handing out `seq`, the
//! store makes sure `seq.next` on disk is beyond it. Writing `seq + K` once
//! and then handing out `seq..seq+K` from memory costs one fsync per K chunks
//! instead of one per chunk. After a crash the device resumes at the
//! persisted value, so at most K numbers are skipped and none is repeated:
//! every number handed out was below a value that was durable first.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::rngs::OsRng;

use crate::chunk::DeviceId;

const KEY_FILE: &str = "device.key";
const SEQ_FILE: &str = "seq.next";
const EPOCH_FILE: &str = "epoch.highest";

/// Default sequence block size; at 8 chunks/s (32 KiB/s in 4 KiB chunks) one
/// fsync every two minutes, at most 1024 numbers skipped per restart.
pub const DEFAULT_SEQ_RESERVE: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: another geiger-device is using this state directory")]
    Locked { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {what}")]
    Corrupt { path: PathBuf, what: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `contents` to `dir/name` so that a crash leaves the old or the new
/// file, never a partial one.
fn write_durably(dir: &Path, name: &str, contents: &[u8]) -> Result<(), StoreError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(contents).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn read_counter(dir: &Path, name: &str) -> Result<Option<u64>, StoreError> {
    let path = dir.join(name);
    match fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| StoreError::Corrupt {
                what: format!("expected a decimal counter, found {:?}", text.trim()),
                path,
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Io { path, source: e }),
    }
}

const LOCK_FILE: &str = "agent.lock";

/// Exclusive use of a state directory, for as long as this value lives.
/// Two agents on one directory would hand out the same sequence numbers, so
/// the second must not start. An advisory `flock` is released by the kernel
/// when the process dies, however it dies, so a crash never leaves a stale
/// lock behind (as a pid file would).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Takes the state directory's lock, or fails at once if it is held.
pub fn lock_state_dir(dir: &Path) -> Result<StateLock, StoreError> {
    use std::os::fd::AsRawFd;
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    // SAFETY: flock only reads the descriptor number, which `file` keeps
    // open for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return Err(if err.kind() == io::ErrorKind::WouldBlock {
            StoreError::Locked { path }
        } else {
            StoreError::Io { path, source: err }
        });
    }
    Ok(StateLock { _file: file })
}

/// Loads the device key, creating it on first start.
///
/// Creation is exclusive: each creator writes its own temporary file and
/// links it into place, and the link fails if a key is already there. A
/// creator that loses the race (an agent starting while `--print-key` runs,
/// say) drops its own key and returns the one that won, so every caller gets
/// the key that is on disk and a device never has two identities.
pub fn load_or_create_key(dir: &Path) -> Result<SigningKey, StoreError> {
    load_or_create_key_file(dir, KEY_FILE)
}

/// As [`load_or_create_key`], for a key under another file name (a node's
/// link key, `link.key`, lives in the node's data directory).
pub fn load_or_create_key_file(dir: &Path, name: &str) -> Result<SigningKey, StoreError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(name);
    match read_key(&path)? {
        Some(key) => Ok(key),
        None => create_key(dir, &path),
    }
}

/// Reads the key file; `None` when there is none yet.
fn read_key(path: &Path) -> Result<Option<SigningKey>, StoreError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mode = fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "device key is readable by others; expected 0600");
    }
    let bytes = hex::decode(text.trim()).map_err(|_| StoreError::Corrupt {
        path: path.to_path_buf(),
        what: "the key is not hex".into(),
    })?;
    let secret: [u8; 32] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        path: path.to_path_buf(),
        what: "the key is not 32 bytes".into(),
    })?;
    Ok(Some(SigningKey::from_bytes(&secret)))
}

fn create_key(dir: &Path, path: &Path) -> Result<SigningKey, StoreError> {
    let key = SigningKey::generate(&mut OsRng);
    // Written in full to a temporary file of this creator's own, then linked
    // into place: a crash never leaves a half-written key, and `hard_link`
    // refuses to replace an existing key, so a key is never lost or swapped.
    let tmp = dir.join(format!(
        "{KEY_FILE}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(hex::encode(key.to_bytes()).as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()
        })
        .map_err(io_err(&tmp));
    let linked = written.and_then(|()| match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    });
    let _ = fs::remove_file(&tmp);
    if !linked? {
        // Another creator won; its key was fully written before it was linked.
        return read_key(path)?.ok_or_else(|| StoreError::Corrupt {
            path: path.to_path_buf(),
            what: "the key vanished while it was being created".into(),
        });
    }
    sync_dir(dir)?;
    tracing::info!(
        public_key = %hex::encode(key.verifying_key().as_bytes()),
        id = %DeviceId::of(&key.verifying_key()),
        path = %path.display(),
        "created an Ed25519 key (a device's key, or a node's link key)"
    );
    Ok(key)
}

/// Hands out sequence numbers that never repeat, across restarts.
#[derive(Debug)]
pub struct SeqStore {
    dir: PathBuf,
    reserve: u64,
    next: u64,
    /// Numbers below this are durably reserved.
    reserved_until: u64,
}

impl SeqStore {
    pub fn open(dir: &Path, reserve: u64) -> Result<Self, StoreError> {
        let next = read_counter(dir, SEQ_FILE)?.unwrap_or(0);
        Ok(SeqStore {
            dir: dir.to_path_buf(),
            reserve: reserve.max(1),
            next,
            // Nothing is reserved for this run yet: the first number taken
            // writes a new reservation before it is used.
            reserved_until: next,
        })
    }

    /// The number the next [`SeqStore::take`] will return.
    pub fn peek(&self) -> u64 {
        self.next
    }

    /// Whether [`SeqStore::take`] would touch the disk.
    pub fn needs_reservation(&self) -> bool {
        self.next >= self.reserved_until
    }

    /// Makes sure the next number is durably reserved; a no-op except once
    /// per block, when it writes and fsyncs `seq.next`.
    pub fn ensure_reserved(&mut self) -> Result<(), StoreError> {
        if !self.needs_reservation() {
            return Ok(());
        }
        let until = self
            .next
            .checked_add(self.reserve)
            .ok_or_else(|| StoreError::Corrupt {
                path: self.dir.join(SEQ_FILE),
                what: "the sequence space is exhausted".into(),
            })?;
        write_durably(&self.dir, SEQ_FILE, format!("{until}\n").as_bytes())?;
        tracing::debug!(from = self.next, until, "reserved sequence block");
        self.reserved_until = until;
        Ok(())
    }

    /// The next sequence number; blocks on an fsync once per block.
    pub fn take(&mut self) -> Result<u64, StoreError> {
        self.ensure_reserved()?;
        let seq = self.next;
        self.next += 1;
        Ok(seq)
    }
}

/// Outcome of presenting an epoch to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochCheck {
    /// Older than the newest seen: refuse.
    Stale { newest: u64 },
    /// Equal to the newest seen: the same owner reconnecting.
    Current,
    /// Newer: now durably the newest.
    Advanced { previous: u64 },
    /// Newer by more than the largest step a cluster can take: refused and
    /// not stored, so no single Hello can use up the epoch space.
    TooFar { newest: u64, limit: u64 },
}

/// The default largest epoch step a device accepts in one Hello. An honest
/// cluster moves a lease at most every few seconds, so 2^32 is centuries of
/// moves; a forged jump can use at most 2^-32 of the epoch space.
pub const DEFAULT_MAX_EPOCH_STEP: u64 = 1 << 32;

/// The newest fencing epoch the device has accepted.
#[derive(Debug)]
pub struct EpochStore {
    dir: PathBuf,
    highest: u64,
}

impl EpochStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Ok(EpochStore {
            dir: dir.to_path_buf(),
            highest: read_counter(dir, EPOCH_FILE)?.unwrap_or(0),
        })
    }

    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Checks `epoch` and, if it is newer, makes it durable before saying so:
    /// after a crash the device must still refuse every older epoch.
    /// An epoch more than `max_step` past the newest is refused as
    /// [`EpochCheck::TooFar`].
    pub fn observe(&mut self, epoch: u64, max_step: u64) -> Result<EpochCheck, StoreError> {
        let limit = self.highest.saturating_add(max_step);
        if epoch > limit {
            return Ok(EpochCheck::TooFar {
                newest: self.highest,
                limit,
            });
        }
        if epoch < self.highest {
            return Ok(EpochCheck::Stale {
                newest: self.highest,
            });
        }
        if epoch == self.highest {
            return Ok(EpochCheck::Current);
        }
        write_durably(&self.dir, EPOCH_FILE, format!("{epoch}\n").as_bytes())?;
        let previous = std::mem::replace(&mut self.highest, epoch);
        Ok(EpochCheck::Advanced { previous })
    }

    /// The operator's recovery (`geiger-device --reset-epoch N`, agent
    /// stopped): sets the newest epoch to `epoch`, lower or higher. Lowering
    /// it reopens the device to owners between the two values, so the
    /// operator sets it to the lease epoch the ledger holds now.
    pub fn reset(&mut self, epoch: u64) -> Result<u64, StoreError> {
        write_durably(&self.dir, EPOCH_FILE, format!("{epoch}\n").as_bytes())?;
        Ok(std::mem::replace(&mut self.highest, epoch))
    }
}

/// The public half of a stored key, for registration (`geiger ctl link add`).
pub fn public_key_hex(key: &VerifyingKey) -> String {
    hex::encode(key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_with_owner_only_permissions_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_key(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create_key(dir.path()).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
    }

    #[test]
    fn creators_racing_on_an_empty_directory_all_get_the_one_key_on_disk() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let barrier = std::sync::Barrier::new(8);
            let keys: Vec<_> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            load_or_create_key(dir.path()).unwrap().to_bytes()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let on_disk = load_or_create_key(dir.path()).unwrap().to_bytes();
            assert!(keys.iter().all(|k| *k == on_disk));
            let leftovers: Vec<_> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .filter(|n| n != KEY_FILE)
                .collect();
            assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
        }
    }

    #[test]
    fn a_second_agent_cannot_take_a_locked_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_state_dir(dir.path()).unwrap();
        assert!(matches!(
            lock_state_dir(dir.path()),
            Err(StoreError::Locked { .. })
        ));
        drop(held);
        assert!(lock_state_dir(dir.path()).is_ok());
    }

    #[test]
    fn sequences_continue_after_a_restart_and_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SeqStore::open(dir.path(), 10).unwrap();
        let first: Vec<u64> = (0..3).map(|_| s.take().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(s); // a crash: the rest of the block is never used
        let mut s = SeqStore::open(dir.path(), 10).unwrap();
        assert_eq!(s.take().unwrap(), 10);
        assert_eq!(s.take().unwrap(), 11);
    }

    #[test]
    fn the_disk_is_touched_once_per_block() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SeqStore::open(dir.path(), 4).unwrap();
        assert!(s.needs_reservation());
        s.take().unwrap();
        assert_eq!(read_counter(dir.path(), SEQ_FILE).unwrap(), Some(4));
        for _ in 0..3 {
            assert!(!s.needs_reservation());
            s.take().unwrap();
        }
        assert!(s.needs_reservation());
        assert_eq!(s.take().unwrap(), 4);
        assert_eq!(read_counter(dir.path(), SEQ_FILE).unwrap(), Some(8));
    }

    #[test]
    fn an_older_epoch_is_stale_and_a_newer_one_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = EpochStore::open(dir.path()).unwrap();
        let step = DEFAULT_MAX_EPOCH_STEP;
        assert_eq!(
            e.observe(5, step).unwrap(),
            EpochCheck::Advanced { previous: 0 }
        );
        assert_eq!(e.observe(5, step).unwrap(), EpochCheck::Current);
        assert_eq!(e.observe(4, step).unwrap(), EpochCheck::Stale { newest: 5 });
        let mut e = EpochStore::open(dir.path()).unwrap();
        assert_eq!(e.highest(), 5);
        assert_eq!(e.observe(3, step).unwrap(), EpochCheck::Stale { newest: 5 });
    }

    #[test]
    fn an_epoch_too_far_ahead_is_refused_and_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = EpochStore::open(dir.path()).unwrap();
        assert_eq!(
            e.observe(3, 10).unwrap(),
            EpochCheck::Advanced { previous: 0 }
        );
        assert_eq!(
            e.observe(u64::MAX, 10).unwrap(),
            EpochCheck::TooFar {
                newest: 3,
                limit: 13
            }
        );
        assert_eq!(
            e.observe(13, 10).unwrap(),
            EpochCheck::Advanced { previous: 3 }
        );
        let e = EpochStore::open(dir.path()).unwrap();
        assert_eq!(e.highest(), 13);
    }

    #[test]
    fn an_operator_reset_lowers_the_newest_epoch_durably() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = EpochStore::open(dir.path()).unwrap();
        e.observe(u64::MAX, u64::MAX).unwrap();
        assert_eq!(e.reset(7).unwrap(), u64::MAX);
        let mut e = EpochStore::open(dir.path()).unwrap();
        assert_eq!(e.highest(), 7);
        assert_eq!(
            e.observe(8, 10).unwrap(),
            EpochCheck::Advanced { previous: 7 }
        );
    }

    #[test]
    fn a_corrupt_counter_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SEQ_FILE), "banana").unwrap();
        assert!(matches!(
            SeqStore::open(dir.path(), 4),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
