//! The lab's real web server in `up`, beside the Python origin: Debian's nginx, for the HTTP
//! cache's tests. It serves the same files as plain HTTP and as HTTPS with a certificate from
//! the lab's own CA (`web/ca.crt`, the agent's `http_proxy.upstream_ca` in those tests), with
//! nginx's own `ETag`, `Last-Modified`, `Range` and gzip (`Vary: Accept-Encoding`), and a
//! `Cache-Control` per directory:
//!
//! ```text
//! /fresh/…       max-age=300          /nostore/…   no-store
//! /revalidate/…  no-cache             /big.bin     4 MiB, max-age=300 (ranges)
//! /stale/…       max-age=1, stale-if-error=600
//! /strict/…      max-age=1, stale-if-error=600, must-revalidate
//! ```
//!
//! A second name, [`ROGUE_HOST`], serves the same over HTTPS with a certificate from another
//! CA: what an impostor on the path would present. Everything nginx has is under the lab's
//! state dir (`web/`: config, pid file, logs, temp dirs, certificates); nothing is read from or
//! written to `/etc/nginx` or `/var/log`, and the host gets no site. Started with the lab's
//! base (`build_base`), stopped with it like every process in `up`.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::layout::Lab;
use super::topology::ip;
use crate::process;

/// nginx's name and address (ports 80 and 443).
pub const WEB_HOST: &str = "www.origin.test";
pub const WEB_IP: &str = "203.0.113.70";
/// The impostor: HTTPS only, its certificate from a CA nobody trusts.
pub const ROGUE_HOST: &str = "rogue.origin.test";
pub const ROGUE_IP: &str = "203.0.113.71";

/// The names the modem's dnsmasq answers for them.
pub const HOST_RECORDS: [(&str, &str); 2] = [(WEB_HOST, WEB_IP), (ROGUE_HOST, ROGUE_IP)];

/// The size of `/big.bin`.
pub const BIG_BYTES: usize = 4 << 20;

/// One line per request in `web/access.log`: the fields the tests read.
const LOG_FORMAT: &str =
    "$server_name $scheme $request_method $uri $status \"$http_if_none_match\" \
                          \"$http_range\" \"$http_accept_encoding\" $remote_addr";

impl Lab {
    /// nginx's directory (config, logs, pid, certificates, its files under `www/`).
    pub fn web_dir(&self) -> PathBuf {
        self.state_dir().join("web")
    }

    /// nginx's access log ([`LOG_FORMAT`]).
    pub fn web_log(&self) -> PathBuf {
        self.web_dir().join("access.log")
    }

    /// The CA that signed [`WEB_HOST`]'s certificate (PEM).
    pub fn web_ca(&self) -> PathBuf {
        self.web_dir().join("ca.crt")
    }

    /// Whether nginx runs.
    pub fn web_origin_running(&self) -> bool {
        self.daemon_alive("web/nginx.pid")
    }

