//! The cache on disk, under `state.dir/http-cache`:
//!
//! ```text
//! objects/<key>.meta           JSON: URL, policy, response head, body file, size, SHA-256
//! objects/<key>-<nonce>.body   a complete body, never written after it got this name
//! tmp/<nonce>.part             bodies being written; emptied at start
//! ```
//!
//! `<key>` is the SHA-256 of the URL in hex (of the URL and the varying request headers' digest
//! for a response with `Vary`, [`key_for`]). A body becomes visible only once complete: it is
//! written under `tmp/`, fsynced, renamed into `objects/`, then its metadata is written the same
//! way and the directory fsynced. A crash at any point leaves a `.part` (removed at start), a
//! body no metadata names (removed at start), or the old entry intact; never half a body under
//! a metadata file. Blocking I/O: callers run these on blocking threads.

use std::{
    collections::HashSet,
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use http_cache_semantics::CachePolicy;
use ring::digest;
use serde::{Deserialize, Serialize};

/// The layout version in every metadata file; others are dropped at start.
pub(crate) const VERSION: u32 = 1;

/// What is kept about one stored object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub version: u32,
    /// The URL it was fetched from (`http://host:port/path?query`).
    pub url: String,
    /// The body's file name in `objects/`.
    pub body: String,
    /// Body bytes.
    pub size: u64,
    /// SHA-256 of the body, hex.
    pub sha256: String,
    /// When it was stored (Unix seconds): the eviction order after a restart.
    pub stored_unix: u64,
    /// The stored response's status.
    pub status: u16,
    /// The stored response's end-to-end headers (values as bytes: they need not be UTF-8).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The RFC 9111 state: request, response, when it was received.
    pub policy: CachePolicy,
    /// For a response with `Vary`: the SHA-256 (hex) of the request header values it varies
    /// on, which is part of its key ([`Meta::key`]). `None` for one that does not vary.
    #[serde(default)]
    pub vary_key: Option<String>,
}

impl Meta {
    /// The key this entry is stored under.
    pub fn key(&self) -> String {
        key_for(&self.url, self.vary_key.as_deref())
    }
}

/// The cache's directory.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    objects: PathBuf,
    tmp: PathBuf,
}

/// The key of a URL: its SHA-256, hex.
pub(crate) fn key_of(url: &str) -> String {
    hex(digest::digest(&digest::SHA256, url.as_bytes()).as_ref())
}

/// The key of one variant of a URL: the URL's own key when it does not vary.
pub(crate) fn key_for(url: &str, vary_key: Option<&str>) -> String {
    match vary_key {
        None => key_of(url),
        Some(vary_key) => key_of(&format!("{url}\n{vary_key}")),
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn nonce() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("no random bytes for a cache file name"))?;
    Ok(hex(&bytes))
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the directory {}", dir.display()))
}

