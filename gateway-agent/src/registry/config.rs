//! `[registry]` beyond `enabled` and `port`: where the store is, its limits, how long abandoned
//! uploads and unreferenced blobs live, and who may push where (`[[registry.access]]`).

use std::path::PathBuf;

use toml::Value;

use super::storage::s3::StorageTarget;
use crate::config::reader::{self, Section};
use crate::config::{values, Errors, Seconds};

/// `[registry]` beyond enabled/port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// The store's directory; `None`: `<state.dir>/registry`.
    pub dir: Option<PathBuf>,
    /// Largest blob accepted, in bytes.
    pub max_blob_size: u64,
    /// Largest manifest accepted, in bytes.
    pub max_manifest_size: u64,
    /// Upload sessions untouched this long are removed.
    pub upload_expiry: Seconds,
    /// GC keeps unreferenced blobs younger than this (a push in progress uploads its layers
    /// before the manifest that references them).
    pub gc_grace: Seconds,
    /// Who may push and delete where; everyone with a valid certificate may pull.
    pub access: Vec<Access>,
    /// Where the store is (`[registry.storage]`): this host's disk or an S3 bucket. The
    /// mirror's cache lives in the same place.
    pub storage: StorageChoice,
}

/// `registry.storage.backend`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StorageChoice {
    /// `registry.dir` (default `<state.dir>/registry`) and `<state.dir>/mirror`.
    #[default]
    Filesystem,
    /// A bucket, maybe shared with other gateways.
    S3(S3Store),
}

/// `[registry.storage]` with `backend = "s3"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Store {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// A root-only file with one line `ACCESS_KEY_ID:SECRET_ACCESS_KEY`.
    pub credentials: PathBuf,
    /// Key prefix in the bucket (gateways sharing a bucket share the prefix).
    pub prefix: String,
    /// PEM CA certificates for an `https` endpoint (else the system's roots).
    pub ca: Option<PathBuf>,
    /// The store's IP address, when the endpoint names a host: the agent never looks it up.
    pub address: Option<std::net::IpAddr>,
    /// The local read cache's bound in bytes, per store (registry, each mirror upstream);
    /// 0: none.
    pub cache_size: u64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            dir: None,
            max_blob_size: 10 << 30,
            max_manifest_size: 4 << 20,
            upload_expiry: Seconds::new(24 * 3600),
            gc_grace: Seconds::new(3600),
            access: Vec::new(),
            storage: StorageChoice::Filesystem,
        }
    }
}

/// One `[[registry.access]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The client certificate's name (what `pki issue-client NAME` put in it).
    pub client: String,
    /// Repository prefixes it may push to and delete from: `"team/"` covers `team/app`;
    /// `"app"` covers `app` and `app/…`; `""` covers everything.
    pub push: Vec<String>,
}

impl Registry {
    /// Whether `client` may push to (and delete from) `repo`.
    pub fn may_push(&self, client: Option<&str>, repo: &str) -> bool {
        let Some(client) = client else {
            return false;
        };
        self.access
            .iter()
            .filter(|entry| entry.client == client)
            .flat_map(|entry| &entry.push)
            .any(|prefix| covers(prefix, repo))
    }
}

