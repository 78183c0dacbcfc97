//! The private registry with real clients, from `c1`: skopeo, podman and buildah push and pull
//! images built here from local files (never from a real registry), a multi-platform index and
//! a referrer; refused clients get no HTTP at all; bad requests get the spec's error codes; a
//! `kill -9` during a push leaves nothing partial, and GC during a push takes nothing it needs.
//!
//! Each test gives the container tools their own storage (`--root`, `--runroot`), cert dir,
//! `registries.conf` (no search registries: no short name ever resolves anywhere), policy and
//! `containers.conf` in its slot's folder; `/etc/containers` and `/var/lib/containers` are
//! never used.

mod registry_support;

use std::path::PathBuf;
use std::time::Duration;

use gateway_tests::{eventually, Agent};
use registry_support::oci::{build_images, digest};
use registry_support::{big_layer, Setup, REGISTRY};
use serde_json::{json, Value};

#[test]
fn real_clients_push_and_pull_images_indexes_and_referrers() {
    let setup = Setup::up("clients");
    let ci = setup.bundle("ci");
    let ci_dir = ci.display().to_string();
    let (oci, v1_digest, index_digest) = build_images(&setup.work);
    let policy = setup.policy();

    // skopeo: into the registry and back out, digests equal.
    setup.tool_ok(
        "skopeo",
        &[
            "--policy",
            &policy,
            "copy",
            "--dest-cert-dir",
            &ci_dir,
            &format!("oci:{}:v1", oci.display()),
            &format!("docker://{REGISTRY}/team/app:v1"),
        ],
    );
    let back = setup.work.join("back");
    setup.tool_ok(
        "skopeo",
        &[
            "--policy",
            &policy,
            "copy",
            "--src-cert-dir",
            &ci_dir,
            &format!("docker://{REGISTRY}/team/app:v1"),
            &format!("oci:{}:v1", back.display()),
        ],
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], v1_digest.as_str());
    let raw = setup.tool_ok(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--cert-dir",
            &ci_dir,
            &format!("docker://{REGISTRY}/team/app:v1"),
        ],
    );
    assert_eq!(digest(raw.as_bytes()), v1_digest);

    // A multi-platform index, all of it.
    setup.tool_ok(
        "skopeo",
        &[
            "--policy",
            &policy,
            "copy",
            "--all",
            "--dest-cert-dir",
            &ci_dir,
            &format!("oci:{}:multi", oci.display()),
            &format!("docker://{REGISTRY}/team/multi:v1"),
        ],
    );
    let raw = setup.tool_ok(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--cert-dir",
            &ci_dir,
            &format!("docker://{REGISTRY}/team/multi:v1"),
        ],
    );
    assert_eq!(digest(raw.as_bytes()), index_digest);
    let listed: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(listed["manifests"].as_array().unwrap().len(), 2);

    // podman: pull the layout into its own storage, push, remove, pull back.
    setup.tool_ok("podman", &["pull", &format!("oci:{}:v1", oci.display())]);
    let images = setup.tool_ok("podman", &["images", "--format", "{{.ID}}"]);
    let id = images.lines().next().unwrap().trim().to_owned();
    setup.tool_ok(
        "podman",
        &[
            "push",
            "--signature-policy",
            &policy,
            "--cert-dir",
            &ci_dir,
            &id,
            &format!("docker://{REGISTRY}/team/podman:v1"),
        ],
    );
    setup.tool_ok("podman", &["rmi", "-f", &id]);
    setup.tool_ok(
        "podman",
        &[
            "pull",
            "--signature-policy",
            &policy,
            "--cert-dir",
            &ci_dir,
            &format!("{REGISTRY}/team/podman:v1"),
        ],
    );
    let images = setup.tool_ok(
        "podman",
        &["images", "--format", "{{.Repository}}:{{.Tag}}"],
    );
    assert!(
        images.contains(&format!("{REGISTRY}/team/podman:v1")),
        "{images}"
    );

    // buildah: an image from scratch, committed and pushed.
    let ctr = setup
        .tool_ok("buildah", &["from", "scratch"])
        .trim()
        .to_owned();
    std::fs::write(setup.work.join("built.txt"), b"built by buildah").unwrap();
    setup.tool_ok(
        "buildah",
        &[
            "copy",
            &ctr,
            setup.work.join("built.txt").to_str().unwrap(),
            "/built.txt",
        ],
    );
    setup.tool_ok(
        "buildah",
        &["commit", "--signature-policy", &policy, &ctr, "built"],
    );
    setup.tool_ok(
        "buildah",
        &[
            "push",
            "--signature-policy",
            &policy,
            "--cert-dir",
            &ci_dir,
            "built",
            &format!("docker://{REGISTRY}/team/buildah:v1"),
        ],
    );
    let (_, out) = setup.curl(
        Some(&ci),
        &[&format!("https://{REGISTRY}/v2/team/buildah/tags/list")],
    );
    assert!(out.contains(r#""tags":["v1"]"#), "{out}");

    // A signature-style referrer of v1, pushed with curl, listed by the referrers API.
    let config = b"{}";
    let (_, out) = setup.curl(
        Some(&ci),
        &[
            "-X",
            "POST",
            "--data-binary",
            "{}",
            &format!(
                "https://{REGISTRY}/v2/team/app/blobs/uploads/?digest={}",
                digest(config)
            ),
        ],
    );
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    let signature = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest(config), "size": 2},
        "layers": [],
        "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": v1_digest, "size": 1},
    });
    let body = serde_json::to_string(&signature).unwrap();
    let sig_digest = digest(body.as_bytes());
    let (_, out) = setup.curl(
        Some(&ci),
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &body,
            &format!("https://{REGISTRY}/v2/team/app/manifests/{sig_digest}"),
        ],
    );
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    assert!(
        out.to_lowercase()
            .contains(&format!("oci-subject: {v1_digest}")),
        "{out}"
    );
    let (_, out) = setup.curl(
        Some(&ci),
        &[&format!(
            "https://{REGISTRY}/v2/team/app/referrers/{v1_digest}"
        )],
    );
    assert!(
        out.contains(&sig_digest) && out.contains("application/vnd.example.signature"),
        "{out}"
    );

    // The catalog, and the CLI through the control socket.
    let (_, out) = setup.curl(Some(&ci), &[&format!("https://{REGISTRY}/v2/_catalog")]);
    for repo in ["team/app", "team/multi", "team/podman", "team/buildah"] {
        assert!(out.contains(repo), "{repo}: {out}");
    }
    let ls = setup.lab.cli_json(&setup.cfg, &["registry", "ls"]);
    assert!(ls.to_string().contains("team/podman"), "{ls}");
    let status = setup.lab.cli_json(&setup.cfg, &["status"]);
    assert!(
        status["registry"]["pushes"].as_u64().unwrap() >= 5,
        "{status}"
    );
    assert!(
        status["registry"]["repositories"].as_u64().unwrap() >= 4,
        "{status}"
    );
    let _ = setup.agent();
}