impl Store {
    /// Opens (or creates) the cache under `dir`: empties `tmp/`, and returns the entries whose
    /// metadata reads and whose body has the recorded size. Everything else is removed.
    pub fn open(dir: &Path) -> Result<(Store, Vec<(String, Meta)>)> {
        let store = Store {
            objects: dir.join("objects"),
            tmp: dir.join("tmp"),
        };
        create_dir(&store.objects)?;
        create_dir(&store.tmp)?;
        for entry in read_dir(&store.tmp)? {
            remove_file(&entry);
        }
        let mut entries = Vec::new();
        let mut bodies = HashSet::new();
        let files = read_dir(&store.objects)?;
        for path in &files {
            let Some(key) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".meta"))
            else {
                continue;
            };
            match store.load_meta(key, path) {
                Some(meta) => {
                    bodies.insert(store.objects.join(&meta.body));
                    entries.push((key.to_owned(), meta));
                }
                None => remove_file(path),
            }
        }
        // Bodies no metadata names: a crash between the two renames, or a replaced entry.
        for path in files {
            let is_body = path.extension().is_some_and(|e| e == "body");
            if is_body && !bodies.contains(&path) {
                remove_file(&path);
            }
        }
        Ok((store, entries))
    }

    fn load_meta(&self, key: &str, path: &Path) -> Option<Meta> {
        let text = fs::read(path).ok()?;
        let Ok(meta) = serde_json::from_slice::<Meta>(&text) else {
            tracing::warn!(file = %path.display(), "dropping unreadable cache metadata");
            return None;
        };
        // The body name must be one of ours, so a damaged file cannot point elsewhere.
        let named_well =
            meta.body.starts_with(key) && meta.body.ends_with(".body") && !meta.body.contains('/');
        if !named_well {
            tracing::warn!(file = %path.display(), "dropping unreadable cache metadata");
            return None;
        }
        let body = self.objects.join(&meta.body);
        let sound = meta.version == VERSION
            && meta.key() == key
            && fs::metadata(&body).is_ok_and(|m| m.len() == meta.size);
        if !sound {
            tracing::warn!(file = %path.display(), "dropping a damaged cache entry");
            remove_file(&body);
            return None;
        }
        Some(meta)
    }

    /// A new temporary body file, read-write, for a fill.
    pub fn temp_file(&self) -> Result<(PathBuf, File)> {
        let path = self.tmp.join(format!("{}.part", nonce()?));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok((path, file))
    }

    /// A fresh body name for `key`.
    pub fn body_name(key: &str) -> Result<String> {
        Ok(format!("{key}-{}.body", nonce()?))
    }

    /// Makes a complete temporary body the body of `key`: fsync, rename, then the metadata.
    pub fn commit(&self, key: &str, temp: &Path, file: &File, meta: &Meta) -> Result<()> {
        file.sync_all()
            .with_context(|| format!("syncing {}", temp.display()))?;
        let body = self.objects.join(&meta.body);
        fs::rename(temp, &body)
            .with_context(|| format!("moving {} to {}", temp.display(), body.display()))?;
        self.write_meta(key, meta)
    }

    /// Writes `key`'s metadata atomically (a temporary file, fsync, rename, directory fsync).
    pub fn write_meta(&self, key: &str, meta: &Meta) -> Result<()> {
        let text = serde_json::to_vec(meta).context("encoding cache metadata")?;
        let temp = self.tmp.join(format!("{}.meta.part", nonce()?));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .with_context(|| format!("creating {}", temp.display()))?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", temp.display()))?;
        let path = self.objects.join(format!("{key}.meta"));
        fs::rename(&temp, &path)
            .with_context(|| format!("moving {} to {}", temp.display(), path.display()))?;
        sync_dir(&self.objects)
    }

    /// Removes an entry: its metadata first, so a crash in between leaves only an orphan body.
    pub fn remove(&self, key: &str, meta: &Meta) {
        let meta_path = self.objects.join(format!("{key}.meta"));
        // The metadata may already name a newer body: only remove it if it is this entry's.
        let current = fs::read(&meta_path)
            .ok()
            .and_then(|t| serde_json::from_slice::<Meta>(&t).ok());
        if current.is_some_and(|c| c.body == meta.body) {
            remove_file(&meta_path);
        }
        remove_file(&self.objects.join(&meta.body));
    }

    /// Opens a stored body, refusing one whose size is not the recorded one.
    pub fn open_body(&self, meta: &Meta) -> Result<File> {
        let path = self.objects.join(&meta.body);
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if len != meta.size {
            bail!(
                "{} has {len} bytes, its metadata says {}",
                path.display(),
                meta.size
            );
        }
        Ok(file)
    }

    /// Whether a stored body still has its recorded SHA-256.
    pub fn verify(&self, meta: &Meta) -> Result<bool> {
        let mut file = self.open_body(meta)?;
        let mut context = digest::Context::new(&digest::SHA256);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buf).context("reading a cached body")?;
            if n == 0 {
                break;
            }
            context.update(&buf[..n]);
        }
        Ok(hex(context.finish().as_ref()) == meta.sha256)
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    Ok(entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
}

/// Removes a file; one already gone is fine, anything else is logged (the entry is dropped
/// from the index either way).
fn remove_file(path: &Path) {
    if let Err(error) = fs::remove_file(path) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), %error, "could not remove a cache file");
        }
    }
}
