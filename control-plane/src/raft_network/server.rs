//! The Raft network's server side: the internal HTTP endpoints for Raft RPC
//! (append, vote, snapshot chunks), writes forwarded by followers,
//! membership changes and read indexes, each handed to the [`Replica`].
//! Bodies are `crate::codec`'s, in the format the path names (see the
//! parent module). Nothing here can panic on peer input: a body that does
//! not decode is a 400.
//!
//! Least privilege, in the order a request meets it:
//!
//! 1. **The cluster secret is checked from the head alone**, before a byte
//!    of the body is read (a middleware in front of every route): a stranger
//!    gets 401 and a log line, and nothing it sends is buffered. Secrets
//!    are compared as SHA-256 digests, in constant time.
//! 2. **Each path has its own body cap** ([`body_limit`]): a declared
//!    `content-length` over it is refused (413) before reading, and a body
//!    that grows past it while being read is cut off there.
//! 3. **A peer may ask only for what a peer needs**: Raft RPC, read indexes,
//!    and forwarded writes of customer and link commands. Operator commands
//!    (customers, signing keys, member labels, links: [`Command::is_operator`])
//!    in a forwarded write, and every membership change (`/internal/admin`),
//!    also need the admin credential in [`ADMIN_HEADER`] (403 without it),
//!    so the cluster secret alone can neither create a customer nor choose
//!    the next signing key.
//!
//! Connections per peer are capped by the listener that serves this router
//! (the node's internal listener, `node/src/listener`).

use std::sync::{Arc, RwLock};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{wire_of, wire_path};
use super::{
    AdminOp, ForwardedWrite, LeaseAttestationRequest, PeerNodeId, ADMIN_HEADER, PATH_ADMIN,
    PATH_APPEND, PATH_LEASE_ATTESTATION, PATH_READ_INDEX, PATH_SNAPSHOT, PATH_VOTE, PATH_WRITE,
    SECRET_HEADER,
};
use crate::clock_watch::{ClockWatch, CLOCK_HEADER, YOUR_OFFSET_HEADER};
use crate::codec::Codec;
use crate::feature_level::{FeatureLevel, FEATURE_HEADER};
use crate::replica::Replica;
use crate::types::TypeConfig;

/// Largest Raft append: up to 64 entries (openraft's `max_payload_entries`),
/// each a batch of up to 1,024 commands, entropy chunks among them.
const MAX_APPEND_BODY: usize = 256 << 20;
/// Largest forwarded write: one batch of commands.
const MAX_WRITE_BODY: usize = 64 << 20;
/// Votes, membership changes and read indexes are a few hundred bytes.
const MAX_SMALL_BODY: usize = 64 << 10;
/// Room for a snapshot chunk's metadata besides its data.
const SNAPSHOT_OVERHEAD: usize = 64 << 10;

