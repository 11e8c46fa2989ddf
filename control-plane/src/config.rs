//! Control-plane configuration: who this node is, the cluster secret, and
//! every timeout, with LAN defaults.
//!
//! # Cross-cloud profile
//!
//! [`Timeouts::cross_cloud`] is for voters spread over clouds or regions
//! (round trips of 10–80 ms, occasional spikes of several hundred). The
//! election timeout must comfortably exceed a few round trips plus an fsync,
//! or leaders flap: heartbeat 100 ms, election 500–1000 ms (so a dead leader
//! is detected after 1.5–2 s, see [`Timeouts::election_min`]), RPC timeout
//! 1 s, writes wait up to 10 s, link leases 10 s renewed every 3 s. Failover
//! then costs about two seconds instead of a few hundred milliseconds; that
//! is the price of surviving the loss of a whole cloud. Group commit matters
//! more there: with a 40 ms quorum round trip, one writer gets ~25 commits/s
//! but a batch of 1,000 draws costs the same round trip.
//!
//! # Regional profile
//!
//! [`Timeouts::regional`] is for voters in nearby sites (zones of one
//! region, or regions a few milliseconds apart): heartbeat 40 ms and
//! election 200–400 ms, the election window `lan` has had since it moved
//! to a 100 ms heartbeat. The faster heartbeat finds a leader whose process
//! died sooner (`departed_leader` probes after three silent heartbeats: 120
//! ms here, 300 ms with `lan`), for two and a half times the heartbeats.
//! Measured in the fault harness with 10 ms one way between sites
//! (docs/AVAILABILITY.md): a leader kill costs 0.86–1.42 s (median 0.99 s)
//! against about 2 s with `cross_cloud`, and SIGSTOP bursts of 100–300 ms on
//! the leader cost no election, where the `lan` of that time (heartbeat 25
//! ms, election 70–140 ms) flapped at the same distance (outages of 11–14 s,
//! requests failed). Since `departed_leader`, a leader whose process died
//! costs 0.39–0.77 s there (median 0.46 s).
//!
//! # LAN profile
//!
//! [`Timeouts::lan`], the default, is for voters on one site. Its heartbeat
//! is 100 ms: each heartbeat is an HTTP request to every follower, and an
//! idle leader's CPU is mostly those (`node/benches/idle_cpu.rs`): 3.35 % of
//! a core at 25 ms, 2.47 % at 50 ms, 1.72 % at 100 ms, against the issue's
//! bound of 2 %. Election 200–400 ms keeps four heartbeats inside the
//! leader's lease, and rides out a leader stalled for up to about 300 ms
//! (CPU starvation, a stop-the-world pause) without an election, where
//! 100–200 ms did not. The price is failover when the leader's process dies:
//! 355–518 ms in the fault harness against 222–284 ms with heartbeat 50 ms
//! (docs/AVAILABILITY.md).
//!
//! Members may run different timing during a rolling restart while every
//! heartbeat in use, plus a round trip, stays below every follower's
//! `election_max + election_min` (how long a follower with a leader waits
//! before it stands): 210 ms for the format-1 build's `lan`, 300 ms for
//! the previous one, so the 100 ms heartbeat needs no special upgrade step
//! (deploy/README.md, "Changing Raft timing").

use std::time::Duration;

use crate::types::{Member, NodeId};

/// Raft and link-lease timing.
///
/// LAN defaults: heartbeat 100 ms, election 200–400 ms, so a leader whose
/// host died is replaced after 600–800 ms (see [`Timeouts::election_min`]),
/// one whose process died sooner (`departed_leader`); measured
/// leader-kill-to-next-write on loopback is in docs/ARCHITECTURE.md (control plane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Leader → follower heartbeat interval.
    pub heartbeat: Duration,
    /// A follower that hears nothing from its leader stands for election
    /// after `election_max` (openraft's leader lease, during which it also
    /// refuses to vote for anyone else) plus a random time in
    /// `[election_min, election_max)`. So failover detection takes
    /// between `election_max + election_min` and `2 × election_max`.
    pub election_min: Duration,
    pub election_max: Duration,
    /// One Raft RPC (append, vote) before the peer counts as unreachable.
    pub rpc: Duration,
    /// How long an append's answer is awaited, across openraft's attempts
    /// (each of which openraft abandons after `heartbeat`; see
    /// [`crate::in_flight_append`]). Writes keep committing while a round
    /// trip plus a follower's fsync stays under this; a follower whose
    /// answer takes longer counts as unreachable.
    pub append_answer: Duration,
    /// One snapshot chunk.
    pub snapshot_chunk: Duration,
    /// How long a write may wait, in total, for a leader (covers an election).
    pub write: Duration,
    /// Pause between attempts while no leader is known.
    pub leader_retry: Duration,
    /// How long a link lease lasts, and how often its owner renews it.
    pub lease: Duration,
    pub lease_renew: Duration,
}

impl Timeouts {
    /// Nodes on one LAN (or loopback): sub-millisecond round trips.
    pub fn lan() -> Self {
        Timeouts {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(200),
            election_max: Duration::from_millis(400),
            rpc: Duration::from_millis(250),
            append_answer: Duration::from_secs(2),
            snapshot_chunk: Duration::from_secs(10),
            write: Duration::from_secs(5),
            leader_retry: Duration::from_millis(10),
            lease: Duration::from_secs(3),
            lease_renew: Duration::from_secs(1),
        }
    }

