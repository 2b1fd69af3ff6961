//! The latency-vs-rate chart: one panel per mix, offered rate (open loop) across,
//! latency up (both log scales), one colour per topology, p50 solid and p99 dashed;
//! a cross marks a run that did not keep up with its rate.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use plotters::coord::combinators::BindKeyPoints as _;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::model::{Results, thousands};
use crate::targets::mix_label;

/// Where a sans-serif TTF usually is (Debian/Ubuntu, Arch, Fedora, macOS). plotters
/// draws text with ab_glyph from a font read at run time: nothing is downloaded.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];
const FONT: &str = "sans-serif";

/// One colour per topology: grey for the baseline, blue and green for the
/// monoliths, red for the split; others from the rest of the list.
fn colour(id: &str, index: usize) -> RGBColor {
    const OTHERS: [RGBColor; 3] = [
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(140, 86, 75),
    ];
    match id {
        "baseline" => RGBColor(110, 110, 110),
        "monolith" => RGBColor(31, 119, 180),
        "monolith-pg" => RGBColor(44, 160, 44),
        "split" => RGBColor(214, 39, 40),
        _ => OTHERS[index % OTHERS.len()],
    }
}

/// Registers the font every text of the chart uses: `explicit`, or the first of
/// [`FONT_PATHS`] that exists.
pub(crate) fn load_font(explicit: Option<&Path>) -> anyhow::Result<()> {
    let path = explicit
        .map(Path::to_path_buf)
        .or_else(|| FONT_PATHS.iter().map(PathBuf::from).find(|p| p.exists()))
        .context("no TrueType font found; name one with --font PATH (e.g. DejaVuSans.ttf)")?;
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    // plotters keeps the font for the process's life: leaking it is what it asks.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FONT, FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a font plotters can read", path.display()))
}

/// One point: offered rate, p50 and p99 in ms, kept up.
type Point = (f64, f64, f64, bool);

fn points(results: &Results, topology: &str, mix: &str) -> Vec<Point> {
    results
        .runs_of(topology, mix)
        .into_iter()
        .filter(|r| r.mode == "open")
        .filter_map(|r| {
            #[allow(clippy::cast_precision_loss)]
            let ms = |us: u64| (us.max(1) as f64) / 1e3;
            let l = r.latency();
            Some((r.rate?, ms(l.p50), ms(l.p99), r.kept_up()))
        })
        .collect()
}

/// Axis ticks at 1, 2 and 5 times the powers of ten between `lo` and `hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return out;
    }
    let mut decade = 10_f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let t = decade * m;
            if t >= lo && t <= hi {
                out.push(t);
            }
        }
        decade *= 10.0;
    }
    out
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the chart: {e}")
}

pub(crate) fn draw(results: &Results, path: &Path) -> anyhow::Result<()> {
    let mixes: Vec<String> = results
        .mixes()
        .into_iter()
        .filter(|mix| {
            results
                .topologies
                .iter()
                .any(|t| !points(results, &t.id, mix).is_empty())
        })
        .collect();
    if mixes.is_empty() {
        return Err(anyhow!("no open-loop runs to chart"));
    }
    let panels_n = u32::try_from(mixes.len()).unwrap_or(1);
    let root = BitMapBackend::new(path, (520 * panels_n, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(
            &format!(
                "Latency vs offered rate (open loop), {} cores, {}",
                results.machine.cores, results.started_at
            ),
            (FONT, 22),
        )
        .map_err(err)?;
    for (panel, mix) in root.split_evenly((1, mixes.len())).iter().zip(&mixes) {
        let all: Vec<Point> = results
            .topologies
            .iter()
            .flat_map(|t| points(results, &t.id, mix))
            .collect();
        let (x_min, x_max) = all.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.0), hi.max(p.0))
        });
        let (y_min, y_max) = all.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.2))
        });
        let mut chart = ChartBuilder::on(panel)
            .caption(mix_label(mix), (FONT, 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (x_min / 2.0..x_max * 2.0)
                    .log_scale()
                    .with_key_points(ticks(x_min / 2.0, x_max * 2.0)),
                (y_min / 2.0..y_max * 2.0)
                    .log_scale()
                    .with_key_points(ticks(y_min / 2.0, y_max * 2.0)),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("offered rate, requests/s")
            .y_desc("latency, ms")
            .x_label_formatter(&|x| thousands(*x))
            .y_label_formatter(&|y| {
                if *y >= 1.0 {
                    thousands(*y)
                } else {
                    format!("{y}")
                }
            })
            .light_line_style(TRANSPARENT)
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .draw()
            .map_err(err)?;
        for (i, topology) in results.topologies.iter().enumerate() {
            let pts = points(results, &topology.id, mix);
            if pts.is_empty() {
                continue;
            }
            let colour = colour(&topology.id, i);
            chart
                .draw_series(LineSeries::new(
                    pts.iter().map(|p| (p.0, p.1)),
                    colour.stroke_width(2),
                ))
                .map_err(err)?
                .label(format!("{} p50", topology.label))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(DashedLineSeries::new(
                    pts.iter().map(|p| (p.0, p.2)),
                    6,
                    4,
                    colour.stroke_width(1),
                ))
                .map_err(err)?
                .label(format!("{} p99", topology.label))
                .legend(move |(x, y)| {
                    DashedPathElement::new([(x, y), (x + 20, y)], 4, 3, colour.stroke_width(1))
                });
            let kept = pts.iter().filter(|p| p.3);
            chart
                .draw_series(kept.flat_map(|p| {
                    [
                        Circle::new((p.0, p.1), 4, colour.filled()),
                        Circle::new((p.0, p.2), 3, colour.stroke_width(1)),
                    ]
                }))
                .map_err(err)?;
            let missed = pts.iter().filter(|p| !p.3);
            chart
                .draw_series(missed.flat_map(|p| {
                    [
                        Cross::new((p.0, p.1), 6, colour.stroke_width(2)),
                        Cross::new((p.0, p.2), 6, colour.stroke_width(2)),
                    ]
                }))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font((FONT, 12))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::run;
    use crate::targets::tests::results;
    use crate::targets::{MONOLITH, SPLIT};

    #[test]
    fn ticks_are_one_two_five() {
        assert_eq!(ticks(30.0, 1200.0), vec![50.0, 100.0, 200.0, 500.0, 1000.0]);
        assert_eq!(ticks(0.4, 2.5), vec![0.5, 1.0, 2.0]);
        assert!(ticks(0.0, 1.0).is_empty());
    }

    #[test]
    fn draws_a_png_when_a_font_is_there() {
        if load_font(None).is_err() {
            eprintln!("skipped: no TrueType font in the usual places");
            return;
        }
        let mut r = results(vec![
            run(MONOLITH, "shop", ("open", 100.0), 1_000, 500, 0.1),
            run(MONOLITH, "shop", ("open", 1000.0), 10_000, 600, 0.5),
            run(SPLIT, "shop", ("open", 100.0), 1_000, 1_500, 0.3),
            run(SPLIT, "shop", ("open", 1000.0), 5_000, 90_000, 1.0),
        ]);
        r.topologies = serde_json::from_value(serde_json::json!([
            {"id": "monolith", "label": "monolith", "storage": "SQLite", "processes": 1, "audit": "-"},
            {"id": "split", "label": "split", "storage": "PostgreSQL", "processes": 8, "audit": "-"}
        ]))
        .unwrap();
        let dir = std::env::temp_dir().join(format!("bench-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let png = dir.join("chart.png");
        draw(&r, &png).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
