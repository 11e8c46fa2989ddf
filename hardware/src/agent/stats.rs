//! The agent's counters: TLS handshakes, sessions, refusals by reason, and
//! what the entropy source produced (count rate, raw bits, conditioned
//! bytes, raw samples the health tests rejected), rendered in the Prometheus text format for `geiger-device
//! --metrics-listen` (docs/LINK.md lists them).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::source::SourceStats;

/// Why the agent turned a client or a Hello away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client's link key is not a trusted cluster node's.
    UntrustedNode,
    /// The client did not complete a TLS handshake (no TLS, a bad one, or
    /// too slow).
    Handshake,
    /// The Hello's epoch is older than the newest seen.
    StaleEpoch,
    /// The Hello's epoch jumps further than a cluster can go.
    EpochTooFar,
    /// The Hello's epoch lacks signatures of a majority of trusted members.
    LeaseUnproven,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Refusal::UntrustedNode,
        Refusal::Handshake,
        Refusal::StaleEpoch,
        Refusal::EpochTooFar,
        Refusal::LeaseUnproven,
    ];

    /// The `reason` label of `geiger_device_refusals_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::UntrustedNode => "untrusted_node",
            Refusal::Handshake => "tls_handshake",
            Refusal::StaleEpoch => "stale_epoch",
            Refusal::LeaseUnproven => "lease_unproven",
            Refusal::EpochTooFar => "epoch_too_far",
        }
    }
}

#[derive(Debug, Default)]
pub struct AgentStats {
    handshakes: AtomicU64,
    sessions: AtomicU64,
    refusals: [AtomicU64; 5],
    source: Arc<SourceStats>,
}

impl AgentStats {
    /// Counters that report `source`'s production beside the link's.
    pub fn with_source(source: Arc<SourceStats>) -> Self {
        AgentStats {
            source,
            ..AgentStats::default()
        }
    }

    /// The entropy source's counters.
    pub fn source(&self) -> &SourceStats {
        &self.source
    }
    pub(super) fn handshake(&self) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn session(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn refuse(&self, why: Refusal) {
        self.refusals[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// TLS handshakes completed.
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// Sessions admitted (counted as their Welcome is sent).
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    pub fn refusals(&self, why: Refusal) -> u64 {
        self.refusals[why as usize].load(Ordering::Relaxed)
    }

    /// The counters in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP geiger_device_tls_handshakes_total TLS handshakes completed with trusted nodes.\n\
             # TYPE geiger_device_tls_handshakes_total counter\n\
             geiger_device_tls_handshakes_total {}",
            self.handshakes()
        );
        let _ = writeln!(
            out,
            "# HELP geiger_device_sessions_total Link sessions started.\n\
             # TYPE geiger_device_sessions_total counter\n\
             geiger_device_sessions_total {}",
            self.sessions()
        );
        let _ = writeln!(
            out,
            "# HELP geiger_device_refusals_total Clients and Hellos refused, by reason.\n\
             # TYPE geiger_device_refusals_total counter"
        );
        for why in Refusal::ALL {
            let _ = writeln!(
                out,
                "geiger_device_refusals_total{{reason=\"{}\"}} {}",
                why.label(),
                self.refusals(why)
            );
        }
        let s = self.source.snapshot();
        // The rates as the node computes them from the same counts.
        let rates = crate::frame::SourceReport::from(s);
        for (name, kind, help, value) in [
            (
                "geiger_device_source_events_total",
                "counter",
                "Counter events registered (decay source).",
                s.events as f64,
            ),
            (
                "geiger_device_source_raw_bits_total",
                "counter",
                "Raw bits extracted from event timing (decay source).",
                s.raw_bits as f64,
            ),
            (
                "geiger_device_source_raw_ties_total",
                "counter",
                "Interval pairs that were equal and yielded no bit (decay source).",
                s.raw_ties as f64,
            ),
            (
                "geiger_device_source_raw_samples_rejected_total",
                "counter",
                "Raw samples (bits, failing ties) discarded because a raw health test failed.",
                s.raw_rejected as f64,
            ),
            (
                "geiger_device_source_raw_health_failures_total",
                "counter",
                "Raw health test failures (repetition count, adaptive proportion, tie run).",
                s.raw_failures as f64,
            ),
            (
                "geiger_device_source_output_bytes_total",
                "counter",
                "Bytes the source handed to the chunk path (conditioned, for decay).",
                s.output_bytes as f64,
            ),
            (
                "geiger_device_source_count_rate",
                "gauge",
                "Registered counts per second, averaged since the agent started.",
                rates.count_rate(),
            ),
            (
                "geiger_device_source_raw_bits_per_second",
                "gauge",
                "Raw bits per second, averaged since the agent started.",
                rates.raw_bits_per_second(),
            ),
            (
                "geiger_device_source_output_bytes_per_second",
                "gauge",
                "Output (conditioned) bytes per second, averaged since the agent started.",
                rates.output_bytes_per_second(),
            ),
            (
                "geiger_device_source_raw_rejected_fraction",
                "gauge",
                "Share of raw samples (bits and ties) the health tests rejected since the agent started.",
                rates.rejected_fraction(),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

/// Serves `GET /metrics` (HTTP/1.1, one request per connection) from
/// `stats` until the task is dropped. Anything else gets a 404; a request
/// head over 8 KiB or slower than 5 s is dropped.
pub async fn serve_metrics(listener: TcpListener, stats: Arc<AgentStats>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(512);
            let mut buf = [0u8; 1024];
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await;
            if !matches!(read, Ok(true)) {
                return;
            }
            let (status, body) = if head.starts_with(b"GET /metrics ") {
                ("200 OK", stats.render())
            } else {
                (
                    "404 Not Found",
                    "only GET /metrics is served here\n".to_string(),
                )
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_under_their_reason() {
        let stats = AgentStats::default();
        stats.refuse(Refusal::UntrustedNode);
        stats.refuse(Refusal::UntrustedNode);
        stats.handshake();
        let text = stats.render();
        assert!(text.contains("geiger_device_refusals_total{reason=\"untrusted_node\"} 2"));
        assert!(text.contains("geiger_device_refusals_total{reason=\"epoch_too_far\"} 0"));
        assert!(text.contains("geiger_device_tls_handshakes_total 1"));
        assert!(text.contains("geiger_device_source_raw_rejected_fraction 0\n"));
    }
}
