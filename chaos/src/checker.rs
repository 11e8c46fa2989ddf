//! The checker: after every fault has healed, reads the ledger back from
//! every node and checks the design's invariants against what the clients
//! were told.
//!
//! 1. Every acknowledged draw is on every node, byte-identical to the 201
//!    body the client received (lookups and chain listings alike), and the
//!    nodes agree on every chain.
//! 2. A `previous` has at most one successor; positions are contiguous; a
//!    409 names the successor the ledger really holds.
//! 3. No entropy byte is used twice; per device the draws consume chunks in
//!    order without holes, only sequences the ledger accounts for, and the
//!    device's accounting (appended + quarantined + skipped = span, used
//!    bytes = bytes in draws) has no gap.
//! 4. Every draw verifies: signature, content-hash ID, re-derivation, link;
//!    and its entropy is the device's: each segment's bytes are the bytes
//!    of a chunk the registered device signed, public only after the draw
//!    was issued (a chunk not yet used up cannot be checked yet, and is
//!    counted, not flagged).
//! 5. A request that got an error changed nothing, or its commit is visible
//!    as its own record (its `request_id`) and any retry got it replayed; a
//!    4xx never commits, and a retry of our own request is never a 409.
//! 6. Every draw's `issued_at` is true to within [`ISSUED_AT_TOLERANCE_MS`]:
//!    no later than the client got the answer, and, unless it was a replay
//!    of an earlier commit, no earlier than it asked (a node with a wrong
//!    clock must never stamp a draw, docs/DERIVATION.md §6.1). Not among
//!    DESIGN.md's invariants; docs/AVAILABILITY.md lists it.
//!
//! [`collect`] does the reading (HTTP); [`check`] is pure, so it can be
//! tested on forged histories.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use geiger_protocol::provenance::{check_segment, segment_bytes, PublicChunk};
use geiger_protocol::verify::Previous;
use geiger_protocol::{verify_draw, DrawResponse, KeySet};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::workload::{ChainInfo, Outcome, RequestRecord};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no node served the signing keys: {0}")]
    Keys(String),
}

/// What the checker read back from the cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Observations {
    pub keys: KeySet,
    /// Per node, per acknowledged draw ID: the `response` bytes of
    /// `GET /v1/draws/{id}`, or why there were none.
    pub lookups: BTreeMap<u64, BTreeMap<String, Result<String, String>>>,
    /// Per node, per chain: its draws in order (each the stored 201 body).
    pub listings: BTreeMap<u64, BTreeMap<String, Result<Vec<String>, String>>>,
    /// `GET /v1/admin/links` → `links`, from one node.
    pub links: Vec<Value>,
    /// The devices' chunk size, when known: a chunk left before its end
    /// would be bytes nobody accounts for.
    pub chunk_size: Option<u32>,
    /// `GET /v1/chunks/{device}/{seq}` for every chunk an acknowledged draw
    /// used, keyed by [`chunk_key`].
    pub chunks: BTreeMap<String, ChunkLookup>,
    /// The wall clock (Unix ms) at the workload's time zero, which the
    /// records' `start_ms`/`end_ms` count from; without it invariant 6 is
    /// not checked.
    pub t0_unix_ms: Option<f64>,
}

/// How many invariants [`check`] checks (numbered 1 to this).
pub const INVARIANTS: usize = 6;

/// How far `issued_at` may stray from the client's clock: the nodes'
/// `raft.max_clock_offset_ms` (500) with room for the client's own reading.
pub const ISSUED_AT_TOLERANCE_MS: f64 = 1_000.0;

/// What a node answered for a chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkLookup {
    Public(PublicChunk),
    /// 409 `chunk_not_exhausted`: still secret, its provenance comes later.
    NotExhausted,
    /// 404: the ledger has no such chunk.
    Missing(String),
    /// No node gave an answer.
    Unanswered(String),
}

impl ChunkLookup {
    /// How much the answer tells: a public chunk most, no answer least.
    fn knowledge(&self) -> u8 {
        match self {
            ChunkLookup::Public(_) => 3,
            ChunkLookup::NotExhausted => 2,
            ChunkLookup::Missing(_) => 1,
            ChunkLookup::Unanswered(_) => 0,
        }
    }
}

