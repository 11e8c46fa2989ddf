//! The task that owns a link's socket once the handshake is done: sends
//! heartbeats, grants credits for room in the event queue, and checks each
//! chunk (signature, sequence, health tests) before it becomes an event.

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::{timeout, Instant};

use super::{
    ChunkOutcome, CloseReason, LinkConfig, LinkEvent, LinkReader, LinkState, LinkWriter,
    QuarantineReason, VerifiedChunk,
};
use crate::chunk::{DeviceId, SignedChunk};
use crate::frame::{ErrorCode, ErrorFrame, Frame, FrameError};
use crate::health::HealthTests;
use crate::task::read_frames_in_background;

pub(super) struct Driver {
    pub(super) config: LinkConfig,
    pub(super) device_id: DeviceId,
    pub(super) window: u32,
    pub(super) tests: HealthTests,
    pub(super) next_seq: u64,
    pub(super) granted: u64,
    pub(super) received: u64,
    pub(super) state_tx: watch::Sender<LinkState>,
    pub(super) events_tx: mpsc::Sender<LinkEvent>,
    pub(super) consumed: Arc<Notify>,
}

/// What handling one inbound frame led to.
enum Step {
    Continue,
    Close(CloseReason),
}

impl Driver {
    pub(super) async fn run(
        mut self,
        rd: LinkReader,
        mut wr: LinkWriter,
        mut close_rx: oneshot::Receiver<()>,
    ) {
        let (mut in_rx, reader) = read_frames_in_background(rd, 4);
        let mut last_rx = Instant::now();
        let mut last_tx = Instant::now();
        let mut tick = tokio::time::interval(self.config.heartbeat / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        let reason = loop {
            if let Err(e) = self.grant_credits(&mut wr).await {
                break CloseReason::Disconnected(e);
            }
            let step = tokio::select! {
                biased;
                _ = &mut close_rx => {
                    let bye = Frame::Error(ErrorFrame {
                        code: ErrorCode::ShuttingDown,
                        detail: 0,
                        message: "the node released the link".into(),
                    });
                    let _ = timeout(self.config.heartbeat, wr.write_all(&bye.encode())).await;
                    Step::Close(CloseReason::Closed)
                }
                inbound = in_rx.recv() => {
                    last_rx = Instant::now();
                    match inbound {
                        Some(Ok(frame)) => self.on_frame(frame).await,
                        Some(Err(FrameError::Closed)) | None => {
                            Step::Close(CloseReason::Disconnected("the device closed the connection".into()))
                        }
                        Some(Err(FrameError::Io(e))) => Step::Close(CloseReason::Disconnected(e.to_string())),
                        Some(Err(e)) => Step::Close(CloseReason::Protocol(format!("bad frame: {e}"))),
                    }
                }
                _ = self.consumed.notified() => Step::Continue,
                _ = tick.tick() => {
                    if last_rx.elapsed() > self.config.idle_timeout {
                        Step::Close(CloseReason::Timeout)
                    } else if last_tx.elapsed() >= self.config.heartbeat {
                        match timeout(self.config.idle_timeout, wr.write_all(&Frame::Heartbeat.encode())).await {
                            Ok(Ok(())) => {
                                last_tx = Instant::now();
                                Step::Continue
                            }
                            Ok(Err(e)) => Step::Close(CloseReason::Disconnected(e.to_string())),
                            Err(_) => Step::Close(CloseReason::Timeout),
                        }
                    } else {
                        Step::Continue
                    }
                }
            };
            if let Step::Close(reason) = step {
                break reason;
            }
        };
        drop(reader);
        let _ = wr.shutdown().await;
        tracing::info!(device = %self.device_id, epoch = self.config.epoch, ?reason, "link session closed");
        self.state_tx.send_modify(|s| {
            s.connected = false;
            s.closed = Some(reason.clone());
        });
        let _ = self.events_tx.send(LinkEvent::Closed(reason)).await;
    }

    /// Tops the device's credit up to what the event queue can still hold,
    /// in batches of at least half a window so credit frames stay rare.
    async fn grant_credits(&mut self, wr: &mut LinkWriter) -> Result<(), String> {
        let queued = (self.events_tx.max_capacity() - self.events_tx.capacity()) as u64;
        let outstanding = self.granted - self.received;
        let window = u64::from(self.window);
        let used = outstanding + queued;
        if used > window / 2 {
            return Ok(());
        }
        let grant = (window - used) as u32;
        let frame = Frame::Credit { chunks: grant };
        match timeout(self.config.idle_timeout, wr.write_all(&frame.encode())).await {
            Ok(Ok(())) => {
                self.granted += u64::from(grant);
                tracing::trace!(grant, "credit granted");
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("credit write timed out".into()),
        }
    }

    async fn on_frame(&mut self, frame: Frame) -> Step {
        match frame {
            Frame::Chunk(chunk) => self.on_chunk(chunk).await,
            Frame::Heartbeat => Step::Continue,
            Frame::SourceReport(r) => {
                self.state_tx.send_modify(|s| s.source = Some(r));
                Step::Continue
            }
            Frame::Error(e) if e.code == ErrorCode::Superseded => {
                Step::Close(CloseReason::Superseded { by: e.detail })
            }
            Frame::Error(e) => Step::Close(CloseReason::Device {
                code: e.code,
                detail: e.detail,
                message: e.message,
            }),
            other => Step::Close(CloseReason::Protocol(format!(
                "unexpected {other:?} frame from the device"
            ))),
        }
    }

    async fn on_chunk(&mut self, chunk: SignedChunk) -> Step {
        self.received += 1;
        if self.received > self.granted {
            return Step::Close(CloseReason::Protocol(format!(
                "the device sent chunk {} beyond the {} credits granted",
                chunk.seq, self.granted
            )));
        }
        if chunk.verify(&self.config.device_key).is_err() {
            tracing::error!(device = %self.device_id, seq = chunk.seq, "chunk signature does not verify; closing the link");
            return Step::Close(CloseReason::BadSignature { seq: chunk.seq });
        }
        let len = chunk.bytes.len() as u64;
        self.state_tx.send_modify(|s| s.received_bytes += len);
        let verified = VerifiedChunk {
            device: self.device_id,
            seq: chunk.seq,
            timestamp_ms: chunk.timestamp_ms,
            sha256: chunk.sha256(),
            signature: chunk.signature,
            bytes: chunk.bytes,
            epoch: self.config.epoch,
        };
        if verified.seq < self.next_seq {
            let reason = QuarantineReason::SequenceReplay {
                seq: verified.seq,
                expected: self.next_seq,
            };
            tracing::error!(device = %self.device_id, %reason, "sequence went backwards; closing the link");
            let msg = reason.to_string();
            self.record(false, Some(msg.clone()), 0);
            self.emit(LinkEvent::Chunk(ChunkOutcome::Quarantine(verified, reason)))
                .await;
            return Step::Close(CloseReason::Protocol(msg));
        }
        if verified.seq > self.next_seq {
            tracing::warn!(device = %self.device_id, from = self.next_seq, to = verified.seq, "sequence gap: these chunks will never arrive");
            self.emit(LinkEvent::Gap {
                from: self.next_seq,
                to: verified.seq,
            })
            .await;
        }
        // Saturating: a device at u64::MAX is absurd but must not panic us.
        self.next_seq = verified.seq.saturating_add(1);
        let outcome = match self.tests.check(&verified.bytes) {
            Ok(()) => {
                self.record(true, None, verified.bytes.len() as u64);
                ChunkOutcome::Good(verified)
            }
            Err(failure) => {
                tracing::warn!(device = %self.device_id, seq = verified.seq, %failure, "chunk quarantined");
                self.record(false, Some(failure.to_string()), 0);
                ChunkOutcome::Quarantine(verified, QuarantineReason::Health(failure))
            }
        };
        self.emit(LinkEvent::Chunk(outcome)).await;
        Step::Continue
    }

    fn record(&mut self, good: bool, failure: Option<String>, bytes: u64) {
        let next_seq = self.next_seq;
        let unhealthy_after = self.config.unhealthy_after.max(1);
        let device = self.device_id;
        self.state_tx.send_modify(|s| {
            s.next_seq = next_seq;
            let was_healthy = s.healthy;
            if good {
                s.good_chunks += 1;
                s.good_bytes += bytes;
                s.consecutive_quarantined = 0;
                s.healthy = true;
            } else {
                s.quarantined_chunks += 1;
                s.consecutive_quarantined += 1;
                s.last_failure = failure;
                if s.consecutive_quarantined >= unhealthy_after {
                    s.healthy = false;
                }
            }
            if was_healthy != s.healthy {
                tracing::warn!(%device, healthy = s.healthy, "link health changed");
            }
        });
    }

    async fn emit(&self, event: LinkEvent) {
        // Cannot block for long: the queue has room for everything the
        // credits allow. If the owner dropped the session, nobody listens.
        let _ = self.events_tx.send(event).await;
    }
}
