//! Packet captures with tcpdump, for "nothing leaks" checks: a capture that did not run, or a
//! filter tcpdump does not accept, fails the test instead of finding no packets.
//!
//! [`Capture::start`] returns once tcpdump says it is listening (and fails if tcpdump exits
//! first: a missing interface, a bad namespace); [`Capture::stop`] fails if tcpdump had
//! already stopped, or if reading the file back with the filter fails (a filter with a syntax
//! error, such as `src host ` with an empty address, would otherwise match nothing).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};

use crate::process::signal;
use crate::testlab::path_str;
use crate::{wait_timeout, OrFail, TestLab};

/// How long tcpdump may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A tcpdump capture into a file, in one of the lab's namespaces.
#[derive(Debug)]
pub struct Capture {
    child: Child,
    file: PathBuf,
    /// What tcpdump wrote to stderr so far, for the errors.
    stderr: Arc<Mutex<String>>,
}

impl Capture {
    /// Captures on `iface` in `role`'s namespace, all packets, into the slot's dir as
    /// `<name>.pcap`. Fails the test unless tcpdump is listening.
    #[track_caller]
    pub fn start(lab: &TestLab, role: &str, iface: &str, name: &str) -> Capture {
        let file = lab.lab.gateway_dir().join(format!("{name}.pcap"));
        Capture::try_start_in(&lab.ns(role), iface, &file)
            .or_fail(format_args!("capture {name} on {iface} in {role}"))
    }

