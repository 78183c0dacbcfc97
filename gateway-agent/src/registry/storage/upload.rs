//! Upload sessions of the filesystem backend: the data so far in `uploads/<id>`, hashed as it
//! arrives, so finishing a multi-gigabyte upload does not read it all again.
//!
//! The running sha256 lives in memory. After a restart a session's hash is rebuilt from its
//! file on first use, so a client may resume an upload across a restart of the agent.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest as _, Sha256, Sha512};

use crate::registry::names::{Algorithm, Digest};

/// One open session.
pub(crate) struct Session {
    file: File,
    size: u64,
    sha256: Sha256,
}

impl Session {
    /// A session over the (existing) file at `path`, hashing what it already holds.
    pub(crate) fn open(path: &Path) -> std::io::Result<Session> {
        let mut file = OpenOptions::new().read(true).append(true).open(path)?;
        let mut sha256 = Sha256::new();
        let size = hash_into(&mut file, |chunk| sha256.update(chunk))?;
        Ok(Session { file, size, sha256 })
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Appends `data`, hashing it on the way.
    pub(crate) fn append(&mut self, data: &[u8]) -> std::io::Result<u64> {
        self.file.write_all(data)?;
        self.sha256.update(data);
        self.size += data.len() as u64;
        Ok(self.size)
    }

    /// The content's digest under `algorithm` (sha512 reads the file again: rare, and not
    /// worth hashing every upload twice), after making the data durable.
    pub(crate) fn finish(self, algorithm: Algorithm, path: &Path) -> std::io::Result<Digest> {
        self.file.sync_all()?;
        match algorithm {
            Algorithm::Sha256 => Ok(Digest::from_hash(algorithm, &self.sha256.finalize())),
            Algorithm::Sha512 => file_digest(path, algorithm),
        }
    }
}

/// A running hash under whichever algorithm a digest names.
pub(crate) enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub(crate) fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub(crate) fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest::from_hash(Algorithm::Sha256, &h.finalize()),
            Hasher::Sha512(h) => Digest::from_hash(Algorithm::Sha512, &h.finalize()),
        }
    }
}

/// The digest under `algorithm` of the file at `path`.
pub(crate) fn file_digest(path: &Path, algorithm: Algorithm) -> std::io::Result<Digest> {
    let mut hasher = Hasher::new(algorithm);
    hash_into(&mut File::open(path)?, |chunk| hasher.update(chunk))?;
    Ok(hasher.finish())
}

/// Feeds everything `file` holds from its start to `update`; the length.
pub(crate) fn hash_into(file: &mut File, mut update: impl FnMut(&[u8])) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        update(&buf[..n]);
        total += n as u64;
    }
}

/// The sessions in use, by id. Each has its own lock: chunks of one upload are sequential by
/// protocol, different uploads proceed in parallel.
#[derive(Default)]
pub(crate) struct Sessions {
    open: Mutex<HashMap<String, Arc<Mutex<Option<Session>>>>>,
}

impl Sessions {
    /// The slot for `id` (empty until opened).
    pub(crate) fn slot(&self, id: &str) -> Arc<Mutex<Option<Session>>> {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    /// Forgets `id` (finished, cancelled, expired).
    pub(crate) fn forget(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}
