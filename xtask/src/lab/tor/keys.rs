//! The nodes' keys: authority identity and signing keys (`tor-gencert`), relay fingerprints, read
//! back for the torrcs, the arti config and `lab status`.

use std::fs::{self};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::process;

use super::nodes::{data_dir, node_dir, Node, Role, NODES};
use crate::lab::layout::Lab;

/// A node's identities, read from its data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeKeys {
    /// RSA identity fingerprint, 40 hex digits.
    pub rsa_identity: String,
    /// Ed25519 identity, unpadded base64 (the second field of `fingerprint-ed25519`).
    pub ed_identity: String,
    /// Authorities only: the v3 identity (the `fingerprint` of `keys/authority_certificate`).
    pub v3ident: Option<String>,
}

/// Makes the keys of every node that has none yet, in parallel: the authority keys with
/// `tor-gencert`, then each node's relay identity with `tor --list-fingerprint`.
pub(crate) fn make_keys(lab: &Lab) -> Result<()> {
    let todo: Vec<&Node> = NODES
        .iter()
        .filter(|n| read_keys(lab, n).is_err())
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    eprintln!("lab: making keys for {} Tor node(s)", todo.len());
    thread::scope(|scope| {
        let handles: Vec<_> = todo
            .iter()
            .map(|node| scope.spawn(move || make_node_keys(lab, node)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("key generation panicked")))
            })
            .collect::<Result<Vec<()>>>()
    })?;
    Ok(())
}

pub(crate) fn make_node_keys(lab: &Lab, node: &Node) -> Result<()> {
    let data = data_dir(lab, node.nick);
    let keys = data.join("keys");
    create_private_dir(&node_dir(lab, node.nick))?;
    create_private_dir(&data)?;
    create_private_dir(&keys)?;
    if node.role == Role::Authority && !keys.join("authority_certificate").is_file() {
        // An empty passphrase on stdin; 12 months is plenty for a lab.
        let mut cmd = Command::new("tor-gencert");
        cmd.args(["--create-identity-key", "--passphrase-fd", "0", "-i"])
            .arg(keys.join("authority_identity_key"))
            .arg("-s")
            .arg(keys.join("authority_signing_key"))
            .arg("-c")
            .arg(keys.join("authority_certificate"))
            .args(["-m", "12", "-a", &node.dir_addr()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let line = process::describe(&cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{line}`"))?;
        // Dropping stdin closes it: tor-gencert reads the empty passphrase up to EOF.
        drop(child.stdin.take());
        let out = child
            .wait_with_output()
            .with_context(|| format!("waiting for `{line}`"))?;
        if !out.status.success() {
            bail!(
                "`{line}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    // Writes keys/secret_id_key, the ed25519 keys, `fingerprint` and `fingerprint-ed25519`.
    let mut cmd = Command::new("tor");
    cmd.args(["--defaults-torrc", "/dev/null", "--ignore-missing-torrc"])
        .args(["-f", "/dev/null", "--orport", "1", "--nickname", node.nick])
        .arg("--datadirectory")
        .arg(&data)
        .arg("--list-fingerprint");
    process::run_command(&mut cmd).with_context(|| format!("making {}'s keys", node.nick))?;
    read_keys(lab, node).map(|_| ())
}

pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // Tor refuses a DataDirectory others can read.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private", dir.display()))
}

/// A node's identities from its data dir.
pub fn read_keys(lab: &Lab, node: &Node) -> Result<NodeKeys> {
    let data = data_dir(lab, node.nick);
    let field = |file: &str| -> Result<String> {
        let path = data.join(file);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        second_field(&text)
            .map(str::to_owned)
            .with_context(|| format!("{} has no `<nick> <id>` line", path.display()))
    };
    let rsa_identity = field("fingerprint")?;
    let ed_identity = field("fingerprint-ed25519")?;
    let v3ident = if node.role == Role::Authority {
        let path = data.join("keys").join("authority_certificate");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Some(
            cert_fingerprint(&text)
                .with_context(|| format!("{} has no fingerprint line", path.display()))?,
        )
    } else {
        None
    };
    Ok(NodeKeys {
        rsa_identity,
        ed_identity,
        v3ident,
    })
}

pub(crate) fn read_all_keys(lab: &Lab) -> Result<Vec<(Node, NodeKeys)>> {
    NODES
        .iter()
        .map(|n| read_keys(lab, n).map(|k| (*n, k)))
        .collect()
}

/// The second whitespace-separated field of the first line (`<nick> <id>`).
pub(crate) fn second_field(text: &str) -> Option<&str> {
    text.lines().next()?.split_whitespace().nth(1)
}

/// The `fingerprint <hex>` line of an authority certificate.
pub(crate) fn cert_fingerprint(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .map(|f| f.trim().to_string())
        .filter(|f| f.len() == 40 && f.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files() {
        assert_eq!(
            second_field("auth1 09B9C34BB4C1AD3057BF03210CB0E610CA44D57D\n"),
            Some("09B9C34BB4C1AD3057BF03210CB0E610CA44D57D")
        );
        assert_eq!(second_field(""), None);
        let cert = "dir-key-certificate-version 3\ndir-address 203.0.113.21:7000\n\
                    fingerprint 506A935B90F3295A7123E3C19F59B80B5E9D0CFF\ndir-key-published x\n";
        assert_eq!(
            cert_fingerprint(cert).as_deref(),
            Some("506A935B90F3295A7123E3C19F59B80B5E9D0CFF")
        );
        assert_eq!(cert_fingerprint("fingerprint nothex\n"), None);
    }
}
