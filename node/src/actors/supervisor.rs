//! `NodeSupervisor`: the root of the node's actor tree. It starts children
//! from specs, and when one fails or stops on its own it restarts it with
//! exponential backoff. Past a restart limit (too many restarts in a window)
//! it does not give up, which would leave the node silently without, say, a
//! hardware session: it logs an error, counts it, and waits a cool-down
//! before trying again. State that matters lives in the replicated ledger,
//! so a restarted child rebuilds from there.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};

use crate::metrics::NodeMetrics;

pub type SpawnFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// How to (re)start one child, linked to the supervisor.
pub trait ChildSpec: Send + Sync + 'static {
    /// The child's kind, as in the `actor` label of `geiger_actor_restarts_total`.
    fn kind(&self) -> &'static str;
    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture;
}

/// The usual [`ChildSpec::spawn`]: `actor`, started without arguments and
/// linked to `supervisor`.
pub fn spawn_linked<A: Actor<Arguments = ()>>(actor: A, supervisor: ActorCell) -> SpawnFuture {
    Box::pin(async move {
        let (child, _) = Actor::spawn_linked(None, actor, (), supervisor).await?;
        Ok(child.get_cell())
    })
}

#[derive(Debug, Clone)]
pub struct RestartPolicy {
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// More than `max_restarts` within `window` trips the limit...
    pub max_restarts: usize,
    pub window: Duration,
    /// ...and the next attempt waits this long.
    pub cool_down: Duration,
    /// A child that ran this long is healthy again: its backoff resets.
    pub stable_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_restarts: 5,
            window: Duration::from_secs(60),
            cool_down: Duration::from_secs(60),
            stable_after: Duration::from_secs(30),
        }
    }
}

pub enum SupervisorMsg {
    /// Starts (or replaces) the child called `name`.
    Start {
        name: String,
        spec: Arc<dyn ChildSpec>,
    },
    /// Stops the child for good.
    Stop { name: String },
    /// The names of the children currently running.
    Running(RpcReplyPort<Vec<String>>),
    /// Internal: a scheduled restart; ignored if `generation` is stale.
    Restart { name: String, generation: u64 },
}

struct Child {
    spec: Arc<dyn ChildSpec>,
    cell: Option<ActorCell>,
    /// Bumped on every (re)start, so stale restart timers do nothing.
    generation: u64,
    started_at: Instant,
    failures_in_row: u32,
    restarts: VecDeque<Instant>,
}

pub struct SupervisorState {
    children: HashMap<String, Child>,
    by_actor: HashMap<ActorId, String>,
}

pub struct NodeSupervisor {
    pub policy: RestartPolicy,
    pub metrics: Arc<NodeMetrics>,
}

impl NodeSupervisor {
    async fn start_child(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        name: &str,
    ) {
        let Some(child) = state.children.get_mut(name) else {
            return;
        };
        child.generation += 1;
        match child.spec.spawn(myself.get_cell()).await {
            Ok(cell) => {
                tracing::info!(child = name, kind = child.spec.kind(), "actor started");
                state.by_actor.insert(cell.get_id(), name.to_string());
                child.cell = Some(cell);
                child.started_at = Instant::now();
            }
            Err(e) => {
                tracing::warn!(child = name, error = %e, "actor failed to start");
                child.cell = None;
                self.schedule_restart(myself, state, name);
            }
        }
    }

    fn schedule_restart(
        &self,
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        name: &str,
    ) {
        let Some(child) = state.children.get_mut(name) else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(child.started_at) >= self.policy.stable_after {
            child.failures_in_row = 0;
        }
        while child
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.window)
        {
            child.restarts.pop_front();
        }
        child.restarts.push_back(now);
        let delay = if child.restarts.len() > self.policy.max_restarts {
            tracing::error!(
                child = name,
                restarts = child.restarts.len(),
                window_s = self.policy.window.as_secs(),
                "restart limit reached; cooling down before the next attempt"
            );
            self.policy.cool_down
        } else {
            let factor = 1u32 << child.failures_in_row.min(16);
            (self.policy.first_backoff * factor).min(self.policy.max_backoff)
        };
        child.failures_in_row += 1;
        let generation = child.generation;
        let name = name.to_string();
        tracing::info!(child = %name, delay_ms = delay.as_millis() as u64, "actor restart scheduled");
        myself.send_after(delay, move || SupervisorMsg::Restart { name, generation });
    }
}

