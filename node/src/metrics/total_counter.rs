//! [`TotalCounter`]: a Prometheus counter set from a total kept elsewhere.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// A counter whose value is a total kept elsewhere (the ledger's per-device
/// accounting), set rather than incremented. It is exposed like any counter
/// (`# TYPE … counter`, samples named `…_total`), so `rate()` and
/// `increase()` work; `set_total` never lowers it, so it stays monotonic
/// within a process even if a read ever saw an older state.
#[derive(Clone, Debug, Default)]
pub struct TotalCounter(Arc<AtomicU64>);

impl TotalCounter {
    /// Sets the counter to `total`, unless it already shows more.
    pub fn set_total(&self, total: u64) {
        self.0.fetch_max(total, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl TypedMetric for TotalCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for TotalCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
