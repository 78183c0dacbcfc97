//! The filesystem backend: the layout in [`super::layout`], every visible change made by an
//! atomic rename (see there), uploads hashed while they stream ([`super::upload`]).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::SystemTime;

use anyhow::Context;

use super::layout::{self, entries, remove_if_present, Layout};
use super::upload::{Session, Sessions};
use super::{
    Blob, Limits, Manifest, Referrer, Result, Storage, StorageError, StoredBlob, UploadState,
};
use crate::registry::names::{Algorithm, Digest, RepoName, Tag};

/// A store in one directory.
pub struct FsStorage {
    layout: Layout,
    limits: Limits,
    sessions: Sessions,
    gc: RwLock<()>,
}

impl FsStorage {
    /// Opens (creating if needed) the store at `root`. Leftovers of a crash in `tmp/` are
    /// removed: nothing there was ever visible.
    pub fn open(root: impl Into<PathBuf>, limits: Limits) -> anyhow::Result<FsStorage> {
        let layout = Layout::new(root.into());
        layout.create()?;
        for name in entries(&layout.tmp_dir())? {
            let path = layout.tmp_dir().join(name);
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
        Ok(FsStorage {
            layout,
            limits,
            sessions: Sessions::default(),
            gc: RwLock::new(()),
        })
    }

    /// Where it is.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// The repository an upload belongs to, checking the id and that it is `repo`'s.
    fn check_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        if !layout::is_id(id) {
            return Err(StorageError::UploadUnknown);
        }
        match fs::read_to_string(self.layout.upload_repo(id)) {
            Ok(owner) if owner == repo.as_str() => Ok(()),
            Ok(_) => Err(StorageError::UploadUnknown),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::UploadUnknown)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Runs `f` on the open session `id` (opening it from disk after a restart).
    fn with_session<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Option<Session>) -> Result<T>,
    ) -> Result<T> {
        let slot = self.sessions.slot(id);
        let mut session = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if session.is_none() {
            match Session::open(&self.layout.upload(id)) {
                Ok(opened) => *session = Some(opened),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StorageError::UploadUnknown)
                }
                Err(error) => return Err(error.into()),
            }
        }
        f(&mut session)
    }

    fn drop_upload(&self, id: &str) -> Result<()> {
        self.sessions.forget(id);
        remove_if_present(&self.layout.upload(id))?;
        remove_if_present(&self.layout.upload_repo(id))?;
        Ok(())
    }

    fn read_manifest_link(&self, repo: &RepoName, digest: &Digest) -> Result<Option<String>> {
        match fs::read_to_string(self.layout.manifest(repo, digest)) {
            Ok(media_type) => Ok(Some(media_type)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Every repository under `dir` (named `prefix…`), depth first.
    fn walk_repos(&self, dir: &Path, prefix: &str, out: &mut Vec<RepoName>) -> Result<()> {
        for name in entries(dir)? {
            if name.starts_with('_') {
                continue;
            }
            let path = dir.join(&name);
            if !path.is_dir() {
                continue;
            }
            let full = format!("{prefix}{name}");
            if path.join("_links").is_dir() || path.join("_manifests").is_dir() {
                if let Ok(repo) = full.parse() {
                    out.push(repo);
                }
            }
            self.walk_repos(&path, &format!("{full}/"), out)?;
        }
        Ok(())
    }
}

/// Sets `path`'s modification time to now (the GC grace period counts from it).
fn touch(path: &Path) -> std::io::Result<()> {
    File::options()
        .write(true)
        .open(path)?
        .set_modified(SystemTime::now())
}

fn digests_in(dir: &Path, algorithm: Algorithm) -> Result<Vec<Digest>> {
    Ok(entries(dir)?
        .into_iter()
        .filter_map(|hex| format!("{}:{hex}", algorithm.name()).parse().ok())
        .collect())
}

const ALGORITHMS: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Sha512];

impl Storage for FsStorage {
    fn limits(&self) -> Limits {
        self.limits
    }

    fn blob_size(&self, repo: &RepoName, digest: &Digest, renew: bool) -> Result<Option<u64>> {
        if !self.layout.link(repo, digest).exists() {
            return Ok(None);
        }
        let path = self.layout.blob(digest);
        match fs::metadata(&path) {
            Ok(meta) => {
                if renew {
                    touch(&path)?;
                }
                Ok(Some(meta.len()))
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn open_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Blob>> {
        if !self.layout.link(repo, digest).exists() {
            return Ok(None);
        }
        match File::open(self.layout.blob(digest)) {
            Ok(file) => Ok(Some(Blob {
                size: file.metadata()?.len(),
                reader: Box::new(file),
            })),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn mount_blob(&self, from: &RepoName, to: &RepoName, digest: &Digest) -> Result<bool> {
        if self.blob_size(from, digest, true)?.is_none() {
            return Ok(false);
        }
        self.layout.touch_new(&self.layout.link(to, digest))?;
        Ok(true)
    }

    fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        Ok(remove_if_present(&self.layout.link(repo, digest))?)
    }

    fn start_upload(&self, repo: &RepoName) -> Result<String> {
        let id = layout::random_id()?;
        File::create(self.layout.upload(&id))?;
        // Written last: a session without its owner file is not one (and expires).
        self.layout
            .write_atomic(&self.layout.upload_repo(&id), repo.as_str().as_bytes())?;
        Ok(id)
    }

    fn upload_state(&self, repo: &RepoName, id: &str) -> Result<UploadState> {
        self.check_upload(repo, id)?;
        self.with_session(id, |session| {
            Ok(UploadState {
                size: session.as_ref().map_or(0, Session::size),
            })
        })
    }

    fn append_upload(
        &self,
        repo: &RepoName,
        id: &str,
        offset: Option<u64>,
        data: &[u8],
    ) -> Result<UploadState> {
        self.check_upload(repo, id)?;
        let limit = self.limits.max_blob_bytes;
        self.with_session(id, |slot| {
            let session = slot.as_mut().ok_or(StorageError::UploadUnknown)?;
            if let Some(given) = offset {
                if given != session.size() {
                    return Err(StorageError::RangeInvalid {
                        given,
                        have: session.size(),
                    });
                }
            }
            if session.size() + data.len() as u64 > limit {
                return Err(StorageError::TooLarge {
                    what: "the blob",
                    limit,
                });
            }
            Ok(UploadState {
                size: session.append(data)?,
            })
        })
    }

    fn finish_upload(&self, repo: &RepoName, id: &str, digest: &Digest) -> Result<u64> {
        self.check_upload(repo, id)?;
        let path = self.layout.upload(id);
        let (actual, size) = self.with_session(id, |slot| {
            let session = slot.take().ok_or(StorageError::UploadUnknown)?;
            let size = session.size();
            Ok((session.finish(digest.algorithm(), &path)?, size))
        })?;
        if &actual != digest {
            self.drop_upload(id)?;
            return Err(StorageError::DigestInvalid {
                expected: digest.clone(),
                actual,
            });
        }
        let blob = self.layout.blob(digest);
        if blob.exists() {
            touch(&blob)?;
        } else {
            // The session's file is the temporary file: complete and synced by `finish`.
            self.layout.rename_into(&path, &blob)?;
        }
        self.layout.touch_new(&self.layout.link(repo, digest))?;
        self.drop_upload(id)?;
        Ok(size)
    }

    fn cancel_upload(&self, repo: &RepoName, id: &str) -> Result<()> {
        self.check_upload(repo, id)?;
        self.drop_upload(id)
    }

    fn read_upload(&self, repo: &RepoName, id: &str, offset: u64, buf: &mut [u8]) -> Result<usize> {
        use std::os::unix::fs::FileExt;
        self.check_upload(repo, id)?;
        match File::open(self.layout.upload(id)) {
            Ok(file) => Ok(file.read_at(buf, offset)?),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(StorageError::UploadUnknown)
            }
            Err(error) => Err(error.into()),
        }
    }

    fn expire_uploads(&self) -> Result<usize> {
        let dir = self.layout.uploads_dir();
        let now = SystemTime::now();
        let mut expired = 0;
        for name in entries(&dir)? {
            let id = name.trim_end_matches(".repo");
            if !layout::is_id(id) || name.ends_with(".repo") {
                continue;
            }
            let modified = fs::metadata(dir.join(&name))?.modified()?;
            let age = now.duration_since(modified).unwrap_or_default();
            if age > self.limits.upload_expiry {
                self.drop_upload(id)?;
                expired += 1;
            }
        }
        // Owner files whose data is gone (a crash between the two removals).
        for name in entries(&dir)? {
            if let Some(id) = name.strip_suffix(".repo") {
                if !dir.join(id).exists() {
                    remove_if_present(&dir.join(&name))?;
                }
            }
        }
        Ok(expired)
    }

    fn put_manifest(
        &self,
        repo: &RepoName,
        manifest: &Manifest,
        tag: Option<&Tag>,
        subject: Option<(&Digest, &Referrer)>,
    ) -> Result<()> {
        let blob = self.layout.blob(&manifest.digest);
        if blob.exists() {
            touch(&blob)?;
        } else {
            self.layout.write_atomic(&blob, &manifest.bytes)?;
        }
        let link = self.layout.manifest(repo, &manifest.digest);
        self.layout
            .write_atomic(&link, manifest.media_type.as_bytes())?;
        if let Some((subject, referrer)) = subject {
            let entry = self.layout.referrers_dir(repo, subject).join(format!(
                "{}-{}",
                manifest.digest.algorithm().name(),
                manifest.digest.hex()
            ));
            let json = serde_json::to_vec(referrer).context("encoding a referrer")?;
            self.layout.write_atomic(&entry, &json)?;
        }
        if let Some(tag) = tag {
            let path = self.layout.tags_dir(repo).join(tag.as_str());
            self.layout
                .write_atomic(&path, manifest.digest.to_string().as_bytes())?;
        }
        Ok(())
    }

    fn manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Manifest>> {
        let Some(media_type) = self.read_manifest_link(repo, digest)? else {
            return Ok(None);
        };
        match fs::read(self.layout.blob(digest)) {
            Ok(bytes) => Ok(Some(Manifest {
                digest: digest.clone(),
                media_type,
                bytes,
            })),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>> {
        match fs::read_to_string(self.layout.tags_dir(repo).join(tag.as_str())) {
            Ok(text) => Ok(text.trim().parse().ok()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let existed = remove_if_present(&self.layout.manifest(repo, digest))?;
        for tag in self.tags(repo)?.unwrap_or_default() {
            if self.tag(repo, &tag)?.as_ref() == Some(digest) {
                self.delete_tag(repo, &tag)?;
            }
        }
        let entry = format!("{}-{}", digest.algorithm().name(), digest.hex());
        let referrers = self.layout.repo(repo).join("_referrers");
        for algorithm in entries(&referrers)? {
            for subject in entries(&referrers.join(&algorithm))? {
                remove_if_present(&referrers.join(&algorithm).join(subject).join(&entry))?;
            }
        }
        Ok(existed)
    }

    fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<bool> {
        Ok(remove_if_present(
            &self.layout.tags_dir(repo).join(tag.as_str()),
        )?)
    }

    fn tags(&self, repo: &RepoName) -> Result<Option<Vec<Tag>>> {
        if !self.layout.repo(repo).is_dir() {
            return Ok(None);
        }
        let mut tags: Vec<Tag> = entries(&self.layout.tags_dir(repo))?
            .into_iter()
            .filter_map(|name| name.parse().ok())
            .collect();
        tags.sort();
        Ok(Some(tags))
    }

    fn repositories(&self) -> Result<Vec<RepoName>> {
        let mut repos = Vec::new();
        self.walk_repos(&self.layout.repos_dir(), "", &mut repos)?;
        repos.sort();
        Ok(repos)
    }

    fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Referrer>> {
        let dir = self.layout.referrers_dir(repo, subject);
        let mut out = Vec::new();
        for name in entries(&dir)? {
            let bytes = fs::read(dir.join(&name))?;
            match serde_json::from_slice::<Referrer>(&bytes) {
                // A referrer whose manifest was deleted since is not listed.
                Ok(referrer) => {
                    let still_there = referrer
                        .digest
                        .parse::<Digest>()
                        .is_ok_and(|digest| self.layout.manifest(repo, &digest).exists());
                    if still_there {
                        out.push(referrer);
                    }
                }
                Err(error) => tracing::warn!(%error, "unreadable referrer entry {name}"),
            }
        }
        Ok(out)
    }

    fn manifests(&self, repo: &RepoName) -> Result<Vec<Digest>> {
        let dir = self.layout.manifests_dir(repo);
        let mut out = Vec::new();
        for algorithm in ALGORITHMS {
            out.extend(digests_in(&dir.join(algorithm.name()), algorithm)?);
        }
        Ok(out)
    }

    fn stored_blobs(&self) -> Result<Vec<StoredBlob>> {
        let mut out = Vec::new();
        for algorithm in ALGORITHMS {
            let dir = self.layout.blobs_dir().join(algorithm.name());
            for prefix in entries(&dir)? {
                for digest in digests_in(&dir.join(prefix), algorithm)? {
                    let meta = match fs::metadata(self.layout.blob(&digest)) {
                        Ok(meta) => meta,
                        // Swept by someone else meanwhile.
                        Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(error) => return Err(error.into()),
                    };
                    out.push(StoredBlob {
                        digest,
                        size: meta.len(),
                        touched: meta.modified()?,
                    });
                }
            }
        }
        Ok(out)
    }

    fn remove_blob(&self, digest: &Digest) -> Result<()> {
        for repo in self.repositories()? {
            remove_if_present(&self.layout.link(&repo, digest))?;
        }
        remove_if_present(&self.layout.blob(digest))?;
        Ok(())
    }

    fn gc_lock(&self) -> &RwLock<()> {
        &self.gc
    }
}

#[cfg(test)]
mod tests;