impl Actor for NodeSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            children: HashMap::new(),
            by_actor: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Start { name, spec } => {
                if let Some(old) = state.children.remove(&name) {
                    if let Some(cell) = old.cell {
                        state.by_actor.remove(&cell.get_id());
                        cell.stop(Some("replaced".into()));
                    }
                }
                state.children.insert(
                    name.clone(),
                    Child {
                        spec,
                        cell: None,
                        generation: 0,
                        started_at: Instant::now(),
                        failures_in_row: 0,
                        restarts: VecDeque::new(),
                    },
                );
                self.start_child(&myself, state, &name).await;
            }
            SupervisorMsg::Stop { name } => {
                if let Some(child) = state.children.remove(&name) {
                    if let Some(cell) = child.cell {
                        state.by_actor.remove(&cell.get_id());
                        cell.stop(Some("stopped by supervisor".into()));
                        tracing::info!(child = %name, "actor stopped");
                    }
                }
            }
            SupervisorMsg::Running(reply) => {
                let mut names: Vec<String> = state
                    .children
                    .iter()
                    .filter(|(_, c)| c.cell.is_some())
                    .map(|(n, _)| n.clone())
                    .collect();
                names.sort();
                let _ = reply.send(names);
            }
            SupervisorMsg::Restart { name, generation } => {
                let current = state
                    .children
                    .get(&name)
                    .is_some_and(|c| c.generation == generation && c.cell.is_none());
                if current {
                    if let Some(child) = state.children.get(&name) {
                        self.metrics.actor_restarted(child.spec.kind());
                    }
                    self.start_child(&myself, state, &name).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, format!("stopped: {}", reason.unwrap_or_default()))
            }
            _ => return Ok(()),
        };
        // Children stopped on purpose were already forgotten.
        let Some(name) = state.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        tracing::warn!(child = %name, %why, "supervised actor ended");
        if let Some(child) = state.children.get_mut(&name) {
            child.cell = None;
        }
        self.schedule_restart(&myself, state, &name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A child that fails on any message; counts its starts.
    struct Fragile {
        starts: Arc<AtomicU32>,
    }

    impl Actor for Fragile {
        type Msg = ();
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
            self.starts.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        async fn handle(
            &self,
            _: ActorRef<()>,
            _: (),
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            Err("boom".into())
        }
    }

    struct FragileSpec {
        starts: Arc<AtomicU32>,
        latest: Arc<std::sync::Mutex<Option<ActorRef<()>>>>,
    }

    impl ChildSpec for FragileSpec {
        fn kind(&self) -> &'static str {
            "health"
        }
        fn spawn(&self, supervisor: ActorCell) -> SpawnFuture {
            let starts = self.starts.clone();
            let latest = self.latest.clone();
            Box::pin(async move {
                let (actor, _) =
                    Actor::spawn_linked(None, Fragile { starts }, (), supervisor).await?;
                *latest.lock().unwrap() = Some(actor.clone());
                Ok(actor.get_cell())
            })
        }
    }

    async fn wait_for(starts: &AtomicU32, n: u32) {
        for _ in 0..200 {
            if starts.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "child was started {} times, expected {n}",
            starts.load(Ordering::SeqCst)
        );
    }

    #[tokio::test]
    async fn a_failed_child_is_restarted_with_backoff_and_counted() {
        let metrics = NodeMetrics::new(1);
        let policy = RestartPolicy {
            first_backoff: Duration::from_millis(20),
            ..RestartPolicy::default()
        };
        let (sup, handle) = Actor::spawn(
            None,
            NodeSupervisor {
                policy,
                metrics: metrics.clone(),
            },
            (),
        )
        .await
        .unwrap();
        let starts = Arc::new(AtomicU32::new(0));
        let latest = Arc::new(std::sync::Mutex::new(None));
        let spec = Arc::new(FragileSpec {
            starts: starts.clone(),
            latest: latest.clone(),
        });
        sup.cast(SupervisorMsg::Start {
            name: "fragile".into(),
            spec,
        })
        .unwrap();
        wait_for(&starts, 1).await;
        for round in 2..=3 {
            let child = latest.lock().unwrap().clone().unwrap();
            child.cast(()).unwrap();
            wait_for(&starts, round).await;
        }
        assert!(metrics
            .render()
            .contains("geiger_actor_restarts_total{actor=\"health\"} 2"));
        let running = ractor::call!(sup, SupervisorMsg::Running).unwrap();
        assert_eq!(running, vec!["fragile".to_string()]);

        // A child stopped on purpose stays stopped.
        sup.cast(SupervisorMsg::Stop {
            name: "fragile".into(),
        })
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert!(ractor::call!(sup, SupervisorMsg::Running)
            .unwrap()
            .is_empty());
        sup.stop(None);
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn past_the_restart_limit_the_supervisor_cools_down_instead_of_stopping() {
        let metrics = NodeMetrics::new(1);
        let policy = RestartPolicy {
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            max_restarts: 2,
            cool_down: Duration::from_millis(300),
            ..RestartPolicy::default()
        };
        let (sup, handle) = Actor::spawn(None, NodeSupervisor { policy, metrics }, ())
            .await
            .unwrap();
        let starts = Arc::new(AtomicU32::new(0));
        let latest = Arc::new(std::sync::Mutex::new(None));
        let spec = Arc::new(FragileSpec {
            starts: starts.clone(),
            latest: latest.clone(),
        });
        sup.cast(SupervisorMsg::Start {
            name: "fragile".into(),
            spec,
        })
        .unwrap();
        for round in 2..=3 {
            wait_for(&starts, round - 1).await;
            latest.lock().unwrap().clone().unwrap().cast(()).unwrap();
            wait_for(&starts, round).await;
        }
        // The third failure within the window trips the limit: no quick restart...
        latest.lock().unwrap().clone().unwrap().cast(()).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        // ...but one after the cool-down, and the supervisor is still alive.
        wait_for(&starts, 4).await;
        assert_eq!(ractor::call!(sup, SupervisorMsg::Running).unwrap().len(), 1);
        sup.stop(None);
        handle.await.unwrap();
    }
}
