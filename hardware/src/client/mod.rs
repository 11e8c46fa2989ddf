//! The node's side of a link: connect to a device under a lease epoch, grant
//! credits, and turn the chunks that arrive into verified outcomes.
//!
//! [`LinkSession::connect`] opens the TLS channel ([`crate::channel`]),
//! presenting this node's link key and accepting only the device's
//! registered key, then says Hello and checks the Welcome. A background task then owns the socket: it sends
//! heartbeats, grants credits, and for every chunk checks, in order,
//!
//! 1. the Ed25519 signature against the *registered* public key (a chunk
//!    that fails ends the session and is never reported as a chunk: its
//!    sequence number is unauthenticated and must not be accounted);
//! 2. sequence continuity: a forward jump is reported as a [`LinkEvent::Gap`]
//!    (numbers the device skipped on restart, or chunks that fell out of its
//!    retention); a repeat or a step back is quarantined and ends the session;
//! 3. the SP 800-90B continuous health tests ([`crate::health`]).
//!
//! The owner drives it with [`LinkSession::next_event`]. Credits are granted
//! only for room in the event queue, so an owner that stops pulling stops the
//! device: nothing piles up in memory and the device is never asked for more
//! than the owner can take. Designed to be driven from an actor: one task
//! pulls events and forwards them as messages.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use geiger_protocol::lease_proof::{LeaseAttestation, LeaseClaim};
use tokio::io::{AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::time::timeout;

mod driver;

use crate::chunk::DeviceId;

use crate::frame::{
    read_frame, ErrorCode, Frame, FrameError, Hello, SourceReport, Welcome, MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
};
use crate::health::{Cutoffs, HealthConfig, HealthFailure, HealthTests};
use driver::Driver;

/// The TLS stream a session runs over, and its halves.
type LinkStream = tokio_rustls::client::TlsStream<TcpStream>;
type LinkWriter = WriteHalf<LinkStream>;
type LinkReader = BufReader<ReadHalf<LinkStream>>;

/// How to reach and check one device.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// `host:port` of the device agent.
    pub addr: String,
    /// This node's lease epoch for the link.
    pub epoch: u64,
    /// The device's registered public key: the only key it may present in
    /// the TLS handshake, and the only key its chunks may carry.
    pub device_key: VerifyingKey,
    /// This node's link key, presented to the device in the handshake.
    pub node_key: SigningKey,
    /// Highest sequence the cluster has accounted for (appended or
    /// quarantined); `None` for a device never heard from.
    pub resume_after: Option<u64>,
    /// Chunks the owner is willing to have in flight or queued.
    pub window: u32,
    pub health: HealthConfig,
    /// Consecutive quarantined chunks after which the link reads unhealthy.
    /// 1 would alarm on the tests' designed false-positive rate.
    pub unhealthy_after: u32,
    pub heartbeat: Duration,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// Members' signatures that the ledger leased the device to this node
    /// at `epoch`, sent in the Hello. Starts with this node's own; the
    /// owner adds its peers' (the device wants a majority of its trusted
    /// members).
    pub attestations: Vec<LeaseAttestation>,
}

impl LinkConfig {
    pub fn new(
        addr: impl Into<String>,
        epoch: u64,
        device_key: VerifyingKey,
        node_key: SigningKey,
    ) -> Self {
        let own = LeaseAttestation::sign(
            &node_key,
            &LeaseClaim {
                device_key: device_key.to_bytes(),
                epoch,
                owner_key: node_key.verifying_key().to_bytes(),
            },
        );
        LinkConfig {
            addr: addr.into(),
            epoch,
            device_key,
            node_key,
            resume_after: None,
            window: 16,
            health: HealthConfig::default(),
            unhealthy_after: 2,
            heartbeat: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            attestations: vec![own],
        }
    }
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot connect to device at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("device at {0} did not answer in time")]
    Timeout(String),
    #[error("the device refuses epoch {epoch}: it has seen epoch {newest}")]
    StaleEpoch { epoch: u64, newest: u64 },
    #[error("the device refused the session: {code:?} ({detail}): {message}")]
    Refused {
        code: ErrorCode,
        detail: u64,
        message: String,
    },
    #[error("the device at this address is {got}, not the registered {expected}")]
    WrongDevice { expected: DeviceId, got: DeviceId },
    #[error("the TLS handshake with the device at {addr} failed: {why}")]
    Handshake { addr: String, why: String },
    #[error("the device refuses epoch {epoch}: the largest it accepts now is {limit}")]
    EpochTooFar { epoch: u64, limit: u64 },
    #[error("the device wants proof of epoch {epoch} from {needed} members: {message}")]
    LeaseUnproven {
        epoch: u64,
        needed: u64,
        message: String,
    },
    #[error("link protocol violation: {0}")]
    Protocol(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// A chunk whose signature and sequence have been checked.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedChunk {
    pub device: DeviceId,
    pub seq: u64,
    pub timestamp_ms: u64,
    pub sha256: [u8; 32],
    /// The device's signature, kept so the ledger can prove provenance.
    pub signature: [u8; 64],
    pub bytes: Vec<u8>,
    /// The epoch of the session that received it (to append under).
    pub epoch: u64,
}

