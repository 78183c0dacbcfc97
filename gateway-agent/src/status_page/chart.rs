//! Drops by reason over the last hour: a ring of the dataplane's counters, sampled by the
//! service, and the small inline SVG bar chart the page draws from it.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::dataplane::inspect::DropCount;

/// The chart's span.
pub const WINDOW: Duration = Duration::from_secs(3600);
/// How often the service samples the counters.
pub const EVERY: Duration = Duration::from_secs(5);

/// One reading of the cumulative counters.
#[derive(Debug, Clone)]
struct Sample {
    at_unix: u64,
    totals: Vec<DropCount>,
}

/// The samples of the last [`WINDOW`], oldest first.
#[derive(Debug, Default)]
pub struct DropHistory {
    samples: VecDeque<Sample>,
}

/// The drops between two samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interval {
    pub start_unix: u64,
    pub end_unix: u64,
    pub drops: u64,
    /// The reasons with drops in it, most first.
    pub by_reason: Vec<(String, u64)>,
}

impl DropHistory {
    /// Adds a reading taken at `at_unix`, forgetting those older than the window.
    pub fn record(&mut self, at_unix: u64, totals: Vec<DropCount>) {
        self.samples.push_back(Sample { at_unix, totals });
        let horizon = at_unix.saturating_sub(WINDOW.as_secs());
        // Keep one sample at or before the horizon: the first interval starts there.
        while self.samples.len() > 2 && self.samples[1].at_unix <= horizon {
            self.samples.pop_front();
        }
    }

    /// The drops between consecutive samples. A counter that went down (the maps were
    /// re-created by `dataplane detach` and a new start) counts from zero.
    pub fn intervals(&self) -> Vec<Interval> {
        let pairs = self.samples.iter().zip(self.samples.iter().skip(1));
        pairs
            .map(|(before, after)| {
                let mut by_reason: Vec<(String, u64)> = after
                    .totals
                    .iter()
                    .map(|now| {
                        let old = before
                            .totals
                            .iter()
                            .find(|then| then.reason == now.reason)
                            .map_or(0, |then| then.count);
                        let delta = if now.count >= old {
                            now.count - old
                        } else {
                            now.count
                        };
                        (now.reason.to_owned(), delta)
                    })
                    .filter(|(_, delta)| *delta > 0)
                    .collect();
                by_reason.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                Interval {
                    start_unix: before.at_unix,
                    end_unix: after.at_unix,
                    drops: by_reason.iter().map(|(_, n)| n).sum(),
                    by_reason,
                }
            })
            .collect()
    }
}

const WIDTH: u64 = 600;
const HEIGHT: u64 = 80;

