//! The timeline picture: successful draws per second, failures per second
//! and p99 latency per second, one panel each, with every fault shaded from
//! its start to its heal and labelled, so a run can be seen at a glance.
//!
//! Text is rendered in pure Rust (plotters' `ab_glyph` feature) from a TTF
//! file, DejaVu Sans from the Debian package `fonts-dejavu-core` by default:
//! no freetype or fontconfig C libraries are built or linked.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::report::{Bucket, FaultRecovery};

pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error(
        "font {path}: {reason} (install the Debian package fonts-dejavu-core, or pass --font)"
    )]
    Font { path: String, reason: String },
    #[error("drawing the timeline: {0}")]
    Draw(String),
}

fn draw_err(e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// Registers the font once per process under plotters' `sans-serif`.
fn register_font(path: &Path) -> Result<(), PlotError> {
    static DONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = DONE.get_or_init(|| {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        // plotters keeps fonts for the process's lifetime.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "not a TrueType/OpenType font".to_string())
    });
    result.clone().map_err(|reason| PlotError::Font {
        path: path.display().to_string(),
        reason,
    })
}

/// A panel: caption, unit, the value per second, and its colour.
type Panel = (
    &'static str,
    &'static str,
    Box<dyn Fn(&Bucket) -> f64>,
    RGBColor,
);

/// Writes the timeline PNG.
pub fn timeline(
    out: &Path,
    font: &Path,
    title: &str,
    buckets: &[Bucket],
    faults: &[FaultRecovery],
) -> Result<(), PlotError> {
    register_font(font)?;
    let root = BitMapBackend::new(out, (1600, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let (header, body) = root.split_vertically(50);
    header
        .draw(&Text::new(
            title.to_string(),
            (20, 15),
            ("sans-serif", 22).into_font(),
        ))
        .map_err(draw_err)?;
    let panels = body.split_evenly((3, 1));
    let secs = buckets.len().max(1) as f64;

    let series: [Panel; 3] = [
        (
            "successful draws / s",
            "draws/s",
            Box::new(|b: &Bucket| b.succeeded as f64),
            RGBColor(30, 110, 200),
        ),
        (
            "p99 latency (ms, from due time)",
            "ms",
            Box::new(|b: &Bucket| b.p99_ms),
            RGBColor(120, 60, 170),
        ),
        (
            "failed requests / s",
            "failures/s",
            Box::new(|b: &Bucket| b.failed as f64),
            RGBColor(210, 50, 40),
        ),
    ];
    for (panel, (caption, unit, value, color)) in panels.iter().zip(series.iter()) {
        let max = buckets.iter().map(value).fold(0.0f64, f64::max).max(1.0) * 1.15;
        let mut chart = ChartBuilder::on(panel)
            .caption(*caption, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..secs, 0.0..max)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the workload started")
            .y_desc(*unit)
            .label_style(("sans-serif", 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(draw_err)?;
        // Faults first, so the data draws over the shading.
        for (i, f) in faults.iter().enumerate() {
            let x0 = f.start_ms / 1000.0;
            let x1 = (f.healed_ms / 1000.0).max(x0 + 0.2);
            let shade = if i % 2 == 0 {
                RGBColor(255, 160, 120).mix(0.35)
            } else {
                RGBColor(255, 210, 90).mix(0.35)
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x1, max)],
                    shade.filled(),
                )))
                .map_err(draw_err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    f.kind.replace('_', " "),
                    (x0, max * if i % 2 == 0 { 0.97 } else { 0.86 }),
                    ("sans-serif", 12).into_font(),
                )))
                .map_err(draw_err)?;
        }
        chart
            .draw_series(LineSeries::new(
                buckets.iter().map(|b| (b.second as f64 + 0.5, value(b))),
                color.stroke_width(2),
            ))
            .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_is_drawn_as_a_png_when_the_font_is_installed() {
        let font = Path::new(DEFAULT_FONT);
        if !font.exists() {
            eprintln!("skipped: {DEFAULT_FONT} missing (apt-get install fonts-dejavu-core)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("t.png");
        let buckets: Vec<Bucket> = (0..30)
            .map(|s| Bucket {
                second: s,
                succeeded: if (10..14).contains(&s) { 0 } else { 20 },
                failed: if (10..14).contains(&s) { 5 } else { 0 },
                p99_ms: 40.0,
            })
            .collect();
        let faults = vec![FaultRecovery {
            index: 0,
            kind: "kill_leader".into(),
            target: "node 1".into(),
            start_ms: 10_000.0,
            healed_ms: 14_000.0,
            held_ms: 4_000.0,
            time_to_first_success_ms: Some(4_200.0),
            back_to_rate_ms: Some(300.0),
            outage_ms: 4_100.0,
            failed_requests: 20,
            baseline_per_s: 20.0,
            notes: vec![],
            unmet: vec![],
        }];
        timeline(&out, font, "test", &buckets, &faults).unwrap();
        let png = std::fs::read(&out).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }
}
