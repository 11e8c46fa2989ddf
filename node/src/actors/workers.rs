//! Request-handling workers: a ractor factory whose workers submit ledger
//! writes. Its queue is bounded; a job that does not fit is discarded at
//! once, which the HTTP layer turns into a fast 503 with `Retry-After`
//! rather than letting memory and latency grow without bound.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use geiger_control_plane::stage_timing::{self, Stage};
use geiger_control_plane::{Command, ControlPlane, Error as LedgerError, Outcome};
use ractor::factory::queues::DefaultQueue;
use ractor::factory::routing::QueuerRouting;
use ractor::factory::{
    worker_builder, DiscardMode, DiscardSettings, Factory, FactoryArguments, FactoryMessage, Job,
    Worker, WorkerId,
};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::supervisor::{ChildSpec, SpawnFuture};

pub enum WorkerMsg {
    Write {
        command: Command,
        reply: RpcReplyPort<Result<Outcome, LedgerError>>,
    },
}

type WorkerFactory = Factory<
    (),
    WorkerMsg,
    (),
    RequestWorker,
    QueuerRouting<(), WorkerMsg>,
    DefaultQueue<(), WorkerMsg>,
>;

pub type FactoryRef = ActorRef<FactoryMessage<(), WorkerMsg>>;

pub struct RequestWorker {
    ledger: ControlPlane,
}

impl Worker for RequestWorker {
    type Key = ();
    type Message = WorkerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<(), WorkerMsg>>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<(), WorkerMsg>>,
        Job { msg, key, .. }: Job<(), WorkerMsg>,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Write { command, reply } => {
                let outcome = self.ledger.write(command).await;
                // The caller may have given up (timeout); nothing to do then.
                let _ = reply.send(outcome);
            }
        }
        Ok(key)
    }
}

/// Why a job got no answer from the ledger.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the node is overloaded: every worker is busy and the queue is full")]
    Overloaded,
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The handle the HTTP layer holds. It survives restarts of the factory:
/// the child spec puts each new factory's reference in the shared slot.
#[derive(Clone)]
pub struct RequestWorkers {
    slot: Arc<RwLock<Option<FactoryRef>>>,
    timeout: Duration,
}

impl RequestWorkers {
    pub fn new(timeout: Duration) -> Self {
        RequestWorkers {
            slot: Arc::new(RwLock::new(None)),
            timeout,
        }
    }

    pub async fn submit(&self, command: Command) -> Result<Outcome, SubmitError> {
        let factory = self
            .slot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(SubmitError::Overloaded)?;
        let started = std::time::Instant::now();
        let result = factory
            .call_job(
                (),
                |reply| WorkerMsg::Write { command, reply },
                Some(self.timeout),
            )
            .await;
        match result {
            Ok(ractor::rpc::CallResult::Success(outcome)) => {
                let outcome = outcome?;
                stage_timing::record(Stage::Worker, started.elapsed(), 1);
                Ok(outcome)
            }
            Ok(ractor::rpc::CallResult::Timeout) => Err(SubmitError::TimedOut(self.timeout)),
            // The job was discarded (queue full) or its worker died: the
            // reply port was dropped unanswered.
            Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Err(SubmitError::Overloaded),
        }
    }
}

/// Starts the factory under the supervisor.
pub struct RequestWorkersSpec {
    pub ledger: ControlPlane,
    pub workers: usize,
    pub queue: usize,
    pub handle: RequestWorkers,
}

impl ChildSpec for RequestWorkersSpec {
    fn kind(&self) -> &'static str {
        "http_worker"
    }

    fn spawn(&self, supervisor: ActorCell) -> SpawnFuture {
        let ledger = self.ledger.clone();
        let (workers, queue) = (self.workers, self.queue);
        let slot = self.handle.slot.clone();
        Box::pin(async move {
            let args = FactoryArguments::builder()
                .worker_builder(Box::new(worker_builder(move |_wid| {
                    (
                        RequestWorker {
                            ledger: ledger.clone(),
                        },
                        (),
                    )
                })))
                .queue(Default::default())
                .router(Default::default())
                .num_initial_workers(workers)
                .discard_settings(DiscardSettings::Static {
                    limit: queue,
                    mode: DiscardMode::Newest,
                })
                .build();
            let (factory, _) =
                Actor::spawn_linked(None, WorkerFactory::default(), args, supervisor).await?;
            *slot.write().unwrap_or_else(|e| e.into_inner()) = Some(factory.clone());
            Ok(factory.get_cell())
        })
    }
}
