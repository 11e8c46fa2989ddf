//! The fault proxy: an in-process TCP relay through which every node-to-node
//! and node-to-device connection runs, so the harness can cut, one-way cut,
//! delay or drop any *directed* link without root or kernel support.
//!
//! Every node advertises a proxy address instead of its own listener, so a
//! peer that connects to it lands here. The destination is known from the
//! listener; the source is found by asking the kernel which process owns the
//! other end of the accepted socket (`/proc/net/tcp` gives the socket's
//! inode, `/proc/<pid>/fd` tells whose it is), because on loopback every
//! connection comes from 127.0.0.1 whatever address the node listens on.
//!
//! Rules are per direction of byte flow, not per connection initiator: a
//! cut `A → B` stops A's requests to B *and* A's answers to B's requests.
//! A cut pauses the flow rather than discarding bytes, as TCP would
//! retransmit them after a real partition heals; the stream is never
//! corrupted. Drop resets the connection (a lossy path TCP gives up on).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// One end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Endpoint {
    Node(u64),
    /// A device agent, by its index in the cluster (0-based).
    Device(usize),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Node(id) => write!(f, "node-{id}"),
            Endpoint::Device(i) => write!(f, "device-{i}"),
        }
    }
}

/// What happens to bytes flowing in one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkRule {
    /// Bytes wait (in kernel buffers and the relay) until the cut heals.
    pub cut: bool,
    /// Added to every chunk's transit time; order is kept.
    pub delay: Duration,
    /// Probability, per relayed chunk, that the connection is reset.
    pub drop: f64,
}

impl LinkRule {
    pub fn is_clear(&self) -> bool {
        !self.cut && self.delay.is_zero() && self.drop <= 0.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// How a listener learns who connected to it.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// Every connection counts as coming from this endpoint (tests, where
    /// all ends live in one process).
    Fixed(Endpoint),
    /// The process owning the other end, among the registered pids.
    ByProcess,
}

/// Counters for the report.
#[derive(Debug, Default, Serialize, Deserialize, Clone)]
pub struct ProxyStats {
    pub connections: u64,
    pub unidentified: u64,
    pub upstream_refused: u64,
    pub resets_by_drop: u64,
    pub bytes: u64,
    /// Slowest source identification (reading /proc), in microseconds.
    pub identify_max_us: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    unidentified: AtomicU64,
    upstream_refused: AtomicU64,
    resets_by_drop: AtomicU64,
    bytes: AtomicU64,
    identify_max_us: AtomicU64,
}

struct Shared {
    rules: RwLock<HashMap<(Endpoint, Endpoint), LinkRule>>,
    /// The healthy state that healing returns to (empty: no rule at all).
    baseline: RwLock<HashMap<(Endpoint, Endpoint), LinkRule>>,
    version: watch::Sender<u64>,
    pids: Pids,
    /// Lookups for the identifier thread (see [`identifier`]).
    lookups: std::sync::mpsc::Sender<Lookup>,
    conns: Mutex<HashMap<u64, (Endpoint, Endpoint, AbortHandle)>>,
    next_conn: AtomicU64,
    counters: Counters,
}

/// The relay and its rule table; cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    shared: Arc<Shared>,
}

impl Default for Proxy {
    fn default() -> Self {
        Self::new()
    }
}

impl Proxy {
    pub fn new() -> Self {
        let pids: Pids = Arc::new(RwLock::new(HashMap::new()));
        let (lookups, queue) = std::sync::mpsc::channel();
        {
            let pids = pids.clone();
            std::thread::Builder::new()
                .name("chaos-proxy-identify".into())
                .spawn(move || identifier(queue, pids))
                .expect("the identifier thread starts");
        }
        Proxy {
            shared: Arc::new(Shared {
                rules: RwLock::new(HashMap::new()),
                baseline: RwLock::new(HashMap::new()),
                version: watch::channel(0).0,
                pids,
                lookups,
                conns: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(0),
                counters: Counters::default(),
            }),
        }
    }

    fn bump(&self) {
        self.shared.version.send_modify(|v| *v += 1);
    }

