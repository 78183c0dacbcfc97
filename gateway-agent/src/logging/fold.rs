//! Warnings that repeat, folded into one line. On a small Tor network arti warns "Requested 36
//! relays, but only 0 were usable" many times a second; the journal should get that once, then
//! one "… repeated N times in the last 5 s" line every few seconds while it goes on, less often
//! the longer it goes on (the window doubles up to [`MAX_WINDOW`], and is back to [`WINDOW`]
//! once the line has been quiet for a window).
//!
//! The key is where a line comes from (its target and call site, or the `log` record's file and
//! line for what the `log` crate forwards), not its text: arti's counts change from one line to
//! the next. Only `warn` and `error` are folded; `info` lines (Tor's bootstrap steps, a
//! service starting) are already few and each one says something new.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{callsite::Identifier, Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How long a folded run first collects repeats before its count is printed.
pub const WINDOW: Duration = Duration::from_secs(5);

/// The longest a run collects repeats: a warning that never stops still shows every 5 min.
pub const MAX_WINDOW: Duration = Duration::from_secs(300);

/// The target of the summary lines (never folded themselves).
pub const SUMMARY_TARGET: &str = "gateway_agent::logging";

/// The longest part of a folded message a summary quotes.
const QUOTE_CHARS: usize = 120;

/// The bookkeeping, without tracing: which lines to print and which summaries are due. Time is
/// an argument, so tests drive it.
#[derive(Debug)]
pub struct Folder<K> {
    window: Duration,
    max_window: Duration,
    runs: HashMap<K, Run>,
}

#[derive(Debug)]
struct Run {
    /// The first line's text, quoted in the summary.
    message: String,
    /// Where the current count started.
    since: Instant,
    /// How long this count runs: doubled after each summary.
    window: Duration,
    /// Lines held back since `since`.
    repeats: u64,
    /// The key's latest line.
    last: Instant,
}

impl<K: Eq + Hash + Clone> Folder<K> {
    /// A folder whose runs print their count after `window`, then after twice that, and so
    /// on up to `max_window`.
    pub fn new(window: Duration, max_window: Duration) -> Self {
        Folder {
            window,
            max_window,
            runs: HashMap::new(),
        }
    }

    /// Records a line from `key` saying `message` at `now`: whether to print it, and the
    /// summaries now due (this key's and any other's whose window has passed), to print first.
    pub fn observe(&mut self, key: K, message: &str, now: Instant) -> (bool, Vec<String>) {
        let (first_window, max_window) = (self.window, self.max_window);
        let mut due = Vec::new();
        self.runs.retain(|_, run| {
            let age = now.saturating_duration_since(run.since);
            if run.repeats > 0 && age >= run.window {
                due.push(summary(&run.message, run.repeats, age));
                run.repeats = 0;
                run.since = now;
                run.window = (run.window * 2).min(max_window);
            }
            // A key quiet for a whole (first) window starts afresh: its next line is printed.
            run.repeats > 0 || now.saturating_duration_since(run.last) < first_window
        });
        let print = match self.runs.get_mut(&key) {
            Some(run) => {
                run.repeats += 1;
                run.last = now;
                false
            }
            None => {
                self.runs.insert(
                    key,
                    Run {
                        message: message.to_owned(),
                        since: now,
                        window: first_window,
                        repeats: 0,
                        last: now,
                    },
                );
                true
            }
        };
        (print, due)
    }
}

fn summary(message: &str, repeats: u64, age: Duration) -> String {
    let times = if repeats == 1 { "time" } else { "times" };
    let secs = age.as_secs().max(1);
    let age = if secs >= 120 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    };
    format!("{message} repeated {repeats} {times} in the last {age}")
}

/// `tor_netdir: "Requested 36 relays, but only 0 were usable"`, the message cut short.
pub fn quote(target: &str, message: &str) -> String {
    let message = match message.char_indices().nth(QUOTE_CHARS) {
        Some((at, _)) => format!("{}…", &message[..at]),
        None => message.to_owned(),
    };
    format!("{target}: \"{message}\"")
}

/// Where a line comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    callsite: Identifier,
    /// `target`, or for a forwarded `log` record its own target, file and line (they all
    /// share one call site).
    place: String,
}

/// A [`Layer`] that holds back repeats of a `warn` or `error` line (see the module docs): put
/// it before the formatting layer, whose events it filters.
pub struct FoldLayer {
    folder: Mutex<Folder<Origin>>,
}

impl FoldLayer {
    /// A layer folding over [`WINDOW`].
    pub fn new() -> Self {
        FoldLayer {
            folder: Mutex::new(Folder::new(WINDOW, MAX_WINDOW)),
        }
    }
}