impl std::fmt::Debug for VerifiedChunk {
    // The bytes are secret until used: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedChunk")
            .field("device", &self.device.to_string())
            .field("seq", &self.seq)
            .field("len", &self.bytes.len())
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Why an authentic chunk must not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuarantineReason {
    #[error("health test failed: {0}")]
    Health(HealthFailure),
    #[error("sequence {seq} repeats or steps back; expected {expected} or later")]
    SequenceReplay { seq: u64, expected: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkOutcome {
    Good(VerifiedChunk),
    Quarantine(VerifiedChunk, QuarantineReason),
}

impl QuarantineReason {
    /// The `reason` label of `geiger_entropy_chunks_quarantined_total`.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            QuarantineReason::Health(_) => "health_test",
            QuarantineReason::SequenceReplay { .. } => "sequence",
        }
    }
}

impl ChunkOutcome {
    pub fn chunk(&self) -> &VerifiedChunk {
        match self {
            ChunkOutcome::Good(c) | ChunkOutcome::Quarantine(c, _) => c,
        }
    }
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// A session with epoch `by` took the device: this node lost the link.
    Superseded { by: u64 },
    /// The device ended the session with an error frame.
    Device {
        code: ErrorCode,
        detail: u64,
        message: String,
    },
    /// A chunk did not verify against the registered key.
    BadSignature { seq: u64 },
    /// The device broke the protocol (more chunks than credits, a replayed
    /// sequence, an unexpected frame, a malformed frame).
    Protocol(String),
    /// Nothing from the device within the idle timeout.
    Timeout,
    /// The connection dropped.
    Disconnected(String),
    /// This node closed it ([`LinkSession::close`]).
    Closed,
}

/// What a session reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    Chunk(ChunkOutcome),
    /// Sequences `from..to` will never arrive; account for them as skipped.
    Gap {
        from: u64,
        to: u64,
    },
    /// The last event of a session.
    Closed(CloseReason),
}

/// The link as the health actor and metrics see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub connected: bool,
    /// False after `unhealthy_after` consecutive quarantined chunks, until a
    /// good chunk arrives.
    pub healthy: bool,
    /// The sequence expected next.
    pub next_seq: u64,
    pub good_chunks: u64,
    pub good_bytes: u64,
    /// Bytes of every chunk whose signature verified, before health tests
    /// (`geiger_link_received_bytes_total`).
    pub received_bytes: u64,
    pub quarantined_chunks: u64,
    pub consecutive_quarantined: u32,
    pub last_failure: Option<String>,
    pub closed: Option<CloseReason>,
    /// The device's latest report on its entropy source (version 4
    /// devices send one every heartbeat interval).
    pub source: Option<SourceReport>,
}

/// What the handshake established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub device_id: DeviceId,
    pub epoch: u64,
    /// The first sequence the device said it will send.
    pub first_seq: u64,
    pub chunk_size: u32,
    pub cutoffs: Cutoffs,
    /// The link protocol version the session speaks.
    pub version: u16,
}