/// The largest body `path` accepts; `snapshot_chunk` is the configured
/// snapshot chunk size. Unknown paths accept none.
pub fn body_limit(path: &str, snapshot_chunk: usize) -> usize {
    let (_, path) = wire_of(path);
    match path.as_ref() {
        PATH_APPEND => MAX_APPEND_BODY,
        PATH_WRITE => MAX_WRITE_BODY,
        PATH_SNAPSHOT => snapshot_chunk.saturating_add(SNAPSHOT_OVERHEAD),
        PATH_VOTE | PATH_ADMIN | PATH_READ_INDEX | PATH_LEASE_ATTESTATION => MAX_SMALL_BODY,
        _ => 0,
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares two digests without an early exit, so the time taken says
/// nothing about where they differ (and, digests being of equal length,
/// nothing about the secret's length either).
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Does `headers` carry `name` with a value whose digest is `expected`?
fn header_matches(headers: &HeaderMap, name: &str, expected: &[u8; 32]) -> bool {
    let Some(given) = headers.get(name) else {
        return false;
    };
    let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
    digests_equal(&given, expected)
}

/// The router's way in: closed on shutdown, so lingering keep-alive
/// connections cannot keep a stopped replica's databases open. It also
/// holds the credentials requests are checked against.
pub struct Gate {
    inner: RwLock<Option<Arc<Replica>>>,
    secret: [u8; 32],
    admin: Option<[u8; 32]>,
    snapshot_chunk: usize,
    clock: Arc<ClockWatch>,
}

impl Gate {
    pub(crate) fn new(
        inner: Arc<Replica>,
        secret: &str,
        admin_token: Option<&str>,
        snapshot_chunk: usize,
        clock: Arc<ClockWatch>,
    ) -> Self {
        Gate {
            inner: RwLock::new(Some(inner)),
            secret: digest(secret),
            admin: admin_token.map(digest),
            snapshot_chunk,
            clock,
        }
    }

    pub(crate) fn close(&self) {
        match self.inner.write() {
            Ok(mut g) => *g = None,
            Err(p) => *p.into_inner() = None,
        }
    }

    fn get(&self) -> Option<Arc<Replica>> {
        match self.inner.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn peer_authorized(&self, headers: &HeaderMap) -> bool {
        header_matches(headers, SECRET_HEADER, &self.secret)
    }

    /// The admin credential: never accepted when this node has none.
    fn operator_authorized(&self, headers: &HeaderMap) -> bool {
        match &self.admin {
            Some(admin) => header_matches(headers, ADMIN_HEADER, admin),
            None => false,
        }
    }
}

pub(crate) fn router(gate: Arc<Gate>) -> Router {
    let mut router = Router::new();
    for codec in [Codec::Postcard, Codec::Legacy] {
        let at = |path| wire_path(codec, path).into_owned();
        router = router
            .route(&at(PATH_APPEND), post(append))
            .route(&at(PATH_VOTE), post(vote))
            .route(&at(PATH_SNAPSHOT), post(snapshot))
            .route(&at(PATH_WRITE), post(write))
            .route(&at(PATH_ADMIN), post(admin))
            .route(&at(PATH_READ_INDEX), post(read_index))
            .route(&at(PATH_LEASE_ATTESTATION), post(lease_attestation));
    }
    router
        // Runs before any handler, so before any body is read.
        .route_layer(middleware::from_fn_with_state(gate.clone(), authenticate))
        .with_state(gate)
}

fn refuse(status: StatusCode, message: &'static str) -> Response {
    (status, message).into_response()
}

/// Checks the request head: the cluster secret, the admin credential where
/// the path always needs it, and the declared body length.
async fn authenticate(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let path = wire_of(request.uri().path()).1.into_owned();
    let headers = request.headers();
    if !gate.peer_authorized(headers) {
        tracing::warn!(
            path,
            "internal request without a valid cluster secret refused before its body was read"
        );
        return refuse(StatusCode::UNAUTHORIZED, "cluster secret required");
    }
    if path == PATH_ADMIN && !gate.operator_authorized(headers) {
        tracing::warn!(
            path,
            "membership change over the internal port without the admin credential refused"
        );
        return refuse(StatusCode::FORBIDDEN, "admin credential required");
    }
    let limit = body_limit(&path, gate.snapshot_chunk);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        tracing::warn!(
            path,
            declared,
            limit,
            "internal request body over the cap refused"
        );
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body over the cap");
    }
    let told = headers
        .get(YOUR_OFFSET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    if let Some(offset) = told {
        gate.clock.told(offset);
    }
    let mut response = next.run(request).await;
    // Our clock as we answer: the caller measures our offset from it.
    let headers = response.headers_mut();
    headers.insert(CLOCK_HEADER, geiger_protocol::now_unix_ms().into());
    // What this build can apply (`crate::feature_level`).
    headers.insert(FEATURE_HEADER, FeatureLevel::SUPPORTED.0.into());
    response
}

/// The format of the request's path, which the answer is in too.
struct Wire(Codec);

impl<S: Send + Sync> FromRequestParts<S> for Wire {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Wire(wire_of(parts.uri.path()).0))
    }
}

fn encode<T: Serialize>(Wire(codec): Wire, value: &T) -> Response {
    match codec.encode(value) {
        Ok(bytes) => (StatusCode::OK, bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Reads the body within the path's cap, decodes it and finds the replica.
/// Runs after [`authenticate`].
async fn admit<T: DeserializeOwned>(
    gate: &Gate,
    Wire(codec): &Wire,
    body: Body,
    path: &str,
) -> Result<(Arc<Replica>, T), Response> {
    let limit = body_limit(path, gate.snapshot_chunk);
    let body: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(path, error = %e, "internal request body not read");
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body over the cap or cut off",
            ));
        }
    };
    let Some(inner) = gate.get() else {
        return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
    };
    // Neither format lets a length prefix allocate beyond the body (which
    // is within the cap).
    match codec.decode(&body) {
        Ok(v) => Ok((inner, v)),
        Err(e) => {
            tracing::warn!(path, error = %e, "undecodable internal request");
            Err((StatusCode::BAD_REQUEST, format!("bad body: {e}")).into_response())
        }
    }
}

async fn append(State(gate): State<Arc<Gate>>, wire: Wire, body: Body) -> Response {
    let (inner, req): (_, openraft::raft::AppendEntriesRequest<TypeConfig>) =
        match admit(&gate, &wire, body, PATH_APPEND).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    // The ledger's bound on a wrong clock (crate::clock_watch): a batch
    // stamped too far ahead of ours is not accepted, so it cannot commit.
    let now = geiger_protocol::now_unix_ms();
    let ahead = req.entries.iter().find_map(|e| match &e.payload {
        openraft::EntryPayload::Normal(batch) if gate.clock.too_far_ahead(batch.at_ms, now) => {
            Some(batch.at_ms)
        }
        _ => None,
    });
    if let Some(at_ms) = ahead {
        tracing::warn!(
            stamped_ms = at_ms,
            ahead_ms = at_ms.saturating_sub(now),
            max_offset_ms = gate.clock.max_offset_ms(),
            "refused an append whose batch is stamped further ahead of this node's clock than the bound"
        );
        return refuse(
            StatusCode::CONFLICT,
            "batch stamped too far ahead of this clock",
        );
    }
    let answer = inner.raft.append_entries(req).await;
    if !matches!(
        answer,
        Err(_) | Ok(openraft::raft::AppendEntriesResponse::HigherVote(_))
    ) {
        inner.quorum.heard_append();
    }
    encode(wire, &answer)
}

