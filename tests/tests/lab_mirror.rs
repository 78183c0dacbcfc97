//! The registry mirror in the lab, with real clients and a real upstream: the lab's
//! distribution registries in `up` behind their token service, reached only through the lab's
//! Tor network. skopeo and podman pull images that exist only upstream through the mirror with
//! an issued bundle; the digests are the upstream's, each blob is fetched upstream once, by an
//! exit relay, never from the gateway's uplink address; two clients pulling a large image at
//! once share the fetch; a tag moved upstream is served from the cache within the TTL and seen
//! after it; `?ns=` picks the second upstream (curl, and containerd's
//! `ctr images pull --hosts-dir` for both upstreams); `kill -9` while a layer streams in
//! leaves nothing partial visible; with the upstream stopped the cache still serves and the
//! rest gets a 503 that says why; with Tor stopped too the cache still serves.

// Only the setup and the container tools are used here.
#[allow(dead_code)]
mod registry_support;

use std::path::Path;
use std::time::{Duration, Instant};

use gateway_tests::{eventually, fail, lab_tor, Capture, OrFail};
use registry_support::{fetched_by, upstream_requests, Setup};
use sha2::{Digest as _, Sha256};
use xtask::lab::{SeededImage, OTHER_NS, UPSTREAM_NS};

const MIRROR: &str = "198.51.100.1:5000";
const EXITS: [&str; 3] = ["203.0.113.41", "203.0.113.42", "203.0.113.43"];
/// The mirror's `tag_ttl` here: long enough that a check right after a pull falls inside it.
const TAG_TTL: Duration = Duration::from_secs(10);

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

fn image<'a>(images: &'a [SeededImage], ns: &str, reference: &str) -> &'a SeededImage {
    images
        .iter()
        .find(|i| i.upstream == ns && i.reference == reference)
        .unwrap_or_else(|| {
            fail(format_args!(
                "{reference} was not seeded in {ns}: {images:?}"
            ))
        })
}

/// A `skopeo copy` result in `dir:` form: its manifest and every blob match the upstream's.
fn assert_copied(dir: &Path, image: &SeededImage) {
    let manifest = std::fs::read(dir.join("manifest.json")).or_fail("the copied manifest");
    assert_eq!(sha256(&manifest), image.digest, "the manifest's digest");
    for blob in &image.blobs {
        let data = std::fs::read(dir.join(&blob[7..])).or_fail("a copied blob");
        assert_eq!(&sha256(&data), blob);
    }
}

/// Each of `image`'s blobs was fetched upstream exactly once, by an exit relay.
fn assert_fetched_once_by_exits(setup: &Setup, image: &SeededImage) {
    let repo = image.reference.split(':').next().unwrap_or_default();
    for blob in &image.blobs {
        let peers = fetched_by(
            &setup.lab,
            &image.upstream,
            &format!("/v2/{repo}/blobs/{blob}"),
        );
        assert_eq!(
            peers.len(),
            1,
            "{blob} fetched {} times upstream",
            peers.len()
        );
        assert!(
            EXITS.contains(&peers[0].as_str()),
            "{blob} fetched by {peers:?}, not an exit"
        );
    }
}

/// A containerd of the test's own in c1 (its root, state and socket under the work folder,
/// the `native` snapshotter), and the hosts dir that sends both lab upstreams to the mirror.
struct Containerd {
    daemon: gateway_tests::Background,
    socket: String,
    hosts: std::path::PathBuf,
}

