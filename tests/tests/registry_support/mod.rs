//! What the registry's lab tests share: an agent with the registry and a client leased
//! ([`Setup`]), its container tools with their own configuration, and OCI image layouts
//! built from local files ([`oci`]).

pub mod oci;

use std::path::{Path, PathBuf};

use gateway_tests::{fail, Agent, DhcpClient, OrFail, TestLab};

/// The gateway's inside address, where the registry listens (port 443).
pub const REGISTRY: &str = "198.51.100.1";

/// A running agent with the registry, its config and a work folder for the test's files.
pub struct Setup {
    pub lab: TestLab,
    pub cfg: PathBuf,
    pub agent: Option<Agent>,
    pub work: PathBuf,
    /// The container tools' folder: short, as podman wants its runroot under 50 characters.
    tools: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tools);
    }
}

impl Setup {
    /// An agent without Tor where client `ci` may push to `team/`; c1 leased.
    #[allow(dead_code)] // not lab_s3's
    pub fn up(name: &str) -> Setup {
        Setup::up_edited(name, |text| text)
    }

    /// [`Setup::up`] with the config edited by `edit` first.
    #[allow(dead_code)] // lab_s3's
    pub fn up_edited(name: &str, edit: impl FnOnce(String) -> String) -> Setup {
        Setup::up_in(TestLab::up(), name, edit)
    }

    /// [`Setup::up_edited`] in `lab`, a gateway slot the caller prepared.
    #[allow(dead_code)] // lab_s3's
    pub fn up_in(lab: TestLab, name: &str, edit: impl FnOnce(String) -> String) -> Setup {
        let cfg = lab.config_without_tor(&format!("{name}.toml"));
        let mut text = edit(std::fs::read_to_string(&cfg).or_fail("reading the agent config"));
        text.push_str("\n[[registry.access]]\nclient = \"ci\"\npush = [\"team/\"]\n");
        std::fs::write(&cfg, text).or_fail("writing the agent config");
        Setup::start(lab, cfg, name)
    }

    /// An agent with the lab's Tor (and so the mirror, on the lab's upstreams), its config
    /// edited by `edit`; c1 and c2 leased.
    #[allow(dead_code)] // lab_mirror's, not lab_registry's
    pub fn up_with_tor(name: &str, edit: impl FnOnce(String) -> String) -> Setup {
        Setup::up_with_tor_in(TestLab::up(), name, edit)
    }

    /// [`Setup::up_with_tor`] in `lab`, a gateway slot the caller prepared.
    #[allow(dead_code)] // lab_s3's
    pub fn up_with_tor_in(lab: TestLab, name: &str, edit: impl FnOnce(String) -> String) -> Setup {
        let cfg = lab.agent_config(&format!("{name}.toml"), edit);
        let setup = Setup::start(lab, cfg, name);
        setup.lab.dhcp("c2", DhcpClient::Dhclient, None);
        setup
    }

    fn start(lab: TestLab, cfg: PathBuf, name: &str) -> Setup {
        let agent = Agent::start(&lab, &cfg);
        lab.dhcp("c1", DhcpClient::Dhclient, None);
        let work = lab.lab.gateway_dir().join(format!("{name}-work"));
        std::fs::create_dir_all(&work).or_fail("creating the work folder");
        let tools = std::process::Command::new("mktemp")
            .args(["-d", "/tmp/gwr.XXXXXX"])
            .output()
            .or_fail("mktemp");
        let tools = PathBuf::from(
            String::from_utf8(tools.stdout)
                .or_fail("mktemp's output")
                .trim(),
        );
        let setup = Setup {
            lab,
            cfg,
            agent: Some(agent),
            work,
            tools,
        };
        let status = setup.lab.cli_json(&setup.cfg, &["status"]);
        assert!(status["registry"].is_object(), "{status}");
        setup
    }

    pub fn agent(&self) -> &Agent {
        self.agent.as_ref().unwrap_or_else(|| fail("no agent runs"))
    }

    /// A client bundle for `name` (client.cert, client.key, ca.crt).
    pub fn bundle(&self, name: &str) -> PathBuf {
        let out = self.work.join("certs").join(name);
        self.lab.issue_client(&self.cfg, name, &out)
    }

