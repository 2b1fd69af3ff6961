//! `bench-report`: turns the results of `bench/topology.sh` (its JSON file) into the
//! latency-vs-rate chart (PNG) and, with `--docs`, the generated blocks of
//! docs/benchmarks.md (the run's tables, and the targets table with pass/miss).
//!
//!   bench-report --input bench/results/topology.json --png docs/topology-latency.png \
//!       [--docs docs/benchmarks.md] [--font PATH.ttf]

mod chart;
mod markdown;
mod model;
mod targets;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Chart and tables from bench/topology.sh's results")]
struct Args {
    /// The results file bench/topology.sh wrote.
    #[arg(long, value_name = "PATH")]
    input: PathBuf,
    /// Where to write the chart (PNG).
    #[arg(long, value_name = "PATH")]
    png: PathBuf,
    /// Replace the generated blocks of this Markdown file (appended when absent).
    #[arg(long, value_name = "PATH")]
    docs: Option<PathBuf>,
    /// The TrueType font for the chart's text [default: DejaVu Sans or Liberation
    /// Sans where the system keeps them].
    #[arg(long, value_name = "PATH")]
    font: Option<PathBuf>,
}

/// `to` relative to the directory of `from` when it is below it (for the image link).
fn relative(from: &Path, to: &Path) -> String {
    let base = from.parent().unwrap_or(Path::new(""));
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (base, to_abs) = (abs(base), abs(to));
    to_abs
        .strip_prefix(&base)
        .map_or_else(|_| to.display().to_string(), |p| p.display().to_string())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let results: model::Results = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a bench/topology.sh results file",
            args.input.display()
        )
    })?;

    chart::load_font(args.font.as_deref())?;
    chart::draw(&results, &args.png)?;

    if let Some(docs) = &args.docs {
        let doc = std::fs::read_to_string(docs)
            .with_context(|| format!("cannot read {}", docs.display()))?;
        let image = relative(docs, &args.png);
        let doc = markdown::replace_block(
            &doc,
            "results",
            &markdown::results_block(&results, Some(&image)),
        )
        .map_err(anyhow::Error::msg)?;
        let doc = markdown::replace_block(&doc, "targets", &markdown::targets_block(&results))
            .map_err(anyhow::Error::msg)?;
        std::fs::write(docs, doc).with_context(|| format!("cannot write {}", docs.display()))?;
    }
    for t in targets::targets(&results) {
        println!(
            "{:<13} {}: {}",
            t.verdict.label().trim_matches('*'),
            t.name,
            t.measured
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_links_are_relative_to_the_document() {
        assert_eq!(
            relative(
                Path::new("docs/benchmarks.md"),
                Path::new("docs/topology-latency.png")
            ),
            "topology-latency.png"
        );
        assert_eq!(
            relative(
                Path::new("docs/benchmarks.md"),
                Path::new("/elsewhere/x.png")
            ),
            "/elsewhere/x.png"
        );
    }
}
