//! The replicated per-device pool counters and the last chunk's time, as
//! the Health actor exports them on every node.

use std::collections::BTreeMap;

use geiger_control_plane::{DevicePool, Lease};

use crate::metrics::{DeviceLabels, NodeMetrics};

/// The per-device pool counters and the last chunk's time, from the
/// ledger's replicated per-device accounting, so every node exports the
/// same totals (up to its apply lag):
///
/// - `geiger_pool_appended_bytes_total` = pooled + used bytes (an append
///   adds to pooled, a draw moves bytes from pooled to used, quarantined
///   chunks are never pooled), `geiger_pool_consumed_bytes_total` = used;
///   both set from the ledger's totals ([`TotalCounter`]), and created at 0
///   for every leased device the ledger holds no chunk of yet;
/// - `geiger_link_last_chunk_timestamp_seconds` = `now` at the first tick
///   this replica's appended chunk count for the device grew. On first
///   sight of a device (node start) it starts from `newest_signed_ms` (the
///   device's signed timestamp of its newest appended chunk, at most `now`),
///   and stays absent when there is none, rather than claiming a time.
///
/// [`TotalCounter`]: crate::metrics::TotalCounter
pub(super) fn export_device_totals(
    metrics: &NodeMetrics,
    devices: &[DevicePool],
    leases: &[Lease],
    chunks_seen: &mut BTreeMap<String, u64>,
    now_unix: f64,
    newest_signed_ms: impl Fn(&DevicePool) -> Option<u64>,
) {
    for device in devices {
        let labels = DeviceLabels {
            device: device.device.clone(),
        };
        metrics
            .pool_appended_bytes
            .get_or_create(&labels)
            .set_total(device.pooled_bytes.saturating_add(device.used_bytes));
        metrics
            .pool_consumed_bytes
            .get_or_create(&labels)
            .set_total(device.used_bytes);
        let last_chunk = &metrics.link_last_chunk_timestamp;
        match chunks_seen.insert(device.device.clone(), device.appended_chunks) {
            Some(before) if device.appended_chunks > before => {
                last_chunk.get_or_create(&labels).set(now_unix);
            }
            Some(_) => {}
            // A restarted Health actor keeps what the metric already shows.
            None if device.appended_chunks > 0 && last_chunk.get(&labels).is_none() => {
                if let Some(ms) = newest_signed_ms(device) {
                    last_chunk
                        .get_or_create(&labels)
                        .set((ms as f64 / 1000.0).min(now_unix));
                }
            }
            None => {}
        }
    }
    for lease in leases {
        let labels = DeviceLabels {
            device: lease.device.clone(),
        };
        metrics.pool_appended_bytes.get_or_create_owned(&labels);
        metrics.pool_consumed_bytes.get_or_create_owned(&labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(device: &str, pooled: u64, used: u64, chunks: u64) -> DevicePool {
        DevicePool {
            device: device.into(),
            pooled_bytes: pooled,
            used_bytes: used,
            appended_chunks: chunks,
            quarantined_chunks: 0,
            first_seq: (chunks > 0).then_some(0),
            last_seq: chunks.checked_sub(1),
        }
    }

    fn lease(device: &str) -> Lease {
        Lease {
            device: device.into(),
            owner: 1,
            epoch: 1,
            expires_at_ms: 0,
        }
    }

    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    const APPENDED: &str = "geiger_pool_appended_bytes_total{device=\"dev_a\"}";
    const CONSUMED: &str = "geiger_pool_consumed_bytes_total{device=\"dev_a\"}";
    const LAST_CHUNK: &str = "geiger_link_last_chunk_timestamp_seconds{device=\"dev_a\"}";

    #[test]
    fn the_pool_counters_are_the_ledgers_appended_and_used_bytes_per_device() {
        let m = NodeMetrics::new(1);
        let mut seen = BTreeMap::new();
        // 3 chunks of 4 KiB appended, 5000 bytes of them drawn.
        let devices = [pool("dev_a", 3 * 4096 - 5000, 5000, 3)];
        export_device_totals(&m, &devices, &[], &mut seen, 100.0, |_| None);
        let text = m.render();
        assert!(
            text.contains("# TYPE geiger_pool_appended_bytes counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE geiger_pool_consumed_bytes counter"),
            "{text}"
        );
        assert_eq!(sample(&text, APPENDED), Some(12288.0), "{text}");
        assert_eq!(sample(&text, CONSUMED), Some(5000.0), "{text}");

        // A draw moves bytes from pooled to used: appended stays, consumed grows.
        let devices = [pool("dev_a", 3 * 4096 - 9000, 9000, 3)];
        export_device_totals(&m, &devices, &[], &mut seen, 101.0, |_| None);
        let text = m.render();
        assert_eq!(sample(&text, APPENDED), Some(12288.0), "{text}");
        assert_eq!(sample(&text, CONSUMED), Some(9000.0), "{text}");
    }

    #[test]
    fn a_leased_device_without_chunks_yet_gets_its_pool_counters_at_zero_and_no_timestamp() {
        let m = NodeMetrics::new(1);
        let mut seen = BTreeMap::new();
        export_device_totals(&m, &[], &[lease("dev_a")], &mut seen, 100.0, |_| Some(1));
        let text = m.render();
        assert_eq!(sample(&text, APPENDED), Some(0.0), "{text}");
        assert_eq!(sample(&text, CONSUMED), Some(0.0), "{text}");
        assert_eq!(sample(&text, LAST_CHUNK), None, "{text}");
    }

    #[test]
    fn the_last_chunk_timestamp_moves_to_now_when_the_ledger_gains_a_chunk_from_the_device() {
        let m = NodeMetrics::new(1);
        let mut seen = BTreeMap::new();
        let newest_signed = |_: &DevicePool| Some(50_500);
        export_device_totals(
            &m,
            &[pool("dev_a", 4096, 0, 1)],
            &[],
            &mut seen,
            100.0,
            newest_signed,
        );
        // First sight: the newest signed chunk's time, in seconds.
        assert_eq!(sample(&m.render(), LAST_CHUNK), Some(50.5));
        // Nothing new: unchanged.
        export_device_totals(
            &m,
            &[pool("dev_a", 4096, 0, 1)],
            &[],
            &mut seen,
            110.0,
            newest_signed,
        );
        assert_eq!(sample(&m.render(), LAST_CHUNK), Some(50.5));
        // A chunk more (even one a draw used at once): now.
        export_device_totals(
            &m,
            &[pool("dev_a", 4096, 4096, 2)],
            &[],
            &mut seen,
            120.0,
            newest_signed,
        );
        assert_eq!(sample(&m.render(), LAST_CHUNK), Some(120.0));
        // Draws alone do not move it.
        export_device_totals(
            &m,
            &[pool("dev_a", 0, 8192, 2)],
            &[],
            &mut seen,
            130.0,
            newest_signed,
        );
        assert_eq!(sample(&m.render(), LAST_CHUNK), Some(120.0));
    }

    #[test]
    fn the_last_chunk_timestamp_is_absent_rather_than_guessed_when_no_signed_chunk_is_found() {
        let m = NodeMetrics::new(1);
        let mut seen = BTreeMap::new();
        export_device_totals(
            &m,
            &[pool("dev_a", 4096, 0, 1)],
            &[],
            &mut seen,
            100.0,
            |_| None,
        );
        assert_eq!(sample(&m.render(), LAST_CHUNK), None);
        export_device_totals(
            &m,
            &[pool("dev_a", 8192, 0, 2)],
            &[],
            &mut seen,
            105.0,
            |_| None,
        );
        assert_eq!(sample(&m.render(), LAST_CHUNK), Some(105.0));
    }

    #[test]
    fn a_device_clock_ahead_of_this_node_never_puts_the_last_chunk_in_the_future() {
        let m = NodeMetrics::new(1);
        let mut seen = BTreeMap::new();
        export_device_totals(
            &m,
            &[pool("dev_a", 4096, 0, 1)],
            &[],
            &mut seen,
            100.0,
            |_| Some(900_000),
        );
        assert_eq!(sample(&m.render(), LAST_CHUNK), Some(100.0));
    }

    #[test]
    fn a_restarted_health_actor_keeps_the_last_chunk_timestamp_it_already_exported() {
        let m = NodeMetrics::new(1);
        let mut seen = BTreeMap::new();
        export_device_totals(
            &m,
            &[pool("dev_a", 4096, 0, 1)],
            &[],
            &mut seen,
            100.0,
            |_| None,
        );
        export_device_totals(
            &m,
            &[pool("dev_a", 8192, 0, 2)],
            &[],
            &mut seen,
            120.0,
            |_| None,
        );
        // A new actor (empty memory), same metrics: no step back to the seed.
        let mut fresh = BTreeMap::new();
        export_device_totals(
            &m,
            &[pool("dev_a", 8192, 0, 2)],
            &[],
            &mut fresh,
            125.0,
            |_| Some(60_000),
        );
        assert_eq!(sample(&m.render(), LAST_CHUNK), Some(120.0));
    }
}
