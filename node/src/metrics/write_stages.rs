//! `geiger_write_stage_seconds_total{stage}` and
//! `geiger_write_stage_commands_total{stage}`: where this node's writes
//! spend their time, read at each scrape from the control plane's stage
//! totals (`geiger_control_plane::stage_timing`, which defines the stages).
//! A stage's seconds over its commands is what it added to an average
//! command between two scrapes.

use geiger_control_plane::stage_timing::STAGES;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;

#[derive(Debug)]
pub(super) struct WriteStages;

impl Collector for WriteStages {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let totals = STAGES.totals();
        {
            let mut family = encoder.encode_descriptor(
                "geiger_write_stage_seconds",
                "Time writes spent in each stage of their path, counted once per command a stage held (log_append: once per log write group)",
                None,
                MetricType::Counter,
            )?;
            for (stage, seconds, _) in &totals {
                let labels = [("stage", stage.name())];
                ConstCounter::new(*seconds).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "geiger_write_stage_commands",
            "Commands that passed each stage of the write path (log_append: log write groups)",
            None,
            MetricType::Counter,
        )?;
        for (stage, _, commands) in &totals {
            let labels = [("stage", stage.name())];
            ConstCounter::new(*commands).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
