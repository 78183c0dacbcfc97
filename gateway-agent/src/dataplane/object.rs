//! The eBPF object, embedded at build time (see `build.rs`).

use anyhow::{Context, Result};
use aya::{Ebpf, EbpfLoader};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway.bpf.o"));

/// Loads the object's maps into the kernel; programs are loaded separately when attached.
pub fn load() -> Result<Ebpf> {
    EbpfLoader::new()
        .load(OBJECT)
        .context("loading the eBPF object (maps and BTF) into the kernel")
}
