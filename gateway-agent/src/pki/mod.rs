//! The gateway's PKI: one CA, the registries' server certificate, client certificates issued
//! by name, and a CRL the registries reload while they run.
//!
//! ```text
//! <state.dir>/pki/ca.crt, ca.key           the CA (key 0600)
//! <state.dir>/pki/server.crt, server.key   registry.<zone>, mirror.<zone>, the inside address
//! <state.dir>/pki/crl.pem                  every revoked client (an empty CRL at first)
//! <state.dir>/pki/clients/<name>.crt       each issued client certificate, for list and revoke
//!                    <name>@<serial>.crt   … one replaced by `issue-client --force` (still valid)
//! <state.dir>/pki/revoked/<name>@<serial>.crt   … moved here when revoked
//! ```
//!
//! Nothing is overwritten without `force`; every file is written whole before it is renamed
//! into place, so a registry reloading the CRL never reads half of one.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use serde::Serialize;
use time::{Duration, OffsetDateTime};

/// CA certificates live ten years, the others two (a home network rotates rarely).
const CA_DAYS: i64 = 3650;
const LEAF_DAYS: i64 = 730;

/// The PKI in one directory.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

/// One issued client certificate, as `pki list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issued {
    pub name: String,
    /// Serial number in hex.
    pub serial: String,
    /// Expiry, RFC 3339.
    pub not_after: String,
    pub revoked: bool,
}

/// A client name: used as the certificate's CN, in `[[registry.access]]` and as a file name.
pub fn check_client_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a client name (1 to 64 of a-z, 0-9, '.', '_', '-', starting with a \
             letter or digit)"
        ))
    }
}

impl Pki {
    /// The PKI under `state_dir` (`<state_dir>/pki`).
    pub fn under(state_dir: &Path) -> Pki {
        Pki {
            dir: state_dir.join("pki"),
        }
    }

    /// The PKI in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Pki {
        Pki { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }
    fn clients_dir(&self) -> PathBuf {
        self.dir.join("clients")
    }
    fn revoked_dir(&self) -> PathBuf {
        self.dir.join("revoked")
    }

    /// Whether the CA exists.
    pub fn has_ca(&self) -> bool {
        self.ca_cert().exists() && self.ca_key().exists()
    }