impl Containerd {
    fn start(setup: &Setup, bundle: &Path) -> Containerd {
        let dir = setup.work.join("ctrd");
        let hosts = dir.join("hosts");
        for ns in [UPSTREAM_NS, OTHER_NS] {
            let host_dir = hosts.join(ns);
            std::fs::create_dir_all(&host_dir).or_fail("creating the hosts dir");
            std::fs::write(
                host_dir.join("hosts.toml"),
                format!(
                    "server = \"https://{ns}\"\n\n[host.\"https://{MIRROR}\"]\n  \
                     capabilities = [\"pull\", \"resolve\"]\n  ca = \"{ca}\"\n  \
                     client = [[\"{cert}\", \"{key}\"]]\n",
                    ca = bundle.join("ca.crt").display(),
                    cert = bundle.join("client.cert").display(),
                    key = bundle.join("client.key").display(),
                ),
            )
            .or_fail("writing hosts.toml");
        }
        let socket = dir.join("c.sock").display().to_string();
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{socket}\"\n[ttrpc]\n  address = \"{socket}.ttrpc\"\n\
                 [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
            ),
        )
        .or_fail("writing containerd's config");
        let daemon = setup.lab.spawn(
            "c1",
            "containerd",
            &["--config", &config.display().to_string()],
        );
        let up = eventually(Duration::from_secs(20), || Path::new(&socket).exists());
        assert!(up, "containerd did not come up");
        Containerd {
            daemon,
            socket,
            hosts,
        }
    }

    /// `ctr images pull` of `reference` through the mirror; the digest containerd stored.
    fn pull(&self, setup: &Setup, reference: &str) -> String {
        let ctr = |args: &[&str]| {
            let mut all = vec!["--address", &self.socket, "--namespace", "mirror"];
            all.extend_from_slice(args);
            setup.lab.exec("c1", "ctr", &all)
        };
        let hosts = self.hosts.display().to_string();
        let pulled = ctr(&[
            "images",
            "pull",
            "--hosts-dir",
            &hosts,
            "--snapshotter",
            "native",
            reference,
        ]);
        assert!(
            pulled.status.success(),
            "ctr pull {reference}: {}{}",
            String::from_utf8_lossy(&pulled.stdout),
            String::from_utf8_lossy(&pulled.stderr)
        );
        let listed = ctr(&["images", "ls"]);
        let text = String::from_utf8_lossy(&listed.stdout).into_owned();
        text.lines()
            .find(|line| line.split_whitespace().next() == Some(reference))
            .and_then(|line| {
                line.split_whitespace()
                    .find(|field| field.starts_with("sha256:"))
            })
            .map(str::to_owned)
            .unwrap_or_else(|| fail(format_args!("{reference} not in ctr images ls: {text}")))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.daemon.kill();
    }
}

