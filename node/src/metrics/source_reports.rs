//! What the devices this node links to say about their entropy sources
//! (link protocol version 4, docs/LINK.md): the latest report per device,
//! for the links list and the status report, and the `geiger_source_*`
//! counters, advanced by the difference between successive reports.
//!
//! Only the owner of a link hears its device, so only the owner knows; the
//! report leaves this registry when the session ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use geiger_hardware::SourceReport;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};

use super::DeviceLabels;

/// The `geiger_source_*` counter families, one series per device.
#[derive(Debug, Default)]
pub struct SourceCounters {
    pub events: Family<DeviceLabels, Counter>,
    pub raw_samples: Family<DeviceLabels, Counter>,
    pub raw_bits: Family<DeviceLabels, Counter>,
    pub raw_rejected: Family<DeviceLabels, Counter>,
    pub output_bytes: Family<DeviceLabels, Counter>,
}

/// How long the rates shown are averaged over: between one and two of
/// these, so they follow the source as it is now, not since it opened (a
/// simulated source pauses while its pool is full; a real one may drift).
const RATE_WINDOW_MS: u64 = 10_000;

/// One device's reports in the session that runs here.
#[derive(Debug, Clone, Copy)]
struct Track {
    /// Start of the window the rates are averaged over.
    base: SourceReport,
    /// The next window's start.
    mid: SourceReport,
    latest: SourceReport,
    at: Instant,
}

/// The reports of each device whose session runs here.
#[derive(Debug, Default)]
pub struct SourceReports {
    tracks: Mutex<HashMap<String, Track>>,
    pub counters: SourceCounters,
}

impl SourceReports {
    /// Takes `device`'s newest report. The counters advance by what it adds
    /// to the session's previous report; the first report of a session only
    /// sets the baseline, so a node taking a link over does not count what
    /// the device produced for its former owner.
    pub fn record(&self, device: &str, report: SourceReport) {
        let mut tracks = self.lock();
        let Some(track) = tracks.get_mut(device) else {
            tracks.insert(
                device.to_string(),
                Track {
                    base: report,
                    mid: report,
                    latest: report,
                    at: Instant::now(),
                },
            );
            return;
        };
        let labels = DeviceLabels {
            device: device.to_string(),
        };
        let (c, p) = (&self.counters, track.latest);
        for (family, now, before) in [
            (&c.events, report.events, p.events),
            (&c.raw_samples, report.raw_samples, p.raw_samples),
            (&c.raw_bits, report.raw_bits, p.raw_bits),
            (&c.raw_rejected, report.raw_rejected, p.raw_rejected),
            (&c.output_bytes, report.output_bytes, p.output_bytes),
        ] {
            // Counts are cumulative within a session (a device restart
            // ends it), so a step back is a fault of the device: skip it.
            if now > before {
                family.get_or_create(&labels).inc_by(now - before);
            }
        }
        if report.uptime_ms.saturating_sub(track.mid.uptime_ms) >= RATE_WINDOW_MS {
            track.base = track.mid;
            track.mid = report;
        }
        track.latest = report;
        track.at = Instant::now();
    }

    /// The session for `device` ended: it has no current report.
    pub fn forget(&self, device: &str) {
        self.lock().remove(device);
    }

    /// `device`'s latest report, as the API shows it.
    pub fn view(&self, device: &str) -> Option<SourceView> {
        self.lock().get(device).map(SourceView::of)
    }

