//! `cargo xtask package`: the agent as a Debian package, assembled by hand and built with
//! `dpkg-deb` (no packaging tool to install; the layout is small and fixed):
//!
//! | path | what |
//! |---|---|
//! | `/usr/sbin/gateway-agent` | the binary (the eBPF object is embedded) |
//! | `/lib/systemd/system/gateway-agent.service` | `dist/`'s unit, pointed at `/usr/sbin` |
//! | `/etc/gateway/gateway.toml` | the example config, a conffile |
//! | `/var/lib/gateway` | the state directory, 0700 |
//! | `/usr/share/{bash-completion,zsh,fish}/…` | completions, from the clap definitions |
//! | `/usr/share/man/man1/gateway-agent*.1.gz` | man pages, from the clap definitions |
//!
//! The maintainer scripts: `postinst` reloads systemd and enables nothing (the example config
//! names no interfaces of this host); `prerm` on removal (not on upgrade) stops the unit and
//! runs `gateway-agent dataplane detach`, so a removed package leaves no program attached;
//! `postrm purge` keeps `/var/lib/gateway` (the registry's blobs, the CA's key, the leases).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{build, process};

/// The package's name (and the binary's).
pub const NAME: &str = "gateway-agent";
/// Where the binary is installed.
pub const BINARY: &str = "/usr/sbin/gateway-agent";
/// The packaged unit.
pub const UNIT: &str = "/lib/systemd/system/gateway-agent.service";
/// The config, a conffile.
pub const CONFIG: &str = "/etc/gateway/gateway.toml";
/// The state directory.
pub const STATE_DIR: &str = "/var/lib/gateway";
/// What `prerm` prints before it detaches (tests look for it).
pub const DETACH_NOTE: &str = "gateway-agent: removing the package: dataplane detach";

/// Builds the release agent and packages it; prints the package's path.
pub fn run() -> Result<()> {
    let agent = build::build_agent(true)?;
    let out = build::target_dir().join("debian");
    let deb = build_deb(&agent, &out)?;
    println!("{}", deb.display());
    Ok(())
}

