//! [`TestLab`]: a gateway slot of the lab its test binary shares, or a lab of its own, for as
//! long as the value lives; commands in its namespaces and the lab's logs since it came up.

use std::{
    collections::BTreeSet,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{Mutex, MutexGuard, Once, TryLockError},
    thread,
    time::{Duration, Instant},
};

use xtask::lab::{self, Lab};

use crate::{fail, require_root, unique_prefix, Background, OrFail};

/// A gateway (with its inside LAN and clients) that exists for the lifetime of the value: a
/// slot of the binary's shared lab, or slot 0 of a lab of its own.
pub struct TestLab {
    /// The lab, seen through this gateway's slot: `lab.ns("gw")` is this gateway's namespace,
    /// `lab.ns("up")` the lab's, `lab.gateway_dir()` this gateway's files.
    pub lab: Lab,
    /// The whole lab is this value's (else only the slot).
    own: bool,
    /// Where the modem's log ended when the slot came up.
    modem_log_from: u64,
    /// Where the origin's access log ended when the slot came up.
    origin_log_from: u64,
}

/// The lab every [`TestLab::up`] of this process shares, and its slots in use.
struct Shared {
    lab: Option<Lab>,
    used: BTreeSet<u8>,
    /// The next slot to try: numbers are not reused before they wrap, so a slot's port and
    /// namespaces are never made again while the kernel may still be freeing the last ones.
    next: u8,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    lab: None,
    used: BTreeSet::new(),
    next: 1,
});

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding it leaves nothing half-done that matters here.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn claim(&mut self) -> u8 {
        for _ in 0..lab::MAX_SLOT {
            let slot = self.next;
            self.next = if slot >= lab::MAX_SLOT { 1 } else { slot + 1 };
            if self.used.insert(slot) {
                return slot;
            }
        }
        fail(format_args!(
            "all {} gateway slots of the shared lab are in use",
            lab::MAX_SLOT
        ))
    }
}

/// Takes the shared lab down when the process exits (after the last test, passed or failed).
extern "C" fn tear_down_shared_lab() {
    let deadline = Instant::now() + Duration::from_secs(10);
    let lab = loop {
        match SHARED.try_lock() {
            Ok(mut shared) => break shared.lab.take(),
            Err(TryLockError::Poisoned(poisoned)) => break poisoned.into_inner().lab.take(),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(50));
            }
            Err(TryLockError::WouldBlock) => {
                eprintln!("the shared test lab is still in use at exit: `cargo xtask lab down --all` removes it");
                return;
            }
        }
    };
    if let Some(lab) = lab {
        if let Err(err) = lab.down() {
            eprintln!("shared lab {} down: {err:#}", lab.prefix());
        }
    }
}

impl TestLab {
    /// A gateway of its own in the lab this test binary shares (built on first use, without
    /// Tor: [`TestLab::wait_tor`] or an agent with Tor enabled starts the network, once).
    pub fn up() -> TestLab {
        require_root();
        static AT_EXIT: Once = Once::new();
        AT_EXIT.call_once(|| {
            // SAFETY: registers a plain `extern "C" fn()`; atexit has no other preconditions.
            if unsafe { libc::atexit(tear_down_shared_lab) } != 0 {
                eprintln!("atexit failed: the shared test lab will outlive this process");
            }
        });
        let (base, slot) = {
            let mut shared = lock(&SHARED);
            let base = match &shared.lab {
                Some(lab) => lab.clone(),
                None => {
                    let lab = Lab::new(&unique_prefix());
                    if let Err(err) = lab.up_base() {
                        let _ = lab.down();
                        fail(format_args!(
                            "the shared lab {} did not come up: {err:#}",
                            lab.prefix()
                        ));
                    }
                    shared.lab = Some(lab.clone());
                    lab
                }
            };
            (base, shared.claim())
        };
        let lab = base.with_slot(slot);
        // Taken before the slot exists, so nothing of this gateway's is before them.
        let modem_log_from = file_len(&lab.dnsmasq_log());
        let origin_log_from = file_len(&lab.origin_log());
        if let Err(err) = lab.up_slot() {
            let _ = lab.down_slot();
            lock(&SHARED).used.remove(&slot);
            fail(format_args!(
                "lab {} slot {slot} did not come up: {err:#}",
                lab.prefix()
            ));
        }
        TestLab {
            lab,
            own: false,
            modem_log_from,
            origin_log_from,
        }
    }

    /// A lab of its own (slot 0: `<prefix>-gw`, …), for tests that stop or break what the
    /// gateways of a lab share (the Tor network, the modem's dnsmasq) or take the whole lab
    /// down. Its Tor network starts like the shared lab's, when the test first needs it.
    pub fn up_own() -> TestLab {
        require_root();
        let lab = Lab::new(&unique_prefix());
        if let Err(err) = lab.up_without_tor() {
            let _ = lab.down();
            fail(format_args!(
                "lab {} did not come up: {err:#}",
                lab.prefix()
            ));
        }
        TestLab {
            lab,
            own: true,
            modem_log_from: 0,
            origin_log_from: 0,
        }
    }

