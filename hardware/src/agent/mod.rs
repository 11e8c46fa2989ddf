//! The device agent: serves one device to one node session at a time.
//!
//! Every connection is first a TLS 1.3 handshake ([`crate::channel`]): the
//! agent presents its device key and serves only clients presenting a
//! trusted node link key. A client that fails it is refused before a single
//! frame is read, with a log line and `geiger_device_refusals_total`.
//!
//! Sessions are fenced by the owner's lease epoch. The agent keeps the newest
//! epoch it has accepted on disk; a Hello with an older epoch is refused with
//! a `StaleEpoch` error frame, one further ahead than a cluster can go with
//! `EpochTooFar` (and not stored), and an accepted Hello (newer, or equal: the
//! same owner reconnecting) ends whatever session is running with a
//! `Superseded` error frame before it takes the device. So a paused or
//! partitioned old owner can never receive another chunk once a newer owner
//! has connected.
//!
//! Chunks are produced only against credit: the node grants N chunks, the
//! agent reads, numbers, signs and sends at most N, then waits. A slow node
//! therefore throttles the device instead of being flooded.
//!
//! The agent retains the last few chunks it sent, in memory. A Hello names
//! the highest sequence the cluster has accounted for; retained chunks after
//! it are sent again first, so a chunk in flight to an owner that died is
//! not lost when the next owner connects (the cluster drops duplicates by
//! sequence). Only a device restart or a retention overflow loses chunks, and
//! those show up as a declared gap, never as a repeated sequence.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use geiger_protocol::lease_proof::{majority_of, trusted_signers, LeaseClaim};
use tokio::io::{AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;

use crate::channel::{MemberNodes, TrustedNodes};
use crate::chunk::{DeviceId, SignedChunk};
use crate::device_store::{
    load_or_create_key, lock_state_dir, EpochCheck, EpochStore, SeqStore, StateLock, StoreError,
    DEFAULT_MAX_EPOCH_STEP,
};
use crate::frame::{
    read_frame, ErrorCode, ErrorFrame, Frame, Hello, Welcome, MAX_CHUNK_BYTES,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use crate::source::{Source, SourceConfig, SourceError};

mod session;
mod stats;
use session::{frame_name, run_session, Ending};
pub use stats::{serve_metrics, AgentStats, Refusal};

/// The TLS stream a session runs over, and its halves.
type LinkStream = tokio_rustls::server::TlsStream<TcpStream>;
type LinkWriter = WriteHalf<LinkStream>;
type LinkReader = BufReader<ReadHalf<LinkStream>>;

/// Default chunk size: 4 KiB, 8 chunks a second at the simulator's rate.
pub const DEFAULT_CHUNK_SIZE: usize = 4096;
/// Default number of sent chunks kept for re-sending to the next owner.
pub const DEFAULT_RETAIN_CHUNKS: usize = 256;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub source: SourceConfig,
    pub chunk_size: usize,
    pub seq_reserve: u64,
    pub retain_chunks: usize,
    /// Send a heartbeat after this long without sending anything else.
    pub heartbeat: Duration,
    /// End a session after this long without hearing from the node.
    pub idle_timeout: Duration,
    /// Fault mode: drop each session's connection, without a word, after this.
    pub drop_every: Option<Duration>,
    /// The link keys of the cluster's nodes: the only clients served.
    pub trusted_nodes: TrustedNodes,
    /// The largest step past the newest epoch a Hello may take.
    pub max_epoch_step: u64,
    /// Trusted members whose lease attestations a Hello must carry; `None`
    /// is a majority of the trusted list as it stands at each Hello.
    pub lease_quorum: Option<usize>,
}

impl AgentConfig {
    /// A configuration serving the nodes `trusted_nodes` lists.
    pub fn new(
        listen: SocketAddr,
        state_dir: PathBuf,
        source: SourceConfig,
        trusted_nodes: TrustedNodes,
    ) -> Self {
        AgentConfig {
            listen,
            state_dir,
            source,
            chunk_size: DEFAULT_CHUNK_SIZE,
            seq_reserve: crate::device_store::DEFAULT_SEQ_RESERVE,
            retain_chunks: DEFAULT_RETAIN_CHUNKS,
            heartbeat: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            drop_every: None,
            trusted_nodes,
            max_epoch_step: DEFAULT_MAX_EPOCH_STEP,
            lease_quorum: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("device state: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Channel(#[from] crate::channel::ChannelError),
}

/// Who may use the device now. Every accepted Hello gets a new generation;
/// a session runs only while the published generation is its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Turn {
    generation: u64,
    epoch: u64,
    shutting_down: bool,
}

struct Fence {
    epochs: EpochStore,
    generation: u64,
}

/// The device proper: only the session holding it produces chunks.
struct Core {
    source: Source,
    seqs: Arc<Mutex<SeqStore>>,
    retained: VecDeque<SignedChunk>,
}

struct Shared {
    /// Held for the agent's life: one agent per state directory.
    _lock: StateLock,
    key: SigningKey,
    device_id: DeviceId,
    config: AgentConfig,
    fence: Mutex<Fence>,
    turn: watch::Sender<Turn>,
    core: tokio::sync::Mutex<Core>,
    stats: Arc<AgentStats>,
}

/// A bound, ready agent.
pub struct Agent {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Agent {
    /// Loads (or creates) the device state, opens the source and binds.
    pub async fn bind(config: AgentConfig) -> Result<Agent, AgentError> {
        if config.chunk_size == 0 || config.chunk_size > MAX_CHUNK_BYTES {
            return Err(AgentError::Config(format!(
                "chunk size must be 1..={MAX_CHUNK_BYTES}, got {}",
                config.chunk_size
            )));
        }
        if config.heartbeat.is_zero() || config.idle_timeout <= config.heartbeat {
            return Err(AgentError::Config(
                "the idle timeout must be longer than the (non-zero) heartbeat".into(),
            ));
        }
        let dir = config.state_dir.clone();
        let reserve = config.seq_reserve;
        // Disk work (key creation, fsyncs) stays off the async runtime.
        let loaded = tokio::task::spawn_blocking(move || {
            Ok::<_, StoreError>((
                lock_state_dir(&dir)?,
                load_or_create_key(&dir)?,
                SeqStore::open(&dir, reserve)?,
                EpochStore::open(&dir)?,
            ))
        })
        .await
        .map_err(|e| AgentError::Config(format!("state loader failed: {e}")))?;
        let (lock, key, seqs, epochs) = loaded?;
        let source = Source::open(&config.source)?;
        let stats = Arc::new(AgentStats::with_source(source.stats()));
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| AgentError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let device_id = DeviceId::of(&key.verifying_key());
        // Checked once here; each connection builds its own (see `handshake`).
        crate::channel::server_config(&key, MemberNodes::new(config.trusted_nodes.clone()))?;
        if config.trusted_nodes.keys().is_empty() {
            tracing::warn!("no trusted node keys: every session will be refused");
        }
        tracing::info!(
            device = %device_id,
            next_seq = seqs.peek(),
            newest_epoch = epochs.highest(),
            source = ?config.source.kind,
            "device agent ready"
        );
        let (turn, _) = watch::channel(Turn {
            generation: 0,
            epoch: epochs.highest(),
            shutting_down: false,
        });
        let shared = Arc::new(Shared {
            _lock: lock,
            key,
            device_id,
            fence: Mutex::new(Fence {
                epochs,
                generation: 0,
            }),
            turn,
            core: tokio::sync::Mutex::new(Core {
                source,
                seqs: Arc::new(Mutex::new(seqs)),
                retained: VecDeque::new(),
            }),
            config,
            stats,
        });
        Ok(Agent { listener, shared })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn device_id(&self) -> DeviceId {
        self.shared.device_id
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.shared.key.verifying_key()
    }

    /// The agent's counters (handshakes, sessions, refusals by reason, and
    /// the source's production).
    pub fn stats(&self) -> Arc<AgentStats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` completes, then tells the running session.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let shared = self.shared.clone();
                        tokio::spawn(async move { serve_connection(shared, stream, peer).await });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        self.shared.turn.send_modify(|t| t.shutting_down = true);
        tracing::info!("device agent shutting down");
        // Give the session a moment to send its closing frame.
        let _ = timeout(Duration::from_secs(1), self.shared.core.lock()).await;
    }
}

async fn send(w: &mut LinkWriter, frame: &Frame, limit: Duration) -> Result<(), String> {
    match timeout(limit, w.write_all(&frame.encode())).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write failed: {e}")),
        Err(_) => Err("write timed out".into()),
    }
}

async fn send_error(
    w: &mut LinkWriter,
    code: ErrorCode,
    detail: u64,
    message: String,
    limit: Duration,
) {
    let frame = Frame::Error(ErrorFrame {
        code,
        detail,
        message,
    });
    // Best effort: the peer may already be gone, and we are closing anyway.
    let _ = send(w, &frame, limit).await;
    let _ = w.shutdown().await;
}

/// Whether enough trusted members attested that the ledger leased this
/// device to `owner_key` at the Hello's epoch; `Err((needed, signers))` if
/// not.
fn lease_proven(shared: &Shared, hello: &Hello, owner_key: [u8; 32]) -> Result<(), (usize, usize)> {
    let trusted = shared.config.trusted_nodes.keys();
    let needed = shared
        .config
        .lease_quorum
        .unwrap_or_else(|| majority_of(trusted.len()))
        .max(1);
    let claim = LeaseClaim {
        device_key: shared.key.verifying_key().to_bytes(),
        epoch: hello.epoch,
        owner_key,
    };
    let signers = trusted_signers(&hello.attestations, &claim, &trusted);
    if signers >= needed {
        Ok(())
    } else {
        Err((needed, signers))
    }
}

enum Admission {
    Refused { newest: u64 },
    TooFar { newest: u64, limit: u64 },
    Accepted { generation: u64 },
}

/// The TLS handshake: `None` (logged and counted) when the client is not a
/// trusted node or never completes it.
async fn handshake(shared: &Shared, stream: TcpStream, peer: SocketAddr) -> Option<LinkStream> {
    let trusted = shared.config.trusted_nodes.clone();
    // A changed file is read again before the handshake needs it.
    match tokio::task::spawn_blocking(move || trusted.refresh()).await {
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot reload the trusted node keys; keeping the previous list")
        }
        Err(e) => tracing::warn!(error = %e, "trusted node reload task failed"),
        Ok(Ok(())) => {}
    }
    let limit = shared.config.idle_timeout;
    // A verifier of its own per connection, so the key it refuses is this
    // client's, whoever else is shaking hands at the same time.
    let members = MemberNodes::new(shared.config.trusted_nodes.clone());
    let tls = match crate::channel::server_config(&shared.key, members.clone()) {
        Ok(config) => TlsAcceptor::from(Arc::new(config)),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the TLS configuration");
            return None;
        }
    };
    match timeout(limit, tls.accept(stream)).await {
        Ok(Ok(tls)) => {
            shared.stats.handshake();
            Some(tls)
        }
        Ok(Err(e)) => {
            if let Some(key) = members.take_refused() {
                tracing::warn!(%peer, node_key = %key, "refused a client whose link key is not a trusted cluster node");
                shared.stats.refuse(Refusal::UntrustedNode);
            } else {
                tracing::warn!(%peer, error = %e, "refused a client that failed the TLS handshake");
                shared.stats.refuse(Refusal::Handshake);
            }
            None
        }
        Err(_) => {
            tracing::warn!(%peer, "refused a client that did not finish the TLS handshake in time");
            shared.stats.refuse(Refusal::Handshake);
            None
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let limit = shared.config.idle_timeout;
    let Some(stream) = handshake(&shared, stream, peer).await else {
        return;
    };
    // The key the client proved it holds: the owner its lease must name.
    let client_key = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| crate::channel::key_of_spki(cert))
        .unwrap_or([0; 32]);
    let (rd, mut wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);

    let hello = match timeout(limit, read_frame(&mut rd)).await {
        Ok(Ok(Frame::Hello(h))) => h,
        Ok(Ok(other)) => {
            let msg = format!("expected Hello, got {}", frame_name(&other));
            send_error(&mut wr, ErrorCode::ProtocolViolation, 0, msg, limit).await;
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "connection closed before its Hello");
            let msg = format!("bad Hello: {e}");
            send_error(&mut wr, ErrorCode::ProtocolViolation, 0, msg, limit).await;
            return;
        }
        Err(_) => {
            send_error(
                &mut wr,
                ErrorCode::Timeout,
                0,
                "no Hello in time".into(),
                limit,
            )
            .await;
            return;
        }
    };
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.version) {
        let msg = format!(
            "link protocol version {} is not supported; this device speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}",
            hello.version
        );
        send_error(
            &mut wr,
            ErrorCode::UnsupportedVersion,
            u64::from(PROTOCOL_VERSION),
            msg,
            limit,
        )
        .await;
        return;
    }

    if let Err((needed, signers)) = lease_proven(&shared, &hello, client_key) {
        tracing::warn!(%peer, epoch = hello.epoch, signers, needed, "refused a session whose epoch lacks a majority of member attestations");
        shared.stats.refuse(Refusal::LeaseUnproven);
        let msg = format!(
            "epoch {} carries attestations of {signers} trusted members for this node; {needed} are needed",
            hello.epoch
        );
        send_error(&mut wr, ErrorCode::LeaseUnproven, needed as u64, msg, limit).await;
        return;
    }

    let admission = {
        let shared = shared.clone();
        let epoch = hello.epoch;
        tokio::task::spawn_blocking(move || admit(&shared, epoch)).await
    };
    let generation = match admission {
        Ok(Ok(Admission::Accepted { generation })) => generation,
        Ok(Ok(Admission::TooFar {
            newest,
            limit: highest,
        })) => {
            tracing::warn!(%peer, epoch = hello.epoch, newest, highest_acceptable = highest, "refused a session whose epoch jumps further than a cluster can go");
            shared.stats.refuse(Refusal::EpochTooFar);
            let msg = format!(
                "epoch {} is more than {} past epoch {newest}, the newest this device has seen; the largest it accepts now is {highest}",
                hello.epoch, shared.config.max_epoch_step
            );
            send_error(&mut wr, ErrorCode::EpochTooFar, highest, msg, limit).await;
            return;
        }
        Ok(Ok(Admission::Refused { newest })) => {
            tracing::info!(%peer, epoch = hello.epoch, newest, "refused a session with a stale epoch");
            shared.stats.refuse(Refusal::StaleEpoch);
            let msg = format!(
                "epoch {} is older than epoch {newest}, the newest this device has seen",
                hello.epoch
            );
            send_error(&mut wr, ErrorCode::StaleEpoch, newest, msg, limit).await;
            return;
        }
        Ok(Err(e)) => {
            // Without a durable epoch we cannot promise fencing: refuse.
            tracing::error!(error = %e, "cannot persist the session epoch");
            send_error(
                &mut wr,
                ErrorCode::SourceFailed,
                0,
                "device state unavailable".into(),
                limit,
            )
            .await;
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "epoch check task failed");
            return;
        }
    };

    let mut turn_rx = shared.turn.subscribe();
    // Wait for the previous session to let go of the device, unless a newer
    // Hello overtakes this one meanwhile.
    let core = tokio::select! {
        core = shared.core.lock() => Some(core),
        _ = turn_rx.wait_for(|t| t.generation != generation || t.shutting_down) => None,
    };
    let current = *turn_rx.borrow();
    let Some(mut core) =
        core.filter(|_| current.generation == generation && !current.shutting_down)
    else {
        let msg = format!("a session with epoch {} took over", current.epoch);
        send_error(&mut wr, ErrorCode::Superseded, current.epoch, msg, limit).await;
        return;
    };

    let next_fresh = core
        .seqs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .peek();
    if let Some(after) = hello.resume_after.filter(|&r| r >= next_fresh) {
        tracing::error!(%peer, resume_after = after, next_seq = next_fresh, "the node has seen sequences this device never issued; refusing");
        let msg = format!(
            "the node has accounted for sequence {after}, but this device has only issued up to {}; its sequence store was lost or rolled back",
            next_fresh.saturating_sub(1)
        );
        send_error(&mut wr, ErrorCode::SequenceRollback, next_fresh, msg, limit).await;
        return;
    }
    let mut replay: VecDeque<SignedChunk> = core
        .retained
        .iter()
        .filter(|c| hello.resume_after.is_none_or(|r| c.seq > r))
        .cloned()
        .collect();
    let welcome = Welcome {
        // The session speaks the Hello's version: a node one version behind
        // keeps working while devices are upgraded first.
        version: hello.version,
        device_id: shared.device_id,
        public_key: shared.key.verifying_key().to_bytes(),
        epoch: hello.epoch,
        next_seq: replay.front().map_or(next_fresh, |c| c.seq),
        chunk_size: shared.config.chunk_size as u32,
    };
    // Counted before the Welcome leaves, so whoever reads the counter after
    // its Welcome arrived sees this session.
    shared.stats.session();
    if let Err(e) = send(&mut wr, &Frame::Welcome(welcome.clone()), limit).await {
        tracing::info!(%peer, error = %e, "session lost during the handshake");
        return;
    }
    tracing::info!(
        %peer,
        epoch = hello.epoch,
        resume_after = ?hello.resume_after,
        next_seq = welcome.next_seq,
        replayed = replay.len(),
        "session started"
    );

    let ending = run_session(
        &shared,
        &mut core,
        &mut replay,
        &hello,
        generation,
        rd,
        &mut wr,
        turn_rx,
    )
    .await;
    drop(core);
    match ending {
        Ending::Error(code, detail, message) => {
            tracing::info!(%peer, epoch = hello.epoch, ?code, %message, "session ended");
            send_error(&mut wr, code, detail, message, limit).await;
        }
        Ending::Quiet(why) => {
            tracing::info!(%peer, epoch = hello.epoch, reason = %why, "session ended");
        }
    }
}

/// Decides whether a Hello's epoch may have the device. Runs on a blocking
/// thread: a newer epoch is fsynced before it is acted on.
fn admit(shared: &Shared, epoch: u64) -> Result<Admission, StoreError> {
    let mut fence = shared.fence.lock().unwrap_or_else(PoisonError::into_inner);
    match fence.epochs.observe(epoch, shared.config.max_epoch_step)? {
        EpochCheck::Stale { newest } => Ok(Admission::Refused { newest }),
        EpochCheck::TooFar { newest, limit } => Ok(Admission::TooFar { newest, limit }),
        check => {
            if let EpochCheck::Advanced { previous } = check {
                tracing::info!(epoch, previous, "fencing epoch advanced");
            }
            fence.generation += 1;
            let generation = fence.generation;
            // Published under the fence lock, so generations and epochs
            // reach sessions in the order they were admitted.
            shared.turn.send_modify(|t| {
                t.generation = generation;
                t.epoch = epoch;
            });
            Ok(Admission::Accepted { generation })
        }
    }
}