async fn vote(State(gate): State<Arc<Gate>>, wire: Wire, body: Body) -> Response {
    let (inner, req) = match admit(&gate, &wire, body, PATH_VOTE).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    encode(wire, &inner.raft.vote(req).await)
}

async fn snapshot(State(gate): State<Arc<Gate>>, wire: Wire, body: Body) -> Response {
    let (inner, req) = match admit(&gate, &wire, body, PATH_SNAPSHOT).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    encode(wire, &inner.raft.install_snapshot(req).await)
}

async fn write(
    State(gate): State<Arc<Gate>>,
    wire: Wire,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (inner, req): (_, ForwardedWrite) = match admit(&gate, &wire, body, PATH_WRITE).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Some(command) = req.commands.iter().find(|c| c.is_operator()) {
        if !gate.operator_authorized(&headers) {
            tracing::warn!(
                path = PATH_WRITE,
                command = command.kind(),
                "forwarded operator command without the admin credential refused"
            );
            return refuse(StatusCode::FORBIDDEN, "admin credential required");
        }
    }
    encode(wire, &inner.propose_as_leader(req.commands).await)
}

async fn admin(State(gate): State<Arc<Gate>>, wire: Wire, body: Body) -> Response {
    let (inner, op): (_, AdminOp) = match admit(&gate, &wire, body, PATH_ADMIN).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    encode(wire, &inner.admin_as_leader(op).await)
}

async fn read_index(State(gate): State<Arc<Gate>>, wire: Wire, body: Body) -> Response {
    let (inner, ()): (_, ()) = match admit(&gate, &wire, body, PATH_READ_INDEX).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    encode(wire, &inner.read_index_as_leader().await)
}

async fn lease_attestation(
    State(gate): State<Arc<Gate>>,
    peer: Option<axum::Extension<PeerNodeId>>,
    wire: Wire,
    body: Body,
) -> Response {
    let (inner, req): (_, LeaseAttestationRequest) =
        match admit(&gate, &wire, body, PATH_LEASE_ATTESTATION).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    // Over mutual TLS, only the owner itself may ask for its lease's proof.
    if let Some(axum::Extension(PeerNodeId(id))) = peer {
        if id != req.owner {
            tracing::warn!(
                peer = id,
                owner = req.owner,
                device = %req.device,
                "refused to attest a lease for another node than the caller"
            );
            return refuse(
                StatusCode::FORBIDDEN,
                "a node may only ask for its own lease",
            );
        }
    }
    encode(wire, &inner.attest_lease(&req))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_of_equal_secrets_match_and_of_different_ones_do_not() {
        assert!(digests_equal(
            &digest("s3cret-s3cret"),
            &digest("s3cret-s3cret")
        ));
        assert!(!digests_equal(
            &digest("s3cret-s3cret"),
            &digest("s3cret-s3creT")
        ));
        assert!(!digests_equal(&digest("s3cret"), &digest("s3cret-s3cret")));
    }

    #[test]
    fn every_internal_path_has_a_cap_and_unknown_paths_accept_no_body() {
        for path in [
            PATH_APPEND,
            PATH_WRITE,
            PATH_SNAPSHOT,
            PATH_VOTE,
            PATH_ADMIN,
            PATH_READ_INDEX,
        ] {
            assert!(body_limit(path, 1 << 20) > 0, "{path}");
        }
        assert_eq!(body_limit(PATH_VOTE, 1 << 20), 64 << 10);
        assert_eq!(body_limit(PATH_SNAPSHOT, 1 << 20), (1 << 20) + (64 << 10));
        assert_eq!(body_limit("/internal/other", 1 << 20), 0);
        // The current format's paths have the same caps.
        for path in [PATH_APPEND, PATH_VOTE, PATH_LEASE_ATTESTATION] {
            let v2 = wire_path(Codec::Postcard, path);
            assert_ne!(v2, path);
            assert_eq!(body_limit(&v2, 1 << 20), body_limit(path, 1 << 20), "{v2}");
        }
        assert_eq!(body_limit("/internal/v2/other", 1 << 20), 0);
        assert_eq!(body_limit("/internal/v2", 1 << 20), 0);
    }

    #[test]
    fn each_path_names_its_format_and_the_endpoint_it_stands_for() {
        assert_eq!(
            wire_path(Codec::Postcard, PATH_APPEND),
            "/internal/v2/raft/append"
        );
        assert_eq!(wire_path(Codec::Legacy, PATH_APPEND), PATH_APPEND);
        let (codec, path) = wire_of("/internal/v2/raft/append");
        assert_eq!((codec, path.as_ref()), (Codec::Postcard, PATH_APPEND));
        let (codec, path) = wire_of(PATH_APPEND);
        assert_eq!((codec, path.as_ref()), (Codec::Legacy, PATH_APPEND));
        // Not a prefix match on a longer segment.
        assert_eq!(wire_of("/internal/v2x/raft/append").0, Codec::Legacy);
    }
}