    /// The rule for bytes flowing `from → to`.
    pub fn rule(&self, from: Endpoint, to: Endpoint) -> LinkRule {
        self.shared
            .rules
            .read()
            .expect("rules lock")
            .get(&(from, to))
            .copied()
            .unwrap_or_default()
    }

    pub fn set_rule(&self, from: Endpoint, to: Endpoint, rule: LinkRule) {
        {
            let mut rules = self.shared.rules.write().expect("rules lock");
            if rule.is_clear() {
                rules.remove(&(from, to));
            } else {
                rules.insert((from, to), rule);
            }
        }
        self.bump();
    }

    /// Cuts `from → to` only.
    pub fn cut_one_way(&self, from: Endpoint, to: Endpoint) {
        let mut rule = self.rule(from, to);
        rule.cut = true;
        self.set_rule(from, to, rule);
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_both(&self, a: Endpoint, b: Endpoint) {
        self.cut_one_way(a, b);
        self.cut_one_way(b, a);
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&self, side: &[Endpoint], other: &[Endpoint]) {
        let mut rules = self.shared.rules.write().expect("rules lock");
        for &a in side {
            for &b in other {
                if a != b {
                    rules.entry((a, b)).or_default().cut = true;
                    rules.entry((b, a)).or_default().cut = true;
                }
            }
        }
        drop(rules);
        self.bump();
    }

    /// Clears every fault: all links flow again, with their baseline delay.
    pub fn heal_all(&self) {
        let baseline = self.shared.baseline.read().expect("baseline lock").clone();
        *self.shared.rules.write().expect("rules lock") = baseline;
        self.bump();
    }

    /// Makes `rule` the healthy state of `from → to` (a distance between
    /// sites, say): applied now and restored by every [`Proxy::heal_all`].
    pub fn set_baseline(&self, from: Endpoint, to: Endpoint, rule: LinkRule) {
        {
            let mut baseline = self.shared.baseline.write().expect("baseline lock");
            if rule.is_clear() {
                baseline.remove(&(from, to));
            } else {
                baseline.insert((from, to), rule);
            }
        }
        self.set_rule(from, to, rule);
    }

    /// Directed links that currently have a rule.
    pub fn active_rules(&self) -> Vec<(Endpoint, Endpoint, LinkRule)> {
        let mut v: Vec<_> = self
            .shared
            .rules
            .read()
            .expect("rules lock")
            .iter()
            .map(|(&(a, b), &r)| (a, b, r))
            .collect();
        v.sort_by_key(|x| (x.0, x.1));
        v
    }

    /// Says which endpoint process `pid` is (after every spawn).
    pub fn register_pid(&self, pid: u32, endpoint: Endpoint) {
        let mut pids = self.shared.pids.write().expect("pids lock");
        pids.retain(|_, e| *e != endpoint);
        pids.insert(pid, endpoint);
    }

    /// Closes every relayed connection between `a` and `b` (either way).
    pub fn reset(&self, a: Endpoint, b: Endpoint) {
        let conns = self.shared.conns.lock().expect("conns lock");
        for (x, y, handle) in conns.values() {
            if (*x == a && *y == b) || (*x == b && *y == a) {
                handle.abort();
            }
        }
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        ProxyStats {
            connections: c.connections.load(Ordering::Relaxed),
            unidentified: c.unidentified.load(Ordering::Relaxed),
            upstream_refused: c.upstream_refused.load(Ordering::Relaxed),
            resets_by_drop: c.resets_by_drop.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            identify_max_us: c.identify_max_us.load(Ordering::Relaxed),
        }
    }

    /// Listens on `bind` and relays each connection to `upstream`, which is
    /// `target`. Returns the bound address (`bind` may have port 0).
    pub async fn listen(
        &self,
        bind: SocketAddr,
        upstream: SocketAddr,
        target: Endpoint,
        source: Source,
    ) -> Result<SocketAddr, ProxyError> {
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| ProxyError::Bind { addr: bind, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ProxyError::Bind { addr: bind, source })?;
        let proxy = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    // Out of descriptors or similar: back off, keep serving.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    proxy
                        .accepted(stream, peer, local, upstream, target, source)
                        .await
                });
            }
        });
        Ok(local)
    }

    async fn identify(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
        source: Source,
    ) -> Option<Endpoint> {
        match source {
            Source::Fixed(e) => Some(e),
            Source::ByProcess => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.shared
                    .lookups
                    .send(Lookup {
                        peer,
                        local,
                        rounds: 0,
                        reply: tx,
                    })
                    .ok()?;
                rx.await.ok().flatten()
            }
        }
    }

    async fn wait_open(&self, from: Endpoint, to: Endpoint) {
        let mut rx = self.shared.version.subscribe();
        loop {
            rx.borrow_and_update();
            if !self.rule(from, to).cut {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    async fn accepted(
        &self,
        down: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        upstream: SocketAddr,
        target: Endpoint,
        source: Source,
    ) {
        let started = Instant::now();
        let identified = self.identify(peer, local, source).await;
        self.shared
            .counters
            .identify_max_us
            .fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let Some(from) = identified else {
            // An unknown source must not slip past a partition: refuse it.
            self.shared
                .counters
                .unidentified
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, %target, "unidentified connection closed");
            return;
        };
        self.shared
            .counters
            .connections
            .fetch_add(1, Ordering::Relaxed);
        // Under a cut the target must not even see the connection.
        self.wait_open(from, target).await;
        let up = match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(upstream))
            .await
        {
            Ok(Ok(s)) => s,
            _ => {
                self.shared
                    .counters
                    .upstream_refused
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let _ = down.set_nodelay(true);
        let _ = up.set_nodelay(true);
        let id = self.shared.next_conn.fetch_add(1, Ordering::Relaxed);
        let proxy = self.clone();
        let task = tokio::spawn(async move {
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            let forward = proxy.pump(from, target, dr, uw);
            let backward = proxy.pump(target, from, ur, dw);
            // Either direction failing (reset by drop, socket error) ends
            // both; once one side has closed, the other gets a grace period
            // and no more, so a peer that never closes leaks nothing.
            tokio::pin!(forward, backward);
            let grace = Duration::from_secs(5);
            tokio::select! {
                r = &mut forward => {
                    if r.is_ok() {
                        let _ = tokio::time::timeout(grace, &mut backward).await;
                    }
                }
                r = &mut backward => {
                    if r.is_ok() {
                        let _ = tokio::time::timeout(grace, &mut forward).await;
                    }
                }
            }
        });
        self.shared
            .conns
            .lock()
            .expect("conns lock")
            .insert(id, (from, target, task.abort_handle()));
        let _ = task.await;
        self.shared.conns.lock().expect("conns lock").remove(&id);
    }

    /// Relays one direction. The reader timestamps chunks as they arrive so
    /// a delay is added to transit time without throttling throughput.
    async fn pump(
        &self,
        from: Endpoint,
        to: Endpoint,
        mut reader: OwnedReadHalf,
        mut writer: OwnedWriteHalf,
    ) -> Result<(), std::io::Error> {
        let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
        let read = async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = reader.read(&mut buf).await?;
                // An empty chunk marks the end of the stream.
                let chunk = buf[..n].to_vec();
                if tx.send((Instant::now(), chunk)).await.is_err() || n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
            }
        };
        let write = async move {
            while let Some((at, chunk)) = rx.recv().await {
                self.wait_open(from, to).await;
                let rule = self.rule(from, to);
                if !rule.delay.is_zero() {
                    tokio::time::sleep_until(at + rule.delay).await;
                }
                if chunk.is_empty() {
                    let _ = writer.shutdown().await;
                    return Ok(());
                }
                if rule.drop > 0.0 && rand::thread_rng().gen_bool(rule.drop.min(1.0)) {
                    self.shared
                        .counters
                        .resets_by_drop
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "dropped by the fault proxy",
                    ));
                }
                writer.write_all(&chunk).await?;
                self.shared
                    .counters
                    .bytes
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Ok(())
        };
        tokio::try_join!(read, write).map(|_| ())
    }
}