/// Packages the agent binary `agent` into `out_dir`; returns the `.deb`'s path.
pub fn build_deb(agent: &Path, out_dir: &Path) -> Result<PathBuf> {
    let root = build::workspace_root();
    let version = workspace_version(&root)?;
    let arch = process::output("dpkg", ["--print-architecture"])?
        .trim()
        .to_string();
    let stage = out_dir.join(format!("{NAME}_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    let put = |path: &str, bytes: &[u8], mode: u32| -> Result<()> {
        let dest = stage.join(path.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&dest, bytes).with_context(|| format!("writing {}", dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", dest.display()))
    };
    let binary = fs::read(agent).with_context(|| format!("reading {}", agent.display()))?;
    put(BINARY, &binary, 0o755)?;
    let staged = stage.join(BINARY.trim_start_matches('/'));
    // As dh_strip does: no debug info in the package (the embedded eBPF object is data, not
    // a debug section, and stays).
    process::run("strip", ["--strip-debug", path_str(&staged)?])?;
    let depends = depends(&staged)?;
    let unit = fs::read_to_string(root.join("dist").join("gateway-agent.service"))
        .context("reading dist/gateway-agent.service")?;
    put(UNIT, packaged_unit(&unit).as_bytes(), 0o644)?;
    let example = fs::read(root.join("config").join("gateway.example.toml"))
        .context("reading config/gateway.example.toml")?;
    put(CONFIG, &example, 0o644)?;
    let state = stage.join(STATE_DIR.trim_start_matches('/'));
    fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700))?;

    for (shell, path) in [
        (
            "bash",
            "/usr/share/bash-completion/completions/gateway-agent",
        ),
        ("zsh", "/usr/share/zsh/vendor-completions/_gateway-agent"),
        (
            "fish",
            "/usr/share/fish/vendor_completions.d/gateway-agent.fish",
        ),
    ] {
        let text = process::output(path_str(agent)?, ["completions", shell])?;
        put(path, text.as_bytes(), 0o644)?;
    }
    let man = tempdir(out_dir, "man")?;
    process::run(path_str(agent)?, ["manpages", path_str(&man)?])?;
    let mut pages = 0;
    for entry in fs::read_dir(&man).with_context(|| format!("reading {}", man.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let page = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        put(
            &format!("/usr/share/man/man1/{name}.gz"),
            &gzip(&page)?,
            0o644,
        )?;
        pages += 1;
    }
    fs::remove_dir_all(&man).ok();
    if pages == 0 {
        bail!("`gateway-agent manpages` wrote no page");
    }
    let readme = fs::read(root.join("README.md")).context("reading README.md")?;
    put(
        &format!("/usr/share/doc/{NAME}/README.md.gz"),
        &gzip(&readme)?,
        0o644,
    )?;
    put(
        &format!("/usr/share/doc/{NAME}/copyright"),
        COPYRIGHT.as_bytes(),
        0o644,
    )?;

    let installed_kib = du_kib(&stage)?;
    put(
        "/DEBIAN/control",
        control(&version, &arch, installed_kib, &depends).as_bytes(),
        0o644,
    )?;
    put("/DEBIAN/conffiles", format!("{CONFIG}\n").as_bytes(), 0o644)?;
    put("/DEBIAN/postinst", POSTINST.as_bytes(), 0o755)?;
    put("/DEBIAN/prerm", prerm().as_bytes(), 0o755)?;
    put("/DEBIAN/postrm", POSTRM.as_bytes(), 0o755)?;

    let deb = out_dir.join(format!("{NAME}_{version}_{arch}.deb"));
    process::run_command(Command::new("dpkg-deb").args([
        "--root-owner-group",
        "-Zxz",
        "--build",
        path_str(&stage)?,
        path_str(&deb)?,
    ]))?;
    Ok(deb)
}

/// `dist/`'s unit with the binary at `/usr/sbin` and a header that says where it came from.
pub fn packaged_unit(unit: &str) -> String {
    // The manual-install header says to copy files by hand; the package did that.
    let body = unit
        .split_once("\n\n")
        .map(|(_, rest)| rest)
        .unwrap_or(unit);
    format!(
        "# gateway-agent: the privacy gateway's agent. Installed by the {NAME} package; edit\n\
         # {CONFIG}, then `systemctl enable --now gateway-agent`. Local changes belong in a\n\
         # drop-in (`systemctl edit gateway-agent`), not here.\n\n{}",
        body.replace("/usr/local/bin/gateway-agent", BINARY)
    )
}

/// The packages providing the shared libraries `binary` links (`NEEDED`), by `dpkg -S`:
/// arti links SQLite, for one. libc6 gets the minimum the Rust toolchain needs.
fn depends(binary: &Path) -> Result<String> {
    let dump = process::output("objdump", ["-p", path_str(binary)?])?;
    let cache = process::output("ldconfig", ["-p"])?;
    let mut packages = std::collections::BTreeSet::new();
    for lib in needed(&dump) {
        let Some(path) = library_path(&cache, lib) else {
            bail!("{lib}, which the agent links, is not in the linker cache");
        };
        // With merged /usr, dpkg knows /usr/lib/… where the cache may say /lib/….
        let candidates = [
            Some(path.clone()),
            path.starts_with("/lib").then(|| format!("/usr{path}")),
        ];
        let Some(owner) = candidates
            .iter()
            .flatten()
            .find_map(|p| process::output("dpkg", ["-S", p.as_str()]).ok())
        else {
            bail!("no package has {path} (dpkg -S), which the agent links");
        };
        let Some(package) = owner.split(':').next().map(str::trim) else {
            bail!("dpkg -S {path} said {owner:?}");
        };
        packages.insert(package.to_string());
    }
    Ok(packages
        .into_iter()
        .map(|p| {
            if p == "libc6" {
                "libc6 (>= 2.34)".to_string()
            } else {
                p
            }
        })
        .collect::<Vec<_>>()
        .join(", "))
}

/// The `NEEDED` entries of `objdump -p`'s output.
pub fn needed(dump: &str) -> Vec<&str> {
    dump.lines()
        .filter_map(|line| line.trim().strip_prefix("NEEDED"))
        .map(str::trim)
        .collect()
}

/// Where `ldconfig -p` says `lib` (x86-64 or the only one) is.
pub fn library_path(cache: &str, lib: &str) -> Option<String> {
    let mut found = None;
    for line in cache.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix(lib) else {
            continue;
        };
        if !rest.starts_with(' ') {
            continue;
        }
        let path = rest.rsplit("=> ").next()?.trim().to_string();
        if rest.contains("x86-64") || found.is_none() {
            found = Some(path);
        }
    }
    found
}

fn control(version: &str, arch: &str, installed_kib: u64, depends: &str) -> String {
    format!(
        "Package: {NAME}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: gateway developers <gateway@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Section: net\n\
         Priority: optional\n\
         Homepage: https://example.invalid/gateway\n\
         Description: privacy gateway for a small private network\n \
         One agent gives an inside LAN DHCP, DNS (the local zone, the rest over Tor), an\n \
         embedded Tor client with SOCKS5 and transparent proxying, an HTTP caching proxy, a\n \
         private registry and a registry mirror, with an eBPF dataplane that keeps the inside\n \
         and the uplink apart.\n"
    )
}

const POSTINST: &str = "#!/bin/sh
set -e
if [ \"$1\" = configure ]; then
    chmod 0700 /var/lib/gateway
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    fi
fi
exit 0
";

fn prerm() -> String {
    format!(
        "#!/bin/sh
set -e
# Only on removal: an upgrade restarts the agent, which swaps its programs in place.
if [ \"$1\" = remove ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop gateway-agent.service || true
    fi
    echo \"{DETACH_NOTE}\"
    # A failure leaves the programs attached: the inside stays closed, which is safe.
    {BINARY} --config {CONFIG} dataplane detach || \\
        echo \"gateway-agent: detach failed; the inside stays closed until it succeeds\" >&2
fi
exit 0
"
    )
}

const POSTRM: &str = "#!/bin/sh
set -e
if [ \"$1\" = remove ] || [ \"$1\" = purge ]; then
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    fi
fi
# /var/lib/gateway stays, even on purge: it holds the registry's blobs, the CA's key and the
# leases. Remove it by hand once they are no longer wanted.
exit 0
";

const COPYRIGHT: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: gateway

Files: *
Copyright: the gateway developers
License: MIT or Apache-2.0
";

/// The workspace's `version` (`[workspace.package]` in Cargo.toml).
fn workspace_version(root: &Path) -> Result<String> {
    let text = fs::read_to_string(root.join("Cargo.toml")).context("reading Cargo.toml")?;
    parse_version(&text).context("Cargo.toml has no [workspace.package] version")
}

/// The first `version = "…"` under `[workspace.package]`.
pub fn parse_version(cargo_toml: &str) -> Option<String> {
    let section = cargo_toml.split("[workspace.package]").nth(1)?;
    let section = section.split("\n[").next()?;
    section.lines().find_map(|line| {
        let value = line
            .trim()
            .strip_prefix("version")?
            .trim()
            .strip_prefix('=')?;
        Some(value.trim().trim_matches('"').to_string())
    })
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    // -n: no name or time stamp, so the package is reproducible.
    let mut child = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running gzip")?;
    let mut stdin = child.stdin.take().context("gzip's stdin")?;
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().context("waiting for gzip")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the gzip writer panicked"))?
        .context("feeding gzip")?;
    if !out.status.success() {
        bail!("gzip failed: {}", out.status);
    }
    Ok(out.stdout)
}

fn du_kib(dir: &Path) -> Result<u64> {
    let out = process::output("du", ["-sk", path_str(dir)?])?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("du -sk said {out:?}"))
}

fn tempdir(parent: &Path, name: &str) -> Result<PathBuf> {
    let dir = parent.join(format!("{name}.{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_the_workspace_package() {
        let text = "[workspace]\nmembers = []\n\n[workspace.package]\nedition = \"2021\"\n\
                    version = \"1.2.3\"\n\n[workspace.dependencies]\nversion = \"9\"\n";
        assert_eq!(parse_version(text).as_deref(), Some("1.2.3"));
        assert_eq!(parse_version("[package]\nversion = \"1\"\n"), None);
        let real = fs::read_to_string(build::workspace_root().join("Cargo.toml")).unwrap();
        assert!(parse_version(&real).is_some());
    }

    #[test]
    fn the_packaged_unit_runs_the_packaged_binary() {
        let unit =
            fs::read_to_string(build::workspace_root().join("dist/gateway-agent.service")).unwrap();
        let packaged = packaged_unit(&unit);
        assert!(!packaged.contains("/usr/local/bin"), "{packaged}");
        assert!(packaged.contains(&format!("ExecStart={BINARY} --config {CONFIG} run")));
        assert!(packaged.contains("[Unit]") && packaged.contains("[Service]"));
        assert!(packaged.starts_with("# gateway-agent: "));
    }

    #[test]
    fn depends_come_from_the_needed_libraries() {
        let dump = "Dynamic Section:\n  NEEDED               libsqlite3.so.0\n  NEEDED               libc.so.6\n  SONAME x\n";
        assert_eq!(needed(dump), ["libsqlite3.so.0", "libc.so.6"]);
        let cache = "123 libs found in cache `/etc/ld.so.cache'\n\
                     \tlibc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6\n\
                     \tlibc.so.6 (libc6) => /lib32/libc.so.6\n\
                     \tlibc.so.6x (libc6,x86-64) => /nope\n";
        assert_eq!(
            library_path(cache, "libc.so.6").as_deref(),
            Some("/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(library_path(cache, "libm.so.6"), None);
    }

    #[test]
    fn prerm_detaches_on_removal_only() {
        let script = prerm();
        let (guard, body) = script.split_once("if [ \"$1\" = remove ]; then").unwrap();
        assert!(!guard.contains("detach"));
        assert!(body.contains(&format!("{BINARY} --config {CONFIG} dataplane detach")));
    }
}

/// Where the Debian 12 root the package test installs into is cached, outside any clone, so
/// a machine fetches it once.
pub const TEST_ROOT_CACHE: &str = "/var/cache/gateway-tests/debian-bookworm-systemd-sqlite.tar.gz";
/// What the root holds besides minbase: systemd (for `systemd-analyze`) and the libraries
/// the package depends on, since the test installs with `dpkg -i`, offline. A new library
/// dependency fails the test's install with dpkg's own message: add it here (and rename the
/// cache, so machines make a new one).
const TEST_ROOT_INCLUDE: &str = "--include=systemd,libsqlite3-0";

/// Makes the cached Debian 12 root (`debootstrap --variant=minbase --include=systemd`) if it
/// is missing: a package install, like the lab's, so it happens here and not in a test.
pub fn ensure_test_root() -> Result<PathBuf> {
    let cache = PathBuf::from(TEST_ROOT_CACHE);
    if cache.exists() {
        return Ok(cache);
    }
    crate::deps::ensure_packages(&["debootstrap"], "for the package test's Debian root")?;
    let parent = cache.parent().context("the cache path has a parent")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let work = parent.join(format!("root.{}", std::process::id()));
    if work.exists() {
        fs::remove_dir_all(&work).ok();
    }
    let mirror = host_mirror().unwrap_or_else(|| "http://deb.debian.org/debian".into());
    eprintln!("xtask: debootstrap of Debian 12 (bookworm) from {mirror}, once per machine");
    let result = process::run(
        "debootstrap",
        [
            "--variant=minbase",
            TEST_ROOT_INCLUDE,
            "bookworm",
            path_str(&work)?,
            mirror.as_str(),
        ],
    )
    .and_then(|()| {
        let partial = cache.with_extension("partial");
        process::run(
            "tar",
            ["-C", path_str(&work)?, "-czf", path_str(&partial)?, "."],
        )?;
        fs::rename(&partial, &cache).context("moving the root archive into place")
    });
    fs::remove_dir_all(&work).ok();
    result.map(|()| cache)
}

/// The first Debian archive this host's apt uses (deb822 or one-line sources).
fn host_mirror() -> Option<String> {
    let deb822 = fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let one_line = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    parse_mirror(&deb822, &one_line)
}

/// The archive URI of the first `bookworm` source (security archives skipped).
pub fn parse_mirror(deb822: &str, one_line: &str) -> Option<String> {
    let from_deb822 = deb822.split("\n\n").find_map(|stanza| {
        let uri = stanza
            .lines()
            .find_map(|l| l.strip_prefix("URIs:"))?
            .split_whitespace()
            .next()?;
        let suites = stanza.lines().find_map(|l| l.strip_prefix("Suites:"))?;
        suites
            .split_whitespace()
            .any(|s| s == "bookworm")
            .then(|| uri.to_string())
    });
    from_deb822.or_else(|| {
        one_line.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "deb").then_some(())?;
            let uri = words.find(|w| !w.starts_with('['))?;
            (words.next()? == "bookworm").then(|| uri.to_string())
        })
    })
}

#[cfg(test)]
mod mirror_tests {
    use super::parse_mirror;

    #[test]
    fn the_mirror_is_the_main_archive_of_bookworm() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\n\
                      Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            parse_mirror(deb822, "").as_deref(),
            Some("http://mirror.example/debian")
        );
        let one = "# comment\ndeb [arch=amd64] http://other.example/debian bookworm main\n";
        assert_eq!(
            parse_mirror("", one).as_deref(),
            Some("http://other.example/debian")
        );
        assert_eq!(
            parse_mirror("", "deb http://x.example/debian bullseye main\n"),
            None
        );
    }
}
