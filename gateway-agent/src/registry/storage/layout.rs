//! The filesystem backend's paths, and the one way it makes a file visible: written in full to
//! a temporary file, fsynced, renamed into place, and the directory fsynced, so a crash leaves
//! either the old state or the new one, never a partial file.
//!
//! ```text
//! <root>/blobs/<alg>/<hex[..2]>/<hex>              content, by digest
//! <root>/uploads/<id>, <id>.repo                   sessions: data so far, their repository
//! <root>/tmp/                                      files on their way into place
//! <root>/repos/<name>/_links/<alg>/<hex>           the blobs this repository may serve
//! <root>/repos/<name>/_manifests/<alg>/<hex>       its manifests (the file holds the media type)
//! <root>/repos/<name>/_tags/<tag>                  the digest the tag points at
//! <root>/repos/<name>/_referrers/<alg>/<hex>/<alg>-<hex>   a referrer's descriptor (JSON)
//! ```
//!
//! Repository name components never start with `_` (the grammar), so the `_` directories
//! cannot collide with a nested repository.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::registry::names::{Digest, RepoName};

/// The paths of one store.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: PathBuf) -> Layout {
        Layout { root }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the top-level directories (owner only).
    pub(crate) fn create(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        for dir in [
            self.root.clone(),
            self.blobs_dir(),
            self.uploads_dir(),
            self.tmp_dir(),
            self.repos_dir(),
        ] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub(crate) fn blob(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs_dir()
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    pub(crate) fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    pub(crate) fn upload(&self, id: &str) -> PathBuf {
        self.uploads_dir().join(id)
    }

    pub(crate) fn upload_repo(&self, id: &str) -> PathBuf {
        self.uploads_dir().join(format!("{id}.repo"))
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn repos_dir(&self) -> PathBuf {
        self.root.join("repos")
    }

    pub(crate) fn repo(&self, repo: &RepoName) -> PathBuf {
        self.repos_dir().join(repo.as_str())
    }

    pub(crate) fn link(&self, repo: &RepoName, digest: &Digest) -> PathBuf {
        self.repo(repo)
            .join("_links")
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    pub(crate) fn manifests_dir(&self, repo: &RepoName) -> PathBuf {
        self.repo(repo).join("_manifests")
    }

    pub(crate) fn manifest(&self, repo: &RepoName, digest: &Digest) -> PathBuf {
        self.manifests_dir(repo)
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    pub(crate) fn tags_dir(&self, repo: &RepoName) -> PathBuf {
        self.repo(repo).join("_tags")
    }

    pub(crate) fn referrers_dir(&self, repo: &RepoName, subject: &Digest) -> PathBuf {
        self.repo(repo)
            .join("_referrers")
            .join(subject.algorithm().name())
            .join(subject.hex())
    }

    /// Writes `contents` to `path` atomically and durably (see the module docs).
    pub(crate) fn write_atomic(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        let tmp = self.tmp_dir().join(random_id()?);
        let result = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(contents)?;
            file.sync_all()?;
            self.rename_into(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Renames the complete, synced file `from` to `to` (making `to`'s directory first) and
    /// syncs the directory, so the rename itself survives a crash.
    pub(crate) fn rename_into(&self, from: &Path, to: &Path) -> io::Result<()> {
        let dir = parent(to)?;
        fs::create_dir_all(dir)?;
        fs::rename(from, to)?;
        sync_dir(dir)
    }

    /// Creates the empty file `path` durably if it is not there.
    pub(crate) fn touch_new(&self, path: &Path) -> io::Result<()> {
        let dir = parent(path)?;
        fs::create_dir_all(dir)?;
        match OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(file) => {
                file.sync_all()?;
                sync_dir(dir)
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(error) => Err(error),
        }
    }
}

fn parent(path: &Path) -> io::Result<&Path> {
    path.parent()
        .ok_or_else(|| io::Error::other(format!("{} has no parent", path.display())))
}

/// Makes the entries of `dir` durable (a rename or create inside it).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// 128 random bits in hex: upload ids and temporary names. Upload ids are capabilities of a
/// sort (whoever knows one may append), so they come from the kernel's CSPRNG.
pub(crate) fn random_id() -> io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `id` could be one of [`random_id`]'s (so it is safe as a file name).
pub(crate) fn is_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Removes `path`, fine if it is already gone; whether it was there.
pub(crate) fn remove_if_present(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// The names in `dir`, empty if it does not exist.
pub(crate) fn entries(dir: &Path) -> io::Result<Vec<String>> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut names = Vec::new();
    for entry in read {
        if let Some(name) = entry?.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}
