//! apt through the HTTP proxy's cache, in the lab: a tiny Debian-format repository (built by
//! the test: one `.deb` made with `dpkg-deb`, a hand-written `Packages` and `Release`,
//! `[trusted=yes]`) served by the cache fixture origin in `up`; `apt-get update` and
//! `apt-get install --download-only` in `c1` and `c2`, each with an apt root of its own
//! (`APT_CONFIG` naming `Dir`, the state, the cache and the sources), never the host's dpkg
//! database or archives.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway_tests::{
    eventually, lab, skip_unless_root, Agent, Background, DhcpClient, OrFail, TestLab,
};

const PORT: u16 = 8083;
const PACKAGE: &str = "gateway-lab-hello";

fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .or_fail(format_args!("running {program}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).or_fail(format_args!("creating {}", dir.display()));
    }
    std::fs::write(path, text).or_fail(format_args!("writing {}", path.display()));
}

fn sha256(path: &Path) -> String {
    run("sha256sum", &[&path.display().to_string()])
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .map(|m| m.len())
        .or_fail("a repository file")
}

/// (Re)writes the repository with `version` of the package: the `.deb` under `pool/`, then
/// `Packages` and `Release` (flat layout, unsigned).
fn publish(repo: &Path, version: &str) {
    let build = repo
        .parent()
        .or_fail_opt("the repository's parent")
        .join(format!("build-{version}"));
    write(
        &build.join("DEBIAN/control"),
        &format!(
            "Package: {PACKAGE}\nVersion: {version}\nArchitecture: all\n\
             Maintainer: lab <lab@example.org>\nDescription: a package of the gateway lab\n"
        ),
    );
    write(
        &build.join(format!("usr/share/doc/{PACKAGE}/hello")),
        &format!("hello {version}\n"),
    );
    let deb_name = format!("pool/{PACKAGE}_{version}_all.deb");
    let deb = repo.join(&deb_name);
    std::fs::create_dir_all(repo.join("pool")).or_fail("creating pool/");
    run(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "--build",
            &build.display().to_string(),
            &deb.display().to_string(),
        ],
    );
    let packages = repo.join("Packages");
    write(
        &packages,
        &format!(
            "Package: {PACKAGE}\nVersion: {version}\nArchitecture: all\n\
             Maintainer: lab <lab@example.org>\nFilename: {deb_name}\nSize: {}\nSHA256: {}\n\
             Description: a package of the gateway lab\n\n",
            size(&deb),
            sha256(&deb)
        ),
    );
    let date = run("date", &["-u", "-R"]);
    write(
        &repo.join("Release"),
        &format!(
            "Origin: gateway-lab\nLabel: gateway-lab\nSuite: lab\nCodename: lab\nDate: {}\n\
             Architectures: all amd64\nSHA256:\n {} {} Packages\n",
            date.trim(),
            sha256(&packages),
            size(&packages)
        ),
    );
}

trait OrFailOpt<T> {
    fn or_fail_opt(self, what: &str) -> T;
}

impl<T> OrFailOpt<T> for Option<T> {
    fn or_fail_opt(self, what: &str) -> T {
        match self {
            Some(value) => value,
            None => gateway_tests::fail(what),
        }
    }
}

/// An apt root for one client: its config, sources, state, lists and archives.
fn apt_root(dir: &Path, role: &str) -> PathBuf {
    let root = dir.join(format!("apt-{role}"));
    let _ = std::fs::remove_dir_all(&root);
    for sub in [
        "etc/apt/apt.conf.d",
        "etc/apt/preferences.d",
        "etc/apt/sources.list.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg",
        "var/log/apt",
    ] {
        std::fs::create_dir_all(root.join(sub)).or_fail("creating the apt root");
    }
    write(&root.join("var/lib/dpkg/status"), "");
    let r = root.display();
    write(
        &root.join("etc/apt/sources.list"),
        &format!(
            "deb [trusted=yes] http://{}:{PORT}/repo ./\n",
            lab::ORIGIN_NAME
        ),
    );
    write(
        &root.join("apt.conf"),
        &format!(
            "Dir \"{r}/\";\nDir::State::status \"{r}/var/lib/dpkg/status\";\n\
             Acquire::http::Proxy \"http://198.51.100.1:3128\";\nAcquire::Languages \"none\";\n\
             Acquire::Retries \"0\";\nDebug::NoLocking \"true\";\nAPT::Sandbox::User \"root\";\n\
             APT::Architecture \"amd64\";\nDir::Bin::dpkg \"/bin/false\";\n"
        ),
    );
    root
}