    /// Every device's latest report, as the API shows it.
    pub fn views(&self) -> BTreeMap<String, SourceView> {
        self.lock()
            .iter()
            .map(|(d, t)| (d.clone(), SourceView::of(t)))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Track>> {
        self.tracks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A device's source as its reports describe it. Rates and the rejected
/// share are averaged over the last 10 to 20 seconds of reports (since the
/// source opened, until the session has two reports); for other windows,
/// `rate()` the `geiger_source_*` counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceView {
    /// Seconds since the device's source opened.
    pub uptime_seconds: f64,
    /// Milliseconds since the latest report arrived (reports come every
    /// heartbeat).
    pub reported_ms_ago: u64,
    /// Seconds the rates below are averaged over.
    pub window_seconds: f64,
    /// Counter events per second (0 for a source that is not a counter).
    pub count_rate_per_second: f64,
    pub raw_bits_per_second: f64,
    /// Bytes per second handed to chunks: conditioned, for a decay source.
    pub output_bytes_per_second: f64,
    /// Share of raw samples the device's own health tests discarded.
    pub rejected_fraction: f64,
    /// Totals since the source opened.
    pub events: u64,
    pub raw_samples: u64,
    pub raw_rejected: u64,
    pub output_bytes: u64,
}

impl SourceView {
    fn of(t: &Track) -> Self {
        let r = &t.latest;
        // The window's difference is itself a report: the rates of a
        // report are its counts over its uptime.
        let window = if r.uptime_ms > t.base.uptime_ms {
            SourceReport {
                uptime_ms: r.uptime_ms - t.base.uptime_ms,
                events: r.events.saturating_sub(t.base.events),
                raw_samples: r.raw_samples.saturating_sub(t.base.raw_samples),
                raw_bits: r.raw_bits.saturating_sub(t.base.raw_bits),
                raw_rejected: r.raw_rejected.saturating_sub(t.base.raw_rejected),
                output_bytes: r.output_bytes.saturating_sub(t.base.output_bytes),
            }
        } else {
            *r
        };
        SourceView {
            uptime_seconds: r.uptime_ms as f64 / 1000.0,
            reported_ms_ago: t.at.elapsed().as_millis() as u64,
            window_seconds: window.uptime_ms as f64 / 1000.0,
            count_rate_per_second: window.count_rate(),
            raw_bits_per_second: window.raw_bits_per_second(),
            output_bytes_per_second: window.output_bytes_per_second(),
            rejected_fraction: window.rejected_fraction(),
            events: r.events,
            raw_samples: r.raw_samples,
            raw_rejected: r.raw_rejected,
            output_bytes: r.output_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    /// A report `uptime_ms` after opening, at `rate` events a second
    /// before `idle_ms` of idleness at the start.
    fn report(uptime_ms: u64, idle_ms: u64, rate: u64, rejected: u64) -> SourceReport {
        let events = (uptime_ms - idle_ms) * rate / 1000;
        SourceReport {
            uptime_ms,
            events,
            raw_samples: events / 2,
            raw_bits: events / 2 - rejected,
            raw_rejected: rejected,
            output_bytes: events / 64,
        }
    }

    #[test]
    fn counters_advance_by_what_each_report_adds_after_the_first_of_a_session() {
        let reports = SourceReports::default();
        reports.record("dev_a", report(10_000, 0, 1000, 0));
        reports.record("dev_a", report(12_000, 0, 1000, 5));
        let mut registry = Registry::default();
        registry.register("e", "", reports.counters.events.clone());
        registry.register("r", "", reports.counters.raw_rejected.clone());
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        assert!(text.contains("e_total{device=\"dev_a\"} 2000"), "{text}");
        assert!(text.contains("r_total{device=\"dev_a\"} 5"), "{text}");
        reports.forget("dev_a");
        assert!(reports.view("dev_a").is_none());
        assert!(reports.views().is_empty());
    }

    #[test]
    fn rates_follow_the_recent_reports_not_the_idle_time_after_the_source_opened() {
        let reports = SourceReports::default();
        // Opened 30 s before its first session; 1,000 events/s since.
        reports.record("dev_a", report(31_000, 30_000, 1000, 0));
        assert_eq!(
            reports.view("dev_a").unwrap().count_rate_per_second,
            1000.0 / 31.0
        );
        for s in 32..=60 {
            reports.record("dev_a", report(s * 1000, 30_000, 1000, 0));
        }
        let view = reports.view("dev_a").unwrap();
        assert!((10.0..=20.0).contains(&view.window_seconds), "{view:?}");
        assert_eq!(view.count_rate_per_second, 1000.0);
        assert_eq!(view.events, 30_000);
    }
}
