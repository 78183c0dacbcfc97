//! Two gateways on one S3 bucket, against a real engine: SeaweedFS on the lab's NAS (its own
//! namespace on the uplink bridge), each gateway a slot of the shared lab with its own inside
//! LAN, client and CA. A push through one is pullable through the other, digests equal; tag
//! updates racing through both leave one winner and every manifest; a gateway killed during a
//! multipart push leaves nothing visible and the push can be redone, while the other collects
//! garbage; an acknowledged chunk survives kill -9 and the push goes on through the other
//! gateway; the mirror's cache is shared, so the second gateway's pull fetches nothing
//! upstream; a wrong secret stops the agent at start with the store's answer.
//!
//! Each test has a key prefix of its own in the bucket, so they run side by side.

mod registry_support;

use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use gateway_tests::{eventually, fail, Agent, OrFail, TestLab};
use registry_support::oci::{build_images, digest};
use registry_support::{big_layer, fetched_by, Setup, REGISTRY};
use serde_json::Value;
use xtask::lab::{SeededImage, NAS_ACCESS_KEY, NAS_BUCKET, NAS_IP, NAS_SECRET_KEY, UPSTREAM_NS};

/// One NAS start at a time (the tests of this binary share the lab).
static NAS: Mutex<()> = Mutex::new(());

/// A gateway slot of the shared lab, with the NAS up.
fn slot_with_nas() -> TestLab {
    let lab = TestLab::up();
    let _one = NAS.lock().unwrap_or_else(|p| p.into_inner());
    lab.lab.start_nas().or_fail("starting the lab's NAS");
    lab
}

/// The lab's config text with the registries on the NAS, under `prefix`.
fn on_s3(lab: &TestLab, prefix: &str, secret_file: Option<&Path>) -> impl FnOnce(String) -> String {
    let credentials = secret_file
        .map(Path::to_path_buf)
        .unwrap_or_else(|| lab.lab.nas_credentials());
    let section = format!(
        "\n[registry.storage]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{NAS_BUCKET}\"\n\
         credentials = \"{}\"\nprefix = \"{prefix}\"\n",
        lab.lab.nas_endpoint(),
        credentials.display()
    );
    move |text: String| {
        assert!(
            !text.contains("[registry.storage]"),
            "the lab config has one already"
        );
        text + &section
    }
}

/// A bucket prefix no other test (or earlier run) uses.
fn prefix(lab: &TestLab, name: &str) -> String {
    format!("{}-{}-{name}", lab.lab.prefix(), lab.lab.slot())
}

/// Two gateways without Tor on the NAS, sharing `prefix`.
fn pair(name: &str) -> (Setup, Setup) {
    let a = slot_with_nas();
    let shared = prefix(&a, name);
    let edit = on_s3(&a, &shared, None);
    let a = Setup::up_in(a, &format!("{name}-a"), edit);
    let b = slot_with_nas();
    let edit = on_s3(&b, &shared, None);
    let b = Setup::up_in(b, &format!("{name}-b"), edit);
    (a, b)
}

/// `skopeo copy` from c1 of `setup`, with its own client bundle on both sides.
fn skopeo(setup: &Setup, bundle: &Path, from: &str, to: &str, extra: &[&str]) {
    let policy = setup.policy();
    let certs = bundle.display().to_string();
    let mut args = vec![
        "--policy",
        &policy,
        "copy",
        "--src-cert-dir",
        &certs,
        "--dest-cert-dir",
        &certs,
    ];
    args.extend_from_slice(extra);
    args.extend([from, to]);
    setup.tool_ok("skopeo", &args);
}

