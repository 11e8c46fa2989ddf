//! The workload: concurrent clients drawing at a fixed offered rate, each on
//! its own chains plus a few shared, contended chains, through the client
//! SDK with every node as an endpoint. Every request is recorded: when it
//! was meant to start, when it started and ended, which node answered, the
//! outcome and the full response bytes.
//!
//! Each worker keeps a fixed schedule (request k is due at k / rate). A
//! worker stuck behind a slow request issues the overdue ones at once and
//! their latency counts from when they were *due*, so a stall shows as
//! latency instead of silently lowering the offered rate (no coordinated
//! omission).
//!
//! After an ambiguous failure (timeout, 5xx) on its own chain a worker
//! retries the *same* request (same `previous`, same `request_id`) next
//! time: if the first try was in fact committed the retry must come back as
//! its idempotent replay, which the checker verifies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use geiger_client::{Client, ClientBuilder, ClientError};
use geiger_protocol::{DrawRequest, RecordId, Spec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("the client cannot be built: {0}")]
    Client(#[from] ClientError),
    #[error("could not open chain {what}: {source}")]
    Chain { what: String, source: ClientError },
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadConfig {
    pub workers: usize,
    /// Requests per second each worker offers.
    pub rate_per_worker: f64,
    pub own_chains_per_worker: usize,
    pub shared_chains: usize,
    /// Share of requests sent to a shared chain.
    pub shared_fraction: f64,
    /// Share of requests that are deliberately invalid (must get a 4xx and
    /// change nothing).
    pub bad_fraction: f64,
    pub seed: u64,
    pub attempt_timeout: Duration,
    pub deadline: Duration,
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// 201: the draw, the exact body, and whether the node replayed it.
    Drawn {
        id: String,
        replayed: bool,
        raw: String,
        endpoint: String,
    },
    /// 409 `previous_already_used`.
    Conflict { existing: String },
    /// Any other answer in the error shape.
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    /// No node answered in time.
    Unavailable { message: String },
    /// A malformed answer or a record that failed verification.
    Failed { message: String },
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Drawn { .. })
    }

    /// The request may or may not have been committed.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            Outcome::Unavailable { .. } | Outcome::Failed { .. } => true,
            Outcome::Rejected { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// One request as the harness saw it. Times are milliseconds since the
/// workload started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRecord {
    pub seq: u64,
    pub worker: usize,
    pub chain: String,
    pub shared: bool,
    /// Deliberately invalid.
    pub bad: bool,
    pub previous: String,
    pub request_id: String,
    /// This is a retry of the worker's previous, ambiguous request.
    pub retry: bool,
    pub intended_ms: f64,
    pub start_ms: f64,
    pub end_ms: f64,
    pub outcome: Outcome,
}

impl RequestRecord {
    /// From when it was due to when it ended.
    pub fn latency_ms(&self) -> f64 {
        self.end_ms - self.intended_ms
    }
}

/// A chain the workload opened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChainInfo {
    pub id: String,
    pub shared: bool,
    /// The worker that owns it (none for shared chains).
    pub owner: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadResult {
    pub chains: Vec<ChainInfo>,
    pub records: Vec<RequestRecord>,
    /// Unix ms of the workload's time zero.
    pub started_unix_ms: u64,
}

/// Chains opened before the clock starts, and the client to use.
pub struct Prepared {
    client: Client,
    own: Vec<Vec<RecordId>>,
    shared: Vec<RecordId>,
}

pub fn build_client(
    endpoints: &[String],
    api_key: &str,
    config: &WorkloadConfig,
) -> Result<Client, WorkloadError> {
    Ok(ClientBuilder::new(endpoints.iter().cloned())
        .api_key(api_key)
        .attempt_timeout(config.attempt_timeout)
        .deadline(config.deadline)
        .build()?)
}