/// An open, verified session with one device.
pub struct LinkSession {
    info: SessionInfo,
    events: mpsc::Receiver<LinkEvent>,
    consumed: Arc<Notify>,
    state: watch::Receiver<LinkState>,
    close: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LinkSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LinkSession {
    /// Connects, says Hello with the lease epoch, and checks the Welcome.
    /// A device one version behind answers `UnsupportedVersion` with its
    /// own; the session is then opened again in that version.
    pub async fn connect(config: LinkConfig) -> Result<LinkSession, LinkError> {
        match Self::connect_speaking(config.clone(), PROTOCOL_VERSION).await {
            Err(LinkError::Refused {
                code: ErrorCode::UnsupportedVersion,
                detail,
                ..
            }) if (u64::from(MIN_PROTOCOL_VERSION)..u64::from(PROTOCOL_VERSION))
                .contains(&detail) =>
            {
                let older = detail as u16;
                tracing::info!(addr = %config.addr, version = older, "the device speaks an older link protocol version");
                Self::connect_speaking(config, older).await
            }
            other => other,
        }
    }

    async fn connect_speaking(config: LinkConfig, version: u16) -> Result<LinkSession, LinkError> {
        let addr = config.addr.clone();
        let stream = match timeout(config.connect_timeout, TcpStream::connect(&addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(LinkError::Connect { addr, source }),
            Err(_) => return Err(LinkError::Timeout(addr)),
        };
        let _ = stream.set_nodelay(true);
        let pinned = crate::channel::PinnedDeviceKey::new(&config.device_key);
        let tls = crate::channel::client_config(&config.node_key, pinned.clone())
            .map_err(|e| LinkError::Protocol(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let stream = match timeout(
            config.connect_timeout,
            connector.connect(crate::channel::server_name(), stream),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(
                    match pinned.presented().filter(|_| pinned.refused_a_key()) {
                        Some(key) => LinkError::WrongDevice {
                            expected: DeviceId::of(&config.device_key),
                            got: DeviceId::of_key_bytes(&key),
                        },
                        None => LinkError::Handshake {
                            addr,
                            why: e.to_string(),
                        },
                    },
                )
            }
            Err(_) => return Err(LinkError::Timeout(addr)),
        };
        let (rd, mut wr) = tokio::io::split(stream);
        let mut rd = BufReader::new(rd);
        let hello = Frame::Hello(Hello {
            version,
            epoch: config.epoch,
            resume_after: config.resume_after,
            attestations: config.attestations.clone(),
        });
        wr.write_all(&hello.encode())
            .await
            .map_err(FrameError::Io)?;
        let welcome = match timeout(config.connect_timeout, read_frame(&mut rd)).await {
            Err(_) => return Err(LinkError::Timeout(addr)),
            // In TLS 1.3 the client's side of the handshake completes
            // before the device has checked our key: its refusal arrives
            // as an alert where the Welcome should be.
            Ok(Err(FrameError::Io(e))) if is_tls_alert(&e) => {
                return Err(LinkError::Handshake {
                    addr,
                    why: e.to_string(),
                })
            }
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(Frame::Welcome(w))) => w,
            Ok(Ok(Frame::Error(e))) if e.code == ErrorCode::StaleEpoch => {
                return Err(LinkError::StaleEpoch {
                    epoch: config.epoch,
                    newest: e.detail,
                })
            }
            Ok(Ok(Frame::Error(e))) if e.code == ErrorCode::LeaseUnproven => {
                return Err(LinkError::LeaseUnproven {
                    epoch: config.epoch,
                    needed: e.detail,
                    message: e.message,
                })
            }
            Ok(Ok(Frame::Error(e))) if e.code == ErrorCode::EpochTooFar => {
                return Err(LinkError::EpochTooFar {
                    epoch: config.epoch,
                    limit: e.detail,
                })
            }
            Ok(Ok(Frame::Error(e))) => {
                return Err(LinkError::Refused {
                    code: e.code,
                    detail: e.detail,
                    message: e.message,
                })
            }
            Ok(Ok(_)) => return Err(LinkError::Protocol("expected Welcome".into())),
        };
        check_welcome(&config, version, &welcome)?;

        let tests = HealthTests::new(config.health);
        let info = SessionInfo {
            device_id: welcome.device_id,
            epoch: config.epoch,
            first_seq: welcome.next_seq,
            chunk_size: welcome.chunk_size,
            version,
            cutoffs: tests.cutoffs(),
        };
        let next_seq = config.resume_after.map_or(0, |r| r.saturating_add(1));
        let (state_tx, state) = watch::channel(LinkState {
            connected: true,
            healthy: true,
            next_seq,
            good_chunks: 0,
            good_bytes: 0,
            received_bytes: 0,
            quarantined_chunks: 0,
            consecutive_quarantined: 0,
            last_failure: None,
            closed: None,
            source: None,
        });
        let window = config.window.max(1);
        // Room for every chunk the window allows, a gap before each, and the
        // closing event: the task never blocks on a full queue.
        let (events_tx, events) = mpsc::channel(2 * window as usize + 2);
        let consumed = Arc::new(Notify::new());
        let (close_tx, close_rx) = oneshot::channel();
        tracing::info!(
            device = %info.device_id,
            epoch = info.epoch,
            first_seq = info.first_seq,
            "link session established"
        );
        let driver = Driver {
            config,
            device_id: welcome.device_id,
            window,
            tests,
            next_seq,
            granted: 0,
            received: 0,
            state_tx,
            events_tx,
            consumed: consumed.clone(),
        };
        let task = tokio::spawn(driver.run(rd, wr, close_rx));
        Ok(LinkSession {
            info,
            events,
            consumed,
            state,
            close: Some(close_tx),
            task,
        })
    }

    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The next event; `None` once the session has closed and every event
    /// has been taken. Taking an event makes room for more credit.
    pub async fn next_event(&mut self) -> Option<LinkEvent> {
        let ev = self.events.recv().await;
        self.consumed.notify_one();
        ev
    }

    /// The link's live state (a watch: read it, or await changes).
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// Ends the session politely (the device hears why) and waits for the
    /// background task.
    pub async fn close(mut self) {
        if let Some(tx) = self.close.take() {
            let _ = tx.send(());
        }
        let _ = timeout(Duration::from_secs(2), &mut self.task).await;
    }
}

/// Whether an I/O error is the TLS layer's: an alert from the peer or a
/// failed handshake step.
fn is_tls_alert(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

fn check_welcome(config: &LinkConfig, version: u16, w: &Welcome) -> Result<(), LinkError> {
    let expected = DeviceId::of(&config.device_key);
    if w.public_key != config.device_key.to_bytes() || w.device_id != expected {
        // Also catches a Welcome whose id does not match its own key.
        return Err(LinkError::WrongDevice {
            expected,
            got: w.device_id,
        });
    }
    if w.version != version {
        return Err(LinkError::Protocol(format!(
            "the device answered with version {}, we said Hello in {version}",
            w.version
        )));
    }
    if w.epoch != config.epoch {
        return Err(LinkError::Protocol(format!(
            "the device accepted epoch {}, we sent {}",
            w.epoch, config.epoch
        )));
    }
    Ok(())
}
