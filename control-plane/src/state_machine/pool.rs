//! The entropy pool: the one owner of pool accounting. Applying
//! `AppendEntropy`, `AppendSignedEntropy`, `QuarantineChunk` and
//! `SkipChunks` (every chunk sequence of a device accounted exactly once:
//! pooled, quarantined or skipped, contiguously), and the two steps a draw
//! takes: [`Applier::take_entropy`] reads the pool front without changing
//! anything, [`Applier::consume`] uses exactly the bytes the derivation
//! consumed, once the draw is otherwise checked.
//!
//! The pool is a FIFO over all devices (`pool` table, in append order; the
//! cursor in `meta.pool`). Fully used chunks are deleted: their bytes live
//! on inside the draws that used them; per-device counters in `devices`
//! keep the accounting. Lease checks (is this append under the running
//! lease's epoch?) belong to [`super::links::lease`].

use geiger_protocol::{Derivation, EntropySegment, EntropyUse};
use redb::Database;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::dispatch::{check_name, Applied, Applier};
use super::reads::ReadError;
use super::tables::*;
use super::tx::ApplyError;
use crate::types::{Outcome, Rejection};

/// Largest entropy chunk accepted in one command.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;

impl Applier<'_, '_> {
    /// Reads (without consuming) enough pool bytes to derive `spec` by
    /// `derivation`: first its estimate, then more while the derivation asks
    /// for more. Returns the derivation and the pieces read, in pool order;
    /// [`Applier::consume`] then takes only the whole bytes it used (v2
    /// skips the unread bits of its last byte, so accounting stays in bytes).
    #[allow(clippy::type_complexity)]
    pub(super) fn take_entropy(
        &mut self,
        spec: &geiger_protocol::Spec,
        derivation: Derivation,
    ) -> Result<Result<(geiger_protocol::Derived, Vec<Piece>, Vec<u8>), Rejection>, ApplyError>
    {
        let pool: PoolState = self.tx.get(META, META_POOL)?.unwrap_or_default();
        let mut need = derivation.entropy_bytes_estimate(spec) as u64;
        let mut buf: Vec<u8> = Vec::new();
        let mut pieces: Vec<Piece> = Vec::new();
        let mut cursor = (pool.head, pool.head_offset);
        loop {
            let want = need.min(pool.bytes);
            while (buf.len() as u64) < want {
                let Some(chunk) = self.cache.pool_chunk(self.tx, cursor.0)? else {
                    // The cursor says the bytes exist; if not, refuse rather than guess.
                    return Ok(Err(Rejection::EntropyExhausted {
                        available: pool.bytes,
                    }));
                };
                let start = cursor.1 as usize;
                let avail = chunk.bytes.len().saturating_sub(start);
                let n = avail.min((want - buf.len() as u64) as usize);
                buf.extend_from_slice(&chunk.bytes[start..start + n]);
                pieces.push(Piece {
                    pool_seq: cursor.0,
                    device: chunk.device.clone(),
                    chunk_seq: chunk.seq,
                    offset: cursor.1,
                    length: n as u32,
                    chunk_len: chunk.bytes.len() as u32,
                });
                if start + n >= chunk.bytes.len() {
                    cursor = (cursor.0 + 1, 0);
                } else {
                    cursor.1 += n as u32;
                }
            }
            match derivation.derive(spec, &buf) {
                Ok(d) => return Ok(Ok((d, pieces, buf))),
                Err(_) if want < need || need >= pool.bytes => {
                    return Ok(Err(Rejection::EntropyExhausted {
                        available: pool.bytes,
                    }))
                }
                // Rejections wanted more: extend and derive again.
                Err(_) => need = need + (need / 4).max(64),
            }
        }
    }

