//! `--plot FILE.svg`: the medians as grouped bars, one group per op, one bar per
//! method, on a log scale (a full copy and a dirty-page copy differ by 100×).
//!
//! plotters' SVG backend writes text as `<text>` elements that the viewer renders,
//! so no font files are read (the crate is built without its `ttf` feature).

use super::report::{ms, Row};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::error::Error;
use std::path::Path;

/// Draws `rows` (ops in `ops` order, methods in first-seen order) to `path`.
pub fn svg(path: &Path, title: &str, ops: &[&str], rows: &[Row]) -> Result<(), Box<dyn Error>> {
    let mut methods: Vec<&str> = Vec::new();
    for r in rows {
        if !methods.contains(&r.method.as_str()) {
            methods.push(&r.method);
        }
    }
    let positive = rows
        .iter()
        .map(|r| r.summary.median_ms)
        .filter(|v| *v > 0.0);
    let lo = positive.clone().fold(f64::INFINITY, f64::min);
    let hi = positive.fold(0.0, f64::max);
    if methods.is_empty() || !lo.is_finite() {
        return Err("nothing to plot".into());
    }
    let y_lo = 10f64.powf((lo / 2.0).log10().floor());
    let y_hi = 10f64.powf((hi * 2.0).log10().ceil());

    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1200, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..ops.len() as f64, (y_lo..y_hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc("median ms (log scale)")
        .y_label_formatter(&|v| ms(*v))
        .label_style(("sans-serif", 14))
        .draw()?;

    let slot = 0.84 / methods.len() as f64;
    for (mi, &method) in methods.iter().enumerate() {
        let color = Palette99::pick(mi).to_rgba();
        let bars: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r.method == method && r.summary.median_ms > 0.0)
            .filter_map(|r| {
                let oi = ops.iter().position(|o| *o == r.op)?;
                Some((oi as f64 + 0.08 + mi as f64 * slot, r.summary.median_ms))
            })
            .collect();
        chart
            .draw_series(
                bars.iter().map(|&(x, v)| {
                    Rectangle::new([(x, y_lo), (x + slot * 0.9, v)], color.filled())
                }),
            )?
            .label(method)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], color.filled()));
        let value_style = ("sans-serif", 10)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        for &(x, v) in &bars {
            let (px, py) = chart.backend_coord(&(x + slot * 0.45, v));
            root.draw(&Text::new(ms(v), (px, py - 2), value_style.clone()))?;
        }
    }
    let op_style = ("sans-serif", 16)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (oi, op) in ops.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(oi as f64 + 0.5, y_lo));
        root.draw(&Text::new(op.to_string(), (px, py + 8), op_style.clone()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}
