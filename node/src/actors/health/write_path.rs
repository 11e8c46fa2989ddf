//! Whether the write path (this node, the leader, a quorum) answered
//! lately. A linearizable barrier proves it; the probe runs one at a time
//! in the background, so a round trip longer than the Health tick (slow
//! links between sites) is not mistaken for a lost quorum, and a barrier
//! that hangs turns the node unready once the window has passed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geiger_control_plane::ControlPlane;

#[derive(Default)]
struct Standing {
    /// Whether a barrier is running.
    running: bool,
    /// When the last successful barrier finished.
    last_answer: Option<Instant>,
    /// The last finished barrier's error; a success clears it.
    last_error: Option<String>,
}

pub struct WritePathProbe {
    ledger: ControlPlane,
    /// How long an answer counts, and how long a barrier may run before
    /// the node stops counting on it.
    window: Duration,
    standing: Arc<Mutex<Standing>>,
}

impl WritePathProbe {
    pub fn new(ledger: ControlPlane, window: Duration) -> Self {
        WritePathProbe {
            ledger,
            window,
            standing: Arc::default(),
        }
    }

    /// Starts a barrier unless one is running, and says whether the write
    /// path answered within the window (`Err` says why not).
    pub fn poll(&self) -> Result<(), String> {
        let now = Instant::now();
        let mut standing = self.standing.lock().unwrap_or_else(|e| e.into_inner());
        if !standing.running {
            standing.running = true;
            let ledger = self.ledger.clone();
            let shared = self.standing.clone();
            let window = self.window;
            tokio::spawn(async move {
                let outcome =
                    match tokio::time::timeout(window, ledger.linearizable_barrier()).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(format!("quorum not reachable: {e}")),
                        Err(_) => Err(format!(
                            "quorum did not answer within {:.1} s",
                            window.as_secs_f64()
                        )),
                    };
                let mut standing = shared.lock().unwrap_or_else(|e| e.into_inner());
                standing.running = false;
                match outcome {
                    Ok(()) => {
                        standing.last_answer = Some(Instant::now());
                        standing.last_error = None;
                    }
                    Err(why) => standing.last_error = Some(why),
                }
            });
        }
        judge(&standing, now, self.window)
    }
}

fn judge(standing: &Standing, now: Instant, window: Duration) -> Result<(), String> {
    if let Some(why) = &standing.last_error {
        return Err(why.clone());
    }
    match standing.last_answer {
        Some(at) if now.duration_since(at) <= window => Ok(()),
        Some(at) => Err(format!(
            "quorum not reachable: last answered {:.1} s ago",
            now.duration_since(at).as_secs_f64()
        )),
        None => Err("quorum not confirmed yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(2);

    #[test]
    fn an_answer_within_the_window_counts_even_while_the_next_barrier_is_slow() {
        let now = Instant::now();
        let standing = Standing {
            running: true,
            last_answer: Some(now - Duration::from_millis(1600)),
            last_error: None,
        };
        assert_eq!(judge(&standing, now, WINDOW), Ok(()));
    }

    #[test]
    fn an_answer_older_than_the_window_does_not_count() {
        let now = Instant::now();
        let standing = Standing {
            running: true,
            last_answer: Some(now - Duration::from_secs(3)),
            last_error: None,
        };
        let why = judge(&standing, now, WINDOW).unwrap_err();
        assert!(why.contains("last answered 3.0 s ago"), "{why}");
    }

    #[test]
    fn a_failed_barrier_outweighs_an_earlier_answer() {
        let now = Instant::now();
        let standing = Standing {
            running: false,
            last_answer: Some(now),
            last_error: Some("quorum not reachable: no leader".into()),
        };
        assert_eq!(
            judge(&standing, now, WINDOW),
            Err("quorum not reachable: no leader".into())
        );
    }

    #[test]
    fn a_node_that_never_heard_a_quorum_is_not_ready() {
        let standing = Standing::default();
        assert!(judge(&standing, Instant::now(), WINDOW).is_err());
    }
}
