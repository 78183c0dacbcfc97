//! Progress for the verbs that wait on a long operation (registry and mirror GC, du and
//! eviction walk a whole store; a purge sweeps after itself): on a terminal, one line on
//! stderr redrawn with the time spent, removed when the answer comes; elsewhere one plain
//! line saying what is being waited for. stdout (and `--json`) stays clean.

use std::io::{IsTerminal, Write};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A running progress line; dropping it clears the line.
pub struct Progress {
    stop: Option<mpsc::Sender<()>>,
    drawer: Option<thread::JoinHandle<()>>,
}

/// How often the line is redrawn.
const TICK: Duration = Duration::from_millis(200);

/// `registry gc: walking the store… 3 s`.
pub fn line(what: &str, elapsed: Duration) -> String {
    const SPIN: [char; 4] = ['|', '/', '-', '\\'];
    let turn = (elapsed.as_millis() / TICK.as_millis()) as usize % SPIN.len();
    format!("{} {what}… {} s", SPIN[turn], elapsed.as_secs())
}

impl Progress {
    /// Shows `what` until the returned value is dropped.
    pub fn start(what: &str) -> Progress {
        if !std::io::stderr().is_terminal() {
            eprintln!("{what}…");
            return Progress {
                stop: None,
                drawer: None,
            };
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let what = what.to_owned();
        let drawer = thread::spawn(move || {
            let began = Instant::now();
            loop {
                {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{}", line(&what, began.elapsed()));
                    let _ = err.flush();
                }
                match stopped.recv_timeout(TICK) {
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => break,
                }
            }
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        });
        Progress {
            stop: Some(stop),
            drawer: Some(drawer),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(drawer) = self.drawer.take() {
            let _ = drawer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_what_and_how_long() {
        assert_eq!(
            line(
                "registry gc: walking the store",
                Duration::from_millis(3_500)
            ),
            "/ registry gc: walking the store… 3 s"
        );
    }
}
