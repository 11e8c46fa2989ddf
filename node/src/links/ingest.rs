//! Ingestion, as pure functions: what a batch of link events becomes in the
//! ledger, and what the ledger's answers mean for the session. The session
//! ([`super::session`]) does the I/O around them.
//!
//! - a good chunk → `AppendSignedEntropy` (with the device's signature, so
//!   the ledger can prove provenance);
//! - a chunk that failed a health test or repeated a sequence →
//!   `QuarantineChunk` (length, SHA-256 and reason; never pooled);
//! - a gap the device reports → `SkipChunks`;
//! - all under the session's epoch, in the order the link delivered them.
//!
//! Answers: a re-sent chunk at or below the device's last sequence is
//! refused as `SequenceGap` with `got < expected` and is a harmless
//! duplicate; any other gap means this session's idea of the sequence is
//! off (reconnect and resume from the ledger); a stale epoch, an expired
//! lease or a forbidden append means the lease is lost.

use geiger_control_plane::{Command, Outcome, Rejection};
use geiger_hardware::{ChunkOutcome, CloseReason, LinkEvent, QuarantineReason};

/// A batch of link events, translated.
#[derive(Debug, PartialEq, Eq)]
pub struct Translation {
    /// The ledger commands, in the events' order.
    pub commands: Vec<Command>,
    /// Why each quarantined chunk was quarantined (for the metrics).
    pub quarantined: Vec<QuarantineReason>,
    /// The session ended with the batch's last event.
    pub closed: Option<CloseReason>,
}

/// The ledger commands for `events`, received under `epoch` from `device`.
pub fn translate(device: &str, epoch: u64, events: Vec<LinkEvent>) -> Translation {
    let mut out = Translation {
        commands: Vec::with_capacity(events.len()),
        quarantined: Vec::new(),
        closed: None,
    };
    for event in events {
        match event {
            LinkEvent::Chunk(ChunkOutcome::Good(c)) => {
                out.commands.push(Command::AppendSignedEntropy {
                    device: device.to_string(),
                    epoch,
                    seq: c.seq,
                    timestamp_ms: c.timestamp_ms,
                    signature: c.signature.to_vec(),
                    bytes: c.bytes,
                })
            }
            LinkEvent::Chunk(ChunkOutcome::Quarantine(c, reason)) => {
                out.commands.push(Command::QuarantineChunk {
                    device: device.to_string(),
                    epoch,
                    seq: c.seq,
                    length: c.bytes.len() as u32,
                    sha256: c.sha256,
                    reason: reason_text(&reason),
                });
                out.quarantined.push(reason);
            }
            LinkEvent::Gap { from, to } => out.commands.push(Command::SkipChunks {
                device: device.to_string(),
                epoch,
                from,
                to,
            }),
            LinkEvent::Closed(reason) => out.closed = Some(reason),
        }
    }
    out
}

/// What the session does after a batch was committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on pulling chunks.
    Continue,
    /// The session is off the ledger's sequence: reconnect and resume.
    Reconnect(String),
    /// This node no longer owns the link.
    LostLease(String),
}

/// The ledger's answers to one batch: how many chunks were appended, and
/// what the session does next.
pub fn judge(outcomes: &[Outcome]) -> (u64, Verdict) {
    let mut appended = 0u64;
    let mut verdict = Verdict::Continue;
    for outcome in outcomes {
        match outcome {
            Outcome::EntropyAppended { .. } => appended += 1,
            Outcome::ChunkQuarantined | Outcome::Done => {}
            Outcome::Rejected(Rejection::SequenceGap { expected, got, .. }) if got < expected => {
                tracing::debug!(seq = got, "duplicate chunk dropped");
            }
            Outcome::Rejected(r @ Rejection::SequenceGap { .. }) => {
                if verdict == Verdict::Continue {
                    verdict =
                        Verdict::Reconnect(format!("the ledger expects another sequence: {r}"));
                }
            }
            Outcome::Rejected(
                r @ (Rejection::StaleEpoch { .. }
                | Rejection::LeaseExpired(_)
                | Rejection::Forbidden(_)),
            ) => {
                verdict = Verdict::LostLease(r.to_string());
                break;
            }
            other => tracing::warn!(?other, "unexpected append outcome"),
        }
    }
    (appended, verdict)
}

/// After the link closed: `Some(newest)` when the device has seen a newer
/// epoch than `epoch` (this session is fenced for good), `None` when a
/// reconnect may help.
pub fn fenced_by(reason: &CloseReason, epoch: u64) -> Option<u64> {
    match reason {
        CloseReason::Superseded { by } if *by > epoch => Some(*by),
        _ => None,
    }
}

