//! A follower whose leader's process is gone stands for election at once.
//!
//! openraft 0.9 makes a follower wait out the leader's lease
//! (`election_max` since the last heartbeat) plus an election timeout
//! before it stands, and refuses votes to others meanwhile: detection
//! costs `election_max + election_min` or more, whatever happened to the
//! leader. The wait is what keeps a leader that is only slow (a starved
//! CPU, a stopped process) from being deposed, so it is kept for every
//! case but one that can be told apart: a leader whose process is gone,
//! where its host answers at once that nothing listens (connection
//! refused, or reset by a proxy in front of it). A stopped or starved
//! process still has its socket accepted by the kernel and just does not
//! answer, and a dead host or a cut network does not answer at all; both
//! leave the probe to time out, and the usual timers decide.
//!
//! So once a follower has heard nothing for [`SILENCE_HEARTBEATS`]
//! heartbeats it asks its leader for a read index with a short deadline;
//! an error well before the deadline means the process is gone, and the
//! follower calls `trigger().elect()`. Its own vote then belongs to its
//! candidacy, not to a leader, so openraft no longer holds the lease
//! against the others' requests. The followers that found the leader gone
//! all stand at once and split that first round; each then stands again
//! after its own random election timeout (`election_min`..`election_max`,
//! with no lease in front of it now), and the first to do so wins. Votes
//! decide as always; only the moment of standing changes, so safety is
//! Raft's. (Standing again sooner, in rounds a few heartbeats apart, was
//! tried: the candidates collided more often and failover got slower.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;

use crate::replica::Replica;

/// Heartbeats without a word from the leader before it is probed.
const SILENCE_HEARTBEATS: u32 = 3;
/// The probe's deadline, in heartbeats; an answer is not needed, only the
/// speed of a failure.
const PROBE_HEARTBEATS: u32 = 4;

/// The follower's part; runs for the replica's life. It looks once per
/// heartbeat, except while the leader is heard: then it sleeps until the
/// silence could first be long enough (an idle node wakes a third as
/// often).
pub(crate) async fn run(replica: Arc<Replica>, heartbeat: Duration) {
    let silence = heartbeat * SILENCE_HEARTBEATS;
    // The leader (and term) already probed in this stretch of silence.
    let mut probed: Option<(u64, u64)> = None;
    let mut wait = heartbeat;
    loop {
        tokio::time::sleep(wait).await;
        wait = heartbeat;
        let (state, leader, term, voter) = standing(&replica);
        let Some(leader) = leader.filter(|l| *l != replica.id) else {
            continue;
        };
        if state != ServerState::Follower || !voter {
            continue;
        }
        let heard = replica.quorum.since_last_append();
        if heard < silence {
            probed = None;
            wait = (silence - heard).max(heartbeat / 4);
            continue;
        }
        if probed == Some((leader, term)) || !replica.quorum.may_stand_for_election() {
            continue;
        }
        probed = Some((leader, term));
        let Some(member) = replica.member(leader) else {
            continue;
        };
        let deadline = heartbeat * PROBE_HEARTBEATS;
        let started = Instant::now();
        let answer = replica
            .ask_read_index(leader, &member.rpc_addr, deadline)
            .await;
        let Err(e) = answer else { continue };
        let took = started.elapsed();
        if took >= deadline / 2 {
            // Slow, not gone: the timers decide.
            continue;
        }
        // While the probe ran, this node may have voted in an election the
        // others began: standing now would bump the term past a leader
        // just elected and depose it.
        if standing(&replica) != (state, Some(leader), term, voter) {
            continue;
        }
        tracing::warn!(
            leader,
            term,
            error = %e,
            took_ms = took.as_millis() as u64,
            "the leader's process is gone: standing for election without waiting out its lease"
        );
        if let Err(e) = replica.raft.trigger().elect().await {
            tracing::warn!(error = %e, "could not stand for election");
        }
    }
}

/// This replica's role, the leader it names, its term, and whether it votes.
fn standing(replica: &Replica) -> (ServerState, Option<u64>, u64, bool) {
    let m = replica.raft.metrics();
    let m = m.borrow();
    (
        m.state,
        m.current_leader,
        m.current_term,
        m.membership_config
            .membership()
            .voter_ids()
            .any(|v| v == replica.id),
    )
}
