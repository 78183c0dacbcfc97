//! OCI image layouts written from local files: layers made with tar(1) and gzip(1), configs,
//! manifests, an index, `index.json` — what skopeo and podman read with `oci:DIR:TAG`.

use std::path::{Path, PathBuf};

use gateway_tests::OrFail;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Writes `data` as a blob of the OCI layout at `dir`; its descriptor.
pub fn blob(dir: &Path, media_type: &str, data: &[u8]) -> Value {
    let d = digest(data);
    let path = dir.join("blobs/sha256").join(&d[7..]);
    std::fs::create_dir_all(path.parent().unwrap_or(dir)).or_fail("creating a blob folder");
    std::fs::write(path, data).or_fail("writing a blob");
    json!({"mediaType": media_type, "digest": d, "size": data.len()})
}

/// A tar of `files` (name, contents), made with tar(1).
pub fn tar(work: &Path, files: &[(&str, &[u8])]) -> Vec<u8> {
    let src = work.join(format!(
        "tar-src-{}",
        digest(files[0].1).get(7..19).unwrap_or("x")
    ));
    std::fs::create_dir_all(&src).or_fail("creating a tar source");
    for (name, data) in files {
        std::fs::write(src.join(name), data).or_fail("writing a file to tar");
    }
    let out = std::process::Command::new("tar")
        .args(["--sort=name", "--mtime=@0", "--owner=0", "--group=0", "-C"])
        .arg(&src)
        .args(["-cf", "-", "."])
        .output()
        .or_fail("running tar");
    assert!(out.status.success());
    out.stdout
}

/// `data` through `gzip -n` (no name or time in the header: the same bytes every run).
pub fn gzip(work: &Path, data: &[u8]) -> Vec<u8> {
    let path = work.join("to-gzip");
    std::fs::write(&path, data).or_fail("writing a file to gzip");
    let out = std::process::Command::new("gzip")
        .args(["-n", "-c"])
        .arg(&path)
        .output()
        .or_fail("running gzip");
    assert!(out.status.success());
    out.stdout
}

/// An image manifest for `arch` with `layers` in the layout at `dir`; its descriptor.
pub fn image(dir: &Path, work: &Path, arch: &str, layers: &[Vec<u8>]) -> Value {
    // Compressed already, as registries hold them: skopeo would otherwise gzip them on the way
    // and the manifest (and its digest) would change.
    let layer_descs: Vec<Value> = layers
        .iter()
        .map(|layer| {
            blob(
                dir,
                "application/vnd.oci.image.layer.v1.tar+gzip",
                &gzip(work, layer),
            )
        })
        .collect();
    let config = json!({
        "architecture": arch, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| digest(l)).collect::<Vec<_>>()},
        "config": {"Cmd": ["/hello"]},
    });
    let config = blob(
        dir,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config).or_fail("encoding a config"),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": layer_descs,
    });
    let mut desc = blob(
        dir,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).or_fail("encoding a manifest"),
    );
    desc["platform"] = json!({"architecture": arch, "os": "linux"});
    desc
}

/// Writes the layout's `oci-layout` and `index.json` naming `entries` (descriptor, ref name).
pub fn layout(dir: &Path, entries: &[(Value, &str)]) {
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .or_fail("writing oci-layout");
    let manifests: Vec<Value> = entries
        .iter()
        .map(|(desc, name)| {
            let mut desc = desc.clone();
            desc["annotations"] = json!({"org.opencontainers.image.ref.name": name});
            desc
        })
        .collect();
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).or_fail("encoding index.json"),
    )
    .or_fail("writing index.json");
}

/// A three-layer image (`v1`) and a two-platform index (`multi`) in an OCI layout.
pub fn build_images(work: &Path) -> (PathBuf, String, String) {
    let dir = work.join("oci");
    let layers = vec![
        tar(work, &[("hello", b"#!/bin/sh\necho hello\n")]),
        tar(work, &[("data.txt", b"some data for the second layer")]),
        tar(work, &[("big.bin", &vec![7u8; 3 << 20])]),
    ];
    let v1 = image(&dir, work, "amd64", &layers);
    let arm = image(
        &dir,
        work,
        "arm64",
        &[tar(work, &[("arm", b"arm64 layer")])],
    );
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [v1.clone(), arm],
    });
    let index_desc = blob(
        &dir,
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).or_fail("encoding an index"),
    );
    layout(&dir, &[(v1.clone(), "v1"), (index_desc.clone(), "multi")]);
    (
        dir,
        v1["digest"].as_str().unwrap_or_default().to_owned(),
        index_desc["digest"].as_str().unwrap_or_default().to_owned(),
    )
}