fn apt(lab: &TestLab, role: &str, root: &Path, args: &[&str]) -> String {
    let config = format!("APT_CONFIG={}", root.join("apt.conf").display());
    let mut all = vec![config.as_str(), "apt-get", "-q", "-y"];
    all.extend_from_slice(args);
    lab.exec_ok(role, "env", &all)
}

fn candidate(lab: &TestLab, role: &str, root: &Path) -> String {
    let config = format!("APT_CONFIG={}", root.join("apt.conf").display());
    let out = lab.exec_ok(role, "env", &[&config, "apt-cache", "policy", PACKAGE]);
    out.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Candidate:")
                .map(|c| c.trim().to_owned())
        })
        .unwrap_or_default()
}

#[test]
fn apt_update_and_install_through_the_cache() {
    if skip_unless_root("builds a lab of network namespaces") {
        return;
    }
    let lab = TestLab::up();
    let cfg = lab.config_without_tor("cache-apt.toml");
    let mut text = std::fs::read_to_string(&cfg).or_fail("reading the config");
    text.push_str(&format!(
        "\n[http_proxy]\negress = \"direct\"\nports = [80, {PORT}]\n"
    ));
    std::fs::write(&cfg, text).or_fail("writing the config");
    let dir = cfg.parent().or_fail_opt("config dir").to_owned();
    let repo = dir.join("repo");
    let _ = std::fs::remove_dir_all(&repo);
    publish(&repo, "1.0");

    let log = dir.join(format!("cache-origin-{PORT}.log"));
    let _ = std::fs::remove_file(&log);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cache_origin.py");
    let version = dir.join("apt-origin.version");
    write(&version, "1");
    let (s, l, v, r) = (
        script.display().to_string(),
        log.display().to_string(),
        version.display().to_string(),
        repo.display().to_string(),
    );
    let _origin: Background = lab.spawn(
        "up",
        "/usr/bin/python3",
        &[&s, lab::ORIGIN_IP, &PORT.to_string(), &l, &v, &r],
    );
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(10), || lines().contains("READY")),
        "no origin"
    );
    let gets = |needle: &str| {
        lines()
            .lines()
            .filter(|l| l.starts_with("GET ") && l.contains(needle))
            .count()
    };

    let agent = Agent::start(&lab, &cfg);
    lab.wait_uplink(&cfg);
    lab.dhcp("c1", DhcpClient::Dhclient, None);
    lab.dhcp("c2", DhcpClient::Udhcpc, None);

    let c1 = apt_root(&dir, "c1");
    let c2 = apt_root(&dir, "c2");
    apt(&lab, "c1", &c1, &["update"]);
    assert_eq!(candidate(&lab, "c1", &c1), "1.0", "{}", lines());
    apt(&lab, "c1", &c1, &["install", "--download-only", PACKAGE]);
    let deb = format!("{PACKAGE}_1.0_all.deb");
    assert!(
        c1.join("var/cache/apt/archives").join(&deb).is_file(),
        "c1 got no .deb"
    );

    // The second client: its install is served from the cache.
    apt(&lab, "c2", &c2, &["update"]);
    apt(&lab, "c2", &c2, &["install", "--download-only", PACKAGE]);
    assert!(
        c2.join("var/cache/apt/archives").join(&deb).is_file(),
        "c2 got no .deb"
    );
    assert_eq!(
        gets(&deb),
        1,
        "the .deb crossed the uplink twice:\n{}",
        lines()
    );
    // Packages is revalidated too, but its body crossed once (the others got 304).
    let whole = |file: &str| {
        lines()
            .lines()
            .filter(|l| l.starts_with("GET ") && l.contains(&format!("/{file} -")))
            .count()
    };
    assert_eq!(whole("Packages"), 1, "{}", lines());
    // Release is always revalidated: c2's update asked the origin again.
    assert!(gets("Release") >= 2, "{}", lines());

    // The repository changes: the next update sees the new Release at once.
    std::thread::sleep(Duration::from_millis(20));
    publish(&repo, "1.1");
    apt(&lab, "c1", &c1, &["update"]);
    assert_eq!(candidate(&lab, "c1", &c1), "1.1", "{}", lines());
    let stats = lab.cli_json(&cfg, &["cache", "stats"]);
    assert!(stats["hits"].as_u64() >= Some(1), "{stats}");
    agent.terminate();
}