    /// Consumes `used` (the front of what `pieces` read) from the pool and
    /// returns the record of where those bytes came from.
    pub(super) fn consume(&self, pieces: &[Piece], used: &[u8]) -> Result<EntropyUse, ApplyError> {
        let mut pool: PoolState = self.tx.get(META, META_POOL)?.unwrap_or_default();
        let mut left = used.len() as u32;
        let mut segments = Vec::new();
        for piece in pieces {
            if left == 0 {
                break;
            }
            let n = piece.length.min(left);
            left -= n;
            segments.push(EntropySegment {
                device: piece.device.clone(),
                chunk_seq: piece.chunk_seq,
                offset: piece.offset,
                length: n,
            });
            let mut device: DeviceState = self
                .tx
                .get(DEVICES, piece.device.as_bytes())?
                .unwrap_or_default();
            device.pooled_bytes = device.pooled_bytes.saturating_sub(n as u64);
            device.used_bytes += n as u64;
            self.tx.put(DEVICES, piece.device.as_bytes(), &device)?;
            pool.bytes = pool.bytes.saturating_sub(n as u64);
            if piece.offset + n >= piece.chunk_len {
                // Fully used: no later draw reads from it, so its bytes may
                // now be public (docs/DERIVATION.md §10).
                self.reveal_exhausted(piece)?;
                self.tx.delete(POOL, &u64_key(piece.pool_seq))?;
                pool.head = piece.pool_seq + 1;
                pool.head_offset = 0;
            } else {
                pool.head = piece.pool_seq;
                pool.head_offset = piece.offset + n;
            }
        }
        self.tx.put(META, META_POOL, &pool)?;
        Ok(EntropyUse::new(segments, used))
    }

    fn check_seq(
        &self,
        device: &str,
        seq: u64,
    ) -> Result<Result<DeviceState, Rejection>, ApplyError> {
        let state: DeviceState = self.tx.get(DEVICES, device.as_bytes())?.unwrap_or_default();
        if let Some(last) = state.last_seq {
            let expected = last.saturating_add(1);
            if seq != expected {
                return Ok(Err(Rejection::SequenceGap {
                    device: device.to_string(),
                    expected,
                    got: seq,
                }));
            }
        }
        Ok(Ok(state))
    }

    pub(super) fn append_entropy(
        &mut self,
        device: &str,
        epoch: u64,
        seq: u64,
        bytes: &[u8],
    ) -> Result<Applied, ApplyError> {
        if let Err(r) = check_name("device", device) {
            return Ok(Err(r));
        }
        if bytes.is_empty() || bytes.len() > MAX_CHUNK_BYTES {
            return Ok(Err(Rejection::Invalid(format!(
                "a chunk holds 1 to {MAX_CHUNK_BYTES} bytes"
            ))));
        }
        if let Err(r) = self.check_lease(device, epoch)? {
            return Ok(Err(r));
        }
        let mut state = match self.check_seq(device, seq)? {
            Ok(s) => s,
            Err(r) => return Ok(Err(r)),
        };
        let mut pool: PoolState = self.tx.get(META, META_POOL)?.unwrap_or_default();
        self.tx.put(
            POOL,
            &u64_key(pool.next),
            &PoolChunk {
                device: device.to_string(),
                seq,
                bytes: bytes.to_vec(),
            },
        )?;
        pool.next += 1;
        pool.bytes += bytes.len() as u64;
        self.tx.put(META, META_POOL, &pool)?;
        state.first_seq.get_or_insert(seq);
        state.last_seq = Some(seq);
        state.pooled_bytes += bytes.len() as u64;
        state.appended_chunks += 1;
        self.tx.put(DEVICES, device.as_bytes(), &state)?;
        Ok(Ok(Outcome::EntropyAppended {
            pool_bytes: pool.bytes,
        }))
    }

