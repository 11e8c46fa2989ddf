//! The node's HTTP listeners: an accept loop that bounds every connection,
//! so that no client can hold the port open or starve honest clients.
//!
//! - **Connections are capped** in total and per source address; a
//!   connection past either cap is closed at once, before a byte is read.
//! - **A request head must arrive in time**: hyper's header-read timeout runs
//!   from the connection's start and again from the end of each response, so
//!   it also closes keep-alive connections left idle.
//! - **A request body must arrive in time**: [`body_deadline`] gives the
//!   whole body one deadline from the moment the head was read (a per-read
//!   timeout would let a client trickle one byte at a time forever).
//! - **A stalled connection is closed**: when no byte has moved in either
//!   direction for the stall timeout (a client that stops reading its
//!   response, say), the connection is dropped.
//! - **Every error is JSON**: hyper's own answers to heads it cannot parse
//!   get the API's error body ([`parse_errors`]).
//! - **With TLS** ([`tls`]), the handshake must finish within the header-read
//!   timeout; ALPN then picks HTTP/2 or HTTP/1.1. Both keep connections
//!   alive, so a client pays for one handshake, not one per request.
//!   Under HTTP/2 the stall timeout is also the idle timeout.
//! - **The internal listener** ([`serve_internal`]) runs the same loop for
//!   the node-to-node port: the per-source cap is the per-peer cap, and with
//!   mutual TLS ([`crate::cluster_tls`]) a peer is admitted only after its
//!   certificate names a member.

mod parse_errors;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use geiger_control_plane::raft_network::PeerNodeId;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use self::tls::ServerTls;

use crate::cluster_tls::PeerGate;

use crate::config::ListenerSettings;
use crate::metrics::NodeMetrics;

/// The bounds a listener enforces, from [`ListenerSettings`].
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub stall_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
}

impl From<&ListenerSettings> for ConnectionLimits {
    fn from(s: &ListenerSettings) -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(s.body_read_timeout_ms),
            stall_timeout: Duration::from_millis(s.stall_timeout_ms),
            max_connections: s.max_connections,
            max_connections_per_source: s.max_connections_per_source,
        }
    }
}

/// Why a connection was refused at accept time (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TotalLimit,
    SourceLimit,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::TotalLimit => "total_limit",
            Refusal::SourceLimit => "source_limit",
        }
    }
}

/// Counts open connections, in total and per source address.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_source: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Admission {
    pub fn new(max_total: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Admission {
            max_total,
            max_per_source,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Admitted, Refusal> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_source) = &mut *open;
        if *total >= self.max_total {
            return Err(Refusal::TotalLimit);
        }
        let here = per_source.entry(source).or_insert(0);
        if *here >= self.max_per_source {
            return Err(Refusal::SourceLimit);
        }
        *here += 1;
        *total += 1;
        Ok(Admitted {
            admission: self.clone(),
            source,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (total, per_source) = &mut *open;
        *total -= 1;
        if let Some(here) = per_source.get_mut(&self.source) {
            *here -= 1;
            if *here == 0 {
                per_source.remove(&self.source);
            }
        }
    }
}

/// Which listener a connection came to, and so how its handshake is made
/// and counted.
#[derive(Clone)]
enum Handshake {
    /// The public API, plaintext or TLS.
    Public(Option<tokio_rustls::TlsAcceptor>),
    /// The internal port, plaintext or mutual TLS with the peer check.
    Internal(Option<(tokio_rustls::TlsAcceptor, Arc<PeerGate>)>),
}

/// Serves `router` on `listener` within `limits`, over TLS when `tls` is
/// given, until the task is aborted.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<ServerTls>,
    metrics: Arc<NodeMetrics>,
) {
    let handshake = Handshake::Public(tls.map(|tls| tokio_rustls::TlsAcceptor::from(tls.config)));
    serve_with(listener, router, limits, handshake, metrics).await
}

/// Serves the internal (node-to-node) router: plaintext, or mutual TLS with
/// `tls` and each peer checked by `gate`.
pub async fn serve_internal(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<(Arc<rustls::ServerConfig>, Arc<PeerGate>)>,
    metrics: Arc<NodeMetrics>,
) {
    let handshake = Handshake::Internal(
        tls.map(|(config, gate)| (tokio_rustls::TlsAcceptor::from(config), gate)),
    );
    serve_with(listener, router, limits, handshake, metrics).await
}

async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    handshake: Handshake,
    metrics: Arc<NodeMetrics>,
) {
    let public = matches!(handshake, Handshake::Public(_));
    let router = router.layer(axum::middleware::from_fn_with_state(
        limits.body_read_timeout,
        body_deadline,
    ));
    let admission = Admission::new(limits.max_connections, limits.max_connections_per_source);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or a connection reset before accept:
                // back off briefly rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = match admission.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                if public {
                    metrics.connection_refused(refusal.label());
                } else {
                    metrics.internal_connection_refused(refusal.label());
                    tracing::warn!(%peer, reason = refusal.label(), "internal connection refused at accept");
                }
                drop(stream);
                continue;
            }
        };
        if public {
            metrics.api_connections_open.set(admission.open() as i64);
        }
        let router = router.clone();
        let metrics = metrics.clone();
        let admission = admission.clone();
        let handshake = handshake.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, router, limits, handshake, &metrics).await;
            drop(admitted);
            if public {
                metrics.api_connections_open.set(admission.open() as i64);
            }
        });
    }
}