/// The key of a chunk in [`Observations::chunks`].
pub fn chunk_key(device: &str, seq: u64) -> String {
    format!("{device}/{seq}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// The invariant's number in DESIGN.md.
    pub invariant: u8,
    pub what: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CheckStats {
    pub acknowledged: u64,
    pub distinct_acknowledged: u64,
    pub ledger_draws: u64,
    pub chains: u64,
    pub lookups: u64,
    pub replays_seen: u64,
    pub committed_despite_error: u64,
    pub expected_conflicts: u64,
    pub rejected_bad_requests: u64,
    pub entropy_bytes_used: u64,
    pub devices: BTreeMap<String, DeviceAccounting>,
    /// Segments checked against their device-signed chunk.
    pub provenance_verified: u64,
    /// Segments whose chunk is not used up yet (not checkable).
    pub provenance_pending: u64,
    /// Segments whose chunk no node answered for.
    pub provenance_unanswered: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeviceAccounting {
    pub bytes_in_draws: u64,
    pub chunks_touched: u64,
    pub used_bytes_reported: Option<u64>,
    pub appended_chunks: Option<u64>,
    pub quarantined_chunks: Option<u64>,
    pub skipped_chunks: Option<u64>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CheckReport {
    pub violations: Vec<Violation>,
    pub stats: CheckStats,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

struct Findings(Vec<Violation>);

impl Findings {
    fn flag(&mut self, invariant: u8, what: impl Into<String>) {
        // A systematic bug repeats per draw; keep the report readable.
        if self.0.len() < 500 {
            self.0.push(Violation {
                invariant,
                what: what.into(),
            });
        }
    }
}

/// Checks every invariant; pure.
pub fn check(records: &[RequestRecord], chains: &[ChainInfo], obs: &Observations) -> CheckReport {
    let mut f = Findings(Vec::new());
    let mut stats = CheckStats {
        chains: chains.len() as u64,
        ..CheckStats::default()
    };

    // ---- what the clients were told ----------------------------------
    let mut acked: BTreeMap<String, (String, &RequestRecord)> = BTreeMap::new();
    let mut successors: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in records {
        if let Outcome::Drawn {
            id, raw, replayed, ..
        } = &r.outcome
        {
            stats.acknowledged += 1;
            if *replayed {
                stats.replays_seen += 1;
            }
            if r.bad {
                f.flag(
                    5,
                    format!("invalid request {} was drawn as {id}", r.request_id),
                );
            }
            successors
                .entry(r.previous.clone())
                .or_default()
                .insert(id.clone());
            match acked.get(id) {
                Some((first, _)) if first != raw => f.flag(
                    1,
                    format!("draw {id} was sent to clients with two different bodies"),
                ),
                Some(_) => {}
                None => {
                    acked.insert(id.clone(), (raw.clone(), r));
                }
            }
        }
    }
    stats.distinct_acknowledged = acked.len() as u64;
    for (previous, ids) in &successors {
        if ids.len() > 1 {
            f.flag(
                2,
                format!(
                    "{previous} has {} acknowledged successors: {ids:?}",
                    ids.len()
                ),
            );
        }
    }

    // ---- the ledger as each node lists it -------------------------------
    let reference = obs.listings.iter().find(|(_, chains_of)| {
        chains
            .iter()
            .all(|c| matches!(chains_of.get(&c.id), Some(Ok(_))))
    });
    let Some((&ref_node, ref_listing)) = reference else {
        f.flag(
            1,
            "no node listed every chain; the ledger could not be read",
        );
        return CheckReport {
            violations: f.0,
            stats,
        };
    };
    let mut ledger: Vec<(DrawResponse, String)> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut successor_in_ledger: HashMap<String, String> = HashMap::new();
    for c in chains {
        let Some(Ok(raws)) = ref_listing.get(&c.id) else {
            continue;
        };
        let mut expected_previous = c.id.clone();
        for (i, raw) in raws.iter().enumerate() {
            let draw: DrawResponse = match serde_json::from_str(raw) {
                Ok(d) => d,
                Err(e) => {
                    f.flag(
                        4,
                        format!("chain {} position {}: unparseable draw: {e}", c.id, i + 1),
                    );
                    continue;
                }
            };
            let body = &draw.draw.body;
            let id = draw.draw.id.to_string();
            if body.position != i as u64 + 1 {
                f.flag(
                    2,
                    format!(
                        "chain {}: draw {id} has position {} at place {}",
                        c.id,
                        body.position,
                        i + 1
                    ),
                );
            }
            if body.chain.to_string() != c.id {
                f.flag(
                    2,
                    format!(
                        "draw {id} is listed in chain {} but names chain {}",
                        c.id, body.chain
                    ),
                );
            }
            if body.previous.to_string() != expected_previous {
                f.flag(
                    2,
                    format!("chain {}: draw {id} follows {} but the draw before it is {expected_previous}", c.id, body.previous),
                );
            }
            if let Some(other) = successor_in_ledger.insert(body.previous.to_string(), id.clone()) {
                f.flag(
                    2,
                    format!(
                        "{} has two successors in the ledger: {other} and {id}",
                        body.previous
                    ),
                );
            }
            expected_previous = id.clone();
            by_id.insert(id, ledger.len());
            ledger.push((draw, raw.clone()));
        }
    }
    stats.ledger_draws = ledger.len() as u64;

    // Every other node must list the same chains identically.
    for (node, chains_of) in &obs.listings {
        if *node == ref_node {
            continue;
        }
        for c in chains {
            match (chains_of.get(&c.id), ref_listing.get(&c.id)) {
                (Some(Ok(mine)), Some(Ok(reference))) => {
                    if mine != reference {
                        f.flag(
                            1,
                            format!(
                                "node {node} lists chain {} as {} draws, node {ref_node} as {} (or with other bytes)",
                                c.id,
                                mine.len(),
                                reference.len()
                            ),
                        );
                    }
                }
                (Some(Err(e)), _) | (None, Some(Err(e))) => {
                    f.flag(1, format!("node {node} could not list chain {}: {e}", c.id))
                }
                _ => f.flag(1, format!("node {node} did not list chain {}", c.id)),
            }
        }
    }

    // ---- invariant 1: acknowledged draws everywhere, byte-identical -----
    for (id, (raw, record)) in &acked {
        match by_id.get(id) {
            None => f.flag(
                1,
                format!(
                    "acknowledged draw {id} (request {}) is not in the ledger",
                    record.request_id
                ),
            ),
            Some(&i) => {
                if &ledger[i].1 != raw {
                    f.flag(1, format!("draw {id}: the chain listing's bytes differ from what the client received"));
                }
                let body = &ledger[i].0.draw.body;
                if body.request_id.as_deref() != Some(record.request_id.as_str())
                    || body.previous.to_string() != record.previous
                {
                    f.flag(
                        5,
                        format!(
                            "draw {id} was acknowledged to request {} but records another request",
                            record.request_id
                        ),
                    );
                }
            }
        }
        for (node, found) in &obs.lookups {
            stats.lookups += 1;
            match found.get(id) {
                Some(Ok(bytes)) if bytes == raw => {}
                Some(Ok(_)) => f.flag(
                    1,
                    format!("node {node} returns draw {id} with bytes that differ from what the client received"),
                ),
                Some(Err(e)) => f.flag(1, format!("node {node} cannot return acknowledged draw {id}: {e}")),
                None => f.flag(1, format!("node {node} was not asked for acknowledged draw {id}")),
            }
        }
    }

    // ---- invariant 2: 409s name the real successor ------------------------
    for r in records {
        if let Outcome::Conflict { existing } = &r.outcome {
            match successor_in_ledger.get(&r.previous) {
                Some(s) if s == existing => {}
                other => f.flag(
                    2,
                    format!(
                        "409 for {} named {existing}, the ledger's successor is {other:?}",
                        r.previous
                    ),
                ),
            }
        }
    }

    // ---- invariant 4: every draw verifies ---------------------------------
    for (i, (draw, _)) in ledger.iter().enumerate() {
        let previous = by_id
            .get(&draw.draw.body.previous.to_string())
            .map(|&p| Previous::Draw(&ledger[p].0));
        if let Err(e) = verify_draw(draw, &obs.keys, previous) {
            f.flag(4, format!("draw {} does not verify: {e}", draw.draw.id));
        }
        let _ = i;
    }

    check_provenance(&ledger, obs, &mut f, &mut stats);
    if let Some(t0) = obs.t0_unix_ms {
        check_issued_at(records, t0, &mut f);
    }

    // ---- invariant 3: entropy ---------------------------------------------
    check_entropy(&ledger, &obs.links, obs.chunk_size, &mut f, &mut stats);

    // ---- invariant 5: errors changed nothing, or are their own replay -----
    let mut by_request_id: HashMap<&str, Vec<&DrawResponse>> = HashMap::new();
    for (draw, _) in &ledger {
        if let Some(rid) = draw.draw.body.request_id.as_deref() {
            by_request_id.entry(rid).or_default().push(draw);
        }
    }
    for (rid, draws) in &by_request_id {
        if draws.len() > 1 {
            f.flag(
                5,
                format!("request {rid} was committed {} times", draws.len()),
            );
        }
    }
    for r in records {
        let committed = by_request_id
            .get(r.request_id.as_str())
            .and_then(|d| d.first());
        match &r.outcome {
            Outcome::Drawn { .. } => {}
            Outcome::Conflict { existing } => {
                if !r.shared {
                    if let Some(d) = committed {
                        if d.draw.id.to_string() == *existing {
                            f.flag(
                                5,
                                format!("request {} got a 409 for its own committed draw {existing} instead of its replay", r.request_id),
                            );
                        }
                    }
                } else {
                    stats.expected_conflicts += 1;
                }
            }
            o if o.is_ambiguous() => {
                if let Some(d) = committed {
                    stats.committed_despite_error += 1;
                    if d.draw.body.previous.to_string() != r.previous {
                        f.flag(
                            5,
                            format!(
                                "request {} was committed after another previous",
                                r.request_id
                            ),
                        );
                    }
                }
            }
            Outcome::Rejected { status, .. } => {
                if r.bad && (400..500).contains(status) {
                    stats.rejected_bad_requests += 1;
                }
                if let Some(d) = committed {
                    f.flag(
                        5,
                        format!(
                            "request {} got a {status} yet was committed as {}",
                            r.request_id, d.draw.id
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    CheckReport {
        violations: f.0,
        stats,
    }
}

/// Invariant 6: every acknowledged draw's `issued_at` against the client's
/// clock around its request.
fn check_issued_at(records: &[RequestRecord], t0_unix_ms: f64, f: &mut Findings) {
    for r in records {
        let Outcome::Drawn { raw, replayed, .. } = &r.outcome else {
            continue;
        };
        let Ok(draw) = serde_json::from_str::<DrawResponse>(raw) else {
            continue; // invariant 1 reports a body that does not parse
        };
        let issued_at = &draw.draw.body.issued_at;
        let Some(issued_ms) = geiger_protocol::record::parse_timestamp(issued_at)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64() * 1000.0)
        else {
            f.flag(
                6,
                format!("draw {}: issued_at {issued_at} is not a time", draw.draw.id),
            );
            continue;
        };
        let (asked, answered) = (t0_unix_ms + r.start_ms, t0_unix_ms + r.end_ms);
        let late = issued_ms - answered;
        let early = asked - issued_ms;
        if late > ISSUED_AT_TOLERANCE_MS {
            f.flag(
                6,
                format!(
                    "draw {} is stamped {issued_at}, {:.0} ms after request {} got its answer",
                    draw.draw.id, late, r.request_id
                ),
            );
        } else if !replayed && early > ISSUED_AT_TOLERANCE_MS {
            f.flag(
                6,
                format!(
                    "draw {} is stamped {issued_at}, {:.0} ms before request {} was sent",
                    draw.draw.id, early, r.request_id
                ),
            );
        }
    }
}

/// Invariant 4, the entropy's half: every segment against its chunk.
fn check_provenance(
    ledger: &[(DrawResponse, String)],
    obs: &Observations,
    f: &mut Findings,
    stats: &mut CheckStats,
) {
    for (draw, _) in ledger {
        let body = &draw.draw.body;
        let id = draw.draw.id.to_string();
        let Some(bytes) = hex::decode(&body.entropy.hex).ok() else {
            f.flag(4, format!("draw {id}: its entropy is not hex"));
            continue;
        };
        let Some(slices) = segment_bytes(&body.entropy.segments, &bytes) else {
            f.flag(
                4,
                format!("draw {id}: its segments do not add up to its entropy"),
            );
            continue;
        };
        for (segment, slice) in body.entropy.segments.iter().zip(slices) {
            let key = chunk_key(&segment.device, segment.chunk_seq);
            match obs.chunks.get(&key) {
                Some(ChunkLookup::Public(chunk)) => {
                    match check_segment(segment, slice, &body.issued_at, chunk, &obs.keys) {
                        Ok(()) => stats.provenance_verified += 1,
                        Err(e) => f.flag(4, format!("draw {id}, chunk {key}: {e}")),
                    }
                }
                Some(ChunkLookup::NotExhausted) => stats.provenance_pending += 1,
                Some(ChunkLookup::Missing(why)) => f.flag(
                    4,
                    format!("draw {id} used chunk {key}, which the ledger lacks: {why}"),
                ),
                Some(ChunkLookup::Unanswered(_)) | None => stats.provenance_unanswered += 1,
            }
        }
    }
}

/// Entropy at least this long (128 bits) never repeats by chance in a run.
const MIN_BYTES_FOR_EQUALITY_CHECK: u64 = 16;

/// Bytes `start..end` of a chunk, and the draw that used them.
type UsedRange = (u32, u32, String);

fn check_entropy(
    ledger: &[(DrawResponse, String)],
    links: &[Value],
    chunk_size: Option<u32>,
    f: &mut Findings,
    stats: &mut CheckStats,
) {
    // (device, chunk) → used [start, end) ranges with the draw that used them.
    let mut ranges: BTreeMap<(String, u64), Vec<UsedRange>> = BTreeMap::new();
    // device → (ledger index, chunk, offset, length) in consumption order.
    let mut per_device: BTreeMap<String, Vec<(u64, u64, u32, u32)>> = BTreeMap::new();
    let mut hashes: HashMap<&str, String> = HashMap::new();
    for (draw, _) in ledger {
        let body = &draw.draw.body;
        let id = draw.draw.id.to_string();
        // Equal bytes betray reuse only when they are too long to repeat by
        // chance: a v2 draw of two dice records one byte, and among a few
        // thousand such draws equal bytes are certain. Reuse of short
        // entropy is what the byte ranges below catch.
        let entropy_bytes: u64 = body.entropy.segments.iter().map(|s| s.length as u64).sum();
        let repeated = (entropy_bytes >= MIN_BYTES_FOR_EQUALITY_CHECK)
            .then(|| hashes.insert(body.entropy.sha256.as_str(), id.clone()))
            .flatten();
        if let Some(other) = repeated {
            f.flag(
                3,
                format!("draws {other} and {id} used identical entropy bytes"),
            );
        }
        for s in &body.entropy.segments {
            stats.entropy_bytes_used += s.length as u64;
            ranges
                .entry((s.device.clone(), s.chunk_seq))
                .or_default()
                .push((s.offset, s.offset + s.length, id.clone()));
            per_device.entry(s.device.clone()).or_default().push((
                body.ledger_index,
                s.chunk_seq,
                s.offset,
                s.length,
            ));
        }
    }
    for ((device, chunk), mut used) in ranges {
        used.sort();
        for w in used.windows(2) {
            if w[1].0 < w[0].1 {
                f.flag(
                    3,
                    format!(
                        "device {device} chunk {chunk}: bytes {}..{} used by {} and {}..{} by {}",
                        w[0].0, w[0].1, w[0].2, w[1].0, w[1].1, w[1].2
                    ),
                );
            }
        }
    }
    for (device, mut uses) in per_device {
        uses.sort();
        let acct = stats.devices.entry(device.clone()).or_default();
        acct.bytes_in_draws = uses.iter().map(|u| u.3 as u64).sum();
        let mut chunks: BTreeSet<u64> = BTreeSet::new();
        let mut cursor: Option<(u64, u32)> = None;
        for &(_, chunk, offset, length) in &uses {
            chunks.insert(chunk);
            match cursor {
                Some((c, end)) if c == chunk && offset != end => f.flag(
                    3,
                    format!(
                        "device {device} chunk {chunk}: draws jump from byte {end} to {offset}"
                    ),
                ),
                Some((c, _)) if chunk < c => f.flag(
                    3,
                    format!("device {device}: chunk {chunk} consumed after chunk {c}"),
                ),
                // The pool moves to the next chunk only once one is used up.
                Some((c, end)) if chunk > c && chunk_size.is_some_and(|size| end != size) => f
                    .flag(
                        3,
                        format!(
                            "device {device}: chunk {c} left at byte {end} of {} for chunk {chunk}",
                            chunk_size.unwrap_or(0)
                        ),
                    ),
                Some((c, _)) if chunk > c && offset != 0 => f.flag(
                    3,
                    format!("device {device}: chunk {chunk} first used at byte {offset}, not 0"),
                ),
                // The pool is consumed from the start of each chunk.
                None if offset != 0 => f.flag(
                    3,
                    format!("device {device}: first use of chunk {chunk} starts at byte {offset}"),
                ),
                _ => {}
            }
            cursor = Some((chunk, offset + length));
        }
        acct.chunks_touched = chunks.len() as u64;
        if let Some(link) = links.iter().find(|l| l["device"] == device.as_str()) {
            acct.used_bytes_reported = link["used_bytes"].as_u64();
            acct.appended_chunks = link["appended_chunks"].as_u64();
            acct.quarantined_chunks = link["quarantined_chunks"].as_u64();
            acct.skipped_chunks = link["skipped_chunks"].as_u64();
            acct.first_seq = link["first_seq"].as_u64();
            acct.last_seq = link["last_seq"].as_u64();
            if let Some(used) = acct.used_bytes_reported {
                if used != acct.bytes_in_draws {
                    f.flag(
                        3,
                        format!("device {device}: the ledger reports {used} bytes used, the draws hold {}", acct.bytes_in_draws),
                    );
                }
            }
            if let (Some(first), Some(last)) = (acct.first_seq, acct.last_seq) {
                if let (Some(&lo), Some(&hi)) = (chunks.first(), chunks.last()) {
                    if lo < first || hi > last {
                        f.flag(3, format!("device {device}: draws use chunks {lo}..={hi} outside the accounted {first}..={last}"));
                    }
                }
            }
        } else {
            f.flag(
                3,
                format!("device {device} is used by draws but has no link accounting"),
            );
        }
    }
    for link in links {
        let device = link["device"].as_str().unwrap_or("?").to_string();
        let n = |k: &str| link[k].as_u64().unwrap_or(0);
        let span = match (link["first_seq"].as_u64(), link["last_seq"].as_u64()) {
            (Some(a), Some(b)) => b - a + 1,
            _ => 0,
        };
        let accounted = n("appended_chunks") + n("quarantined_chunks") + n("skipped_chunks");
        if accounted != span {
            f.flag(
                3,
                format!("device {device}: {accounted} chunks appended, quarantined or skipped but the sequence spans {span}"),
            );
        }
        let acct = stats.devices.entry(device).or_default();
        acct.appended_chunks = link["appended_chunks"].as_u64();
        acct.quarantined_chunks = link["quarantined_chunks"].as_u64();
        acct.skipped_chunks = link["skipped_chunks"].as_u64();
        acct.first_seq = link["first_seq"].as_u64();
        acct.last_seq = link["last_seq"].as_u64();
        acct.used_bytes_reported = link["used_bytes"].as_u64();
    }
}

// ---- reading the cluster back ------------------------------------------------

async fn get_text(
    http: &reqwest::Client,
    url: &str,
    admin: Option<&str>,
) -> Result<(u16, String), String> {
    let mut req = http.get(url);
    if let Some(token) = admin {
        req = req.bearer_auth(token);
    }
    let r = req.send().await.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let text = r.text().await.map_err(|e| e.to_string())?;
    Ok((status, text))
}

/// GETs with a few retries for transient failures (a node still catching up).
async fn get_ok(http: &reqwest::Client, url: &str, admin: Option<&str>) -> Result<String, String> {
    let mut last = String::new();
    for attempt in 0..4 {
        match get_text(http, url, admin).await {
            Ok((200, text)) => return Ok(text),
            Ok((404, text)) if attempt >= 1 => return Err(format!("404 {text}")),
            Ok((status, text)) => last = format!("{status} {text}"),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(250 * (attempt + 1))).await;
    }
    Err(last)
}

async fn lookup(http: &reqwest::Client, base: &str, id: &str) -> Result<String, String> {
    let text = get_ok(http, &format!("{base}/v1/draws/{id}"), None).await?;
    #[derive(Deserialize)]
    struct RawLookup<'a> {
        #[serde(borrow)]
        response: &'a RawValue,
    }
    let parsed: RawLookup =
        serde_json::from_str(&text).map_err(|e| format!("bad lookup body: {e}"))?;
    Ok(parsed.response.get().to_string())
}

async fn listing(http: &reqwest::Client, base: &str, chain: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut after = 0u64;
    // Bounded: a chain longer than this is not something the harness makes.
    for _ in 0..10_000 {
        let text = get_ok(
            http,
            &format!("{base}/v1/chains/{chain}/draws?after={after}&limit=100"),
            None,
        )
        .await?;
        #[derive(Deserialize)]
        struct Page<'a> {
            #[serde(borrow)]
            draws: Vec<&'a RawValue>,
            next_after: Option<u64>,
        }
        let page: Page = serde_json::from_str(&text).map_err(|e| format!("bad page: {e}"))?;
        out.extend(page.draws.iter().map(|d| d.get().to_string()));
        match page.next_after {
            Some(n) if n > after => after = n,
            _ => return Ok(out),
        }
    }
    Err("more pages than the harness can have written".into())
}

/// Every chunk the acknowledged draws name, from the first node that
/// answers for it (chunks are public, so any node will do).
async fn collect_chunks(
    http: &reqwest::Client,
    nodes: &BTreeMap<u64, String>,
    records: &[RequestRecord],
) -> BTreeMap<String, ChunkLookup> {
    let mut wanted: BTreeSet<(String, u64)> = BTreeSet::new();
    for r in records {
        if let Outcome::Drawn { raw, .. } = &r.outcome {
            if let Ok(draw) = serde_json::from_str::<DrawResponse>(raw) {
                for s in &draw.draw.body.entropy.segments {
                    wanted.insert((s.device.clone(), s.chunk_seq));
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for (device, seq) in wanted {
        // A node that restarted may still be catching up: take the most
        // any node knows (public, then secret, then missing everywhere).
        let mut best = ChunkLookup::Unanswered("no node asked".into());
        for base in nodes.values() {
            let answer =
                match get_text(http, &format!("{base}/v1/chunks/{device}/{seq}"), None).await {
                    Ok((200, text)) => match serde_json::from_str(&text) {
                        Ok(chunk) => ChunkLookup::Public(chunk),
                        Err(e) => ChunkLookup::Unanswered(format!("not a chunk: {e}")),
                    },
                    Ok((409, _)) => ChunkLookup::NotExhausted,
                    Ok((404, text)) => ChunkLookup::Missing(text),
                    Ok((status, text)) => ChunkLookup::Unanswered(format!("{status} {text}")),
                    Err(e) => ChunkLookup::Unanswered(e),
                };
            if answer.knowledge() > best.knowledge() {
                best = answer;
            }
            if matches!(best, ChunkLookup::Public(_)) {
                break;
            }
        }
        out.insert(chunk_key(&device, seq), best);
    }
    out
}

/// Reads back, from every node in `nodes` (id → API base URL), every
/// acknowledged draw and every chain; plus the keys and the link accounting.
pub async fn collect(
    nodes: &BTreeMap<u64, String>,
    admin_token: &str,
    records: &[RequestRecord],
    chains: &[ChainInfo],
) -> Result<Observations, CheckError> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| CheckError::Keys(e.to_string()))?;
    let mut keys = None;
    let mut last = String::new();
    for base in nodes.values() {
        match get_ok(&http, &format!("{base}/v1/keys"), None).await {
            Ok(text) => match serde_json::from_str::<KeySet>(&text) {
                Ok(k) => {
                    keys = Some(k);
                    break;
                }
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e,
        }
    }
    let keys = keys.ok_or(CheckError::Keys(last))?;
    let mut links = Vec::new();
    for base in nodes.values() {
        if let Ok(text) = get_ok(&http, &format!("{base}/v1/admin/links"), Some(admin_token)).await
        {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                links = v["links"].as_array().cloned().unwrap_or_default();
                break;
            }
        }
    }
    let ids: Vec<String> = records
        .iter()
        .filter_map(|r| match &r.outcome {
            Outcome::Drawn { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let chain_ids: Vec<String> = chains.iter().map(|c| c.id.clone()).collect();
    let mut tasks = Vec::new();
    for (&node, base) in nodes {
        let http = http.clone();
        let base = base.clone();
        let ids = ids.clone();
        let chain_ids = chain_ids.clone();
        tasks.push(tokio::spawn(async move {
            // A node that stops answering is not asked forever: after a
            // run of transport failures the rest is marked unanswered.
            let mut dead_run = 0;
            let mut found = BTreeMap::new();
            for id in ids {
                let r = if dead_run >= 10 {
                    Err("not asked: the node stopped answering".to_string())
                } else {
                    lookup(&http, &base, &id).await
                };
                match &r {
                    Err(e) if !e.starts_with("404") && !e.starts_with("not asked") => dead_run += 1,
                    _ => dead_run = 0,
                }
                found.insert(id, r);
            }
            let mut lists = BTreeMap::new();
            for c in chain_ids {
                let r = if dead_run >= 10 {
                    Err("not asked: the node stopped answering".to_string())
                } else {
                    listing(&http, &base, &c).await
                };
                if r.is_err() {
                    dead_run += 1;
                }
                lists.insert(c, r);
            }
            (node, found, lists)
        }));
    }
    let chunks = collect_chunks(&http, nodes, records).await;
    let mut obs = Observations {
        keys,
        links,
        chunks,
        ..Observations::default()
    };
    for t in tasks {
        if let Ok((node, found, lists)) = t.await {
            obs.lookups.insert(node, found);
            obs.listings.insert(node, lists);
        }
    }
    Ok(obs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use geiger_protocol::record::format_timestamp;
    use geiger_protocol::{
        derive, DrawBody, DrawType, EntropySegment, EntropyUse, RecordId, RecordKind, Signer, Spec,
    };

    /// The device every forged draw takes its entropy from.
    fn device_key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[3; 32])
    }

    fn device() -> String {
        geiger_protocol::device::DeviceId::of_key_bytes(device_key().verifying_key().as_bytes())
            .to_string()
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    struct Forge {
        signer: Signer,
        chain: RecordId,
    }

    impl Forge {
        fn new() -> Self {
            Forge {
                signer: Signer::from_secret([7; 32]),
                chain: RecordId::for_body(RecordKind::Chain, b"genesis"),
            }
        }

        fn keys(&self) -> KeySet {
            KeySet {
                keys: vec![self.signer.key_info(format_timestamp(0), None)],
                devices: vec![geiger_protocol::provenance::DeviceKeyInfo {
                    device: device(),
                    alg: "Ed25519".into(),
                    public_key: b64(device_key().verifying_key().as_bytes()),
                    valid_from: format_timestamp(0),
                    valid_until: None,
                }],
            }
        }

        /// Chunk `seq` holding `bytes`, signed by `key` (the device's, or
        /// another), public from `exhausted_ms`.
        fn chunk(
            key: &ed25519_dalek::SigningKey,
            seq: u64,
            bytes: &[u8],
            exhausted_ms: u64,
        ) -> ChunkLookup {
            use ed25519_dalek::Signer as _;
            use sha2::Digest as _;
            let sha256: [u8; 32] = sha2::Sha256::digest(bytes).into();
            let id = geiger_protocol::device::DeviceId::of_key_bytes(
                device_key().verifying_key().as_bytes(),
            );
            let statement = geiger_protocol::provenance::chunk_statement(&id, seq, &sha256, 500);
            ChunkLookup::Public(PublicChunk {
                device: device(),
                seq,
                public_key: b64(device_key().verifying_key().as_bytes()),
                timestamp_ms: 500,
                length: bytes.len() as u32,
                sha256: hex::encode(sha256),
                signature: b64(&key.sign(&statement).to_bytes()),
                hex: hex::encode(bytes),
                exhausted_at: format_timestamp(exhausted_ms),
            })
        }

        /// A valid draw after `previous` at `position`, using bytes
        /// `offset..` of chunk `chunk`, filled with `fill`.
        fn draw(
            &self,
            previous: RecordId,
            position: u64,
            chunk: u64,
            offset: u32,
            fill: u8,
            rid: &str,
        ) -> DrawResponse {
            let spec = Spec::Bytes { count: 8 };
            let bytes: Vec<u8> = (0..8).map(|i| fill.wrapping_add(i)).collect();
            let derived = derive(&spec, &bytes).unwrap();
            let used = &bytes[..derived.consumed];
            self.signer
                .seal_draw(DrawBody {
                    record_type: DrawType::Draw,
                    chain: self.chain,
                    position,
                    previous,
                    tag: "t".into(),
                    customer: "cu_1".into(),
                    request_id: Some(rid.into()),
                    spec,
                    result: derived.result,
                    issued_at: format_timestamp(1_000),
                    ledger_index: 10 + position,
                    entropy: EntropyUse::new(
                        vec![EntropySegment {
                            device: device(),
                            chunk_seq: chunk,
                            offset,
                            length: used.len() as u32,
                        }],
                        used,
                    ),
                    derivation: geiger_protocol::DERIVATION_V1.into(),
                    key_id: String::new(),
                })
                .unwrap()
        }
    }

    fn raw(d: &DrawResponse) -> String {
        String::from_utf8(d.to_canonical_vec().unwrap()).unwrap()
    }

    fn drawn(d: &DrawResponse, rid: &str) -> RequestRecord {
        RequestRecord {
            seq: 0,
            worker: 0,
            chain: d.draw.body.chain.to_string(),
            shared: false,
            bad: false,
            previous: d.draw.body.previous.to_string(),
            request_id: rid.into(),
            retry: false,
            intended_ms: 0.0,
            start_ms: 0.0,
            end_ms: 1.0,
            outcome: Outcome::Drawn {
                id: d.draw.id.to_string(),
                replayed: false,
                raw: raw(d),
                endpoint: "n1".into(),
            },
        }
    }

    /// A two-draw history seen identically by two nodes.
    fn history(
        forge: &Forge,
        draws: &[DrawResponse],
    ) -> (Vec<RequestRecord>, Vec<ChainInfo>, Observations) {
        let records: Vec<RequestRecord> = draws
            .iter()
            .map(|d| drawn(d, d.draw.body.request_id.as_deref().unwrap()))
            .collect();
        let chains = vec![ChainInfo {
            id: forge.chain.to_string(),
            shared: false,
            owner: Some(0),
        }];
        let mut obs = Observations {
            keys: forge.keys(),
            links: vec![serde_json::json!({
                "device": device(), "used_bytes": draws.len() as u64 * 8,
                "appended_chunks": 1, "quarantined_chunks": 0, "skipped_chunks": 0,
                "first_seq": 0, "last_seq": 0,
            })],
            ..Observations::default()
        };
        for node in [1u64, 2] {
            obs.lookups.insert(
                node,
                draws
                    .iter()
                    .map(|d| (d.draw.id.to_string(), Ok(raw(d))))
                    .collect(),
            );
            obs.listings.insert(
                node,
                [(forge.chain.to_string(), Ok(draws.iter().map(raw).collect()))]
                    .into_iter()
                    .collect(),
            );
        }
        (records, chains, obs)
    }

    fn invariants(report: &CheckReport) -> BTreeSet<u8> {
        report.violations.iter().map(|v| v.invariant).collect()
    }

    fn clean(forge: &Forge) -> Vec<DrawResponse> {
        let first = forge.draw(forge.chain, 1, 0, 0, 1, "r1");
        let second = forge.draw(first.draw.id, 2, 0, 8, 50, "r2");
        vec![first, second]
    }

    #[test]
    fn a_clean_history_passes() {
        let forge = Forge::new();
        let (records, chains, obs) = history(&forge, &clean(&forge));
        let report = check(&records, &chains, &obs);
        assert!(report.passed(), "{:#?}", report.violations);
        assert_eq!(report.stats.ledger_draws, 2);
        assert_eq!(report.stats.entropy_bytes_used, 16);
    }

    /// Chunk 0 as the clean history used it: draw 1's 8 bytes from 1, then
    /// draw 2's from 50.
    fn chunk_zero_bytes() -> Vec<u8> {
        (1..=8u8).chain(50..=57).collect()
    }

    #[test]
    fn draws_whose_bytes_are_the_device_signed_chunks_pass_provenance() {
        let forge = Forge::new();
        let (records, chains, mut obs) = history(&forge, &clean(&forge));
        obs.chunks.insert(
            chunk_key(&device(), 0),
            Forge::chunk(&device_key(), 0, &chunk_zero_bytes(), 2_000),
        );
        let report = check(&records, &chains, &obs);
        assert!(report.passed(), "{:#?}", report.violations);
        assert_eq!(report.stats.provenance_verified, 2);
    }

    #[test]
    fn a_chunk_whose_bytes_differ_from_a_draws_entropy_is_flagged() {
        let forge = Forge::new();
        let (records, chains, mut obs) = history(&forge, &clean(&forge));
        let mut bytes = chunk_zero_bytes();
        bytes[9] ^= 1; // inside draw 2's segment
        obs.chunks.insert(
            chunk_key(&device(), 0),
            Forge::chunk(&device_key(), 0, &bytes, 2_000),
        );
        let report = check(&records, &chains, &obs);
        assert_eq!(invariants(&report), BTreeSet::from([4]), "{report:#?}");
        assert_eq!(report.stats.provenance_verified, 1);
    }

    #[test]
    fn a_chunk_signed_by_another_key_or_public_before_issue_or_missing_is_flagged() {
        let forge = Forge::new();
        let (records, chains, mut obs) = history(&forge, &clean(&forge));
        let stranger = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        for lookup in [
            Forge::chunk(&stranger, 0, &chunk_zero_bytes(), 2_000),
            // Public at 500 ms; the draws were issued at 1,000.
            Forge::chunk(&device_key(), 0, &chunk_zero_bytes(), 500),
            ChunkLookup::Missing("404".into()),
        ] {
            obs.chunks.insert(chunk_key(&device(), 0), lookup.clone());
            let report = check(&records, &chains, &obs);
            assert_eq!(invariants(&report), BTreeSet::from([4]), "{lookup:?}");
        }
    }

    #[test]
    fn a_chunk_not_used_up_yet_is_counted_not_flagged() {
        let forge = Forge::new();
        let (records, chains, mut obs) = history(&forge, &clean(&forge));
        obs.chunks
            .insert(chunk_key(&device(), 0), ChunkLookup::NotExhausted);
        let report = check(&records, &chains, &obs);
        assert!(report.passed(), "{:#?}", report.violations);
        assert_eq!(report.stats.provenance_pending, 2);
    }

    #[test]
    fn a_draw_stamped_later_than_its_answer_or_earlier_than_its_request_is_flagged() {
        let forge = Forge::new();
        let (records, chains, mut obs) = history(&forge, &clean(&forge));
        // The forged draws are stamped 1,000 ms after the epoch; their
        // requests ran from t0 + 0 to t0 + 1 ms.
        obs.t0_unix_ms = Some(900.0);
        assert!(check(&records, &chains, &obs).passed());
        // A clock five seconds ahead: stamped after the answer came.
        obs.t0_unix_ms = Some(-4_000.0);
        let report = check(&records, &chains, &obs);
        assert_eq!(invariants(&report), BTreeSet::from([6]), "{report:#?}");
        // Two seconds behind: stamped before the request was sent...
        obs.t0_unix_ms = Some(3_000.0);
        assert_eq!(
            invariants(&check(&records, &chains, &obs)),
            BTreeSet::from([6])
        );
        // ...which a replay of an earlier commit may well be.
        let replays: Vec<RequestRecord> = records
            .iter()
            .cloned()
            .map(|mut r| {
                if let Outcome::Drawn { replayed, .. } = &mut r.outcome {
                    *replayed = true;
                }
                r
            })
            .collect();
        assert!(check(&replays, &chains, &obs).passed());
    }

    #[test]
    fn a_forged_duplicate_successor_is_flagged() {
        let forge = Forge::new();
        let draws = clean(&forge);
        let (mut records, chains, obs) = history(&forge, &draws);
        // A second draw after the same previous, acknowledged to a client.
        let rival = forge.draw(forge.chain, 1, 0, 16, 90, "r3");
        records.push(drawn(&rival, "r3"));
        let report = check(&records, &chains, &obs);
        assert!(invariants(&report).contains(&2), "{:#?}", report.violations);
    }

    #[test]
    fn a_byte_mismatched_lookup_is_flagged() {
        let forge = Forge::new();
        let draws = clean(&forge);
        let (records, chains, mut obs) = history(&forge, &draws);
        let id = draws[0].draw.id.to_string();
        // Same record, different bytes: re-serialised with whitespace.
        let reformatted = serde_json::to_string_pretty(&draws[0]).unwrap();
        obs.lookups.get_mut(&2).unwrap().insert(id, Ok(reformatted));
        let report = check(&records, &chains, &obs);
        assert_eq!(
            invariants(&report),
            BTreeSet::from([1]),
            "{:#?}",
            report.violations
        );
    }

    #[test]
    fn a_reused_entropy_range_is_flagged() {
        let forge = Forge::new();
        let first = forge.draw(forge.chain, 1, 0, 0, 1, "r1");
        // Bytes 4..12 of chunk 0 overlap the first draw's 0..8.
        let second = forge.draw(first.draw.id, 2, 0, 4, 50, "r2");
        let (records, chains, obs) = history(&forge, &[first, second]);
        let report = check(&records, &chains, &obs);
        assert!(invariants(&report).contains(&3), "{:#?}", report.violations);
    }

    #[test]
    fn equal_short_entropy_at_distinct_positions_is_not_reuse() {
        let forge = Forge::new();
        let first = forge.draw(forge.chain, 1, 0, 0, 1, "r1");
        // The same 8 byte values, from bytes 8..16: chance, not reuse.
        let second = forge.draw(first.draw.id, 2, 0, 8, 1, "r2");
        let (records, chains, obs) = history(&forge, &[first, second]);
        let report = check(&records, &chains, &obs);
        assert!(
            !invariants(&report).contains(&3),
            "{:#?}",
            report.violations
        );
    }

    #[test]
    fn a_missing_draw_on_one_node_is_flagged() {
        let forge = Forge::new();
        let draws = clean(&forge);
        let (records, chains, mut obs) = history(&forge, &draws);
        obs.lookups
            .get_mut(&1)
            .unwrap()
            .insert(draws[1].draw.id.to_string(), Err("404".into()));
        let report = check(&records, &chains, &obs);
        assert!(invariants(&report).contains(&1));
    }

    #[test]
    fn a_tampered_draw_fails_verification() {
        let forge = Forge::new();
        let mut draws = clean(&forge);
        draws[1].draw.body.tag = "changed after signing".into();
        let (records, chains, obs) = history(&forge, &draws);
        let report = check(&records, &chains, &obs);
        assert!(invariants(&report).contains(&4), "{:#?}", report.violations);
    }

    #[test]
    fn a_rejected_request_that_was_committed_is_flagged() {
        let forge = Forge::new();
        let draws = clean(&forge);
        let (mut records, chains, obs) = history(&forge, &draws);
        // The client was told 422 for r2, yet r2 is in the ledger.
        records[1].outcome = Outcome::Rejected {
            status: 422,
            code: "invalid_request".into(),
            message: "no".into(),
        };
        let report = check(&records, &chains, &obs);
        assert!(invariants(&report).contains(&5), "{:#?}", report.violations);
    }

    #[test]
    fn a_timed_out_request_that_was_committed_counts_as_its_own_replay() {
        let forge = Forge::new();
        let draws = clean(&forge);
        let (mut records, chains, obs) = history(&forge, &draws);
        let mut lost = records[1].clone();
        lost.outcome = Outcome::Unavailable {
            message: "timeout".into(),
        };
        records.insert(1, lost);
        let report = check(&records, &chains, &obs);
        assert!(report.passed(), "{:#?}", report.violations);
        assert_eq!(report.stats.committed_despite_error, 1);
    }

    #[test]
    fn a_gap_in_the_device_accounting_is_flagged() {
        let forge = Forge::new();
        let draws = clean(&forge);
        let (records, chains, mut obs) = history(&forge, &draws);
        obs.links[0]["last_seq"] = serde_json::json!(3);
        let report = check(&records, &chains, &obs);
        assert!(invariants(&report).contains(&3), "{:#?}", report.violations);
    }
}
