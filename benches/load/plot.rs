//! `chart.svg`: throughput and p99 latency per scenario, drawn with plotters.

use std::path::Path;

use crate::outcome::Outcome;
use crate::{Res, Settings};

/// Two bar charts, one above the other: throughput and p99 latency per scenario (log scales).
pub(crate) fn chart(path: &Path, outcomes: &[Outcome], date: &str, s: &Settings) -> Res<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let ran: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.skipped.is_none() && o.requests > 0)
        .collect();
    let root = SVGBackend::new(path, (1100, 820)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "bp-auth load, {date}: {} cores, {} connections, {} s per scenario",
        s.cores,
        s.connections,
        s.duration.as_secs_f64()
    );
    let root = root.titled(&title, ("sans-serif", 20))?;
    if ran.is_empty() {
        root.present()?;
        return Ok(());
    }
    let (top, bottom) = root.split_vertically(400);
    let names: Vec<String> = ran.iter().map(|o| o.kind.name().to_string()).collect();
    let panels = [
        (
            &top,
            "throughput (requests/s; argon2-raw: hashes/s), log scale",
            ran.iter().map(|o| o.rate()).collect::<Vec<f64>>(),
            RGBColor(0x2b, 0x6c, 0xb0),
        ),
        (
            &bottom,
            "p99 latency (ms), log scale",
            ran.iter().map(|o| o.ms(0.99)).collect::<Vec<f64>>(),
            RGBColor(0xc0, 0x55, 0x21),
        ),
    ];
    for (area, caption, values, color) in panels {
        let max = values.iter().cloned().fold(0.0, f64::max).max(1e-3);
        let min = values
            .iter()
            .cloned()
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min)
            .min(max);
        let lo = 10f64.powf((min.log10() - 0.5).floor());
        let hi = 10f64.powf((max.log10() + 0.3).ceil());
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            // An integer range is inclusive as a segmented axis: one segment per scenario.
            .build_cartesian_2d(
                (0..ran.len().saturating_sub(1)).into_segmented(),
                (lo..hi).log_scale(),
            )?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(ran.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|v| {
                if *v >= 1.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v}")
                }
            })
            .label_style(("sans-serif", 12))
            .draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, v)| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), lo),
                    (SegmentValue::Exact(i + 1), v.max(lo)),
                ],
                color.filled(),
            );
            bar.set_margin(0, 0, 8, 8);
            bar
        }))?;
        chart.draw_series(values.iter().enumerate().map(|(i, v)| {
            let label = if *v >= 100.0 {
                format!("{v:.0}")
            } else if *v >= 10.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.2}")
            };
            Text::new(
                label,
                (SegmentValue::CenterOf(i), v.max(lo) * 1.04),
                ("sans-serif", 12)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}