async fn open_chain(client: &Client, tag: &str) -> Result<RecordId, WorkloadError> {
    let mut last = None;
    // Chain creation is not idempotent, so the SDK retries it only when
    // nothing was sent; a few rounds cover a cluster still settling.
    for _ in 0..10 {
        match client.create_chain(tag).await {
            Ok(c) => return Ok(c.response.id),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(WorkloadError::Chain {
        what: tag.into(),
        source: last.expect("at least one attempt"),
    })
}

/// Opens every chain the workload will use.
pub async fn prepare(client: Client, config: &WorkloadConfig) -> Result<Prepared, WorkloadError> {
    let mut own = Vec::new();
    for w in 0..config.workers {
        let mut chains = Vec::new();
        for c in 0..config.own_chains_per_worker {
            chains.push(open_chain(&client, &format!("worker {w} chain {c}")).await?);
        }
        own.push(chains);
    }
    let mut shared = Vec::new();
    for s in 0..config.shared_chains {
        shared.push(open_chain(&client, &format!("shared chain {s}")).await?);
    }
    Ok(Prepared {
        client,
        own,
        shared,
    })
}

fn random_spec(rng: &mut ChaCha8Rng) -> Spec {
    match rng.gen_range(0..4) {
        0 => Spec::Integers {
            min: 1,
            max: 6,
            count: 2,
            unique: false,
        },
        1 => Spec::Permutation { n: 52 },
        2 => Spec::Selection { k: 6, n: 49 },
        // Large enough that draws drain the pool faster than a full reserve
        // would sit idle (see the pool settings in main.rs).
        _ => Spec::Bytes { count: 1024 },
    }
}

fn classify(result: Result<geiger_client::Issued, ClientError>) -> Outcome {
    match result {
        Ok(issued) => Outcome::Drawn {
            id: issued.response.draw.id.to_string(),
            replayed: issued.replayed,
            // JSON is UTF-8; anything else is itself worth seeing in the log.
            raw: String::from_utf8(issued.raw).unwrap_or_else(|e| format!("<not UTF-8: {e}>")),
            endpoint: issued.endpoint,
        },
        Err(ClientError::PreviousAlreadyUsed { existing }) => Outcome::Conflict {
            existing: existing.to_string(),
        },
        Err(ClientError::Api { status, body }) => Outcome::Rejected {
            status,
            code: serde_json::to_value(body.error.code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            message: body.error.message,
        },
        Err(ClientError::Unavailable { attempts, last }) => Outcome::Unavailable {
            message: format!("{attempts} attempts; last: {last}"),
        },
        Err(e) => Outcome::Failed {
            message: e.to_string(),
        },
    }
}

struct OwnChain {
    genesis: RecordId,
    head: RecordId,
    /// An ambiguous request to send again, unchanged.
    pending: Option<DrawRequest>,
}

type SharedHeads = Arc<Mutex<HashMap<RecordId, RecordId>>>;

/// Runs every worker for `duration`; returns all records, ordered by start.
pub async fn run(
    prepared: Prepared,
    config: &WorkloadConfig,
    t0: Instant,
    duration: Duration,
) -> WorkloadResult {
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
        .saturating_sub(t0.elapsed().as_millis() as u64);
    let mut chains = Vec::new();
    for (w, own) in prepared.own.iter().enumerate() {
        for c in own {
            chains.push(ChainInfo {
                id: c.to_string(),
                shared: false,
                owner: Some(w),
            });
        }
    }
    for c in &prepared.shared {
        chains.push(ChainInfo {
            id: c.to_string(),
            shared: true,
            owner: None,
        });
    }
    let heads: SharedHeads = Arc::new(Mutex::new(
        prepared.shared.iter().map(|c| (*c, *c)).collect(),
    ));
    let records = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (w, own) in prepared.own.into_iter().enumerate() {
        let worker = Worker {
            index: w,
            client: prepared.client.clone(),
            rng: ChaCha8Rng::seed_from_u64(
                config.seed.wrapping_mul(1_000_003).wrapping_add(w as u64),
            ),
            own: own
                .into_iter()
                .map(|g| OwnChain {
                    genesis: g,
                    head: g,
                    pending: None,
                })
                .collect(),
            shared: prepared.shared.clone(),
            heads: heads.clone(),
            records: records.clone(),
            config: config.clone(),
            t0,
        };
        tasks.push(tokio::spawn(worker.run(duration)));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut records = Arc::try_unwrap(records)
        .map(|m| m.into_inner().expect("records lock"))
        .unwrap_or_else(|a| a.lock().expect("records lock").clone());
    records.sort_by(|a, b| a.intended_ms.total_cmp(&b.intended_ms));
    for (i, r) in records.iter_mut().enumerate() {
        r.seq = i as u64;
    }
    WorkloadResult {
        chains,
        records,
        started_unix_ms,
    }
}

struct Worker {
    index: usize,
    client: Client,
    rng: ChaCha8Rng,
    own: Vec<OwnChain>,
    shared: Vec<RecordId>,
    heads: SharedHeads,
    records: Arc<Mutex<Vec<RequestRecord>>>,
    config: WorkloadConfig,
    t0: Instant,
}

impl Worker {
    fn ms(&self, at: Instant) -> f64 {
        at.duration_since(self.t0).as_secs_f64() * 1000.0
    }

    async fn run(mut self, duration: Duration) {
        let interval = Duration::from_secs_f64(1.0 / self.config.rate_per_worker);
        // Workers start spread over one interval, not in lock step.
        let offset = interval.mul_f64(self.index as f64 / self.config.workers.max(1) as f64);
        let mut k: u32 = 0;
        let mut next_own = 0usize;
        loop {
            let due = self.t0 + offset + interval * k;
            if due >= self.t0 + duration {
                break;
            }
            tokio::time::sleep_until(due).await;
            k += 1;
            let tag = format!("w{} r{}", self.index, k);
            let request_id = format!("w{}-{}-{:08x}", self.index, k, self.rng.gen::<u32>());
            let roll: f64 = self.rng.gen();
            let spec = random_spec(&mut self.rng);

            // Which chain, and which request.
            let (chain, shared, bad, retry, request) = if !self.shared.is_empty()
                && self.own.iter().all(|c| c.pending.is_none())
                && roll < self.config.shared_fraction
            {
                let chain = self.shared[self.rng.gen_range(0..self.shared.len())];
                let head = self.heads.lock().expect("heads lock")[&chain];
                let request = DrawRequest {
                    previous: head,
                    tag,
                    spec,
                    request_id: Some(request_id),
                };
                (chain, true, false, false, request)
            } else {
                let c = next_own % self.own.len();
                next_own += 1;
                let own = &mut self.own[c];
                match own.pending.clone() {
                    Some(request) => (own.genesis, false, false, true, request),
                    None => {
                        let bad = roll > 1.0 - self.config.bad_fraction;
                        let spec = if bad {
                            // min above max: refused before anything is written.
                            Spec::Integers {
                                min: 6,
                                max: 1,
                                count: 1,
                                unique: false,
                            }
                        } else {
                            spec
                        };
                        let request = DrawRequest {
                            previous: own.head,
                            tag,
                            spec,
                            request_id: Some(request_id),
                        };
                        (own.genesis, false, bad, false, request)
                    }
                }
            };

            let start = Instant::now();
            let outcome = classify(self.client.draw(request.clone()).await);
            let end = Instant::now();

            if shared {
                let mut heads = self.heads.lock().expect("heads lock");
                let head = heads.get_mut(&chain).expect("a shared chain");
                let next = match &outcome {
                    Outcome::Drawn { id, .. } => id.parse().ok(),
                    Outcome::Conflict { existing } => existing.parse().ok(),
                    _ => None,
                };
                if let Some(next) = next {
                    if *head == request.previous {
                        *head = next;
                    }
                }
            } else if let Some(own) = self.own.iter_mut().find(|c| c.genesis == chain) {
                match &outcome {
                    Outcome::Drawn { id, .. } => {
                        own.head = id.parse().unwrap_or(own.head);
                        own.pending = None;
                    }
                    Outcome::Conflict { existing } => {
                        // Only this worker writes here: the successor must be
                        // an earlier try of ours. Follow it; the checker
                        // judges whether the 409 was right.
                        own.head = existing.parse().unwrap_or(own.head);
                        own.pending = None;
                    }
                    o if o.is_ambiguous() && !bad => own.pending = Some(request.clone()),
                    _ => own.pending = None,
                }
            }

            let record = RequestRecord {
                seq: 0,
                worker: self.index,
                chain: chain.to_string(),
                shared,
                bad,
                previous: request.previous.to_string(),
                request_id: request.request_id.clone().unwrap_or_default(),
                retry,
                intended_ms: self.ms(due),
                start_ms: self.ms(start),
                end_ms: self.ms(end),
                outcome,
            };
            self.records.lock().expect("records lock").push(record);
        }
    }
}