/// `-i` output's status line is there: the server answered in HTTP.
fn answered(out: &str) -> bool {
    out.contains("HTTP/")
}

#[test]
fn refused_clients_get_no_http_and_bad_requests_get_the_specs_codes() {
    let setup = Setup::up("refusals");
    let ci = setup.bundle("ci");
    let dev = setup.bundle("dev");
    let base = format!("https://{REGISTRY}/v2/");
    let (ok, out) = setup.curl(Some(&ci), &[&base]);
    assert!(ok && out.starts_with("HTTP/1.1 200"), "{out}");

    // Another CA: a second PKI under another state dir, made by the same CLI.
    let state = setup.lab.lab.agent_state_dir().display().to_string();
    let other_cfg = setup.lab.agent_config("other-ca.toml", |text| {
        text.replace(&format!("\"{state}\""), &format!("\"{state}-other\""))
    });
    let out = setup.lab.cli(&other_cfg, &["pki", "init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let foreign = setup.work.join("certs/foreign");
    let out = setup.lab.cli(
        &other_cfg,
        &[
            "pki",
            "issue-client",
            "ci",
            "--out",
            foreign.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (who, bundle, extra) in [
        ("no certificate", None, vec![]),
        ("another CA's certificate", Some(foreign.as_path()), vec![]),
        ("TLS 1.2", Some(ci.as_path()), vec!["--tls-max", "1.2"]),
    ] {
        let mut args = extra.clone();
        args.push(&base);
        let (ok, out) = setup.curl(bundle, &args);
        assert!(!ok && !answered(&out), "{who} got an answer: {out}");
    }

    // DIGEST_INVALID, and nothing stored.
    let claimed = digest(b"good");
    let (_, out) = setup.curl(
        Some(&ci),
        &[
            "-X",
            "POST",
            "--data-binary",
            "evil",
            &format!("{base}team/app/blobs/uploads/?digest={claimed}"),
        ],
    );
    assert!(
        out.starts_with("HTTP/1.1 400") && out.contains("DIGEST_INVALID"),
        "{out}"
    );
    let (_, out) = setup.curl(
        Some(&ci),
        &["-I", &format!("{base}team/app/blobs/{claimed}")],
    );
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");

    // NAME_INVALID.
    let long = "a".repeat(300);
    for name in ["../x", "UPPER", long.as_str()] {
        let (_, out) = setup.curl(Some(&ci), &[&format!("{base}{name}/tags/list")]);
        assert!(
            out.starts_with("HTTP/1.1 400") && out.contains("NAME_INVALID"),
            "{name}: {out}"
        );
    }

    // MANIFEST_BLOB_UNKNOWN.
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(b"missing"), "size": 7},
        "layers": [],
    })
    .to_string();
    let (_, out) = setup.curl(
        Some(&ci),
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.manifest.v1+json",
            "--data-binary",
            &manifest,
            &format!("{base}team/app/manifests/v1"),
        ],
    );
    assert!(
        out.starts_with("HTTP/1.1 400") && out.contains("MANIFEST_BLOB_UNKNOWN"),
        "{out}"
    );

    // DENIED: dev has no [[registry.access]] entry; ci none for other/.
    let (_, out) = setup.curl(
        Some(&dev),
        &["-X", "POST", &format!("{base}team/app/blobs/uploads/")],
    );
    assert!(
        out.starts_with("HTTP/1.1 403") && out.contains("DENIED"),
        "{out}"
    );
    let (_, out) = setup.curl(
        Some(&ci),
        &["-X", "POST", &format!("{base}other/app/blobs/uploads/")],
    );
    assert!(out.contains("DENIED"), "{out}");
    let (ok, _) = setup.curl(Some(&dev), &[&format!("{base}_catalog")]);
    assert!(ok, "dev may pull");

    // Revoked, without restarting the agent.
    let out = setup.lab.cli(&setup.cfg, &["pki", "revoke", "dev"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            let (ok, out) = setup.curl(Some(&dev), &[&base]);
            !ok && !answered(&out)
        }),
        "a revoked certificate still gets answers"
    );
    let (ok, _) = setup.curl(Some(&ci), &[&base]);
    assert!(ok, "ci is still in");
    let listed = setup.lab.cli_json(&setup.cfg, &["pki", "list"]);
    assert!(listed.to_string().contains("\"revoked\":true"), "{listed}");
    let status = setup.lab.cli_json(&setup.cfg, &["status"]);
    assert!(
        status["registry"]["handshake_failures"].as_u64().unwrap() >= 4,
        "{status}"
    );
    assert!(
        setup.agent().log_text().contains("reloaded"),
        "{}",
        setup.agent().log_text()
    );
}