    /// Starts nginx in `up` unless it runs: the certificates, the files and the config the
    /// first time. The lab's base must be up.
    pub fn start_web_origin(&self) -> Result<()> {
        if self.web_origin_running() {
            return Ok(());
        }
        let dir = self.web_dir();
        for sub in [
            "www/fresh",
            "www/nostore",
            "www/revalidate",
            "www/stale",
            "www/strict",
            "tmp",
        ] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        let up = self.ns("up");
        for (_, address) in HOST_RECORDS {
            ip(
                &up,
                &["addr", "replace", &format!("{address}/24"), "dev", "inet0"],
            )?;
        }
        if !dir.join("rogue.crt").exists() {
            certificates(&dir)?;
        }
        write_files(&dir.join("www"))?;
        let config = dir.join("nginx.conf");
        fs::write(&config, nginx_config(&dir))
            .with_context(|| format!("writing {}", config.display()))?;
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("nginx.out"))
            .context("opening nginx's output file")?;
        let err = out.try_clone().context("duplicating a log handle")?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &up, "nginx", "-e"])
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C meant for xtask must not stop the lab's origin.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting `{}`", process::describe(&cmd)))?;
        thread::spawn(move || child.wait());
        self.wait_web_origin()
    }

    /// Waits until nginx has written its pid file and answers on both addresses.
    fn wait_web_origin(&self) -> Result<()> {
        let up = self.ns("up");
        let deadline = Instant::now() + Duration::from_secs(10);
        let targets = [(WEB_IP, 80), (WEB_IP, 443), (ROGUE_IP, 443)];
        for (address, port) in targets {
            loop {
                let probe = format!("exec 3<>/dev/tcp/{address}/{port}");
                if self.web_origin_running() && process::ns_run_ok(&up, "bash", ["-c", &probe]) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "the lab's nginx does not accept connections on {address}:{port} \
                         (see {} and nginx.out there)",
                        self.web_dir().join("error.log").display()
                    );
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

/// nginx's config: everything under `dir`, the two servers, a `Cache-Control` per directory.
fn nginx_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "daemon off;\n\
         worker_processes 1;\n\
         user root root;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
         \x20 log_format lab '{LOG_FORMAT}';\n\
         \x20 access_log {d}/access.log lab;\n\
         \x20 client_body_temp_path {d}/tmp/body;\n\
         \x20 proxy_temp_path {d}/tmp/proxy;\n\
         \x20 fastcgi_temp_path {d}/tmp/fastcgi;\n\
         \x20 uwsgi_temp_path {d}/tmp/uwsgi;\n\
         \x20 scgi_temp_path {d}/tmp/scgi;\n\
         \x20 types {{ text/plain txt; application/octet-stream bin; }}\n\
         \x20 default_type application/octet-stream;\n\
         \x20 server_tokens off;\n\
         \x20 gzip on;\n\
         \x20 gzip_vary on;\n\
         \x20 gzip_proxied any;\n\
         \x20 gzip_min_length 1;\n\
         \x20 gzip_types text/plain;\n\
         \x20 ssl_protocols TLSv1.2 TLSv1.3;\n\
         \x20 server {{\n\
         \x20   listen {WEB_IP}:80;\n\
         \x20   listen {WEB_IP}:443 ssl;\n\
         \x20   server_name {WEB_HOST};\n\
         \x20   ssl_certificate {d}/www.crt;\n\
         \x20   ssl_certificate_key {d}/www.key;\n\
         {locations}\
         \x20 }}\n\
         \x20 server {{\n\
         \x20   listen {ROGUE_IP}:443 ssl;\n\
         \x20   server_name {ROGUE_HOST};\n\
         \x20   ssl_certificate {d}/rogue.crt;\n\
         \x20   ssl_certificate_key {d}/rogue.key;\n\
         {locations}\
         \x20 }}\n\
         }}\n",
        locations = locations(dir),
    )
}

fn locations(dir: &Path) -> String {
    format!(
        "    root {www};\n\
         \x20   location /fresh/ {{ add_header Cache-Control \"max-age=300\"; }}\n\
         \x20   location /nostore/ {{ add_header Cache-Control \"no-store\"; }}\n\
         \x20   location /revalidate/ {{ add_header Cache-Control \"no-cache\"; }}\n\
         \x20   location = /big.bin {{ add_header Cache-Control \"max-age=300\"; }}\n\
         \x20   location /stale/ {{ add_header Cache-Control \"max-age=1, stale-if-error=600\"; }}\n\
         \x20   location /strict/ {{ add_header Cache-Control \
                 \"max-age=1, stale-if-error=600, must-revalidate\"; }}\n",
        www = dir.join("www").display()
    )
}

/// The files nginx serves (rewritten at every start: tests change some of them).
fn write_files(www: &Path) -> Result<()> {
    let text = |name: &str, body: &str| {
        let path = www.join(name);
        fs::write(&path, body).with_context(|| format!("writing {}", path.display()))
    };
    text("fresh/a.txt", "fresh from nginx\n")?;
    // Long and repetitive, so gzip makes a visibly different variant.
    text("fresh/text.txt", &"compressible line of text\n".repeat(200))?;
    text("nostore/a.txt", "not for keeping\n")?;
    text("revalidate/a.txt", "version 1\n")?;
    text("stale/a.txt", "old but usable\n")?;
    text("strict/a.txt", "must be revalidated\n")?;
    let big: Vec<u8> = (0..BIG_BYTES).map(|i| (i % 251) as u8).collect();
    let path = www.join("big.bin");
    fs::write(&path, big).with_context(|| format!("writing {}", path.display()))
}

/// The lab CA, [`WEB_HOST`]'s certificate from it, and a rogue CA with [`ROGUE_HOST`]'s
/// (openssl; P-256 keys).
fn certificates(dir: &Path) -> Result<()> {
    for (ca, name) in [("ca", "Gateway lab CA"), ("rogue-ca", "Nobody's CA")] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.crt"),
                "-days",
                "3650",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
    }
    for (leaf, host, ca) in [("www", WEB_HOST, "ca"), ("rogue", ROGUE_HOST, "rogue-ca")] {
        let ext = dir.join(format!("{leaf}.ext"));
        fs::write(
            &ext,
            format!(
                "subjectAltName=DNS:{host}\nbasicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .with_context(|| format!("writing {}", ext.display()))?;
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{leaf}.key"),
                "-out",
                &format!("{leaf}.csr"),
                "-subj",
                &format!("/CN={host}"),
            ],
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{leaf}.csr"),
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "825",
                "-extfile",
                &format!("{leaf}.ext"),
                "-out",
                &format!("{leaf}.crt"),
            ],
        )?;
    }
    Ok(())
}

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running openssl")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
