//! One session of the agent with an owner: re-sends what the owner missed,
//! then reads, numbers, signs and sends chunks against the credit granted,
//! with heartbeats, until the owner leaves, a newer owner takes over or the
//! source fails.

use tokio::time::Instant;

use super::*;
use crate::frame::{FrameError, Hello, MAX_OUTSTANDING_CREDITS, SOURCE_REPORT_VERSION};
use crate::task::read_frames_in_background;

pub(super) enum Ending {
    /// Close with an error frame.
    Error(ErrorCode, u64, String),
    /// Close without one (the peer is gone, or a fault drops it).
    Quiet(String),
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run_session(
    shared: &Shared,
    core: &mut Core,
    replay: &mut VecDeque<SignedChunk>,
    hello: &Hello,
    generation: u64,
    rd: LinkReader,
    wr: &mut LinkWriter,
    mut turn_rx: watch::Receiver<Turn>,
) -> Ending {
    let cfg = &shared.config;
    let (mut in_rx, _reader) = read_frames_in_background(rd, 16);

    let mut credits: u64 = 0;
    let mut sent: u64 = 0;
    let mut last_rx = Instant::now();
    let mut last_tx = Instant::now();
    let drop_at = cfg.drop_every.map(|d| Instant::now() + d);
    let reports = hello.version >= SOURCE_REPORT_VERSION;
    let mut last_report: Option<Instant> = None;
    let mut tick = tokio::time::interval(cfg.heartbeat / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            biased;
            _ = turn_rx.changed() => {
                let t = *turn_rx.borrow();
                if t.shutting_down {
                    return Ending::Error(ErrorCode::ShuttingDown, 0, "the device is shutting down".into());
                }
                if t.generation != generation {
                    tracing::info!(old = hello.epoch, new = t.epoch, "session superseded");
                    return Ending::Error(
                        ErrorCode::Superseded,
                        t.epoch,
                        format!("a session with epoch {} took over from epoch {}", t.epoch, hello.epoch),
                    );
                }
            }
            inbound = in_rx.recv() => {
                last_rx = Instant::now();
                match inbound {
                    Some(Ok(Frame::Credit { chunks })) => {
                        credits += u64::from(chunks);
                        if credits > MAX_OUTSTANDING_CREDITS {
                            return Ending::Error(
                                ErrorCode::ProtocolViolation,
                                MAX_OUTSTANDING_CREDITS,
                                format!("{credits} credits outstanding; at most {MAX_OUTSTANDING_CREDITS} are allowed"),
                            );
                        }
                    }
                    Some(Ok(Frame::Heartbeat)) => {}
                    Some(Ok(Frame::Error(e))) => {
                        return Ending::Quiet(format!("node closed the session: {:?} {}", e.code, e.message));
                    }
                    Some(Ok(other)) => {
                        return Ending::Error(
                            ErrorCode::ProtocolViolation,
                            0,
                            format!("unexpected {} frame from the node", frame_name(&other)),
                        );
                    }
                    Some(Err(FrameError::Closed)) | None => {
                        return Ending::Quiet(format!("node disconnected after {sent} chunks"));
                    }
                    Some(Err(FrameError::Io(e))) => return Ending::Quiet(format!("link I/O failed: {e}")),
                    Some(Err(e)) => {
                        return Ending::Error(ErrorCode::ProtocolViolation, 0, format!("bad frame: {e}"));
                    }
                }
            }
            _ = sleep_until_opt(drop_at) => {
                tracing::warn!(epoch = hello.epoch, "dropping the connection (fault mode)");
                return Ending::Quiet("dropped by fault mode".into());
            }
            _ = tick.tick() => {
                if last_rx.elapsed() > cfg.idle_timeout {
                    return Ending::Error(ErrorCode::Timeout, 0, format!("nothing from the node for {:?}", cfg.idle_timeout));
                }
                // From version 4 the source report goes every heartbeat
                // interval, busy or not, and doubles as the heartbeat.
                let report_due = reports && last_report.is_none_or(|t| t.elapsed() >= cfg.heartbeat);
                if report_due || last_tx.elapsed() >= cfg.heartbeat {
                    let frame = if reports {
                        last_report = Some(Instant::now());
                        Frame::SourceReport(shared.stats.source().snapshot().into())
                    } else {
                        Frame::Heartbeat
                    };
                    if let Err(e) = send(wr, &frame, cfg.idle_timeout).await {
                        return Ending::Quiet(e);
                    }
                    last_tx = Instant::now();
                }
            }
            chunk = next_chunk(shared, core, replay), if credits > 0 => {
                let chunk = match chunk {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "entropy source failed");
                        return Ending::Error(ErrorCode::SourceFailed, 0, e);
                    }
                };
                // The clone is kept for re-sending to a later owner.
                if let Err(e) = send(wr, &Frame::Chunk(chunk.clone()), cfg.idle_timeout).await {
                    return Ending::Quiet(e);
                }
                credits -= 1;
                sent += 1;
                last_tx = Instant::now();
                tracing::trace!(seq = chunk.seq, "chunk sent");
                if !core.retained.iter().any(|c| c.seq == chunk.seq) {
                    core.retained.push_back(chunk);
                    while core.retained.len() > cfg.retain_chunks {
                        core.retained.pop_front();
                    }
                }
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next chunk to send: a retained one the node still lacks, else a
/// fresh one. Cancel-safe: the sequence is taken only after the bytes are
/// in hand, and nothing is awaited between taking it and returning.
async fn next_chunk(
    shared: &Shared,
    core: &mut Core,
    replay: &mut VecDeque<SignedChunk>,
) -> Result<SignedChunk, String> {
    if let Some(c) = replay.pop_front() {
        return Ok(c);
    }
    let needs = core
        .seqs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .needs_reservation();
    if needs {
        let seqs = core.seqs.clone();
        tokio::task::spawn_blocking(move || {
            seqs.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .ensure_reserved()
        })
        .await
        .map_err(|e| format!("sequence reservation task failed: {e}"))?
        .map_err(|e| format!("cannot reserve sequence numbers: {e}"))?;
    }
    let bytes = core
        .source
        .read(shared.config.chunk_size)
        .await
        .map_err(|e| e.to_string())?;
    let seq = core
        .seqs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .map_err(|e| format!("cannot take a sequence number: {e}"))?;
    Ok(SignedChunk::sign(
        &shared.key,
        seq,
        geiger_protocol::now_unix_ms(),
        bytes,
    ))
}

pub(super) fn frame_name(f: &Frame) -> &'static str {
    match f {
        Frame::Hello(_) => "Hello",
        Frame::Welcome(_) => "Welcome",
        Frame::Credit { .. } => "Credit",
        Frame::Chunk(_) => "Chunk",
        Frame::Heartbeat => "Heartbeat",
        Frame::Error(_) => "Error",
        Frame::SourceReport(_) => "SourceReport",
    }
}
