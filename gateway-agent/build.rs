//! Embeds the eBPF object that `cargo xtask build-ebpf` wrote. The object is built by xtask, not
//! here, because it needs Debian's rustc and bpf-linker (see docs/TOOLCHAIN.md).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=GATEWAY_EBPF_OBJECT");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let object = match std::env::var_os("GATEWAY_EBPF_OBJECT") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => {
            let target = match std::env::var_os("CARGO_TARGET_DIR") {
                Some(dir) if !dir.is_empty() => PathBuf::from(dir),
                _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
            };
            target.join("bpf").join("gateway.bpf.o")
        }
    };
    println!("cargo:rerun-if-changed={}", object.display());
    if !object.is_file() {
        eprintln!(
            "error: the eBPF object {} does not exist.\n\
             Build it first with `cargo xtask build-ebpf` (or build everything with \
             `cargo xtask build`); set GATEWAY_EBPF_OBJECT to use an object elsewhere.",
            object.display()
        );
        std::process::exit(1);
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("gateway.bpf.o");
    if let Err(err) = std::fs::copy(&object, &out) {
        eprintln!(
            "error: copying {} to {}: {err}",
            object.display(),
            out.display()
        );
        std::process::exit(1);
    }
}