impl Default for FoldLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Subscriber> Layer<S> for FoldLayer {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN || meta.target() == SUMMARY_TARGET {
            return true;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let target = fields.log_target.as_deref().unwrap_or(meta.target());
        let place = match (&fields.log_target, &fields.log_file, fields.log_line) {
            (Some(target), file, line) => format!(
                "{target} {} {}",
                file.as_deref().unwrap_or_default(),
                line.unwrap_or(0)
            ),
            _ => meta.target().to_owned(),
        };
        let quoted = quote(target, &fields.message);
        let origin = Origin {
            callsite: meta.callsite(),
            place,
        };
        let (print, due) = {
            let mut folder = self
                .folder
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            folder.observe(origin, &quoted, Instant::now())
        };
        // Outside the lock: these go through the subscriber again (and this method, which
        // lets its own target through).
        for line in due {
            tracing::warn!(target: SUMMARY_TARGET, "{line}");
        }
        print
    }
}

/// The fields a folded line is keyed and quoted by.
#[derive(Default)]
struct Fields {
    message: String,
    log_target: Option<String>,
    log_file: Option<String>,
    log_line: Option<u64>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            "log.target" => self.log_target = Some(value.to_owned()),
            "log.file" => self.log_file = Some(value.to_owned()),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "log.line" {
            self.log_line = Some(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message.clear();
            let _ = write!(self.message, "{value:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARTI: &str = "Requested 36 relays, but only 0 were usable";

    fn folder() -> Folder<&'static str> {
        Folder::new(WINDOW, Duration::from_secs(20))
    }

    #[test]
    fn the_first_line_passes_and_repeats_become_one_line_per_window() {
        let mut folder = folder();
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(folder.observe("arti", ARTI, at(0)), (true, vec![]));
        // 40 more within the window: held, nothing printed.
        for i in 1..=40 {
            assert_eq!(folder.observe("arti", ARTI, at(i * 100)), (false, vec![]));
        }
        // The first one after the window: held too, and the count of the 40 comes out.
        let (print, due) = folder.observe("arti", ARTI, at(5_000));
        assert!(!print);
        assert_eq!(
            due,
            vec![format!("{ARTI} repeated 40 times in the last 5 s")]
        );
        // The next count includes that line and runs twice as long; it comes out with
        // another key's line.
        assert_eq!(folder.observe("arti", ARTI, at(6_000)), (false, vec![]));
        let (print, due) = folder.observe("other", "another warning", at(10_500));
        assert!(print, "another key's first line is printed");
        assert!(due.is_empty(), "{due:?}");
        assert_eq!(folder.observe("arti", ARTI, at(14_000)), (false, vec![]));
        let (_, due) = folder.observe("other", "another warning", at(15_000));
        assert_eq!(
            due,
            vec![format!("{ARTI} repeated 3 times in the last 10 s")]
        );
    }

    #[test]
    fn the_window_doubles_up_to_its_bound_while_a_line_goes_on() {
        let mut folder = folder();
        let start = Instant::now();
        let mut summaries = Vec::new();
        // One line a second for two minutes.
        for s in 0..120 {
            let (_, due) = folder.observe("k", "again", start + Duration::from_secs(s));
            summaries.extend(due);
        }
        assert_eq!(
            summaries,
            vec![
                // The first line was printed; the next four held.
                "again repeated 4 times in the last 5 s",
                "again repeated 10 times in the last 10 s",
                "again repeated 20 times in the last 20 s",
                "again repeated 20 times in the last 20 s",
                "again repeated 20 times in the last 20 s",
                "again repeated 20 times in the last 20 s",
                "again repeated 20 times in the last 20 s",
            ]
        );
    }

    #[test]
    fn a_key_quiet_for_a_window_starts_afresh() {
        let mut folder = folder();
        let start = Instant::now();
        assert!(folder.observe("k", "first", start).0);
        // Nothing held back, so no summary; the next line after the quiet window is printed.
        let (print, due) = folder.observe("k", "again", start + Duration::from_secs(6));
        assert!(print);
        assert!(due.is_empty());
        let (print, _) = folder.observe("k", "again", start + Duration::from_secs(7));
        assert!(!print);
        // One held line, reported once, then the key is forgotten.
        let (_, due) = folder.observe("x", "x", start + Duration::from_secs(20));
        assert_eq!(due, vec!["again repeated 1 time in the last 14 s"]);
        assert!(
            folder
                .observe("k", "later", start + Duration::from_secs(40))
                .0
        );
    }

    #[test]
    fn quotes_name_the_target_and_stay_short() {
        assert_eq!(quote("tor_netdir", ARTI), format!("tor_netdir: \"{ARTI}\""));
        let quoted = quote("t", &"x".repeat(500));
        assert!(quoted.len() < 200 && quoted.ends_with("…\""), "{quoted}");
    }

    /// The layer in a real subscriber: the same call site warning many times prints once, and
    /// info lines are never held.
    #[test]
    fn the_layer_holds_back_repeated_warnings_only() {
        use std::sync::Arc;
        use tracing_subscriber::prelude::*;

        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::registry().with(FoldLayer::new()).with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            for n in 0..50 {
                tracing::warn!("Requested {n} relays, but only 0 were usable");
                tracing::info!(n, "progress");
            }
        });
        let text =
            String::from_utf8_lossy(&sink.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
        assert_eq!(text.matches("were usable").count(), 1, "{text}");
        assert_eq!(text.matches("progress").count(), 50, "{text}");
    }
}
