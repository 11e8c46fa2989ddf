//! Snapshot files: the whole state machine as a stream of table entries,
//! written from one redb read transaction and read back into a fresh redb
//! file, a bounded buffer at a time. Neither side ever holds the ledger in
//! memory, however large it grows.
//!
//! Format 2: the magic `GEIGER-SNAPSHOT-2\n`, then frames
//! `[table tag: u8][key length: u32 LE][key][value length: u32 LE][value]`,
//! then a single `0` byte. Table tags are listed in
//! [`crate::state_machine::tables::ALL`]; values are as the state database
//! stores them (`crate::codec`), with its format marker in `meta`.
//!
//! Format 1 (magic `GEIGER-SNAPSHOT-1\n`, written by versions before
//! postcard) has the same frames with legacy values. It is still loaded, so
//! a member can take a snapshot from an older leader and an older backup can
//! be restored: the loaded database is migrated like any legacy state
//! database (`crate::state_machine::format`). Versions before format 2
//! cannot load it.
//!
//! openraft sends the file to followers in chunks of
//! `snapshot_chunk_bytes`, reading it from disk as it goes, and the receiver
//! writes each chunk straight into its incoming file.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use redb::{Database, Durability, ReadableTable};

use crate::state_machine::tables::{ALL, META, META_LAST_APPLIED, META_MEMBERSHIP};
use crate::types::{LogId, StoredMembership};

const MAGIC: &[u8] = b"GEIGER-SNAPSHOT-2\n";
/// Format 1: legacy values (loaded, never written).
const MAGIC_V1: &[u8] = b"GEIGER-SNAPSHOT-1\n";
/// Entries loaded per redb transaction while installing.
const LOAD_BATCH: usize = 20_000;
/// Most bytes of a dump left unwritten in the page cache (see [`PacedFile`]).
const WRITE_OUT_EVERY: u64 = 4 << 20;

/// A file written out to disk every [`WRITE_OUT_EVERY`] bytes, waiting for
/// each portion to reach the disk (no cache flush; the caller's final
/// fsync is the durability point).
///
/// A dump of a large ledger is gigabytes. Left to the page cache, it all
/// reached the disk at the final fsync, as one burst that held up every
/// Raft log fsync on the same disk for long enough to cost elections: at
/// 1,000,000 draws, with three nodes snapshotting together, the term rose
/// by 3 to 7 at each snapshot (`--bench node_memory` in `geiger-node`).
/// Paced, the dump never has more than a few MiB queued ahead of the log.
struct PacedFile {
    file: File,
    written: u64,
    written_out: u64,
}

impl PacedFile {
    fn new(file: File) -> Self {
        PacedFile {
            file,
            written: 0,
            written_out: 0,
        }
    }

    fn write_out(&mut self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER;
            let (offset, len) = (self.written_out, self.written - self.written_out);
            // SAFETY: a valid open descriptor and plain integers; the call
            // reads none of our memory.
            let r = unsafe {
                libc::sync_file_range(self.file.as_raw_fd(), offset as i64, len as i64, flags)
            };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        #[cfg(not(target_os = "linux"))]
        self.file.sync_data()?;
        self.written_out = self.written;
        Ok(())
    }

    fn into_file(self) -> File {
        self.file
    }
}