#[test]
fn pulls_go_through_tor_once_per_blob_and_the_cache_outlives_the_upstream() {
    let mut setup = Setup::up_with_tor("mirror", |text| {
        text.replace(
            "[mirror]\n",
            &format!("[mirror]\ntag_ttl = \"{}s\"\n", TAG_TTL.as_secs()),
        )
    });
    setup
        .lab
        .lab
        .start_upstream()
        .or_fail("starting the lab's upstream registries");
    let images = setup.lab.lab.upstream_images();
    let status = setup.lab.lab.status().or_fail("lab status");
    assert_eq!(status.mirror_url, format!("https://{MIRROR}"));
    assert_eq!(status.upstream_registry, "registry.hub.test:5000");
    assert!(
        status
            .upstream_images
            .contains(&"library/hello:1".to_owned()),
        "{:?}",
        status.upstream_images
    );
    let uplink = setup.lab.wait_uplink(&setup.cfg);
    let capture = Capture::start(&setup.lab, "up", &setup.lab.lab.uplink_port(), "mirror");
    setup.lab.wait_tor();
    let bundle = setup.bundle("puller");
    let bundle_arg = bundle.display().to_string();
    let work = setup.work.clone();

    // The upstream refuses anonymous pulls: the token path is the real one.
    let direct = setup.lab.exec(
        "up",
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://registry.hub.test:5000/v2/library/hello/manifests/1",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&direct.stdout), "401");

    // skopeo: an image only the upstream has. The agent's first circuits may meet an early
    // consensus without exits (docs/TORLAB.md): retry for a while.
    let hello = image(&images, UPSTREAM_NS, "library/hello:1");
    let out = work.join("hello");
    setup.copy_through_tor(&bundle, &format!("docker://{MIRROR}/hello:1"), &out);
    assert_copied(&out, hello);
    assert_fetched_once_by_exits(&setup, hello);

    // Two clients at once, a large image: podman in c1, skopeo in c2; one fetch per blob.
    let big = image(&images, UPSTREAM_NS, "library/big:1");
    let out2 = work.join("big-c2");
    let (podman, skopeo) = std::thread::scope(|scope| {
        let podman = scope.spawn(|| {
            setup.tool(
                "podman",
                &[
                    "pull",
                    "--cert-dir",
                    &bundle_arg,
                    &format!("{MIRROR}/big:1"),
                ],
            )
        });
        let skopeo = scope.spawn(|| {
            setup.tool_in(
                "c2",
                "skopeo",
                &[
                    "copy",
                    "--src-cert-dir",
                    &bundle_arg,
                    &format!("docker://{MIRROR}/big:1"),
                    &format!("dir:{}", out2.display()),
                ],
            )
        });
        let join = |handle: std::thread::ScopedJoinHandle<'_, std::process::Output>| {
            handle
                .join()
                .unwrap_or_else(|_| fail("a pull thread panicked"))
        };
        (join(podman), join(skopeo))
    });
    assert!(
        podman.status.success(),
        "podman pull: {}",
        String::from_utf8_lossy(&podman.stderr)
    );
    assert!(
        skopeo.status.success(),
        "skopeo in c2: {}",
        String::from_utf8_lossy(&skopeo.stderr)
    );
    assert_copied(&out2, big);
    let inspected = setup.tool_ok(
        "podman",
        &[
            "image",
            "inspect",
            "--format",
            "{{.Digest}}",
            &format!("{MIRROR}/big:1"),
        ],
    );
    assert_eq!(inspected.trim(), big.digest);
    assert_fetched_once_by_exits(&setup, big);
    let stats =
        setup.lab.cli_json(&setup.cfg, &["status"])["mirror"]["upstreams"][UPSTREAM_NS].clone();
    assert!(
        stats["joined_fetches"].as_u64() >= Some(1),
        "the pulls did not overlap: {stats}"
    );

    // ?ns= picks the other upstream, and is echoed.
    let tool = image(&images, OTHER_NS, "team/tool:1.0");
    let (ok, answer) = setup.curl(
        Some(&bundle),
        &[
            &format!("https://{MIRROR}/v2/team/tool/manifests/1.0?ns={OTHER_NS}"),
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ],
    );
    assert!(ok && answer.starts_with("HTTP/1.1 200"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("oci-namespace: {OTHER_NS}")),
        "{answer}"
    );
    assert!(
        lower.contains(&format!("docker-content-digest: {}", tool.digest)),
        "{answer}"
    );
    let peers = fetched_by(&setup.lab, OTHER_NS, "/v2/team/tool/manifests/1.0");
    assert!(
        peers.len() == 1 && EXITS.contains(&peers[0].as_str()),
        "{peers:?}"
    );

    // containerd for both upstreams: `ctr --hosts-dir` sends ?ns=<registry> to a mirror host.
    let containerd = Containerd::start(&setup, &bundle);
    for (reference, seeded) in [
        ("hub.test/library/hello:1", hello),
        ("other.test/team/tool:1.0", tool),
    ] {
        let digest = containerd.pull(&setup, reference);
        assert_eq!(digest, seeded.digest, "{reference}");
    }
    assert_fetched_once_by_exits(&setup, tool);
    drop(containerd);

    // The cache as the CLI shows it.
    let listing = setup.lab.cli_json(&setup.cfg, &["mirror", "ls"]);
    let hub = listing[UPSTREAM_NS]
        .as_array()
        .unwrap_or_else(|| fail(format_args!("mirror ls per upstream: {listing}")));
    assert!(
        hub.iter().any(|repo| repo["repository"] == "library/hello"
            && repo["tags"]["1"] == hello.digest.as_str()),
        "{listing}"
    );

    // A tag moved upstream: within the TTL the mirror answers from its cache and asks nobody;
    // after it, a HEAD sees the new digest and the new manifest is fetched once (GC or a
    // restart are not involved: the same agent, the same cache).
    let moving = image(&images, UPSTREAM_NS, "library/moving:1");
    let first = work.join("moving-1");
    // The mirror confirmed the tag between these two instants.
    let started = Instant::now();
    setup.tool_ok(
        "skopeo",
        &[
            "copy",
            "--src-cert-dir",
            &bundle_arg,
            &format!("docker://{MIRROR}/moving:1"),
            &format!("dir:{}", first.display()),
        ],
    );
    let pulled = Instant::now();
    assert_copied(&first, moving);
    let moved = setup
        .lab
        .lab
        .seed_upstream_image(UPSTREAM_NS, "library/moving", "1", &[("moved", 4000)])
        .or_fail("moving library/moving:1 upstream");
    assert_ne!(
        moved.digest, moving.digest,
        "the re-seeded tag did not move"
    );
    let tag_path = "/v2/library/moving/manifests/1";
    let asked = |method: &str| {
        upstream_requests(&setup.lab, UPSTREAM_NS)
            .iter()
            .filter(|(_, m, p, _)| m == method && p == tag_path)
            .count()
    };
    let (heads, gets) = (asked("HEAD"), asked("GET"));
    let mirror_digest = || {
        let (ok, answer) = setup.curl(
            Some(&bundle),
            &[
                "-I",
                &format!("https://{MIRROR}/v2/moving/manifests/1"),
                "-H",
                "Accept: application/vnd.oci.image.manifest.v1+json",
            ],
        );
        assert!(ok && answer.starts_with("HTTP/1.1 200"), "{answer}");
        answer
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("docker-content-digest")
                    .then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| fail(format_args!("no digest from the mirror: {answer}")))
    };
    let within = mirror_digest();
    if started.elapsed() >= TAG_TTL {
        fail(format_args!(
            "the check meant to fall inside the TTL came {:?} after the pull began: raise TAG_TTL",
            started.elapsed()
        ));
    }
    assert_eq!(
        within, moving.digest,
        "within the TTL the cached tag answers"
    );
    assert_eq!(
        (asked("HEAD"), asked("GET")),
        (heads, gets),
        "the mirror asked the upstream about the tag within the TTL"
    );
    std::thread::sleep(TAG_TTL.saturating_sub(pulled.elapsed()) + Duration::from_millis(200));
    let second = work.join("moving-2");
    setup.tool_ok(
        "skopeo",
        &[
            "copy",
            "--src-cert-dir",
            &bundle_arg,
            &format!("docker://{MIRROR}/moving:1"),
            &format!("dir:{}", second.display()),
        ],
    );
    assert_copied(&second, &moved);
    assert_eq!(mirror_digest(), moved.digest);
    assert!(
        asked("HEAD") > heads,
        "no HEAD for the tag upstream after the TTL"
    );
    assert_eq!(
        asked("GET"),
        gets + 1,
        "the moved manifest should be fetched exactly once"
    );
    assert_fetched_once_by_exits(&setup, &moved);

    // kill -9 while a layer streams in: after the restart nothing partial is visible, and the
    // pull works again.
    let crash = image(&images, UPSTREAM_NS, "library/crash:1");
    let layer = &crash.blobs[1];
    let store = setup
        .lab
        .lab
        .agent_state_dir()
        .join("mirror")
        .join(UPSTREAM_NS);
    let ca = setup.lab.lab.agent_state_dir().join("pki/ca.crt");
    let (cert, key) = (bundle.join("client.cert"), bundle.join("client.key"));
    let url = format!("https://{MIRROR}/v2/crash/blobs/{layer}");
    let _pull = setup.lab.spawn(
        "c1",
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "--cacert",
            &ca.display().to_string(),
            "--cert",
            &cert.display().to_string(),
            "--key",
            &key.display().to_string(),
            &url,
        ],
    );
    let uploads = store.join("uploads");
    let streaming = eventually(Duration::from_secs(60), || {
        std::fs::read_dir(&uploads)
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| entry.metadata().is_ok_and(|meta| meta.len() > 256 << 10))
    });
    assert!(streaming, "the crash layer never started streaming in");
    setup
        .agent
        .take()
        .unwrap_or_else(|| fail("no agent runs"))
        .kill9();
    let blob = store
        .join("blobs/sha256")
        .join(&layer[7..9])
        .join(&layer[7..]);
    assert!(
        !blob.exists(),
        "a partial blob became visible: {}",
        blob.display()
    );
    setup.agent = Some(gateway_tests::Agent::start(&setup.lab, &setup.cfg));
    let out3 = work.join("crash");
    let copied = eventually(Duration::from_secs(120), || {
        let _ = std::fs::remove_dir_all(&out3);
        setup
            .tool(
                "skopeo",
                &[
                    "copy",
                    "--src-cert-dir",
                    &bundle_arg,
                    &format!("docker://{MIRROR}/crash:1"),
                    &format!("dir:{}", out3.display()),
                ],
            )
            .status
            .success()
    });
    assert!(
        copied,
        "no pull after the restart: {}",
        setup.agent().log_text()
    );
    assert_copied(&out3, crash);

    // The upstream stops: the cached image still pulls (its tag's HEAD fails; the cache
    // answers); one never pulled gets a 503 naming the reason.
    setup
        .lab
        .lab
        .stop_upstream(UPSTREAM_NS)
        .or_fail("stopping the upstream");
    // (The restart forgot when tags were checked: hello's is checked again, and fails.)
    let again = work.join("hello-again");
    setup.tool_ok(
        "skopeo",
        &[
            "copy",
            "--src-cert-dir",
            &bundle_arg,
            &format!("docker://{MIRROR}/hello:1"),
            &format!("dir:{}", again.display()),
        ],
    );
    assert_copied(&again, hello);
    let (_, answer) = setup.curl(
        Some(&bundle),
        &[&format!("https://{MIRROR}/v2/spare/manifests/1")],
    );
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("MANIFEST_UNKNOWN") && answer.contains("unreachable"),
        "{answer}"
    );

    // Tor stops too: the cached image still pulls (the tag check gives up; the cache answers).
    lab_tor::stop(&setup.lab.lab).or_fail("stopping the lab's Tor nodes");
    let offline = work.join("hello-offline");
    setup.tool_ok(
        "skopeo",
        &[
            "copy",
            "--src-cert-dir",
            &bundle_arg,
            &format!("docker://{MIRROR}/hello:1"),
            &format!("dir:{}", offline.display()),
        ],
    );
    assert_copied(&offline, hello);

    // Nothing went to the upstreams from the uplink address: every byte went through Tor.
    let direct = capture.stop(&format!(
        "src host {uplink} and (dst host {} or dst host {} or dst host {})",
        "203.0.113.60", "203.0.113.61", "203.0.113.62"
    ));
    assert!(
        direct.is_empty(),
        "the gateway went to an upstream directly: {direct:?}"
    );
}