fn covers(prefix: &str, repo: &str) -> bool {
    if prefix.is_empty() || prefix.ends_with('/') {
        return repo.starts_with(prefix);
    }
    repo == prefix
        || repo
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Reads the keys of `[registry]` beyond enabled/port.
pub(crate) fn read(section: &mut Section, errors: &mut Errors) -> Option<Registry> {
    let d = Registry::default();
    let dir = section.optional("dir", None, errors, |value| {
        values::absolute_path(&reader::string(value)?).map(Some)
    });
    let max_blob_size = section.optional("max_blob_size", d.max_blob_size, errors, |value| {
        values::positive(value, 1 << 50)
    });
    let max_manifest_size =
        section.optional("max_manifest_size", d.max_manifest_size, errors, |value| {
            values::positive(value, 64 << 20)
        });
    let upload_expiry =
        section.optional("upload_expiry", d.upload_expiry, errors, values::duration);
    let gc_grace = section.optional("gc_grace", d.gc_grace, errors, values::duration);
    let access_key = section.key("access");
    let entries = section.optional("access", Vec::new(), errors, reader::array)?;
    let mut access = Vec::new();
    let mut ok = true;
    for (i, entry) in entries.into_iter().enumerate() {
        match access_entry(format!("{access_key}[{i}]"), entry, errors) {
            Some(entry) => access.push(entry),
            None => ok = false,
        }
    }
    let mut storage_section = section.table("storage", errors);
    let storage = storage(&mut storage_section, errors);
    storage_section.finish(errors);
    Some(Registry {
        storage: storage?,
        dir: dir?,
        max_blob_size: max_blob_size?,
        max_manifest_size: max_manifest_size?,
        upload_expiry: upload_expiry?,
        gc_grace: gc_grace?,
        access: ok.then_some(access)?,
    })
}

/// `registry.storage.cache_size` unless set: 4 GiB.
const DEFAULT_CACHE_SIZE: u64 = 4 << 30;

/// `[registry.storage]`. Every key is read whatever the backend (so a typo is named), the
/// S3 ones are required only for `"s3"`.
fn storage(section: &mut Section, errors: &mut Errors) -> Option<StorageChoice> {
    let backend = section.optional("backend", "filesystem".to_owned(), errors, |value| {
        let text = reader::string(value)?;
        match text.as_str() {
            "filesystem" | "s3" => Ok(text),
            _ => Err(format!(
                "{text:?} is not a backend: \"filesystem\" or \"s3\""
            )),
        }
    });
    let endpoint = section.optional("endpoint", None, errors, |value| {
        endpoint(&reader::string(value)?).map(Some)
    });
    let bucket = section.optional("bucket", None, errors, |value| {
        bucket(&reader::string(value)?).map(Some)
    });
    let region = section.optional("region", "us-east-1".to_owned(), errors, reader::string);
    let credentials = section.optional("credentials", None, errors, |value| {
        values::absolute_path(&reader::string(value)?).map(Some)
    });
    let prefix = section.optional("prefix", String::new(), errors, |value| {
        prefix(&reader::string(value)?)
    });
    let ca = section.optional("ca", None, errors, |value| {
        values::absolute_path(&reader::string(value)?).map(Some)
    });
    let cache_size = section.optional("cache_size", DEFAULT_CACHE_SIZE, errors, |value| {
        let n = reader::integer(value)?;
        u64::try_from(n).map_err(|_| format!("{n} is negative: a size in bytes, 0 for no cache"))
    });
    let address = section.optional("address", None, errors, |value| {
        let text = reader::string(value)?;
        text.parse::<std::net::IpAddr>()
            .map(Some)
            .map_err(|_| format!("{text:?} is not an IP address"))
    });
    if backend? == "filesystem" {
        return Some(StorageChoice::Filesystem);
    }
    let mut required = |name: &str, value: Option<Option<String>>, hint: &str| match value? {
        Some(value) => Some(value),
        None => {
            errors.push(
                &section.key(name),
                format!("missing; backend = \"s3\" requires it: {hint}"),
            );
            None
        }
    };
    let endpoint = required(
        "endpoint",
        endpoint,
        "the object store's URL, like \"https://nas.lan:8333\"",
    );
    let bucket = required("bucket", bucket, "the bucket's name");
    let credentials = required(
        "credentials",
        credentials.map(|path| path.map(|p| p.display().to_string())),
        "a root-only file with one line ACCESS_KEY_ID:SECRET_ACCESS_KEY",
    );
    let (endpoint, address) = (endpoint?, address?);
    // Only a name needs an address, and the two must agree: said here, at the right key.
    if let Err(error) = StorageTarget::parse(&endpoint, address) {
        errors.push(&section.key(error.key), error.problem);
        return None;
    }
    Some(StorageChoice::S3(S3Store {
        endpoint,
        address,
        cache_size: cache_size?,
        bucket: bucket?,
        region: region?,
        credentials: PathBuf::from(credentials?),
        prefix: prefix?,
        ca: ca?,
    }))
}

/// An `http` or `https` URL of a host and port, nothing else (requests are path-style).
fn endpoint(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| format!("{text:?} is not an http:// or https:// URL"))?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
        return Err(format!(
            "{text:?}: give only the scheme, host and port (no path, credentials or query)"
        ));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// S3's bucket-name rules: 3 to 63 of lowercase letters, digits, `.` and `-`.
fn bucket(text: &str) -> Result<String, String> {
    let ok = (3..=63).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a bucket name (3 to 63 of a-z, 0-9, '.', '-')"
        ))
    }
}

/// Components of letters, digits, `.`, `_` and `-`, separated by `/`.
fn prefix(text: &str) -> Result<String, String> {
    let trimmed = text.trim_matches('/');
    let ok = trimmed.is_empty()
        || trimmed.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    if ok {
        Ok(trimmed.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a key prefix (components of a-z, A-Z, 0-9, '.', '_', '-' separated by '/')"
        ))
    }
}

/// One `[[registry.access]]`: `client` and `push`.
fn access_entry(path: String, entry: Value, errors: &mut Errors) -> Option<Access> {
    let Value::Table(table) = entry else {
        errors.push(
            &path,
            reader::expected("a table with client and push", &entry),
        );
        return None;
    };
    let mut section = Section::nested(path, table);
    let client = section.required(
        "client",
        "the client certificate's name, as given to `pki issue-client`",
        errors,
        |value| {
            let name = reader::string(value)?;
            crate::pki::check_client_name(&name)?;
            Ok(name)
        },
    );
    let push_key = section.key("push");
    let push = section.required(
        "push",
        "repository prefixes it may push to, like [\"team/\"]",
        errors,
        reader::array,
    );
    section.finish(errors);
    let mut prefixes = Vec::new();
    for (i, value) in push?.into_iter().enumerate() {
        let prefix = reader::string(value).and_then(|prefix| {
            let name = prefix.trim_end_matches('/');
            if name.is_empty() || name.parse::<super::names::RepoName>().is_ok() {
                Ok(prefix)
            } else {
                Err(format!(
                    "{prefix:?} is not a repository name prefix (lowercase components, like \"team/\")"
                ))
            }
        });
        prefixes.push(errors.check(&format!("{push_key}[{i}]"), prefix)?);
    }
    Some(Access {
        client: client?,
        push: prefixes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_prefixes_cover_what_they_say() {
        let registry = Registry {
            access: vec![
                Access {
                    client: "ci".into(),
                    push: vec!["team/".into(), "tools".into()],
                },
                Access {
                    client: "admin".into(),
                    push: vec!["".into()],
                },
            ],
            ..Registry::default()
        };
        assert!(registry.may_push(Some("ci"), "team/app"));
        assert!(registry.may_push(Some("ci"), "tools"));
        assert!(registry.may_push(Some("ci"), "tools/x"));
        assert!(!registry.may_push(Some("ci"), "toolsx"));
        assert!(!registry.may_push(Some("ci"), "team"));
        assert!(!registry.may_push(Some("ci"), "other/app"));
        assert!(!registry.may_push(Some("dev"), "team/app"));
        assert!(!registry.may_push(None, "team/app"));
        assert!(registry.may_push(Some("admin"), "anything/at/all"));
    }
}
