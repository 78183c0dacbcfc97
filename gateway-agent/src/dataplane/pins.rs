//! Where the dataplane's maps and links are pinned in bpffs.

use std::{
    io,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use gateway_common::maps::pins::{LINKS_DIR, MAPS_DIR};

/// `statfs` magic of a bpf filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// The pin layout under the configured directory.
#[derive(Clone, Debug)]
pub struct PinLayout {
    dir: PathBuf,
}

impl PinLayout {
    /// The layout under `dir` (`dataplane.bpf_pin_dir`).
    pub fn new(dir: &Path) -> Self {
        PinLayout {
            dir: dir.to_path_buf(),
        }
    }

    /// The configured directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Pin path of map `name`.
    pub fn map(&self, name: &str) -> PathBuf {
        self.dir.join(MAPS_DIR).join(name)
    }

    /// Pin path of the link of program `program`.
    pub fn link(&self, program: &str) -> PathBuf {
        self.dir.join(LINKS_DIR).join(program)
    }

    /// Creates the directories, after checking that they are on a bpf filesystem: pins anywhere
    /// else fail with an obscure EPERM, so say what to mount instead.
    pub fn prepare(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating the pin directory {}", self.dir.display()))?;
        if !is_bpffs(&self.dir)? {
            bail!(
                "{} is not on a bpf filesystem (dataplane.bpf_pin_dir); mount one with \
                 `mount -t bpf bpf {}` or point the key at one",
                self.dir.display(),
                self.dir.display()
            );
        }
        for sub in [MAPS_DIR, LINKS_DIR] {
            let path = self.dir.join(sub);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        Ok(())
    }

    /// Removes the map pins (the maps are freed once no program or process holds them).
    pub fn remove_maps(&self) -> Result<usize> {
        remove_files_in(&self.dir.join(MAPS_DIR))
    }
}

/// Removes every file in `dir`, returning how many there were. A missing directory is empty.
pub fn remove_files_in(dir: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        removed += 1;
    }
    Ok(removed)
}

fn is_bpffs(path: &Path) -> Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} contains a NUL byte", path.display()))?;
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid C string and stat a properly sized out-parameter.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}