    /// Creates the CA and an empty CRL.
    pub fn init(&self, force: bool) -> Result<()> {
        for dir in [self.dir.clone(), self.clients_dir(), self.revoked_dir()] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        refuse_overwrite(&[self.ca_cert(), self.ca_key()], force)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("gateway CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_DAYS);
        params.serial_number = Some(serial()?);
        let key = KeyPair::generate().context("generating the CA key")?;
        let cert = params
            .self_signed(&key)
            .context("signing the CA certificate")?;
        write_file(&self.ca_key(), key.serialize_pem().as_bytes(), true)?;
        write_file(&self.ca_cert(), cert.pem().as_bytes(), false)?;
        // A new CA has issued and revoked nothing; the records belonged to the old one.
        for dir in [self.clients_dir(), self.revoked_dir()] {
            for name in list_dir(&dir)? {
                fs::remove_file(dir.join(name))?;
            }
        }
        self.write_crl()
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>> {
        if !self.has_ca() {
            bail!(
                "no CA in {} yet: run `gateway-agent pki init` first",
                self.dir.display()
            );
        }
        let key_pem = fs::read_to_string(self.ca_key())
            .with_context(|| format!("reading {}", self.ca_key().display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("{}: not a private key", self.ca_key().display()))?;
        let cert_pem = fs::read_to_string(self.ca_cert())
            .with_context(|| format!("reading {}", self.ca_cert().display()))?;
        Issuer::from_ca_cert_pem(&cert_pem, key)
            .with_context(|| format!("{}: not a CA certificate", self.ca_cert().display()))
    }

    /// Issues the server certificate for `registry.<zone>`, `mirror.<zone>` and `inside`.
    pub fn issue_server(&self, zone: &str, inside: Ipv4Addr, force: bool) -> Result<()> {
        let issuer = self.issuer()?;
        refuse_overwrite(&[self.server_cert(), self.server_key()], force)?;
        let names = [format!("registry.{zone}"), format!("mirror.{zone}")];
        let mut params = CertificateParams::new(names.to_vec())
            .with_context(|| format!("{zone:?} does not make DNS names"))?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(inside.into()));
        params.distinguished_name = name(&names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut params, LEAF_DAYS);
        params.serial_number = Some(serial()?);
        let key = KeyPair::generate().context("generating the server key")?;
        let cert = params
            .signed_by(&key, &issuer)
            .context("signing the server certificate")?;
        write_file(&self.server_key(), key.serialize_pem().as_bytes(), true)?;
        write_file(&self.server_cert(), cert.pem().as_bytes(), false)
    }

    /// Issues a client certificate for `name` into `out` as `client.cert`, `client.key` and
    /// `ca.crt` (the layout of Docker's and podman's per-registry certificate directories).
    pub fn issue_client(&self, name_: &str, out: &Path, force: bool) -> Result<()> {
        check_client_name(name_).map_err(anyhow::Error::msg)?;
        let issuer = self.issuer()?;
        let record = self.clients_dir().join(format!("{name_}.crt"));
        if record.exists() && !force {
            bail!(
                "a certificate for {name_:?} was already issued ({}); revoke it, or pass --force \
                 to issue another",
                record.display()
            );
        }
        let files = [
            out.join("client.cert"),
            out.join("client.key"),
            out.join("ca.crt"),
        ];
        refuse_overwrite(&files, force)?;
        if record.exists() {
            // Re-issued with --force: the old certificate stays valid until revoked, so its
            // record stays too (revoke NAME revokes every certificate of the name).
            let (serial, _) = read_cert(&record)?;
            let kept = self
                .clients_dir()
                .join(format!("{name_}@{}.crt", hex(&serial)));
            fs::rename(&record, &kept)
                .with_context(|| format!("keeping {} as {}", record.display(), kept.display()))?;
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(out)
            .with_context(|| format!("creating {}", out.display()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(name_);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params, LEAF_DAYS);
        params.serial_number = Some(serial()?);
        let key = KeyPair::generate().context("generating the client key")?;
        let cert = params
            .signed_by(&key, &issuer)
            .context("signing the client certificate")?;
        let ca = fs::read(self.ca_cert())?;
        write_file(&files[1], key.serialize_pem().as_bytes(), true)?;
        write_file(&files[0], cert.pem().as_bytes(), false)?;
        write_file(&files[2], &ca, false)?;
        fs::create_dir_all(self.clients_dir())?;
        write_file(&record, cert.pem().as_bytes(), false)
    }

    /// Every issued client certificate, revoked ones included.
    pub fn list(&self) -> Result<Vec<Issued>> {
        let mut out = Vec::new();
        for (dir, revoked) in [(self.clients_dir(), false), (self.revoked_dir(), true)] {
            for file in list_dir(&dir)? {
                let Some(stem) = file.strip_suffix(".crt") else {
                    continue;
                };
                // `<name>@<serial>`: a name may have had several certificates.
                let name = stem.split_once('@').map_or(stem, |(name, _)| name);
                let (serial, not_after) = read_cert(&dir.join(&file))?;
                out.push(Issued {
                    name: name.to_owned(),
                    serial: hex(&serial),
                    not_after,
                    revoked,
                });
            }
        }
        out.sort_by(|a, b| (&a.name, a.revoked).cmp(&(&b.name, b.revoked)));
        Ok(out)
    }

    /// Revokes every valid certificate of `name` and rewrites the CRL (registries pick it up
    /// within a second, without a restart).
    pub fn revoke(&self, name_: &str) -> Result<()> {
        check_client_name(name_).map_err(anyhow::Error::msg)?;
        let records: Vec<PathBuf> = list_dir(&self.clients_dir())?
            .into_iter()
            .filter(|file| {
                file.strip_suffix(".crt")
                    .map(|stem| stem.split_once('@').map_or(stem, |(name, _)| name))
                    == Some(name_)
            })
            .map(|file| self.clients_dir().join(file))
            .collect();
        if records.is_empty() {
            bail!("no valid certificate was issued for {name_:?} (see `gateway-agent pki list`)");
        }
        fs::create_dir_all(self.revoked_dir())?;
        for record in records {
            let (serial, _) = read_cert(&record)?;
            let target = self
                .revoked_dir()
                .join(format!("{name_}@{}.crt", hex(&serial)));
            fs::rename(&record, &target)
                .with_context(|| format!("moving {} to {}", record.display(), target.display()))?;
        }
        self.write_crl()
    }

    /// Writes the CRL: every certificate in `revoked/`.
    fn write_crl(&self) -> Result<()> {
        let issuer = self.issuer()?;
        let now = OffsetDateTime::now_utc();
        let mut revoked = Vec::new();
        for file in list_dir(&self.revoked_dir())? {
            let (serial, _) = read_cert(&self.revoked_dir().join(&file))?;
            revoked.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: now,
                reason_code: Some(RevocationReason::Unspecified),
                invalidity_date: None,
            });
        }
        // The CRL number only has to grow: the time does.
        let number = now.unix_timestamp().max(1).to_be_bytes();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::days(CA_DAYS),
            crl_number: SerialNumber::from_slice(&number),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&issuer).context("signing the CRL")?;
        let pem = crl.pem().context("encoding the CRL")?;
        write_file(&self.crl(), pem.as_bytes(), false)
    }

    /// What the registry needs at start: the CA, the server certificate and the CRL. Made
    /// here when missing (first start), so running the agent needs no manual step. Whether
    /// anything was made.
    pub fn ensure_server(&self, zone: &str, inside: Ipv4Addr) -> Result<bool> {
        let mut made = false;
        if !self.has_ca() {
            self.init(false)?;
            made = true;
        }
        let current = self.server_cert().exists()
            && self.server_key().exists()
            && self.server_names_match(zone, inside)?;
        if !current {
            // Missing, or made for another zone or inside address (the config changed).
            self.issue_server(zone, inside, true)?;
            made = true;
        }
        if !self.crl().exists() {
            self.write_crl()?;
            made = true;
        }
        Ok(made)
    }
}

impl Pki {
    /// Whether the server certificate names `registry.<zone>`, `mirror.<zone>` and `inside`.
    fn server_names_match(&self, zone: &str, inside: Ipv4Addr) -> Result<bool> {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        use x509_parser::extensions::GeneralName;
        let path = self.server_cert();
        let der = CertificateDer::from_pem_file(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
        let Ok(Some(san)) = cert.subject_alternative_name() else {
            return Ok(false);
        };
        let names = &san.value.general_names;
        let has_dns = |wanted: &str| {
            names
                .iter()
                .any(|name| matches!(name, GeneralName::DNSName(dns) if *dns == wanted))
        };
        let has_ip = names
            .iter()
            .any(|name| matches!(name, GeneralName::IPAddress(ip) if *ip == inside.octets()));
        Ok(has_ip && has_dns(&format!("registry.{zone}")) && has_dns(&format!("mirror.{zone}")))
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // An hour back, for clients whose clocks lag a little.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// 16 random bytes, positive as DER integers must be.
fn serial() -> Result<SerialNumber> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A certificate's serial and expiry.
fn read_cert(path: &Path) -> Result<(Vec<u8>, String)> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_file(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))?;
    let not_after = cert
        .validity()
        .not_after
        .to_rfc2822()
        .unwrap_or_else(|_| cert.validity().not_after.to_string());
    Ok((cert.raw_serial().to_vec(), not_after))
}

fn refuse_overwrite(paths: &[PathBuf], force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    if let Some(existing) = paths.iter().find(|path| path.exists()) {
        bail!("{} exists; pass --force to replace it", existing.display());
    }
    Ok(())
}

/// Writes `contents` to `path` by a rename (0600 if `secret`, else 0644).
fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no directory", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let _ = fs::remove_file(&tmp);
    let result = (|| -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if secret { 0o600 } else { 0o644 })
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    result.with_context(|| format!("writing {}", path.display()))
}

fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    match fs::read_dir(dir) {
        Ok(read) => {
            for entry in read {
                if let Some(name) = entry?.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("reading {}", dir.display())),
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests;