/// The chart: one bar per interval with drops, placed by time over the last hour before
/// `now_unix`, its height relative to the largest. Each bar carries `data-drops` and a
/// `<title>` with its reasons; the `<svg>` carries `data-total` and `data-bars`.
pub fn svg(intervals: &[Interval], now_unix: u64) -> String {
    let window = WINDOW.as_secs();
    let start = now_unix.saturating_sub(window);
    let shown: Vec<&Interval> = intervals
        .iter()
        .filter(|i| i.drops > 0 && i.end_unix > start)
        .collect();
    let max = shown.iter().map(|i| i.drops).max().unwrap_or(0);
    let total: u64 = shown.iter().map(|i| i.drops).sum();
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg id=\"drops-chart\" role=\"img\" aria-label=\"drops per {} s over the last hour\" \
         viewBox=\"0 0 {WIDTH} {}\" width=\"{WIDTH}\" height=\"{}\" data-total=\"{total}\" \
         data-bars=\"{}\">",
        EVERY.as_secs(),
        HEIGHT + 14,
        HEIGHT + 14,
        shown.len()
    );
    let _ = write!(
        out,
        "<line x1=\"0\" y1=\"{HEIGHT}\" x2=\"{WIDTH}\" y2=\"{HEIGHT}\" stroke=\"#888\"/>"
    );
    for interval in &shown {
        let x = interval.start_unix.max(start).saturating_sub(start) * WIDTH / window;
        let end = interval.end_unix.min(now_unix).saturating_sub(start) * WIDTH / window;
        let width = end.saturating_sub(x).max(2);
        let height = (interval.drops * HEIGHT).div_ceil(max.max(1)).max(1);
        let reasons = interval
            .by_reason
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            out,
            "<rect class=\"bar\" data-drops=\"{}\" x=\"{x}\" y=\"{}\" width=\"{width}\" \
             height=\"{height}\" fill=\"#c0392b\"><title>{} drops: {}</title></rect>",
            interval.drops,
            HEIGHT - height,
            interval.drops,
            super::render::escape(&reasons),
        );
    }
    let _ = write!(
        out,
        "<text x=\"0\" y=\"{}\" font-size=\"11\">-60 min</text>\
         <text x=\"{WIDTH}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">now (max {max} per {} s)</text></svg>",
        HEIGHT + 12,
        HEIGHT + 12,
        EVERY.as_secs()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&'static str, u64)]) -> Vec<DropCount> {
        pairs
            .iter()
            .map(|(reason, count)| DropCount {
                reason,
                count: *count,
            })
            .collect()
    }

    #[test]
    fn intervals_are_the_differences_by_reason() {
        let mut history = DropHistory::default();
        history.record(100, counts(&[("port_closed", 1), ("policy", 0)]));
        history.record(105, counts(&[("port_closed", 4), ("policy", 7)]));
        history.record(110, counts(&[("port_closed", 4), ("policy", 7)]));
        let intervals = history.intervals();
        assert_eq!(intervals.len(), 2);
        assert_eq!(intervals[0].drops, 10);
        assert_eq!(
            intervals[0].by_reason,
            vec![("policy".to_owned(), 7), ("port_closed".to_owned(), 3)]
        );
        assert_eq!(intervals[1].drops, 0);
    }

    #[test]
    fn a_counter_that_went_down_counts_from_zero() {
        let mut history = DropHistory::default();
        history.record(100, counts(&[("policy", 50)]));
        history.record(105, counts(&[("policy", 3)]));
        assert_eq!(history.intervals()[0].drops, 3);
    }

    #[test]
    fn the_ring_keeps_one_hour() {
        let mut history = DropHistory::default();
        for n in 0..2000u64 {
            history.record(n * 5, counts(&[("policy", n)]));
        }
        let intervals = history.intervals();
        let span = intervals.last().unwrap().end_unix - intervals[0].start_unix;
        assert!(span <= WINDOW.as_secs() + EVERY.as_secs(), "{span}");
        assert!(span >= WINDOW.as_secs(), "{span}");
    }

    #[test]
    fn the_chart_has_a_bar_per_interval_with_drops() {
        let mut history = DropHistory::default();
        history.record(1000, counts(&[("policy", 0)]));
        history.record(1005, counts(&[("policy", 2)]));
        history.record(1010, counts(&[("policy", 2)]));
        history.record(1015, counts(&[("policy", 9)]));
        let svg = svg(&history.intervals(), 1015);
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 2, "{svg}");
        assert!(svg.contains("data-total=\"9\""), "{svg}");
        assert!(svg.contains("data-bars=\"2\""), "{svg}");
        assert!(svg.contains("<title>7 drops: policy 7</title>"), "{svg}");
        // The largest bar is full height.
        assert!(svg.contains("y=\"0\" width"), "{svg}");
    }

    #[test]
    fn an_empty_history_draws_an_empty_chart() {
        let svg = svg(&[], 5000);
        assert!(svg.starts_with("<svg id=\"drops-chart\""));
        assert!(svg.contains("data-bars=\"0\""));
        assert!(svg.ends_with("</svg>"));
    }
}