/// The ledger's reason text: at most 128 bytes, no control characters.
pub fn reason_text(reason: &QuarantineReason) -> String {
    let mut text = format!("{}: {reason}", reason.metric_reason());
    text.retain(|c| !c.is_control());
    if text.len() > 128 {
        let mut cut = 128;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use geiger_hardware::{DeviceId, HealthFailure, VerifiedChunk};

    fn chunk(seq: u64) -> VerifiedChunk {
        VerifiedChunk {
            device: DeviceId([7; 16]),
            seq,
            timestamp_ms: 1_000 + seq,
            sha256: [seq as u8; 32],
            signature: [9; 64],
            bytes: vec![seq as u8; 4],
            epoch: 3,
        }
    }

    fn stuck() -> QuarantineReason {
        QuarantineReason::Health(HealthFailure::AdaptiveProportion {
            value: 0xff,
            count: 13,
            window: 512,
            cutoff: 13,
        })
    }

    #[test]
    fn good_quarantined_and_skipped_chunks_become_their_commands_in_order_under_the_epoch() {
        let events = vec![
            LinkEvent::Chunk(ChunkOutcome::Good(chunk(5))),
            LinkEvent::Chunk(ChunkOutcome::Quarantine(chunk(6), stuck())),
            LinkEvent::Gap { from: 7, to: 9 },
            LinkEvent::Chunk(ChunkOutcome::Good(chunk(9))),
        ];
        let t = translate("dev_a", 3, events);
        assert_eq!(
            t.commands,
            vec![
                Command::AppendSignedEntropy {
                    device: "dev_a".into(),
                    epoch: 3,
                    seq: 5,
                    timestamp_ms: 1_005,
                    signature: vec![9; 64],
                    bytes: vec![5; 4],
                },
                Command::QuarantineChunk {
                    device: "dev_a".into(),
                    epoch: 3,
                    seq: 6,
                    length: 4,
                    sha256: [6; 32],
                    reason: reason_text(&stuck()),
                },
                Command::SkipChunks {
                    device: "dev_a".into(),
                    epoch: 3,
                    from: 7,
                    to: 9,
                },
                Command::AppendSignedEntropy {
                    device: "dev_a".into(),
                    epoch: 3,
                    seq: 9,
                    timestamp_ms: 1_009,
                    signature: vec![9; 64],
                    bytes: vec![9; 4],
                },
            ]
        );
        assert_eq!(t.quarantined, vec![stuck()]);
        assert_eq!(t.closed, None);
    }

    #[test]
    fn a_close_ends_the_batch_and_only_a_newer_epoch_fences_the_session() {
        let t = translate(
            "dev_a",
            3,
            vec![
                LinkEvent::Chunk(ChunkOutcome::Good(chunk(1))),
                LinkEvent::Closed(CloseReason::Superseded { by: 4 }),
            ],
        );
        assert_eq!(t.commands.len(), 1);
        let closed = t.closed.unwrap();
        assert_eq!(fenced_by(&closed, 3), Some(4));
        assert_eq!(fenced_by(&closed, 4), None);
        assert_eq!(fenced_by(&CloseReason::Timeout, 3), None);
    }

    #[test]
    fn a_duplicate_is_dropped_quietly_but_a_gap_reconnects_and_a_stale_epoch_loses_the_lease() {
        let gap = |expected, got| {
            Outcome::Rejected(Rejection::SequenceGap {
                device: "dev_a".into(),
                expected,
                got,
            })
        };
        let appended = Outcome::EntropyAppended { pool_bytes: 4 };
        assert_eq!(
            judge(&[appended.clone(), gap(6, 5), Outcome::ChunkQuarantined]),
            (1, Verdict::Continue)
        );
        let (n, verdict) = judge(&[appended.clone(), gap(6, 8), appended.clone()]);
        assert_eq!(n, 2);
        assert!(matches!(verdict, Verdict::Reconnect(_)), "{verdict:?}");
        let stale = Outcome::Rejected(Rejection::StaleEpoch { current: 4, got: 3 });
        let (n, verdict) = judge(&[gap(6, 8), stale, appended]);
        assert_eq!(n, 0, "nothing after a lost lease counts");
        assert!(matches!(verdict, Verdict::LostLease(_)), "{verdict:?}");
    }

    #[test]
    fn a_quarantine_reason_fits_the_ledgers_limits() {
        let text = reason_text(&stuck());
        assert!(text.starts_with("health_test: health test failed: adaptive proportion"));
        assert!(text.len() <= 128 && !text.chars().any(char::is_control));
    }
}
