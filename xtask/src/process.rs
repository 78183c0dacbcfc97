//! Running external commands with errors that say which command failed and why.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// `program args…` as one shell-like line, for messages.
pub fn command_line<I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut line = program.to_string();
    for arg in args {
        line.push(' ');
        line.push_str(&arg.as_ref().to_string_lossy());
    }
    line
}

/// The command line of a prepared [`Command`], for messages.
pub fn describe(cmd: &Command) -> String {
    command_line(&cmd.get_program().to_string_lossy(), cmd.get_args())
}

/// Runs `cmd` with captured output; fails naming the command, its exit status and its stderr.
pub fn run_command(cmd: &mut Command) -> Result<Output> {
    let line = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        if stderr.is_empty() {
            bail!("`{line}` failed ({})", out.status);
        }
        bail!("`{line}` failed ({}): {stderr}", out.status);
    }
    Ok(out)
}

/// Runs `cmd` with its stdout and stderr going to our stderr (for long, chatty commands such as
/// apt-get), so that our stdout stays clean for machine-readable output.
pub fn run_visible(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    let status = cmd
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(std::io::stderr())
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `program args…` and fails (with the command line and its stderr) unless it succeeds.
pub fn run<I, S>(program: &str, args: I) -> Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_command(Command::new(program).args(args)).map(|_| ())
}

/// Runs `program args…` and returns its stdout (lossily decoded).
pub fn output<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = run_command(Command::new(program).args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program args…` exits successfully; all output discarded. For probes.
pub fn run_ok<I, S>(program: &str, args: I) -> bool
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `ip netns exec <ns> program args…` as the argument list for `ip`.
fn ns_args<I, S>(ns: &str, program: &str, args: I) -> Vec<std::ffi::OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut all: Vec<std::ffi::OsString> =
        vec!["netns".into(), "exec".into(), ns.into(), program.into()];
    all.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
    all
}

/// [`run`] inside network namespace `ns` (`ip netns exec`).
pub fn ns_run<I, S>(ns: &str, program: &str, args: I) -> Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run("ip", ns_args(ns, program, args))
}

/// [`output`] inside network namespace `ns` (`ip netns exec`).
pub fn ns_output<I, S>(ns: &str, program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    output("ip", ns_args(ns, program, args))
}

/// [`run_ok`] inside network namespace `ns` (`ip netns exec`).
pub fn ns_run_ok<I, S>(ns: &str, program: &str, args: I) -> bool
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_ok("ip", ns_args(ns, program, args))
}

/// Processes whose network namespace is `ns` (never ourselves).
pub(crate) fn ns_pids(ns: &str) -> Vec<i32> {
    let own = i32::try_from(std::process::id()).unwrap_or(-1);
    output("ip", ["netns", "pids", ns])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .filter(|&p| p > 1 && p != own)
                .collect()
        })
        .unwrap_or_default()
}

/// SIGTERM, a short bounded wait, then SIGKILL for what is left.
pub(crate) fn stop_processes(pids: &BTreeSet<i32>) {
    signal_all(pids, libc::SIGTERM);
    if wait_dead(pids, Duration::from_secs(3)) {
        return;
    }
    signal_all(pids, libc::SIGKILL);
    wait_dead(pids, Duration::from_secs(2));
}

pub(crate) fn signal_all(pids: &BTreeSet<i32>, signal: libc::c_int) {
    for &pid in pids {
        // SAFETY: kill has no memory-safety preconditions; a vanished pid just yields ESRCH.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Waits until none of `pids` is alive; false if some still are at the deadline.
pub(crate) fn wait_dead(pids: &BTreeSet<i32>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !pids.iter().any(|&p| pid_alive(p)) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Alive and not a zombie (a zombie holds no sockets; its parent just has not reaped it).
pub(crate) fn pid_alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself contain ") ".
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None)
}

pub(crate) fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The last lines of a log, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
            if tail.is_empty() {
                format!("{} is empty", path.display())
            } else {
                tail
            }
        }
        Err(err) => format!("{}: {err}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_command_and_stderr() {
        let err = run("sh", ["-c", "echo boom >&2; exit 3"]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("sh -c echo boom >&2; exit 3"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn output_and_probe() {
        assert_eq!(output("echo", ["hi"]).unwrap(), "hi\n");
        assert!(run_ok("true", [] as [&str; 0]));
        assert!(!run_ok("false", [] as [&str; 0]));
        assert!(!run_ok("/nonexistent/program", [] as [&str; 0]));
        assert!(run("/nonexistent/program", [] as [&str; 0]).is_err());
    }
}