/// The store's path of blob `digest` (`sha256:…`).
fn stored_blob(setup: &Setup, digest: &str) -> PathBuf {
    let hex = &digest[7..];
    setup
        .lab
        .lab
        .agent_state_dir()
        .join("registry/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}

#[test]
fn a_push_killed_half_way_leaves_nothing_and_gc_spares_a_push_in_progress() {
    let mut setup = Setup::up("crash");
    let ci = setup.bundle("ci");
    let base = format!("https://{REGISTRY}/v2/");

    // Earlier content: a small image pushed in full.
    let (oci, v1_digest, _) = build_images(&setup.work);
    let policy = setup.policy();
    let ci_dir = ci.display().to_string();
    setup.tool_ok(
        "skopeo",
        &[
            "--policy",
            &policy,
            "copy",
            "--dest-cert-dir",
            &ci_dir,
            &format!("oci:{}:v1", oci.display()),
            &format!("docker://{REGISTRY}/team/app:v1"),
        ],
    );

    // A 64 MiB layer, sent slowly; the agent is killed while it arrives.
    let (big, big_digest) = big_layer(&setup.work, 64);
    let (_, out) = setup.curl(
        Some(&ci),
        &["-X", "POST", &format!("{base}team/app/blobs/uploads/")],
    );
    let location = out
        .lines()
        .find_map(|line| {
            line.strip_prefix("location: ")
                .or_else(|| line.strip_prefix("Location: "))
        })
        .unwrap()
        .trim()
        .to_owned();
    let url = format!("https://{REGISTRY}{location}?digest={big_digest}");
    let ca = setup.lab.lab.agent_state_dir().join("pki/ca.crt");
    let push = setup.lab.spawn(
        "c1",
        "curl",
        &[
            "-sS",
            "--limit-rate",
            "8M",
            "--cacert",
            ca.to_str().unwrap(),
            "--cert",
            ci.join("client.cert").to_str().unwrap(),
            "--key",
            ci.join("client.key").to_str().unwrap(),
            "-X",
            "PUT",
            "-T",
            big.to_str().unwrap(),
            &url,
        ],
    );
    let uploads = setup.lab.lab.agent_state_dir().join("registry/uploads");
    assert!(
        eventually(Duration::from_secs(10), || {
            std::fs::read_dir(&uploads)
                .map(|dir| {
                    dir.flatten()
                        .any(|e| e.metadata().map(|m| m.len() > 4 << 20).unwrap_or(false))
                })
                .unwrap_or(false)
        }),
        "the upload never got going"
    );

    // GC while that push is in flight: it takes nothing the image or the push needs.
    let report = setup.lab.cli_json(&setup.cfg, &["registry", "gc"]);
    assert_eq!(report["swept"], 0, "{report}");

    setup.agent.take().unwrap().kill9();
    drop(push);
    assert!(
        !stored_blob(&setup, &big_digest).exists(),
        "a partial blob is visible"
    );

    let agent = Agent::start(&setup.lab, &setup.cfg);
    setup.agent = Some(agent);
    let (_, out) = setup.curl(
        Some(&ci),
        &["-I", &format!("{base}team/app/blobs/{big_digest}")],
    );
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    // Earlier content is intact: the image comes back whole.
    let back = setup.work.join("after-crash");
    setup.tool_ok(
        "skopeo",
        &[
            "--policy",
            &policy,
            "copy",
            "--src-cert-dir",
            &ci_dir,
            &format!("docker://{REGISTRY}/team/app:v1"),
            &format!("oci:{}:v1", back.display()),
        ],
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], v1_digest.as_str());

    // The push can be redone.
    let out = setup.push_blob(&ci, "team/app", &big, &big_digest);
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    let (_, out) = setup.curl(
        Some(&ci),
        &["-I", &format!("{base}team/app/blobs/{big_digest}")],
    );
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains(&format!("{}", 64u64 << 20)),
        "{out}"
    );

    // Unreferenced and old: GC sweeps it; the image's blobs stay.
    let blob_path = stored_blob(&setup, &big_digest);
    let aged = std::process::Command::new("touch")
        .args(["-d", "3 hours ago"])
        .arg(&blob_path)
        .status()
        .unwrap();
    assert!(aged.success());
    let report = setup.lab.cli_json(&setup.cfg, &["registry", "gc"]);
    assert_eq!(report["swept"], 1, "{report}");
    assert!(!blob_path.exists());
    let raw = setup.tool_ok(
        "skopeo",
        &[
            "inspect",
            "--cert-dir",
            &ci_dir,
            &format!("docker://{REGISTRY}/team/app:v1"),
        ],
    );
    assert!(raw.contains(&v1_digest), "{raw}");
    let du = setup.lab.cli_json(&setup.cfg, &["registry", "du"]);
    assert!(
        du["repositories"]["team/app"].as_u64().unwrap() > 1000,
        "{du}"
    );
}
