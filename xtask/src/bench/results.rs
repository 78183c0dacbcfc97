//! The results page, `bench/RESULTS.md`: one section a benchmark, replaced by its last run.

use std::fmt::Write as _;

use anyhow::{Context, Result};

use super::Measurement;
use crate::{build, process};

/// The `q` quantile (0..=1) of `sorted`, by the nearest-rank method.
pub(super) fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

/// The median of `values` (None when empty).
pub(super) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 0.5)
}

/// "median (min–max)".
pub(super) fn spread(values: &[f64], digits: usize) -> String {
    let Some(mid) = median(values) else {
        return "-".into();
    };
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{mid:.digits$} ({min:.digits$}–{max:.digits$})")
}

/// One line a measurement, ours against the peer's: `rows` holds ours first, then the
/// peer's in the same order; each line names ours without `prefix`.
pub(super) fn ratio_lines(rows: &[Measurement], prefix: &str, peer: &str) -> String {
    let half = rows.len() / 2;
    let mut lines = String::new();
    for (ours, theirs) in rows[..half].iter().zip(&rows[half..]) {
        if theirs.rate > 0.0 {
            lines.push_str(&format!(
                "\n- {}: **{:.2}x** {peer}'s",
                ours.server.trim_start_matches(prefix),
                ours.rate / theirs.rate
            ));
        }
    }
    lines
}

/// Replaces this benchmark's section of `bench/RESULTS.md` with the servers' table.
pub(super) fn record(title: &str, rows: &[Measurement], notes: &str) -> Result<()> {
    let mut section = String::new();
    section.push_str("| server | per second | p99 ms | avg ms | peak RSS MiB | unanswered |\n");
    section.push_str("|---|---|---|---|---|---|\n");
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    for m in rows {
        let rate = if m.rate < 100.0 {
            format!("{:.2}", m.rate)
        } else {
            format!("{:.0}", m.rate)
        };
        let _ = writeln!(
            section,
            "| {} | {rate} | {} | {} | {} | {} |",
            m.server,
            fmt(m.p99_ms),
            fmt(m.avg_ms),
            m.peak_rss_kib
                .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            m.lost
        );
    }
    if let [ours, peer] = rows {
        if peer.rate > 0.0 {
            let _ = writeln!(
                section,
                "\nRatio gateway-agent / {}: **{:.2}x** the rate.",
                peer.server,
                ours.rate / peer.rate
            );
        }
    }
    let _ = writeln!(section, "\n{notes}");
    record_table(title, &section)
}

/// Replaces this benchmark's section of `bench/RESULTS.md` with `body` (a table and its
/// notes) under the date line.
pub(super) fn record_table(title: &str, body: &str) -> Result<()> {
    let path = build::workspace_root().join("bench").join("RESULTS.md");
    let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmarks\n\nProduced by `cargo xtask bench …`; each section is replaced by its last run.\n"
            .to_string()
    });
    let mut section = format!("\n## {title}\n\n");
    let _ = writeln!(
        section,
        "Run on {} ({} cores).\n",
        date(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    section.push_str(body);
    let _ = writeln!(
        section,
        "\nA stopped agent leaves its programs attached (fail closed): after each agent run the \
         bench runs `gateway-agent dataplane detach`, so the peer serves an unfiltered inside."
    );
    // Replace the old section of the same title, keep the others.
    let marker = format!("\n## {title}\n");
    let updated = match existing.find(&marker) {
        Some(start) => {
            let rest = &existing[start + marker.len()..];
            let end = rest
                .find("\n## ")
                .map_or(existing.len(), |i| start + marker.len() + i);
            format!("{}{}{}", &existing[..start], section, &existing[end..])
        }
        None => format!(
            "{}{}",
            existing.trim_end_matches('\n').to_string() + "\n",
            section
        ),
    };
    std::fs::write(&path, updated).with_context(|| format!("writing {}", path.display()))?;
    println!("{section}");
    eprintln!("xtask: results in {}", path.display());
    Ok(())
}

fn date() -> String {
    process::output("date", ["-u", "+%Y-%m-%d %H:%M UTC"])
        .map(|d| d.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_pair_ours_with_the_peers_in_order() {
        let row = |server: &str, rate| Measurement {
            server: server.into(),
            rate,
            ..Measurement::default()
        };
        let rows = [
            row("gateway-agent a", 30.0),
            row("gateway-agent b", 5.0),
            row("peer a", 20.0),
            row("peer b", 0.0),
        ];
        // A peer rate of zero gives no ratio.
        assert_eq!(
            ratio_lines(&rows, "gateway-agent ", "Peer"),
            "\n- a: **1.50x** Peer's"
        );
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[]), None);
        assert_eq!(spread(&[300.0, 100.0, 200.0], 0), "200 (100–300)");
        assert_eq!(spread(&[], 0), "-");
    }

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&[], 0.99), None);
    }
}