    /// The namespace name of `role` ("up", "gw", "lan", "c1", "c2") for this gateway.
    pub fn ns(&self, role: &str) -> String {
        self.lab.ns(role)
    }

    /// Runs `program args…` in `role`'s namespace and returns its output, whatever its status.
    pub fn exec(&self, role: &str, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(role), program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .or_fail(format_args!("running {program} in {role}"))
    }

    /// Like [`TestLab::exec`], asserting success and returning stdout.
    pub fn exec_ok(&self, role: &str, program: &str, args: &[&str]) -> String {
        let out = self.exec(role, program, args);
        assert!(
            out.status.success(),
            "{program} {args:?} in {role} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `program args…` in the background in `role`'s namespace; killed when dropped.
    pub fn spawn(&self, role: &str, program: &str, args: &[&str]) -> Background {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(role), program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .or_fail(format_args!("starting {program} in {role}"));
        Background::from(child)
    }

    /// Writes an agent config for this lab: the lab's own, with `edit` applied to its text.
    pub fn agent_config(&self, name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
        let base = self.lab.agent_config();
        let text =
            std::fs::read_to_string(&base).or_fail(format_args!("reading {}", base.display()));
        let path = self.lab.gateway_dir().join(name);
        std::fs::write(&path, edit(text)).or_fail(format_args!("writing {}", path.display()));
        path
    }

    /// The lab's config without Tor: DNS forwarded to the uplink's resolver in clear text, for
    /// tests about the dataplane, DHCP and DNS that should not wait for (or load) Tor.
    pub fn config_without_tor(&self, name: &str) -> PathBuf {
        self.agent_config(name, |text| {
            assert!(text.contains("[tor]\n") && text.contains("upstream = \"tor\""));
            text.replace("[tor]\n", "[tor]\nenabled = false\n")
                .replace("upstream = \"tor\"", "upstream = \"uplink\"")
        })
    }

    /// Client addresses in the origin's access log, one per GET since this gateway came up,
    /// oldest first. Requests from the uplink subnet by addresses this gateway does not hold
    /// (other gateways of a shared lab) are left out. Requests through Tor come from the exits,
    /// whichever gateway sent them: tests in a shared lab that count those tag their URLs
    /// (a query string) and read [`TestLab::origin_requests`].
    pub fn origin_clients(&self) -> Vec<String> {
        let own = self.lab.uplink_addresses();
        self.origin_requests()
            .into_iter()
            .map(|(client, _)| client)
            .filter(|client| !client.starts_with("192.0.2.") || own.contains(client))
            .collect()
    }

    /// Every GET in the origin's access log since this gateway came up, of any gateway of the
    /// lab, as (client address, path with its query), oldest first.
    pub fn origin_requests(&self) -> Vec<(String, String)> {
        read_from(&self.lab.origin_log(), self.origin_log_from)
            .lines()
            .filter_map(|line| {
                let client = line.split_whitespace().next()?;
                let path = line.split("\"GET ").nth(1)?.split_whitespace().next()?;
                Some((client.to_string(), path.to_string()))
            })
            .collect()
    }

    /// The modem's dnsmasq log (DNS queries, DHCP) since this gateway came up. In a shared lab
    /// other gateways' lines are in it too: pick this one's by its uplink address.
    pub fn modem_log(&self) -> String {
        read_from(&self.lab.dnsmasq_log(), self.modem_log_from)
    }

    /// Runs `tests/fixtures/frames.py args…` (hand-made ARP and IPv6 frames) in `role`'s
    /// namespace, asserting success; its output.
    pub fn frames(&self, role: &str, args: &[&str]) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/frames.py")
            .to_string_lossy()
            .into_owned();
        let mut all = vec![script.as_str()];
        all.extend_from_slice(args);
        self.exec_ok(role, "/usr/bin/python3", &all)
    }

    /// The MAC address of `role`'s `eth0`.
    pub fn mac(&self, role: &str) -> String {
        let out = self.exec_ok(role, "cat", &["/sys/class/net/eth0/address"]);
        out.trim().to_string()
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if self.own {
            if let Err(err) = self.lab.down() {
                eprintln!("lab {} down: {err:#}", self.lab.prefix());
            }
            return;
        }
        if let Err(err) = self.lab.down_slot() {
            eprintln!(
                "lab {} slot {} down: {err:#}",
                self.lab.prefix(),
                self.lab.slot()
            );
        }
        lock(&SHARED).used.remove(&self.lab.slot());
    }
}

/// The length of a file, 0 if it does not exist.
pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// A log from byte `from` on, starting at a line: a partial line at `from` belongs to before.
pub(crate) fn read_from(path: &Path, from: u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let start = from.saturating_sub(1);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = if from == 0 {
        &bytes[..]
    } else {
        // One byte before `from`: a newline there means `from` starts a line.
        match bytes.iter().position(|&b| b == b'\n') {
            Some(newline) => &bytes[newline + 1..],
            None => &[][..],
        }
    };
    String::from_utf8_lossy(text).into_owned()
}

pub(crate) fn path_str(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| fail(format_args!("{} is not UTF-8", path.display())))
}