    pub(super) fn quarantine(
        &mut self,
        device: &str,
        epoch: u64,
        seq: u64,
        length: u32,
        sha256: &[u8; 32],
        reason: &str,
    ) -> Result<Applied, ApplyError> {
        if let Err(r) = check_name("device", device).and_then(|_| check_name("reason", reason)) {
            return Ok(Err(r));
        }
        if let Err(r) = self.check_lease(device, epoch)? {
            return Ok(Err(r));
        }
        let mut state = match self.check_seq(device, seq)? {
            Ok(s) => s,
            Err(r) => return Ok(Err(r)),
        };
        self.tx.put(
            QUARANTINE,
            &device_seq_key(device, seq),
            &QuarantinedChunk {
                length,
                sha256: *sha256,
                reason: reason.to_string(),
                at_ms: self.at_ms,
            },
        )?;
        state.first_seq.get_or_insert(seq);
        state.last_seq = Some(seq);
        state.quarantined_chunks += 1;
        self.tx.put(DEVICES, device.as_bytes(), &state)?;
        tracing::warn!(device, seq, reason, "entropy chunk quarantined");
        Ok(Ok(Outcome::ChunkQuarantined))
    }

    pub(super) fn append_signed(
        &mut self,
        device: &str,
        epoch: u64,
        seq: u64,
        timestamp_ms: u64,
        signature: &[u8],
        bytes: &[u8],
    ) -> Result<Applied, ApplyError> {
        if signature.len() != 64 {
            return Ok(Err(Rejection::Invalid(
                "a chunk signature is 64 bytes".into(),
            )));
        }
        let outcome = self.append_entropy(device, epoch, seq, bytes)?;
        if let Ok(Outcome::EntropyAppended { .. }) = outcome {
            self.tx.put(
                PROVENANCE,
                &device_seq_key(device, seq),
                &ChunkProvenance {
                    timestamp_ms,
                    sha256: Sha256::digest(bytes).into(),
                    signature: signature.to_vec(),
                    length: bytes.len() as u32,
                },
            )?;
        }
        Ok(outcome)
    }

    pub(super) fn skip_chunks(
        &mut self,
        device: &str,
        epoch: u64,
        from: u64,
        to: u64,
    ) -> Result<Applied, ApplyError> {
        if let Err(r) = check_name("device", device) {
            return Ok(Err(r));
        }
        if from >= to {
            return Ok(Err(Rejection::Invalid(
                "a skipped range `from..to` needs from < to".into(),
            )));
        }
        if let Err(r) = self.check_lease(device, epoch)? {
            return Ok(Err(r));
        }
        let mut state = match self.check_seq(device, from)? {
            Ok(s) => s,
            Err(r) => return Ok(Err(r)),
        };
        self.tx.put(SKIPPED, &device_seq_key(device, from), &to)?;
        state.first_seq.get_or_insert(from);
        state.last_seq = Some(to - 1);
        self.tx.put(DEVICES, device.as_bytes(), &state)?;
        tracing::warn!(device, from, to, "device sequences skipped");
        Ok(Ok(Outcome::Done))
    }
}

/// The device's own record of an appended chunk: what it signed (with the
/// chunk's SHA-256 and sequence, docs/LINK.md) and its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkProvenance {
    pub timestamp_ms: u64,
    pub sha256: [u8; 32],
    #[serde(with = "crate::types::raw_bytes")]
    pub signature: Vec<u8>,
    pub length: u32,
}

/// The provenance of chunk `seq` of `device`, if it was appended signed.
pub fn chunk_provenance(
    db: &Database,
    device: &str,
    seq: u64,
) -> Result<Option<ChunkProvenance>, ReadError> {
    let tx = db.begin_read().map_err(ReadError::new)?;
    let t = tx.open_table(PROVENANCE).map_err(ReadError::new)?;
    let key = device_seq_key(device, seq);
    let v = t.get(key.as_slice()).map_err(ReadError::new)?;
    match v {
        Some(v) => crate::codec::decode(v.value())
            .map(Some)
            .map_err(ReadError::new),
        None => Ok(None),
    }
}

