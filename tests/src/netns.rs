//! The one network-namespace guard of the tests, for tests that build a small world of their
//! own (a veth pair, a bridge) rather than a whole lab, and the way into a namespace for code
//! that runs in the test process.
//!
//! A [`Netns`] is named like a lab's namespace, `<prefix>-<role>` with a prefix of its own
//! ([`unique_prefix`]) and a lab role (`up`, `gw`, `lan`, `c1`, `c2`), so that `cargo xtask
//! lab down --all` removes what a killed test left behind; it is deleted when dropped (also
//! when the test panics).

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use xtask::lab::{Lab, ROLES};

use crate::{fail, host, OrFail};

/// A network namespace made with `ip netns add`, deleted on drop unless this is only a
/// [`Netns::handle`] to it.
#[derive(Debug)]
pub struct Netns {
    name: String,
    owned: bool,
}

impl Netns {
    /// Makes `role`'s namespace of `lab` (one from [`Netns::lab`], or any lab value whose
    /// prefix no other test uses), with `lo` up. Fails the test if it cannot.
    pub fn new(lab: &Lab, role: &str) -> Netns {
        Netns::try_new(lab, role).or_fail(format_args!("making the {role} namespace"))
    }

    /// [`Netns::new`], returning the error.
    pub fn try_new(lab: &Lab, role: &str) -> Result<Netns> {
        if !ROLES.contains(&role) {
            bail!("{role:?} is not a lab role ({ROLES:?}): `lab down --all` would not find it");
        }
        let name = lab.ns(role);
        // A leftover of a killed run of a process with the same pid.
        if netns_exists(&name) {
            host("ip", &["netns", "del", &name])?;
        }
        host("ip", &["netns", "add", &name])?;
        let netns = Netns { name, owned: true };
        netns.try_ip(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// A lab value with a prefix of its own ([`unique_prefix`]), to name a world's namespaces:
    /// `Netns::new(&lab, "gw")`, `Netns::new(&lab, "c1")`. Nothing of the lab is built.
    pub fn lab() -> Lab {
        Lab::new(&unique_prefix())
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, what `setns` opens.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// The same namespace, for another thread or owner; dropping it deletes nothing.
    pub fn handle(&self) -> Netns {
        Netns {
            name: self.name.clone(),
            owned: false,
        }
    }

    /// `ip -n <ns> args…`, which must succeed; its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        self.try_ip(args)
            .or_fail(format_args!("in namespace {}", self.name))
    }

    /// [`Netns::ip`], returning the error.
    pub fn try_ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        host("ip", &all)
    }

    /// `ip -n <ns> -j args…`, parsed (an empty list for no output).
    pub fn ip_json(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        let text = self.ip(&all);
        if text.trim().is_empty() {
            return Vec::new();
        }
        serde_json::from_str(&text).unwrap_or_else(|e| fail(format_args!("ip -j {text:?}: {e}")))
    }

    /// `ip netns exec <ns> program`, to add arguments to and run.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }
}

/// Runs `body` on a thread that has entered namespace `netns` (a name under `/run/netns`) and
/// returns what it returns; a panic in `body` goes on in the caller. `setns` moves only the
/// calling thread, so every socket `body` opens (and every thread it starts) is in `netns`.
pub fn in_netns<T: Send + 'static>(netns: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    let path = Path::new("/run/netns").join(netns);
    let thread = std::thread::spawn(move || {
        enter(&path).or_fail("entering the namespace");
        body()
    });
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Moves the calling thread into the namespace at `path`.
fn enter(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns on an open namespace fd; it affects only this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!(
            "setns({}): {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Whether network namespace `name` exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// A lab prefix no other lab of this or any other process uses: 't', the pid in base 36 (at
/// most 5 characters) and a counter of two, 8 of `[a-z0-9]` at most. The counter wraps after
/// 1296 prefixes in one process.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % (36 * 36);
    format!(
        "t{}{}{}",
        base36(std::process::id() % 60_466_176),
        base36(n / 36),
        base36(n % 36)
    )
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_lab_prefixes_and_differ() {
        let a = unique_prefix();
        let b = unique_prefix();
        assert_ne!(a, b);
        for prefix in [&a, &b] {
            assert!(prefix.len() <= 8, "{prefix}");
            assert!(prefix
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
            // The names `lab down --all` looks for.
            assert_eq!(Lab::new(prefix).ns("gw"), format!("{prefix}-gw"));
        }
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
    }

    #[test]
    fn only_lab_roles_make_namespaces() {
        let err = Netns::try_new(&Netns::lab(), "server").map(|ns| ns.name().to_owned());
        assert!(err.is_err(), "{err:?}");
    }
}