/// The manifest digest the tag resolves to through `setup`.
fn tag_digest(setup: &Setup, bundle: &Path, repo_tag: &str) -> String {
    let (repo, tag) = repo_tag.split_once(':').unwrap_or_default();
    let (_, out) = setup.curl(
        Some(bundle),
        &[
            "-I",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
            &format!("https://{REGISTRY}/v2/{repo}/manifests/{tag}"),
        ],
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{repo_tag}: {out}");
    header(&out, "docker-content-digest")
        .unwrap_or_else(|| fail(format_args!("no digest for {repo_tag}: {out}")))
}

fn header(response: &str, name: &str) -> Option<String> {
    response.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

#[test]
fn a_push_through_one_gateway_is_pulled_through_the_other_and_racing_tags_keep_every_manifest() {
    let (a, b) = pair("share");
    let (ca, cb) = (a.bundle("ci"), b.bundle("ci"));
    let (oci, v1_digest, index_digest) = build_images(&a.work);

    skopeo(
        &a,
        &ca,
        &format!("oci:{}:v1", oci.display()),
        &format!("docker://{REGISTRY}/team/app:v1"),
        &[],
    );
    let back = b.work.join("back");
    skopeo(
        &b,
        &cb,
        &format!("docker://{REGISTRY}/team/app:v1"),
        &format!("oci:{}:v1", back.display()),
        &[],
    );
    let index: Value = serde_json::from_slice(&std::fs::read(back.join("index.json")).unwrap())
        .or_fail("the pulled index.json");
    assert_eq!(index["manifests"][0]["digest"], v1_digest.as_str());
    assert_eq!(tag_digest(&b, &cb, "team/app:v1"), v1_digest);

    // Two whole pushes of the same tag at once, one through each gateway.
    let both = Arc::new(Barrier::new(2));
    std::thread::scope(|scope| {
        let barrier = both.clone();
        let (a_ref, b_ref) = (&a, &b);
        let (ca_ref, cb_ref) = (&ca, &cb);
        let oci_v1 = format!("oci:{}:v1", oci.display());
        let oci_multi = format!("oci:{}:multi", oci.display());
        let first = scope.spawn(move || {
            barrier.wait();
            skopeo(
                a_ref,
                ca_ref,
                &oci_v1,
                &format!("docker://{REGISTRY}/team/race:latest"),
                &[],
            );
        });
        let barrier = both.clone();
        let second = scope.spawn(move || {
            barrier.wait();
            skopeo(
                b_ref,
                cb_ref,
                &oci_multi,
                &format!("docker://{REGISTRY}/team/race:latest"),
                &["--multi-arch", "all"],
            );
        });
        first
            .join()
            .unwrap_or_else(|_| fail("the push through A failed"));
        second
            .join()
            .unwrap_or_else(|_| fail("the push through B failed"));
    });
    let winner = tag_digest(&a, &ca, "team/race:latest");
    assert_eq!(
        winner,
        tag_digest(&b, &cb, "team/race:latest"),
        "one winner for both"
    );
    assert!(
        winner == v1_digest || winner == index_digest,
        "the tag points at {winner}, neither push"
    );
    for (setup, bundle) in [(&a, &ca), (&b, &cb)] {
        for manifest in [&v1_digest, &index_digest] {
            assert_eq!(
                &tag_digest(setup, bundle, &format!("team/race:{manifest}")),
                manifest,
                "a manifest of the race is lost"
            );
        }
    }

    // Tag updates racing at the same moment, many rounds: each round's two manifests stay
    // and the tag ends on one of them, the same through both gateways.
    let manifest =
        std::fs::read(oci.join("blobs/sha256").join(&v1_digest[7..])).or_fail("v1's manifest");
    let manifest: Value = serde_json::from_slice(&manifest).or_fail("v1's manifest JSON");
    for round in 0..8 {
        let variants: Vec<(Vec<u8>, String)> = ["a", "b"]
            .iter()
            .map(|side| {
                let mut m = manifest.clone();
                m["annotations"] = serde_json::json!({"round": format!("{round}-{side}")});
                let bytes = serde_json::to_vec(&m).or_fail("a manifest variant");
                let d = digest(&bytes);
                (bytes, d)
            })
            .collect();
        let barrier = Arc::new(Barrier::new(2));
        std::thread::scope(|scope| {
            for ((setup, bundle), (bytes, _)) in [(&a, &ca), (&b, &cb)].into_iter().zip(&variants) {
                let barrier = barrier.clone();
                let file = setup.work.join(format!("round-{round}.json"));
                std::fs::write(&file, bytes).or_fail("writing a manifest variant");
                scope.spawn(move || {
                    barrier.wait();
                    let (_, out) = setup.curl(
                        Some(bundle),
                        &[
                            "-X",
                            "PUT",
                            "-H",
                            "Content-Type: application/vnd.oci.image.manifest.v1+json",
                            "--data-binary",
                            &format!("@{}", file.display()),
                            &format!("https://{REGISTRY}/v2/team/race/manifests/round"),
                        ],
                    );
                    assert!(out.starts_with("HTTP/1.1 201"), "round {round}: {out}");
                });
            }
        });
        let winner = tag_digest(&a, &ca, "team/race:round");
        assert_eq!(
            winner,
            tag_digest(&b, &cb, "team/race:round"),
            "round {round}"
        );
        assert!(
            variants.iter().any(|(_, d)| *d == winner),
            "round {round}: the tag points at {winner}, neither push"
        );
        for (_, d) in &variants {
            assert_eq!(
                &tag_digest(&b, &cb, &format!("team/race:{d}")),
                d,
                "round {round}"
            );
        }
    }
}

/// A signed S3 request to the NAS from its namespace: (HTTP status, body).
/// A new upload session in `repo` through `setup`: its location.
fn start_upload(setup: &Setup, bundle: &Path, repo: &str) -> String {
    let (_, out) = setup.curl(
        Some(bundle),
        &[
            "-X",
            "POST",
            &format!("https://{REGISTRY}/v2/{repo}/blobs/uploads/"),
        ],
    );
    header(&out, "location").unwrap_or_else(|| fail(format_args!("no upload location: {out}")))
}

fn s3(lab: &TestLab, method: &str, path_and_query: &str) -> (u16, String) {
    let url = format!("{}/{NAS_BUCKET}{path_and_query}", lab.lab.nas_endpoint());
    let user = format!("{NAS_ACCESS_KEY}:{NAS_SECRET_KEY}");
    let out = lab.exec(
        "nas",
        "curl",
        &[
            "-s",
            "-m",
            "10",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "-H",
            "x-amz-content-sha256: UNSIGNED-PAYLOAD",
            "--user",
            &user,
            &url,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[test]
fn a_gateway_killed_during_a_multipart_push_leaves_nothing_while_the_other_collects() {
    let (mut a, b) = pair("crash");
    let (ca, cb) = (a.bundle("ci"), b.bundle("ci"));
    let (oci, v1_digest, _) = build_images(&a.work);
    skopeo(
        &a,
        &ca,
        &format!("oci:{}:v1", oci.display()),
        &format!("docker://{REGISTRY}/team/app:v1"),
        &[],
    );

    // 48 MiB, sent slowly through A: several 8 MiB parts of a multipart upload.
    let (big, big_digest) = big_layer(&a.work, 48);
    let base = format!("https://{REGISTRY}/v2/");
    let location = start_upload(&a, &ca, "team/app");
    let url = format!("https://{REGISTRY}{location}?digest={big_digest}");
    let pki = a.lab.lab.agent_state_dir().join("pki/ca.crt");
    let push = a.lab.spawn(
        "c1",
        "curl",
        &[
            "-sS",
            "--limit-rate",
            "4M",
            "--cacert",
            &pki.display().to_string(),
            "--cert",
            &ca.join("client.cert").display().to_string(),
            "--key",
            &ca.join("client.key").display().to_string(),
            "-X",
            "PUT",
            "-T",
            &big.display().to_string(),
            &url,
        ],
    );
    let shared = prefix(&a.lab, "crash");
    // The session's newest state names its multipart upload once it started (the bucket's
    // `.uploads` is every test's, so it would not tell whose).
    let mut last = String::new();
    let multipart = eventually(Duration::from_secs(30), || {
        last = newest_state(&a.lab, "crash", &location);
        last.contains("\"multipart\":\"")
    });
    assert!(
        multipart,
        "no multipart upload started in the bucket: {last}\n{}",
        a.agent().log_text()
    );

    // B collects while A pushes: nothing A's image or A's push needs goes.
    let report = b.lab.cli_json(&b.cfg, &["registry", "gc"]);
    assert_eq!(report["swept"], 0, "{report}");

    a.agent.take().unwrap_or_else(|| fail("A runs")).kill9();
    drop(push);
    let (_, out) = b.curl(
        Some(&cb),
        &["-I", &format!("{base}team/app/blobs/{big_digest}")],
    );
    assert!(
        out.starts_with("HTTP/1.1 404"),
        "a partial blob is visible: {out}"
    );
    let (code, pointer) = s3(
        &a.lab,
        "GET",
        &format!("/{shared}/registry/blobs/sha256/{}", &big_digest[7..]),
    );
    assert_eq!(code, 404, "a pointer to the partial blob: {pointer}");
    assert_eq!(
        tag_digest(&b, &cb, "team/app:v1"),
        v1_digest,
        "earlier content"
    );

    // The push can be redone through A, and B serves it whole.
    a.agent = Some(Agent::start(&a.lab, &a.cfg));
    let out = a.push_blob(&ca, "team/app", &big, &big_digest);
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    assert_eq!(pulled_digest(&b, &cb, "team/app", &big_digest), big_digest);
}

/// The digest of blob `blob` of `repo` as pulled through `setup`.
fn pulled_digest(setup: &Setup, bundle: &Path, repo: &str, blob: &str) -> String {
    let pulled = setup.work.join("blob.pulled");
    let (ok, _) = setup.curl(
        Some(bundle),
        &[
            "-o",
            &pulled.display().to_string(),
            &format!("https://{REGISTRY}/v2/{repo}/blobs/{blob}"),
        ],
    );
    assert!(ok, "pulling {blob} of {repo}");
    let bytes = std::fs::read(&pulled).or_fail("the pulled blob");
    // `-i` put the head in front of the body.
    let body_at = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(0);
    digest(&bytes[body_at..])
}

#[test]
fn an_acknowledged_chunk_survives_kill_9_and_the_push_goes_on_through_the_other_gateway() {
    let (mut a, b) = pair("resume");
    let (ca, cb) = (a.bundle("ci"), b.bundle("ci"));
    let (big, big_digest) = big_layer(&a.work, 20);
    let bytes = std::fs::read(&big).or_fail("reading the layer");
    // More than one part, and a leftover that only a chunk object holds.
    let cut = 12 << 20;
    let (head, rest) = (a.work.join("head.part"), a.work.join("rest.part"));
    std::fs::write(&head, &bytes[..cut]).or_fail("writing the head");
    std::fs::write(&rest, &bytes[cut..]).or_fail("writing the rest");
    let base = format!("https://{REGISTRY}");
    let location = start_upload(&a, &ca, "team/app");
    let patch = |setup: &Setup, bundle: &Path, file: &Path, from: usize, to: usize| {
        let (_, out) = setup.curl(
            Some(bundle),
            &[
                "-X",
                "PATCH",
                "-H",
                "Expect:",
                "-H",
                "Content-Type: application/octet-stream",
                "-H",
                &format!("Content-Range: {from}-{}", to - 1),
                "--data-binary",
                &format!("@{}", file.display()),
                &format!("{base}{location}"),
            ],
        );
        out
    };
    let out = patch(&a, &ca, &head, 0, cut);
    assert!(out.starts_with("HTTP/1.1 202"), "{out}");
    assert_eq!(
        header(&out, "range"),
        Some(format!("0-{}", cut - 1)),
        "{out}"
    );
    let held = session_objects(&a.lab, "resume", &location);
    assert!(
        held.contains("state-") && held.contains("chunk-"),
        "the session is not in the bucket: {held}"
    );

    // A dies right after acknowledging; B knows where the push stands.
    a.agent.take().unwrap_or_else(|| fail("A runs")).kill9();
    let (_, out) = b.curl(Some(&cb), &[&format!("{base}{location}")]);
    assert!(out.starts_with("HTTP/1.1 204"), "{out}");
    assert_eq!(
        header(&out, "range"),
        Some(format!("0-{}", cut - 1)),
        "{out}"
    );
    let out = patch(&b, &cb, &rest, cut, bytes.len());
    assert!(out.starts_with("HTTP/1.1 202"), "{out}");
    let (_, out) = b.curl(
        Some(&cb),
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Length: 0",
            &format!("{base}{location}?digest={big_digest}"),
        ],
    );
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");

    // Whole through both (A restarted), and no session objects left in the bucket.
    a.agent = Some(Agent::start(&a.lab, &a.cfg));
    for (setup, bundle) in [(&a, &ca), (&b, &cb)] {
        assert_eq!(
            pulled_digest(setup, bundle, "team/app", &big_digest),
            big_digest
        );
    }
    let left = session_objects(&a.lab, "resume", &location);
    assert!(
        !left.contains("state-") && !left.contains("chunk-"),
        "session objects left: {left}"
    );
}

/// What the bucket holds of the upload session at `location`.
fn session_objects(lab: &TestLab, name: &str, location: &str) -> String {
    let id = location.rsplit('/').next().unwrap_or_default();
    filer_listing(
        lab,
        &format!("{}/registry/uploads/{id}/", prefix(lab, name)),
    )
}

/// The newest state of the upload session at `location`, as the bucket holds it.
fn newest_state(lab: &TestLab, name: &str, location: &str) -> String {
    let listing = session_objects(lab, name, location);
    let newest = listing
        .split('"')
        .filter_map(|part| part.rsplit('/').next())
        .filter(|file| file.starts_with("state-"))
        .max()
        .map(str::to_owned);
    let Some(newest) = newest else {
        return format!("no state in {listing}");
    };
    let id = location.rsplit('/').next().unwrap_or_default();
    filer_listing(
        lab,
        &format!("{}/registry/uploads/{id}/{newest}", prefix(lab, name)),
    )
}

/// SeaweedFS's filer listing (JSON) of `folder` in the bucket (or a file's content): curl's SigV4 here cannot sign
/// S3's listings.
fn filer_listing(lab: &TestLab, folder: &str) -> String {
    lab.exec_ok(
        "nas",
        "curl",
        &[
            "-s",
            "-m",
            "5",
            "-H",
            "Accept: application/json",
            &format!("http://{NAS_IP}:8888/buckets/{NAS_BUCKET}/{folder}"),
        ],
    )
}

#[test]
fn a_wrong_secret_stops_the_agent_at_start() {
    let lab = slot_with_nas();
    let wrong = lab.lab.gateway_dir().join("wrong-credentials");
    std::fs::write(&wrong, format!("{NAS_ACCESS_KEY}:not-the-secret\n")).or_fail("writing");
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .or_fail("chmod");
    let name = prefix(&lab, "wrong");
    let cfg = lab.agent_config("wrong.toml", |text| {
        let text = text
            .replace("[tor]\n", "[tor]\nenabled = false\n")
            .replace("upstream = \"tor\"", "upstream = \"uplink\"");
        on_s3(&lab, &name, Some(&wrong))(text)
    });
    let out = std::process::Command::new("timeout")
        .args(["60", "ip", "netns", "exec", &lab.ns("gw")])
        .arg(gateway_tests::agent_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .output()
        .or_fail("running the agent");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && out.status.code() != Some(124),
        "the agent did not stop with an error at start ({}): {text}",
        out.status
    );
    assert!(
        text.contains("S3 store")
            && (text.contains("SignatureDoesNotMatch") || text.contains("403")),
        "the error names the store and its answer: {text}"
    );
}

/// Every blob of `image` was fetched upstream exactly once, whichever gateway asked.
fn fetched_once(lab: &TestLab, image: &SeededImage) -> bool {
    let repo = image.reference.split(':').next().unwrap_or_default();
    image.blobs.iter().all(|blob| {
        fetched_by(lab, &image.upstream, &format!("/v2/{repo}/blobs/{blob}")).len() == 1
    })
}

#[test]
fn the_mirror_cache_on_s3_is_shared_by_both_gateways() {
    let first = slot_with_nas();
    let shared = prefix(&first, "mirror");
    let edit = on_s3(&first, &shared, None);
    let a = Setup::up_with_tor_in(first, "mirror-a", edit);
    let second = slot_with_nas();
    let edit = on_s3(&second, &shared, None);
    let b = Setup::up_with_tor_in(second, "mirror-b", edit);
    a.lab
        .lab
        .start_upstream()
        .or_fail("starting the lab's upstream registries");
    // An image no other test of this binary pulls.
    let images = a.lab.lab.upstream_images();
    let image = images
        .iter()
        .find(|i| i.upstream == UPSTREAM_NS && i.reference == "library/spare:1")
        .unwrap_or_else(|| fail("library/spare:1 is not seeded"));
    a.lab.wait_tor();

    let pull = |setup: &Setup, into: &str| {
        let bundle = setup.bundle("puller");
        let out = setup.work.join(into);
        setup.copy_through_tor(&bundle, "docker://198.51.100.1:5000/spare:1", &out);
        let manifest = std::fs::read(out.join("manifest.json")).or_fail("the manifest");
        assert_eq!(digest(&manifest), image.digest);
        for blob in &image.blobs {
            let data = std::fs::read(out.join(&blob[7..])).or_fail("a copied blob");
            assert_eq!(&digest(&data), blob);
        }
    };
    pull(&a, "through-a");
    assert!(fetched_once(&a.lab, image), "A fetched each blob once");
    pull(&b, "through-b");
    assert!(
        fetched_once(&b.lab, image),
        "B's pull fetched a blob upstream again: the cache is not shared"
    );
}