/// Which HTTP a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    handshake: Handshake,
    metrics: &NodeMetrics,
) {
    let _ = stream.set_nodelay(true);
    let started = Instant::now();
    let last_activity = Arc::new(AtomicU64::new(0));
    // The activity clock sits under TLS, so handshake and record bytes
    // count as movement too.
    let io = ActivityIo {
        inner: stream,
        started,
        last_activity: last_activity.clone(),
    };
    let watch = Watch {
        peer,
        started,
        last_activity,
        limits,
        metrics,
    };
    let (acceptor, gate) = match handshake {
        Handshake::Public(None) | Handshake::Internal(None) => {
            return serve_http(io, Protocol::Http1, router, watch, None).await
        }
        Handshake::Public(Some(acceptor)) => (acceptor, None),
        Handshake::Internal(Some((acceptor, gate))) => (acceptor, Some(gate)),
    };
    let handshake = tokio::time::timeout(limits.header_read_timeout, acceptor.accept(io)).await;
    let tls = match (handshake, &gate) {
        (Ok(Ok(tls)), _) => tls,
        (Ok(Err(e)), Some(gate)) => return gate.handshake_failed(peer, &e),
        (Err(_), Some(gate)) => return gate.handshake_timed_out(peer),
        (Ok(Err(e)), None) => {
            metrics.tls_handshake("error");
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        (Err(_), None) => {
            metrics.tls_handshake("timeout");
            tracing::debug!(%peer, "TLS handshake did not finish in time");
            return;
        }
    };
    // The member a mutual-TLS peer proved it is, for handlers that act
    // only for that member.
    let peer_node = match &gate {
        Some(gate) => match gate.admit(peer, tls.get_ref().1) {
            Some(id) => Some(PeerNodeId(id)),
            None => return,
        },
        None => {
            metrics.tls_handshake("ok");
            None
        }
    };
    let protocol = match tls.get_ref().1.alpn_protocol() {
        Some(tls::ALPN_H2) => Protocol::Http2,
        _ => Protocol::Http1,
    };
    serve_http(tls, protocol, router, watch, peer_node).await
}

/// What the stall watchdog of one connection needs.
struct Watch<'a> {
    peer: SocketAddr,
    started: Instant,
    last_activity: Arc<AtomicU64>,
    limits: ConnectionLimits,
    metrics: &'a NodeMetrics,
}

async fn serve_http<I>(
    io: I,
    protocol: Protocol,
    router: Router,
    watch: Watch<'_>,
    peer_node: Option<PeerNodeId>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = watch.peer;
    // Handlers see the peer's address (per-source limits) as axum's
    // `ConnectInfo`.
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        if let Some(id) = peer_node {
            request.extensions_mut().insert(id);
        }
        tower::ServiceExt::oneshot(router.clone(), request)
    });
    match protocol {
        Protocol::Http1 => {
            let io = TokioIo::new(parse_errors::JsonParseErrors::new(io));
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(watch.limits.header_read_timeout)
                // Room above the API's own head limits (crate::api), so a
                // head somewhat past them gets the router's JSON 414/431
                // with its figures; past these, hyper refuses the head and
                // `parse_errors` puts the JSON shape on its answer.
                .max_headers(MAX_H1_HEADERS)
                .max_buf_size(MAX_H1_BUFFER_BYTES)
                .keep_alive(true);
            watch_stalls(builder.serve_connection(io, service), watch).await;
        }
        Protocol::Http2 => {
            let io = TokioIo::new(io);
            let mut builder =
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
            // Streams per connection are bounded as connections are: the
            // body deadline and stall timeout apply as under HTTP/1.1.
            builder
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_H2_STREAMS);
            watch_stalls(builder.serve_connection(io, service), watch).await;
        }
    }
}

/// Requests one HTTP/2 connection may have open at once.
const MAX_H2_STREAMS: u32 = 128;
/// hyper's own HTTP/1.1 head limits: a few times the API's (crate::api).
const MAX_H1_HEADERS: usize = 256;
const MAX_H1_BUFFER_BYTES: usize = 128 * 1024;

/// Drives `conn` until it ends, or until no byte has moved for the stall
/// timeout.
async fn watch_stalls<C, E>(conn: C, watch: Watch<'_>)
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let Watch {
        peer,
        started,
        last_activity,
        limits,
        metrics,
    } = watch;
    tokio::pin!(conn);
    let check_every = (limits.stall_timeout / 4).max(Duration::from_millis(50));
    let mut ticker = tokio::time::interval(check_every);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = ticker.tick() => {
                let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
                if started.elapsed().saturating_sub(last) >= limits.stall_timeout {
                    metrics.api_connections_stalled.inc();
                    tracing::debug!(%peer, "closing a stalled connection");
                    return;
                }
            }
        }
    }
}

/// A socket that notes when a byte last moved, for the stall timeout.
struct ActivityIo {
    inner: TcpStream,
    started: Instant,
    /// Milliseconds since `started` at the last read or write of a byte.
    last_activity: Arc<AtomicU64>,
}

impl ActivityIo {
    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_activity.store(now, Ordering::Relaxed);
    }
}

impl AsyncRead for ActivityIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for ActivityIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Gives the request body one deadline, counted from now: a body that has
/// not fully arrived by then fails with [`BodyTimedOut`].
async fn body_deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = Body::new(DeadlineBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(limit)),
    });
    next.run(Request::from_parts(parts, body)).await
}

/// The error a body read gets when the body deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_caps_each_source_and_the_total_and_gives_places_back() {
        let admission = Admission::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = admission.admit(a).unwrap();
        let _a2 = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), Refusal::SourceLimit);
        let _b1 = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).unwrap_err(), Refusal::TotalLimit);
        drop(a1);
        assert_eq!(admission.open(), 2);
        assert!(admission.admit(b).is_ok());
    }
}