/// `127.0.0.1:8080` as /proc/net/tcp writes it: `0100007F:1F90`.
fn proc_addr(addr: SocketAddr) -> Option<String> {
    match addr.ip() {
        IpAddr::V4(ip) => Some(format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(ip.octets()),
            addr.port()
        )),
        IpAddr::V6(_) => None,
    }
}

type Pids = Arc<RwLock<HashMap<u32, Endpoint>>>;

/// One pending "who is on the other end of `peer → local`?".
struct Lookup {
    peer: SocketAddr,
    local: SocketAddr,
    rounds: u8,
    reply: tokio::sync::oneshot::Sender<Option<Endpoint>>,
}

/// Every socket of the machine: (local, remote) as /proc writes them → inode.
fn socket_table() -> HashMap<(String, String), u64> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let local = f.nth(1)?.to_string();
            let remote = f.next()?.to_string();
            let inode = f.nth(6)?.parse().ok()?;
            Some(((local, remote), inode))
        })
        .collect()
}

/// Socket inode → the registered process holding it.
fn rescan(pids: &HashMap<u32, Endpoint>) -> HashMap<u64, u32> {
    let mut map = HashMap::new();
    for pid in pids.keys() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let link = link.to_string_lossy();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse().ok())
            {
                map.insert(inode, *pid);
            }
        }
    }
    map
}

