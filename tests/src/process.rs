//! Processes the tests start, waiting, and whether the test may run at all (root).

use std::{
    io::Write as _,
    process::{Child, Command, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::fail;

/// A background process, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Background {
    child: Child,
}

impl Background {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child, to wait for it or read its pipes.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// SIGKILL now, and reap it: no shutdown code of its runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl From<Child> for Background {
    fn from(child: Child) -> Background {
        Background { child }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` every 100 ms until it holds (true) or `timeout` passes (false).
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a command on the host and returns its stdout; an error if it could not start or
/// failed (with its stderr). Never for traffic: only set-up and inspection (`ip netns add`,
/// `ip netns list`).
pub fn host(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits up to `timeout` for `child` to exit; its status, or `None` if it still runs.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `sig` to `pid`.
pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions; a stale pid at worst gets ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a test that needs root should be skipped: true, after one line on stderr naming
/// the test and what it needs, when not run as root. Namespaces, eBPF programs and raw
/// sockets need capabilities that a contributor's plain `cargo test` does not have, and an
/// EPERM deep inside the setup says less than a skip. Use it as the test's first statement:
/// `if skip_unless_root("loads eBPF programs") { return; }`.
pub fn skip_unless_root(needs: &str) -> bool {
    if is_root() {
        return false;
    }
    // libtest names each test's thread after the test.
    let test = thread::current().name().unwrap_or("this test").to_owned();
    // Straight to stderr rather than eprintln!, which libtest captures and hides for a test
    // that passes, as a skipped one does.
    let _ = writeln!(std::io::stderr(), "skipped {test}: needs root ({needs})");
    true
}

/// Fails the test unless it runs as root (for helpers that cannot skip the test that called
/// them; tests themselves start with [`skip_unless_root`]).
#[track_caller]
pub fn require_root() {
    if !is_root() {
        fail("the lab tests need root (run them with `cargo xtask test`, or skip_unless_root)");
    }
}
