//! The onion service relay1 hosts in front of the origin: its address and whether its current
//! descriptor is published.

use std::fs::{self};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::nodes::{node_dir, node_running, NODES, ONION_HOST};
use crate::lab::layout::Lab;
use crate::process::log_tail;

/// [`ONION_HOST`]'s onion-service log (tor's `rend` domain at info level): descriptor uploads.
pub fn onion_log(lab: &Lab) -> PathBuf {
    node_dir(lab, ONION_HOST).join("onion.log")
}

/// What tor logs (info, `rend`) when an HSDir stored a descriptor.
const UPLOADED: &str = "Uploaded hidden service descriptor (status 200";

/// What tor logs (info, `rend`) for each upload of the descriptor clients look for now. (The
/// `next` descriptor, for the coming time period, is uploaded too, sometimes first.)
const CURRENT_UPLOAD: &str = " current descriptor of revision ";

/// Whether the onion service's host runs and, since it last started, has stored the descriptor
/// clients fetch now on its HSDirs.
pub fn onion_published(lab: &Lab) -> bool {
    let Some(host) = NODES.iter().find(|n| n.nick == ONION_HOST) else {
        return false;
    };
    let log = fs::read_to_string(onion_log(lab)).unwrap_or_default();
    node_running(lab, host) && current_descriptor_stored(&log)
}

/// In the last run of an onion-service log: uploads of the current descriptor were sent, and
/// at least as many uploads succeeded after the first of them. (The responses do not say which
/// descriptor they are for; the `next` descriptor's, when it went first, are answered within
/// milliseconds on this network, before the current one is sent.)
pub(crate) fn current_descriptor_stored(log: &str) -> bool {
    let run = last_run(log);
    let Some(first) = run.find(CURRENT_UPLOAD) else {
        return false;
    };
    let sent = run
        .lines()
        .filter(|l| l.contains(CURRENT_UPLOAD) && l.contains("initiated upload request"))
        .count();
    sent > 0 && run[first..].matches(UPLOADED).count() >= sent
}

/// The part of an onion-service log written since tor last started: each start writes
/// "Tor <version> opening log file." (or "opening new log file." when the file is new) first.
pub(crate) fn last_run(log: &str) -> &str {
    let start = log
        .lines()
        .scan(0, |offset, line| {
            let at = *offset;
            *offset += line.len() + 1;
            Some((at, line))
        })
        .filter(|(_, line)| {
            line.contains("] Tor ")
                && (line.ends_with(" opening log file.")
                    || line.ends_with(" opening new log file."))
        })
        .map(|(at, _)| at)
        .last()
        .unwrap_or(0);
    log.get(start..).unwrap_or_default()
}

/// How long the tests wait for the onion service to publish. More than C tor's 300 s
/// intro-circuit retry period: on a young network (or a loaded machine) the host can burn its
/// 28 intro circuits in seconds and then waits 297 s before it tries again ("exceeded its
/// circuit launch limit"), and it does publish after that.
pub const ONION_TIMEOUT: Duration = Duration::from_secs(420);

/// Waits until [`onion_published`], or fails after `timeout` with the log's tail.
pub fn wait_onion(lab: &Lab, timeout: Duration) -> Result<Duration> {
    let begin = Instant::now();
    while !onion_published(lab) {
        if begin.elapsed() >= timeout {
            bail!(
                "the lab's onion service has not published its descriptor after {timeout:?}: {}",
                log_tail(&onion_log(lab))
            );
        }
        thread::sleep(Duration::from_millis(500));
    }
    Ok(begin.elapsed())
}

/// The onion service's directory (keys and `hostname`) on [`ONION_HOST`].
pub fn onion_dir(lab: &Lab) -> PathBuf {
    node_dir(lab, ONION_HOST).join("onion")
}

/// The onion service's address, from its `hostname` file.
pub fn onion_address(lab: &Lab) -> Option<String> {
    let text = fs::read_to_string(onion_dir(lab).join("hostname")).ok()?;
    let name = text.trim();
    name.ends_with(".onion").then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_descriptor_counts_from_the_last_start() {
        let up =
            "Nov 28 [info] handle_response_upload_hsdesc(): Uploaded hidden service descriptor \
                  (status 200 (\"HS descriptor stored successfully.\"))\n";
        let failed = "Nov 28 [info] handle_response_upload_hsdesc(): Uploaded hidden service \
                      descriptor (status 400 (\"Invalid\"))\n";
        let current = "Nov 28 [info] upload_descriptor_to_hsdir(): Service x current descriptor \
                       of revision 7 initiated upload request to $AB~relay2\n";
        let next = "Nov 28 [info] upload_descriptor_to_hsdir(): Service x next descriptor of \
                    revision 9 initiated upload request to $AB~relay2\n";
        let start = "Nov 28 [notice] Tor 0.4.9.11 opening new log file.\n";
        let reopen = "Nov 28 [notice] Tor 0.4.9.11 opening log file.\n";
        assert!(!current_descriptor_stored(""));
        let both = format!("{start}{current}{current}{next}{next}{up}{up}{up}");
        assert!(current_descriptor_stored(&both));
        let short = format!("{start}{current}{current}{up}{failed}");
        assert!(!current_descriptor_stored(&short), "one of two stored");
        let next_only = format!("{start}{next}{next}{up}{up}");
        assert!(
            !current_descriptor_stored(&next_only),
            "the next descriptor is not enough"
        );
        let next_first = format!("{start}{next}{next}{up}{up}{current}{current}{up}");
        assert!(
            !current_descriptor_stored(&next_first),
            "its uploads came before"
        );
        assert!(current_descriptor_stored(&format!("{next_first}{up}")));
        let restarted = format!("{both}{reopen}{next}{up}");
        assert!(
            !current_descriptor_stored(&restarted),
            "a restart starts over"
        );
    }
}