    /// Voters in nearby sites; see the module documentation.
    pub fn regional() -> Self {
        Timeouts {
            heartbeat: Duration::from_millis(40),
            election_min: Duration::from_millis(200),
            election_max: Duration::from_millis(400),
            ..Self::lan()
        }
    }

    /// Voters in several clouds or regions; see the module documentation.
    pub fn cross_cloud() -> Self {
        Timeouts {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(500),
            election_max: Duration::from_millis(1000),
            rpc: Duration::from_millis(1000),
            append_answer: Duration::from_secs(4),
            snapshot_chunk: Duration::from_secs(30),
            write: Duration::from_secs(10),
            leader_retry: Duration::from_millis(50),
            lease: Duration::from_secs(10),
            lease_renew: Duration::from_secs(3),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::lan()
    }
}

/// Everything [`crate::ControlPlane::open`] needs besides its data directory.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    pub node_id: NodeId,
    /// This node's own address and labels.
    pub member: Member,
    /// Shared by every member; sent with every internal request.
    pub cluster_secret: String,
    /// The operator's admin credential. Sent with operator commands this
    /// node forwards to the leader, and required of every operator command
    /// that reaches this node's internal port. `None`: this node neither
    /// forwards operator commands nor accepts them from peers.
    pub admin_token: Option<String>,
    /// Mutual TLS for every call this node makes to another member (the
    /// node builds it from `[cluster.tls]`); `None`: plaintext HTTP.
    pub peer_tls: Option<crate::raft_network::client::PeerTls>,
    pub cluster_name: String,
    pub timeouts: Timeouts,
    /// Build a snapshot after this many log entries since the last one at
    /// the least ([`crate::snapshot_schedule`]).
    pub snapshot_every: u64,
    /// And not before the log has grown by this multiple of the last
    /// snapshot's index (0: every `snapshot_every` entries), so that
    /// dumping a large state stays a fixed cost per entry.
    pub snapshot_growth: f64,
    /// Entries kept in the log behind a snapshot (lets slightly lagging
    /// followers catch up from the log rather than a snapshot).
    pub keep_behind_snapshot: u64,
    /// Snapshot chunk size in bytes.
    pub snapshot_chunk_bytes: u64,
    /// Most commands in one Raft entry.
    pub max_batch: usize,
    /// Most batches proposed and not yet committed at once.
    pub max_inflight_batches: usize,
    /// How long the batcher lets a batch fill while others are in flight
    /// (see [`crate::batcher`]). Zero disables lingering.
    pub batch_linger: Duration,
    /// The state database's redb page cache, bytes. Bounds its resident
    /// memory no matter how large the ledger grows.
    pub state_cache_bytes: usize,
    /// The Raft log database's page cache, bytes (its recent entries are
    /// also kept decoded in memory, so it is seldom read).
    pub log_cache_bytes: usize,
    /// Seals signing secrets in the ledger, the log and snapshots (the same
    /// on every member). `None`: they are kept in plaintext.
    pub key_encryption_key: Option<crate::key_encryption::KeyEncryptionKey>,
    /// This node's device-link key: what it attests other members' leases
    /// with (docs/LINK.md). `None`: it attests nothing.
    pub link_key: Option<ed25519_dalek::SigningKey>,
    /// Largest offset of this node's clock from the cluster's before it
    /// may neither lead nor stamp, and largest lead of a batch's stamp over
    /// a follower's clock before the follower refuses it
    /// (`crate::clock_watch`).
    pub max_clock_offset: Duration,
}

impl ControlPlaneConfig {
    pub fn new(node_id: NodeId, member: Member, cluster_secret: impl Into<String>) -> Self {
        ControlPlaneConfig {
            node_id,
            member,
            cluster_secret: cluster_secret.into(),
            admin_token: None,
            peer_tls: None,
            cluster_name: "geiger".into(),
            timeouts: Timeouts::lan(),
            snapshot_every: 20_000,
            snapshot_growth: 1.0,
            keep_behind_snapshot: 1_000,
            snapshot_chunk_bytes: 1 << 20,
            max_batch: 1024,
            max_inflight_batches: 4,
            batch_linger: Duration::from_millis(1),
            state_cache_bytes: 32 << 20,
            log_cache_bytes: 32 << 20,
            key_encryption_key: None,
            link_key: None,
            max_clock_offset: Duration::from_millis(500),
        }
    }

    pub(crate) fn raft_config(&self) -> Result<openraft::Config, crate::Error> {
        if self.snapshot_every == 0 {
            return Err(crate::Error::Config("snapshot_every is at least 1".into()));
        }
        if !(self.snapshot_growth >= 0.0 && self.snapshot_growth.is_finite()) {
            return Err(crate::Error::Config(format!(
                "snapshot_growth is a number from 0 up, not {}",
                self.snapshot_growth
            )));
        }
        let t = &self.timeouts;
        let config = openraft::Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: t.heartbeat.as_millis() as u64,
            election_timeout_min: t.election_min.as_millis() as u64,
            election_timeout_max: t.election_max.as_millis() as u64,
            install_snapshot_timeout: t.snapshot_chunk.as_millis() as u64,
            // Triggered by `crate::snapshot_schedule` instead.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: self.keep_behind_snapshot,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes,
            max_payload_entries: 64,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| crate::Error::Config(e.to_string()))
    }
}