    /// curl from c1 with `bundle`: (exit status ok, `-i` output).
    pub fn curl(&self, bundle: Option<&Path>, args: &[&str]) -> (bool, String) {
        let ca = self.lab.lab.agent_state_dir().join("pki/ca.crt");
        let mut all: Vec<String> = ["-sS", "-i", "--max-time", "20", "--path-as-is", "--cacert"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        all.push(ca.display().to_string());
        if let Some(bundle) = bundle {
            all.extend([
                "--cert".into(),
                bundle.join("client.cert").display().to_string(),
                "--key".into(),
                bundle.join("client.key").display().to_string(),
            ]);
        }
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = self.lab.exec("c1", "curl", &refs);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// A container tool from c1 with its own configuration under `work/tools`.
    pub fn tool(&self, program: &str, args: &[&str]) -> std::process::Output {
        self.tool_in("c1", program, args)
    }

    /// [`Setup::tool`] from client `role` (the tools' folder is shared; give each its own
    /// `--root` for podman when two run at once).
    pub fn tool_in(&self, role: &str, program: &str, args: &[&str]) -> std::process::Output {
        let tools = &self.tools;
        std::fs::create_dir_all(tools.join("tmp")).or_fail("creating the tools' folder");
        std::fs::write(
            tools.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .or_fail("writing registries.conf");
        std::fs::write(
            tools.join("containers.conf"),
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .or_fail("writing containers.conf");
        std::fs::write(
            tools.join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .or_fail("writing policy.json");
        let env = [
            format!("HOME={}", tools.display()),
            format!("XDG_CONFIG_HOME={}", tools.display()),
            format!("XDG_RUNTIME_DIR={}", tools.join("tmp").display()),
            format!("TMPDIR={}", tools.join("tmp").display()),
            format!(
                "CONTAINERS_REGISTRIES_CONF={}",
                tools.join("registries.conf").display()
            ),
            format!(
                "CONTAINERS_CONF={}",
                tools.join("containers.conf").display()
            ),
            format!(
                "CONTAINERS_STORAGE_CONF={}",
                tools.join("storage.conf").display()
            ),
        ];
        std::fs::write(
            tools.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{0}/run\"\ngraphroot = \"{0}/root\"\n",
                tools.display()
            ),
        )
        .or_fail("writing storage.conf");
        let mut all: Vec<String> = env.to_vec();
        all.push(program.to_owned());
        if program != "skopeo" {
            all.extend([
                "--root".into(),
                tools.join("root").display().to_string(),
                "--runroot".into(),
                tools.join("run").display().to_string(),
                "--storage-driver".into(),
                "vfs".into(),
            ]);
        }
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        self.lab.exec(role, "env", &refs)
    }

    pub fn tool_ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.tool(program, args);
        assert!(
            out.status.success(),
            "{program} {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.agent.as_ref().map(Agent::log_text).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Pushes `file` as one blob of `repo` in a single POST (`?digest=`), with `bundle`: the
    /// response (`-i`).
    #[allow(dead_code)] // lab_registry's and lab_s3's
    pub fn push_blob(&self, bundle: &Path, repo: &str, file: &Path, digest: &str) -> String {
        let (_, out) = self.curl(
            Some(bundle),
            &[
                "-X",
                "POST",
                "-H",
                "Expect:",
                "-H",
                "Content-Type: application/octet-stream",
                "--data-binary",
                &format!("@{}", file.display()),
                &format!("https://{REGISTRY}/v2/{repo}/blobs/uploads/?digest={digest}"),
            ],
        );
        out
    }

    /// `skopeo copy` of `source` into `dir:<out>`, through the mirror with `bundle`, retried
    /// for a while: the agent's first circuits may meet an early consensus without exits
    /// (docs/TORLAB.md).
    #[allow(dead_code)] // lab_mirror's and lab_s3's
    pub fn copy_through_tor(&self, bundle: &Path, source: &str, out: &Path) {
        let mut last = None;
        let copied = gateway_tests::eventually(std::time::Duration::from_secs(120), || {
            let _ = std::fs::remove_dir_all(out);
            let done = self.tool(
                "skopeo",
                &[
                    "copy",
                    "--src-cert-dir",
                    &bundle.display().to_string(),
                    source,
                    &format!("dir:{}", out.display()),
                ],
            );
            let ok = done.status.success();
            last = Some(done);
            ok
        });
        assert!(
            copied,
            "skopeo through the mirror: {}\n{}",
            last.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default(),
            self.agent().log_text()
        );
    }

    pub fn policy(&self) -> String {
        self.tools.join("policy.json").display().to_string()
    }
}

/// The lab's upstream `ns`'s access log: (peer, method, path, status) per request.
#[allow(dead_code)] // lab_mirror's and lab_s3's
pub fn upstream_requests(lab: &TestLab, ns: &str) -> Vec<(String, String, String, String)> {
    std::fs::read_to_string(lab.lab.upstream_log(ns))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            // 203.0.113.41 - - [date] "GET /v2/… HTTP/1.1" 200 715 "" "agent"
            let peer = line.split_whitespace().next()?.to_owned();
            let request = line.split('"').nth(1)?;
            let mut parts = request.split_whitespace();
            let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
            let status = line
                .split('"')
                .nth(2)?
                .split_whitespace()
                .next()?
                .to_owned();
            Some((peer, method, path, status))
        })
        .collect()
}

/// Successful GETs of `path` at the lab's upstream `ns`, by peer.
#[allow(dead_code)] // lab_mirror's and lab_s3's
pub fn fetched_by(lab: &TestLab, ns: &str, path: &str) -> Vec<String> {
    upstream_requests(lab, ns)
        .into_iter()
        .filter(|(_, method, p, status)| method == "GET" && p == path && status.starts_with('2'))
        .map(|(peer, ..)| peer)
        .collect()
}

/// A layer of `mib` MiB of patterned bytes in `work`: its path and digest.
#[allow(dead_code)] // lab_registry's and lab_s3's
pub fn big_layer(work: &Path, mib: u32) -> (PathBuf, String) {
    let path = work.join(format!("big-{mib}.layer"));
    let data: Vec<u8> = (0..mib << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, &data).or_fail("writing the big layer");
    (path, oci::digest(&data))
}