/// Answers lookups in rounds: one read of the socket table and at most one
/// scan of the processes' descriptors per round, however many connections
/// wait. A lookup per connection would cost O(sockets) each, and under a
/// partition the nodes open connections faster than that can keep up.
fn identifier(queue: std::sync::mpsc::Receiver<Lookup>, pids: Pids) {
    let mut owners: HashMap<u64, u32> = HashMap::new();
    let mut pending: Vec<Lookup> = Vec::new();
    loop {
        if pending.is_empty() {
            match queue.recv() {
                Ok(l) => pending.push(l),
                Err(_) => return,
            }
        }
        pending.extend(queue.try_iter());
        let table = socket_table();
        let registered = pids.read().expect("pids lock").clone();
        let inode_of = |l: &Lookup| -> Option<u64> {
            let key = (proc_addr(l.peer)?, proc_addr(l.local)?);
            table.get(&key).copied()
        };
        if pending
            .iter()
            .any(|l| inode_of(l).is_some_and(|i| !owners.contains_key(&i)))
        {
            owners = rescan(&registered);
        }
        let mut still = Vec::new();
        for mut l in pending.drain(..) {
            let found = inode_of(&l)
                .and_then(|i| owners.get(&i))
                .and_then(|pid| registered.get(pid))
                .copied();
            l.rounds += 1;
            if found.is_some() || l.rounds >= 5 {
                let _ = l.reply.send(found);
            } else {
                still.push(l);
            }
        }
        pending = still;
        if !pending.is_empty() {
            // The connecting side may not be in the tables yet.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const A: Endpoint = Endpoint::Node(1);
    const B: Endpoint = Endpoint::Node(2);

    /// An echo server on loopback; returns its address.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    async fn proxied_echo(proxy: &Proxy) -> TcpStream {
        let upstream = echo().await;
        let addr = proxy
            .listen(
                "127.0.0.1:0".parse().unwrap(),
                upstream,
                B,
                Source::Fixed(A),
            )
            .await
            .unwrap();
        TcpStream::connect(addr).await.unwrap()
    }

    async fn round_trip(s: &mut TcpStream, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(within, s.read_exact(&mut buf))
            .await
            .ok()?
            .ok()?;
        assert_eq!(&buf, b"ping");
        Some(started.elapsed())
    }

    #[tokio::test]
    async fn bytes_flow_through_an_unruled_link() {
        let proxy = Proxy::new();
        let mut s = proxied_echo(&proxy).await;
        assert!(round_trip(&mut s, Duration::from_secs(2)).await.is_some());
        assert!(proxy.stats().bytes >= 8);
    }

    #[tokio::test]
    async fn a_cut_blocks_bytes_until_it_heals_and_then_delivers_them_intact() {
        let proxy = Proxy::new();
        let mut s = proxied_echo(&proxy).await;
        assert!(round_trip(&mut s, Duration::from_secs(2)).await.is_some());
        proxy.cut_both(A, B);
        assert!(
            round_trip(&mut s, Duration::from_millis(300))
                .await
                .is_none(),
            "bytes crossed a cut link"
        );
        proxy.heal_all();
        // The ping sent during the cut arrives now, in order.
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .expect("held bytes delivered after heal")
            .unwrap();
        assert_eq!(&buf, b"ping");
    }

    #[tokio::test]
    async fn a_one_way_cut_lets_requests_in_but_holds_the_answers() {
        let proxy = Proxy::new();
        let mut s = proxied_echo(&proxy).await;
        assert!(round_trip(&mut s, Duration::from_secs(2)).await.is_some());
        let before = proxy.stats().bytes;
        proxy.cut_one_way(B, A);
        assert!(round_trip(&mut s, Duration::from_millis(300))
            .await
            .is_none());
        // The request went A → B (4 bytes) but the echo B → A was held.
        assert_eq!(proxy.stats().bytes, before + 4);
        proxy.heal_all();
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_cut_holds_new_connections_away_from_the_target() {
        let proxy = Proxy::new();
        proxy.cut_one_way(A, B);
        let mut s = proxied_echo(&proxy).await;
        assert!(round_trip(&mut s, Duration::from_millis(300))
            .await
            .is_none());
        assert_eq!(proxy.stats().bytes, 0);
        proxy.heal_all();
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_delay_adds_to_each_round_trip() {
        let proxy = Proxy::new();
        let mut s = proxied_echo(&proxy).await;
        // Undelayed, a loopback round trip takes well under a millisecond;
        // only the delayed one is bounded, from below (a busy machine can
        // make any round trip slow, none fast).
        let fast = round_trip(&mut s, Duration::from_secs(2)).await.unwrap();
        proxy.set_rule(
            A,
            B,
            LinkRule {
                delay: Duration::from_millis(150),
                ..LinkRule::default()
            },
        );
        proxy.set_rule(
            B,
            A,
            LinkRule {
                delay: Duration::from_millis(150),
                ..LinkRule::default()
            },
        );
        let slow = round_trip(&mut s, Duration::from_secs(2)).await.unwrap();
        assert!(
            slow >= Duration::from_millis(300),
            "{fast:?}, then {slow:?}"
        );
    }

    #[tokio::test]
    async fn a_certain_drop_resets_the_connection() {
        let proxy = Proxy::new();
        let mut s = proxied_echo(&proxy).await;
        proxy.set_rule(
            A,
            B,
            LinkRule {
                drop: 1.0,
                ..LinkRule::default()
            },
        );
        let _ = s.write_all(b"ping").await;
        let mut buf = [0u8; 4];
        let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("the connection closes promptly");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        assert_eq!(proxy.stats().resets_by_drop, 1);
    }

    #[tokio::test]
    async fn the_source_of_a_connection_is_found_by_its_owning_process() {
        let proxy = Proxy::new();
        proxy.register_pid(std::process::id(), Endpoint::Node(7));
        let upstream = echo().await;
        let addr = proxy
            .listen(
                "127.0.0.1:0".parse().unwrap(),
                upstream,
                B,
                Source::ByProcess,
            )
            .await
            .unwrap();
        // Cut only node-7 → B: a connection from this process must stall.
        proxy.cut_one_way(Endpoint::Node(7), B);
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert!(round_trip(&mut s, Duration::from_millis(300))
            .await
            .is_none());
        proxy.heal_all();
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(proxy.stats().unidentified, 0);
    }

    #[test]
    fn addresses_are_written_as_proc_net_tcp_does_little_endian_ip_and_big_endian_port() {
        assert_eq!(
            proc_addr("127.0.0.1:8080".parse().unwrap()).as_deref(),
            Some("0100007F:1F90")
        );
        assert_eq!(
            proc_addr("127.0.2.3:80".parse().unwrap()).as_deref(),
            Some("0302007F:0050")
        );
    }
}
