//! The Raft network's server side: the internal HTTP endpoints for Raft RPC
//! (append, vote, snapshot chunks), writes forwarded by followers,
//! membership changes and read indexes, each handed to the [`Replica`].
//! Bodies are bincode. Every request must carry the cluster secret; anything
//! else gets 401 and a log line. Nothing here can panic on peer input: a
//! body that does not decode is a 400.

use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{
    AdminOp, ForwardedWrite, PATH_ADMIN, PATH_APPEND, PATH_READ_INDEX, PATH_SNAPSHOT, PATH_VOTE,
    PATH_WRITE, SECRET_HEADER,
};
use crate::replica::Replica;

/// Largest internal request body: a full batch of large draws, or a
/// snapshot chunk, with room to spare.
const MAX_BODY: usize = 256 << 20;

/// The router's way in: closed on shutdown, so lingering keep-alive
/// connections cannot keep a stopped replica's databases open.
pub struct Gate {
    inner: RwLock<Option<Arc<Replica>>>,
    secret: Vec<u8>,
}

impl Gate {
    pub(crate) fn new(inner: Arc<Replica>, secret: &str) -> Self {
        Gate {
            inner: RwLock::new(Some(inner)),
            secret: secret.as_bytes().to_vec(),
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

    /// Constant-time comparison, so timing does not leak the secret.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers.get(SECRET_HEADER) else {
            return false;
        };
        let given = given.as_bytes();
        if given.len() != self.secret.len() {
            return false;
        }
        given
            .iter()
            .zip(&self.secret)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

pub(crate) fn router(gate: Arc<Gate>) -> Router {
    Router::new()
        .route(PATH_APPEND, post(append))
        .route(PATH_VOTE, post(vote))
        .route(PATH_SNAPSHOT, post(snapshot))
        .route(PATH_WRITE, post(write))
        .route(PATH_ADMIN, post(admin))
        .route(PATH_READ_INDEX, post(read_index))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(gate)
}

fn encode<T: Serialize>(value: &T) -> Response {
    match bincode::serialize(value) {
        Ok(bytes) => (StatusCode::OK, bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Checks the secret, decodes the body and finds the replica.
fn admit<T: DeserializeOwned>(
    gate: &Gate,
    headers: &HeaderMap,
    body: &[u8],
    path: &str,
) -> Result<(Arc<Replica>, T), Response> {
    if !gate.authorized(headers) {
        tracing::warn!(
            path,
            "internal request without a valid cluster secret rejected"
        );
        return Err((StatusCode::UNAUTHORIZED, "cluster secret required").into_response());
    }
    let Some(inner) = gate.get() else {
        return Err((StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response());
    };
    // The same encoding as `bincode::serialize`, but a length prefix can
    // never make us allocate more than the body limit.
    let options = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(MAX_BODY as u64);
    match options.deserialize(body) {
        Ok(v) => Ok((inner, v)),
        Err(e) => {
            tracing::warn!(path, error = %e, "undecodable internal request");
            Err((StatusCode::BAD_REQUEST, format!("bad body: {e}")).into_response())
        }
    }
}

async fn append(State(gate): State<Arc<Gate>>, headers: HeaderMap, body: Bytes) -> Response {
    let (inner, req) = match admit(&gate, &headers, &body, PATH_APPEND) {
        Ok(x) => x,
        Err(r) => return r,
    };
    encode(&inner.raft.append_entries(req).await)
}

async fn vote(State(gate): State<Arc<Gate>>, headers: HeaderMap, body: Bytes) -> Response {
    let (inner, req) = match admit(&gate, &headers, &body, PATH_VOTE) {
        Ok(x) => x,
        Err(r) => return r,
    };
    encode(&inner.raft.vote(req).await)
}

async fn snapshot(State(gate): State<Arc<Gate>>, headers: HeaderMap, body: Bytes) -> Response {
    let (inner, req) = match admit(&gate, &headers, &body, PATH_SNAPSHOT) {
        Ok(x) => x,
        Err(r) => return r,
    };
    encode(&inner.raft.install_snapshot(req).await)
}

async fn write(State(gate): State<Arc<Gate>>, headers: HeaderMap, body: Bytes) -> Response {
    let (inner, req): (_, ForwardedWrite) = match admit(&gate, &headers, &body, PATH_WRITE) {
        Ok(x) => x,
        Err(r) => return r,
    };
    encode(&inner.propose_as_leader(req.commands).await)
}

async fn admin(State(gate): State<Arc<Gate>>, headers: HeaderMap, body: Bytes) -> Response {
    let (inner, op): (_, AdminOp) = match admit(&gate, &headers, &body, PATH_ADMIN) {
        Ok(x) => x,
        Err(r) => return r,
    };
    encode(&inner.admin_as_leader(op).await)
}

async fn read_index(State(gate): State<Arc<Gate>>, headers: HeaderMap, body: Bytes) -> Response {
    let (inner, ()): (_, ()) = match admit(&gate, &headers, &body, PATH_READ_INDEX) {
        Ok(x) => x,
        Err(r) => return r,
    };
    encode(&inner.read_index_as_leader().await)
}