impl Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.written_out >= WRITE_OUT_EVERY {
            self.write_out()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// What a dump captured: the applied log id and membership of the same
/// read transaction the tables were written from.
pub struct Dumped {
    pub entries: u64,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// Writes every table of `db`, as of one read transaction, to `path`, and
/// fsyncs the file.
pub fn dump(db: &Database, path: &Path) -> io::Result<Dumped> {
    let tx = db.begin_read().map_err(other)?;
    let (last_applied, membership) = {
        let meta = tx.open_table(META).map_err(other)?;
        let last_applied: Option<LogId> = match meta.get(META_LAST_APPLIED).map_err(other)? {
            Some(v) => crate::codec::decode(v.value()).map_err(other)?,
            None => None,
        };
        let membership: StoredMembership = match meta.get(META_MEMBERSHIP).map_err(other)? {
            Some(v) => crate::codec::decode(v.value()).map_err(other)?,
            None => StoredMembership::default(),
        };
        (last_applied, membership)
    };
    let file = PacedFile::new(File::create(path)?);
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(MAGIC)?;
    let mut entries = 0u64;
    for (tag, def) in ALL {
        let table = match tx.open_table(def) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(other(e)),
        };
        for item in table.iter().map_err(other)? {
            let (k, v) = item.map_err(other)?;
            let (k, v) = (k.value(), v.value());
            out.write_all(&[tag])?;
            out.write_all(&(k.len() as u32).to_le_bytes())?;
            out.write_all(k)?;
            out.write_all(&(v.len() as u32).to_le_bytes())?;
            out.write_all(v)?;
            entries += 1;
        }
    }
    out.write_all(&[0])?;
    let file = out.into_inner().map_err(|e| e.into_error())?.into_file();
    // fsync: the snapshot must be whole on disk before the log behind it is purged.
    file.sync_all()?;
    Ok(Dumped {
        entries,
        last_applied,
        membership,
    })
}

fn read_exact_vec(input: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    input.read_exact(&mut buf)?;
    Ok(buf)
}

fn read_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    input.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// Loads the snapshot at `src` into a new redb database at `dst`
/// (replacing any file there). The last commit is fsynced.
pub fn load(src: &Path, dst: &Path, cache_bytes: usize) -> io::Result<u64> {
    if dst.exists() {
        std::fs::remove_file(dst)?;
    }
    let mut input = BufReader::with_capacity(1 << 20, File::open(src)?);
    let magic = read_exact_vec(&mut input, MAGIC.len())?;
    if magic != MAGIC && magic != MAGIC_V1 {
        return Err(other("not a geiger snapshot of a known format (bad magic)"));
    }
    let db = Database::builder()
        .set_cache_size(cache_bytes)
        .create(dst)
        .map_err(other)?;
    let mut entries = 0u64;
    let mut done = false;
    while !done {
        let mut tx = db.begin_write().map_err(other)?;
        // Intermediate commits need no fsync: the file is useless until the
        // final one, which is Immediate.
        tx.set_durability(Durability::None);
        for (_, def) in ALL {
            tx.open_table(def).map_err(other)?;
        }
        let mut in_batch = 0;
        loop {
            let mut tag = [0u8; 1];
            input.read_exact(&mut tag)?;
            if tag[0] == 0 {
                done = true;
                break;
            }
            let def = ALL
                .iter()
                .find(|(t, _)| *t == tag[0])
                .map(|(_, d)| *d)
                .ok_or_else(|| other(format!("unknown table tag {}", tag[0])))?;
            let klen = read_u32(&mut input)? as usize;
            let k = read_exact_vec(&mut input, klen)?;
            let vlen = read_u32(&mut input)? as usize;
            let v = read_exact_vec(&mut input, vlen)?;
            tx.open_table(def)
                .map_err(other)?
                .insert(k.as_slice(), v.as_slice())
                .map_err(other)?;
            entries += 1;
            in_batch += 1;
            if in_batch >= LOAD_BATCH {
                break;
            }
        }
        tx.commit().map_err(other)?;
    }
    let mut tx = db.begin_write().map_err(other)?;
    // fsync: the installed state is whole on disk before it replaces the old one.
    tx.set_durability(Durability::Immediate);
    tx.commit().map_err(other)?;
    // A format 1 snapshot carries no format marker and is migrated here; a
    // format 2 one carries it and passes as it is.
    crate::state_machine::format::ensure_current(&db).map_err(other)?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_file_writes_out_as_it_goes_and_keeps_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("paced");
        let mut out = BufWriter::new(PacedFile::new(File::create(&path).unwrap()));
        let block: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        for _ in 0..10 {
            out.write_all(&block).unwrap();
        }
        let paced = out.into_inner().map_err(|e| e.into_error()).unwrap();
        // 10 MiB written: at least two portions of 4 MiB went out on the way.
        assert!(
            paced.written_out >= 2 * WRITE_OUT_EVERY,
            "{}",
            paced.written_out
        );
        assert_eq!(paced.written, 10 << 20);
        drop(paced.into_file());
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), 10 << 20);
        assert!(back.chunks(1 << 20).all(|c| c == block.as_slice()));
    }
}