    /// Captures on `iface` in namespace `netns` into `file`; an error unless tcpdump said it
    /// is listening within 10 s.
    pub fn try_start_in(netns: &str, iface: &str, file: &Path) -> Result<Capture> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, "tcpdump", "-i", iface, "-n", "-U"])
            // Without immediate mode the kernel hands packets over in blocks, and those of the
            // last block before the SIGINT never reach the file.
            .args(["--immediate-mode", "-w"])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let (listening_tx, listening) = mpsc::channel();
        if let Some(pipe) = child.stderr.take() {
            let stderr = Arc::clone(&stderr);
            // Drains stderr for as long as tcpdump runs, so it never blocks on a full pipe.
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains("listening on") {
                        let _ = listening_tx.send(());
                    }
                    let mut text = stderr.lock().unwrap_or_else(|e| e.into_inner());
                    text.push_str(&line);
                    text.push('\n');
                }
            });
        }
        let capture = Capture {
            child,
            file: file.to_path_buf(),
            stderr,
        };
        // Err: tcpdump closed stderr (it exited) or said nothing in time.
        if listening.recv_timeout(START_TIMEOUT).is_err() {
            bail!("tcpdump did not start listening: {}", capture.diagnosis());
        }
        thread::sleep(Duration::from_millis(200));
        Ok(capture)
    }

    /// Stops the capture and returns one line per packet matching `filter` (tcpdump syntax).
    /// Fails the test if the capture had stopped by itself or the filter does not compile.
    #[track_caller]
    pub fn stop(self, filter: &str) -> Vec<String> {
        let file = self.file.display().to_string();
        self.try_stop(filter)
            .or_fail(format_args!("capture {file}, filter {filter:?}"))
    }

    /// [`Capture::stop`], with each line starting with the frame's Unix time and its MACs
    /// (`tcpdump -tt -e`).
    #[track_caller]
    pub fn stop_frames(self, filter: &str) -> Vec<String> {
        let file = self.file.display().to_string();
        self.try_stop_with(&["-tt", "-e"], filter)
            .or_fail(format_args!("capture {file}, filter {filter:?}"))
    }

    /// [`Capture::stop`], reading the one capture with each of `filters` (a "nothing else" and
    /// a positive control, say).
    #[track_caller]
    pub fn stop_each(self, filters: &[&str]) -> Vec<Vec<String>> {
        let file = self.file.clone();
        let Some((first, rest)) = filters.split_first() else {
            crate::fail("stop_each needs a filter")
        };
        let mut all = vec![self.stop(first)];
        for filter in rest {
            all.push(read(&file, &[], filter).or_fail(format_args!(
                "capture {}, filter {filter:?}",
                file.display()
            )));
        }
        all
    }

    /// [`Capture::stop`], returning the error.
    pub fn try_stop(self, filter: &str) -> Result<Vec<String>> {
        self.try_stop_with(&[], filter)
    }

    fn try_stop_with(mut self, flags: &[&str], filter: &str) -> Result<Vec<String>> {
        thread::sleep(Duration::from_millis(300));
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!(
                "tcpdump stopped before the check ({status}): {}",
                self.diagnosis()
            );
        }
        signal(self.child.id(), libc::SIGINT);
        let _ = wait_timeout(&mut self.child, Duration::from_secs(5)).or_else(|| {
            let _ = self.child.kill();
            self.child.wait().ok()
        });
        read(&self.file, flags, filter)
    }

    /// tcpdump's stderr, or a word that it had none.
    fn diagnosis(&self) -> String {
        let text = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .trim()
            .to_string();
        if text.is_empty() {
            "(nothing on stderr)".to_string()
        } else {
            text
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The packets in the capture `file` that match `filter`, one line each; an error if tcpdump
/// cannot read the file or does not accept the filter.
fn read(file: &Path, flags: &[&str], filter: &str) -> Result<Vec<String>> {
    let mut args = vec!["-n"];
    args.extend_from_slice(flags);
    args.extend(["-r", path_str(file)]);
    args.extend(filter.split_whitespace());
    let out = Command::new("tcpdump")
        .args(&args)
        .output()
        .context("running tcpdump -r")?;
    if !out.status.success() {
        bail!(
            "tcpdump -r {filter:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{skip_unless_root, Netns};

    /// A namespace with `lo` up, and a scratch dir for the capture files.
    fn world() -> (Netns, PathBuf) {
        let ns = Netns::new(&Netns::lab(), "gw");
        let dir = std::env::temp_dir().join(format!("gw-capture-{}", ns.name()));
        std::fs::create_dir_all(&dir).unwrap();
        (ns, dir)
    }

    fn ping(ns: &Netns) {
        let out = ns
            .command("ping")
            .args(["-c", "2", "-i", "0.2", "127.0.0.1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    #[test]
    fn a_capture_sees_packets_and_an_invalid_filter_fails() {
        if skip_unless_root("makes a network namespace and captures in it") {
            return;
        }
        let (ns, dir) = world();
        let capture = Capture::try_start_in(ns.name(), "lo", &dir.join("ok.pcap")).unwrap();
        ping(&ns);
        let packets = capture.try_stop("icmp").unwrap();
        assert!(packets.len() >= 2, "{packets:?}");

        // What a check with an empty address sends to tcpdump: no packets is not a pass.
        let capture = Capture::try_start_in(ns.name(), "lo", &dir.join("bad.pcap")).unwrap();
        ping(&ns);
        let err = capture.try_stop("src host  and icmp").unwrap_err();
        assert!(format!("{err:#}").contains("failed"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_capture_that_cannot_start_fails() {
        if skip_unless_root("makes a network namespace and captures in it") {
            return;
        }
        let (ns, dir) = world();
        let err = Capture::try_start_in(ns.name(), "nosuch0", &dir.join("none.pcap")).unwrap_err();
        assert!(format!("{err:#}").contains("did not start"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stop_fails_on_a_bad_filter_and_on_a_capture_that_died() {
        if skip_unless_root("makes a network namespace and captures in it") {
            return;
        }
        let (ns, dir) = world();
        // The assertion form the lab tests use fails the test.
        let capture = Capture::try_start_in(ns.name(), "lo", &dir.join("bad.pcap")).unwrap();
        let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            capture.stop("src host");
        }));
        assert!(stopped.is_err(), "stop accepted a filter tcpdump rejects");

        let capture = Capture::try_start_in(ns.name(), "lo", &dir.join("died.pcap")).unwrap();
        signal(capture.child.id(), libc::SIGKILL);
        thread::sleep(Duration::from_millis(200));
        let err = capture.try_stop("icmp").unwrap_err();
        assert!(format!("{err:#}").contains("stopped before"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
