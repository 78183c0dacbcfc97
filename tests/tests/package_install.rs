//! The Debian package, installed into a fresh Debian 12 root (the cached debootstrap that
//! `cargo xtask test` makes once per machine): its files land where the README says, the
//! example config passes `check-config` in a namespace with the example's interface names,
//! `systemd-analyze verify` accepts the installed unit, an upgrade keeps an edited conffile
//! and does not detach, and a removal runs `dataplane detach`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gateway_tests::netns::unique_prefix;
use gateway_tests::{agent_bin, fail, skip_unless_root, OrFail};
use xtask::package;

/// A scratch directory removed on drop, and the namespace made for the test.
struct Scratch {
    dir: PathBuf,
    ns: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .or_fail(format_args!("running {program}"))
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    if !out.status.success() {
        fail(format_args!(
            "{program} {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `sh -c script` in the test's namespace, in a mount namespace of its own (so the mounts it
/// makes under the root vanish with it).
fn in_ns(ns: &str, script: &str) -> Output {
    run(
        "ip",
        &["netns", "exec", ns, "unshare", "-m", "sh", "-c", script],
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_else(|| fail("a non-UTF-8 path"))
}

#[test]
fn the_package_installs_verifies_upgrades_and_detaches_on_removal() {
    if skip_unless_root("installs a package into a Debian root and makes a namespace") {
        return;
    }
    let cache = Path::new(package::TEST_ROOT_CACHE);
    if !cache.exists() {
        fail(format_args!(
            "{} is missing: `cargo xtask test` makes it (debootstrap, once per machine)",
            cache.display()
        ));
    }
    let prefix = unique_prefix();
    let scratch = Scratch {
        dir: PathBuf::from(format!("/var/tmp/gateway-pkg-{prefix}")),
        ns: format!("{prefix}-pkg"),
    };
    let root = scratch.dir.join("root");
    fs::create_dir_all(&root).or_fail("creating the root");
    let deb =
        package::build_deb(&agent_bin(), &scratch.dir.join("out")).or_fail("building the package");
    ok("tar", &["-C", path(&root), "-xzf", path(cache)]);
    fs::copy(&deb, root.join("tmp/gateway.deb")).or_fail("copying the package into the root");
    let chroot = |args: &[&str]| {
        let mut all = vec![path(&root)];
        all.extend_from_slice(args);
        run("chroot", &all)
    };

    // Install: every file where the README says.
    let out = chroot(&["dpkg", "-i", "/tmp/gateway.deb"]);
    assert!(out.status.success(), "dpkg -i: {}", text(&out));
    for file in [
        package::BINARY,
        package::UNIT,
        package::CONFIG,
        "/usr/share/bash-completion/completions/gateway-agent",
        "/usr/share/zsh/vendor-completions/_gateway-agent",
        "/usr/share/fish/vendor_completions.d/gateway-agent.fish",
        "/usr/share/man/man1/gateway-agent.1.gz",
    ] {
        assert!(root.join(&file[1..]).is_file(), "{file} is not installed");
    }
    let mode = fs::metadata(root.join(&package::STATE_DIR[1..]))
        .or_fail("the state directory")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the state directory's mode");
    let conffiles = chroot(&["dpkg-query", "-W", "-f=${Conffiles}", "gateway-agent"]);
    assert!(
        text(&conffiles).contains(package::CONFIG),
        "the config is not a conffile: {}",
        text(&conffiles)
    );
    let bash = fs::read_to_string(root.join("usr/share/bash-completion/completions/gateway-agent"))
        .or_fail("the bash completion");
    assert!(
        bash.contains("check-config") && bash.contains("dataplane"),
        "{bash}"
    );
    let man = chroot(&["sh", "-c", "zcat /usr/share/man/man1/gateway-agent.1.gz"]);
    assert!(text(&man).contains(".TH gateway-agent"), "{}", text(&man));

    // The example config passes check-config where its interfaces exist.
    let example = fs::read_to_string(root.join(&package::CONFIG[1..])).or_fail("the config");
    let cfg: toml::Value = toml::from_str(&example).or_fail("parsing the example config");
    let (outside, inside) = (
        cfg["interfaces"]["outside"]
            .as_str()
            .unwrap_or_else(|| fail("no outside")),
        cfg["interfaces"]["inside"]
            .as_str()
            .unwrap_or_else(|| fail("no inside")),
    );
    ok("ip", &["netns", "add", &scratch.ns]);
    ok(
        "ip",
        &[
            "-n",
            &scratch.ns,
            "link",
            "add",
            outside,
            "type",
            "veth",
            "peer",
            "name",
            inside,
        ],
    );
    let check = format!(
        "chroot {} {} check-config {}",
        path(&root),
        package::BINARY,
        package::CONFIG
    );
    let out = in_ns(&scratch.ns, &check);
    assert!(out.status.success(), "check-config: {}", text(&out));
    let out = in_ns(
        &scratch.ns,
        &format!(
            "chroot {} {} check-config {}",
            path(&root),
            package::BINARY,
            "/nonexistent.toml"
        ),
    );
    assert!(!out.status.success(), "check-config passed a missing file");

    // systemd-analyze verify on the installed unit: no warning at all.
    let verify = format!(
        "mount -t proc proc {root}/proc && chroot {root} systemd-analyze verify {}",
        package::UNIT,
        root = path(&root)
    );
    let out = in_ns(&scratch.ns, &verify);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );

    // Upgrade (the same version again): the edited conffile stays, nothing is detached.
    let edited = format!("{example}\n# edited by the test\n");
    fs::write(root.join(&package::CONFIG[1..]), &edited).or_fail("editing the config");
    let out = chroot(&["dpkg", "-i", "--force-confold", "/tmp/gateway.deb"]);
    assert!(out.status.success(), "upgrade: {}", text(&out));
    assert!(
        !text(&out).contains(package::DETACH_NOTE),
        "an upgrade detached: {}",
        text(&out)
    );
    assert_eq!(
        fs::read_to_string(root.join(&package::CONFIG[1..])).or_fail("the config"),
        edited,
        "the upgrade replaced the edited config"
    );

    // Removal: prerm detaches (with a bpffs under the root, as on a real host), the binary
    // goes, the config stays until purge, the state (what an agent wrote there) even then.
    let kept = root.join(&package::STATE_DIR[1..]).join("dhcp-leases.redb");
    fs::write(&kept, b"leases").or_fail("writing into the state directory");
    let remove = format!(
        "mkdir -p {root}/sys/fs/bpf && mount -t bpf bpf {root}/sys/fs/bpf && chroot {root} dpkg -r gateway-agent",
        root = path(&root)
    );
    let out = in_ns(&scratch.ns, &remove);
    assert!(out.status.success(), "dpkg -r: {}", text(&out));
    assert!(
        text(&out).contains(package::DETACH_NOTE),
        "removal did not detach: {}",
        text(&out)
    );
    assert!(
        !text(&out).contains("detach failed"),
        "detach failed on removal: {}",
        text(&out)
    );
    assert!(
        !root.join(&package::BINARY[1..]).exists(),
        "the binary stayed"
    );
    assert!(
        root.join(&package::CONFIG[1..]).exists(),
        "remove took the conffile"
    );
    let out = chroot(&["dpkg", "--purge", "gateway-agent"]);
    assert!(out.status.success(), "purge: {}", text(&out));
    assert!(
        !root.join(&package::CONFIG[1..]).exists(),
        "purge kept the conffile"
    );
    assert!(
        root.join(&package::STATE_DIR[1..]).is_dir(),
        "purge took the state"
    );
}