/// Bytes read from one pool chunk.
#[derive(Debug, Clone)]
pub struct Piece {
    pub(super) pool_seq: u64,
    pub(super) device: String,
    pub(super) chunk_seq: u64,
    offset: u32,
    length: u32,
    chunk_len: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::links::registry::device_id_of;
    use crate::state_machine::test_ledger::*;
    use crate::types::Command;

    #[test]
    fn skipped_quarantined_and_appended_chunks_account_for_every_sequence() {
        let mut l = Ledger::new();
        let id = device_id_of(&KEY);
        l.apply(1, register(&id));
        assert!(matches!(l.apply(1, lease(&id, 0)), Outcome::Lease(_)));
        assert!(matches!(
            l.apply(2, append(&id, 1, 10)),
            Outcome::EntropyAppended { .. }
        ));
        // A skip must start right after the last accounted sequence...
        let skip = |from, to| Command::SkipChunks {
            device: id.clone(),
            epoch: 1,
            from,
            to,
        };
        assert!(matches!(
            l.apply(3, skip(12, 20)),
            Outcome::Rejected(Rejection::SequenceGap { .. })
        ));
        assert_eq!(l.apply(3, skip(11, 20)), Outcome::Done);
        // ...and the next chunk follows the skipped range.
        assert!(matches!(
            l.apply(4, append(&id, 1, 11)),
            Outcome::Rejected(Rejection::SequenceGap { .. })
        ));
        assert!(matches!(
            l.apply(4, append(&id, 1, 20)),
            Outcome::EntropyAppended { .. }
        ));
        assert_eq!(
            l.apply(5, quarantine(&id, 1, 21)),
            Outcome::ChunkQuarantined
        );
        let v = l.view(&id);
        assert_eq!(
            (v.appended_chunks, v.quarantined_chunks, v.skipped_chunks),
            (2, 1, 9)
        );
        assert_eq!(v.accounted_span(), 12);
        assert_eq!(
            v.appended_chunks + v.quarantined_chunks + v.skipped_chunks,
            v.accounted_span()
        );
        assert!(
            !v.unhealthy,
            "one quarantined chunk is within the false-positive rate"
        );
        assert_eq!(
            l.apply(6, quarantine(&id, 1, 22)),
            Outcome::ChunkQuarantined
        );
        assert!(l.view(&id).unhealthy);
        assert!(matches!(
            l.apply(7, append(&id, 1, 23)),
            Outcome::EntropyAppended { .. }
        ));
        assert!(!l.view(&id).unhealthy);
    }

    #[test]
    fn a_signed_chunk_keeps_its_provenance_and_a_refused_one_leaves_none() {
        let mut l = Ledger::new();
        let id = device_id_of(&KEY);
        l.apply(1, register(&id));
        l.apply(1, lease(&id, 0));
        let signed = |epoch, seq| Command::AppendSignedEntropy {
            device: id.clone(),
            epoch,
            seq,
            timestamp_ms: 77,
            signature: vec![5; 64],
            bytes: vec![1, 2, 3],
        };
        assert!(matches!(
            l.apply(2, signed(1, 0)),
            Outcome::EntropyAppended { .. }
        ));
        let p = chunk_provenance(&l.db, &id, 0).unwrap().unwrap();
        assert_eq!((p.timestamp_ms, p.length), (77, 3));
        assert_eq!(p.signature, vec![5; 64]);
        assert_eq!(p.sha256, <[u8; 32]>::from(Sha256::digest([1u8, 2, 3])));
        assert!(matches!(
            l.apply(3, signed(9, 1)),
            Outcome::Rejected(Rejection::StaleEpoch { .. })
        ));
        assert!(chunk_provenance(&l.db, &id, 1).unwrap().is_none());
        let short = Command::AppendSignedEntropy {
            device: id.clone(),
            epoch: 1,
            seq: 1,
            timestamp_ms: 0,
            signature: vec![0; 10],
            bytes: vec![1],
        };
        assert!(matches!(
            l.apply(4, short),
            Outcome::Rejected(Rejection::Invalid(_))
        ));
    }
}
