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

/// `scale.svg`: the cost curves: rate and p99 of each scenario against the data dir's size
/// (log scales), and the start-up time against the data dir's bytes.
pub(crate) fn scale_chart(path: &Path, points: &[crate::scale::Point], date: &str) -> Res<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1100, 1100)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!("bp-auth cost curves, {date}: the real binary on data dirs of each size"),
        ("sans-serif", 20),
    )?;
    if points.is_empty() {
        root.present()?;
        return Ok(());
    }
    let panels = root.split_evenly((3, 1));
    let users: Vec<f64> = points.iter().map(|p| p.users as f64).collect();
    let (umin, umax) = (users[0] * 0.7, users[users.len() - 1] * 1.4);
    let colors = [
        RGBColor(0x55, 0x55, 0x55),
        RGBColor(0x2b, 0x6c, 0xb0),
        RGBColor(0x6b, 0xae, 0xd6),
        RGBColor(0xc0, 0x55, 0x21),
        RGBColor(0xe6, 0x9f, 0x00),
        RGBColor(0x2c, 0xa0, 0x2c),
    ];
    type Metric = fn(&Outcome) -> f64;
    let metrics: [(&str, Metric); 2] = [
        ("requests/s by users (log scales)", |o| o.rate()),
        ("p99 latency (ms) by users (log scales)", |o| o.ms(0.99)),
    ];
    for (panel, (caption, f)) in panels.iter().zip(metrics) {
        let values: Vec<f64> = points
            .iter()
            .flat_map(|p| p.outcomes.iter().map(f))
            .filter(|v| *v > 0.0)
            .collect();
        let lo = values
            .iter()
            .cloned()
            .fold(f64::INFINITY, f64::min)
            .max(1e-3)
            * 0.5;
        let hi = values.iter().cloned().fold(0.0, f64::max).max(lo * 2.0) * 2.0;
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(70)
            .build_cartesian_2d((umin..umax).log_scale(), (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .label_style(("sans-serif", 12))
            .draw()?;
        for (i, (_, name)) in crate::scale::SCENARIOS.iter().enumerate() {
            let color = colors[i % colors.len()];
            let series: Vec<(f64, f64)> = points
                .iter()
                .map(|p| (p.users as f64, f(&p.outcomes[i]).max(lo)))
                .collect();
            chart
                .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart.draw_series(
                series
                    .into_iter()
                    .map(|xy| Circle::new(xy, 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()?;
    }
    let mib: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.db_bytes as f64 / 1048576.0, p.startup.as_secs_f64() * 1e3))
        .collect();
    let xmax = mib.iter().map(|m| m.0).fold(1.0, f64::max) * 1.1;
    let ymax = mib.iter().map(|m| m.1).fold(100.0, f64::max).max(2000.0) * 1.1;
    let mut chart = ChartBuilder::on(&panels[2])
        .caption(
            "start to first answered /me (ms) by data dir size (MiB); the target is 2,000 ms",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
    chart
        .configure_mesh()
        .label_style(("sans-serif", 12))
        .draw()?;
    let blue = RGBColor(0x2b, 0x6c, 0xb0);
    chart.draw_series(LineSeries::new(mib.clone(), blue.stroke_width(2)))?;
    chart.draw_series(mib.into_iter().map(|xy| Circle::new(xy, 4, blue.filled())))?;
    chart.draw_series(LineSeries::new(
        vec![(0.0, 2000.0), (xmax, 2000.0)],
        RED.stroke_width(1),
    ))?;
    root.present()?;
    Ok(())
}
