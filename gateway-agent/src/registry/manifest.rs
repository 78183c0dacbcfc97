//! What the registry needs to know about a manifest: its kind (from the media type), what it
//! references (blobs, child manifests, a subject) and its referrer descriptor. The documents
//! are read with `oci-spec`'s types; Docker's schema 2 manifest and manifest list have the same
//! shape as OCI's image manifest and index, so the same types read them.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use super::names::Digest;
use super::storage::Referrer;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// A parsed manifest: what it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The media type it is stored and served with.
    pub media_type: String,
    /// Blobs it needs in the repository (config and layers).
    pub blobs: Vec<Digest>,
    /// Manifests it needs in the repository (an index's children).
    pub children: Vec<Digest>,
    /// The manifest it refers to (`subject`), which need not exist yet.
    pub subject: Option<Digest>,
    /// Its `artifactType`, else its config's media type (for the referrers list).
    pub artifact_type: Option<String>,
    /// Its annotations (for the referrers list).
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

impl Parsed {
    /// Its entry in `subject`'s referrers list.
    pub fn referrer(&self, digest: &Digest, size: u64) -> Referrer {
        Referrer {
            digest: digest.to_string(),
            media_type: self.media_type.clone(),
            size,
            artifact_type: self.artifact_type.clone(),
            annotations: self.annotations.clone(),
        }
    }
}

/// Parses `bytes` as a manifest of `content_type` (parameters ignored), or of the media type
/// it declares itself when the client sent none.
pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Parsed, String> {
    let declared = serde_json::from_slice::<serde_json::Value>(bytes)
        .map_err(|error| format!("not JSON: {error}"))?
        .get("mediaType")
        .and_then(|value| value.as_str().map(str::to_owned));
    let content_type = content_type
        .map(|value| value.split(';').next().unwrap_or("").trim().to_owned())
        .filter(|value| !value.is_empty() && value != "application/json");
    let media_type = content_type
        .or(declared.clone())
        .ok_or("no Content-Type and no mediaType in the manifest")?;
    if let Some(declared) = &declared {
        if declared != &media_type {
            return Err(format!(
                "the manifest says it is {declared}, the request says {media_type}"
            ));
        }
    }
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let manifest: ImageManifest = serde_json::from_slice(bytes)
                .map_err(|error| format!("not an image manifest: {error}"))?;
            let mut blobs = vec![digest(manifest.config())?];
            for layer in manifest.layers() {
                // Foreign layers (`urls`) are fetched from elsewhere by design.
                if layer.urls().as_ref().is_none_or(Vec::is_empty) {
                    blobs.push(digest(layer)?);
                }
            }
            let artifact_type = manifest
                .artifact_type()
                .as_ref()
                .map(ToString::to_string)
                .or_else(|| Some(manifest.config().media_type().to_string()));
            Ok(Parsed {
                media_type,
                blobs,
                children: Vec::new(),
                subject: manifest.subject().as_ref().map(digest).transpose()?,
                artifact_type,
                annotations: sorted(manifest.annotations()),
            })
        }
        OCI_INDEX | DOCKER_LIST => {
            let index: ImageIndex = serde_json::from_slice(bytes)
                .map_err(|error| format!("not an image index: {error}"))?;
            Ok(Parsed {
                media_type,
                blobs: Vec::new(),
                children: index
                    .manifests()
                    .iter()
                    .map(digest)
                    .collect::<Result<_, _>>()?,
                subject: index.subject().as_ref().map(digest).transpose()?,
                artifact_type: index.artifact_type().as_ref().map(ToString::to_string),
                annotations: sorted(index.annotations()),
            })
        }
        other => Err(format!("manifest media type {other:?} is not supported")),
    }
}

fn digest(descriptor: &Descriptor) -> Result<Digest, String> {
    descriptor.digest().to_string().parse()
}

fn sorted(
    map: &Option<std::collections::HashMap<String, String>>,
) -> Option<std::collections::BTreeMap<String, String>> {
    map.as_ref()
        .map(|map| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(data: &str) -> String {
        Digest::sha256_of(data.as_bytes()).to_string()
    }

    #[test]
    fn an_image_manifest_references_its_config_and_layers() {
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":1}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":2}}],
            "subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":3}},
            "annotations":{{"a":"b"}}}}"#,
            d("config"),
            d("layer"),
            d("subject")
        );
        let parsed = parse(Some(OCI_MANIFEST), text.as_bytes()).unwrap();
        assert_eq!(parsed.blobs.len(), 2);
        assert_eq!(parsed.blobs[1].to_string(), d("layer"));
        assert_eq!(parsed.subject.unwrap().to_string(), d("subject"));
        assert_eq!(
            parsed.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert_eq!(parsed.annotations.unwrap()["a"], "b");
    }

    #[test]
    fn a_docker_list_references_its_children() {
        let text = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{}","size":1,
              "platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            d("child")
        );
        let parsed = parse(None, text.as_bytes()).unwrap();
        assert_eq!(parsed.media_type, DOCKER_LIST);
        assert_eq!(parsed.children[0].to_string(), d("child"));
    }

    #[test]
    fn bad_manifests_are_refused_with_a_reason() {
        assert!(parse(Some(OCI_MANIFEST), b"nope").is_err());
        assert!(parse(None, b"{}").is_err());
        assert!(parse(Some("text/plain"), b"{}").is_err());
        let mismatch = format!(r#"{{"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        assert!(parse(Some(OCI_MANIFEST), mismatch.as_bytes()).is_err());
        let bad_digest = r#"{"schemaVersion":2,"config":{"mediaType":"x/y","digest":"md5:00","size":1},"layers":[]}"#;
        assert!(parse(Some(OCI_MANIFEST), bad_digest.as_bytes()).is_err());
    }
}
