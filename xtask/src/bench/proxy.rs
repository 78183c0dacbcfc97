//! `cargo xtask bench proxy`: the agent's caching HTTP proxy against Squid, one after the other
//! on the gateway's inside address (tcp/3128), the same origin (`cache_origin.py` in `up`) and
//! the same client (`wrk` from c1, absolute-form requests). Cache hits of a 10 KiB object and
//! of a 1 MiB one: requests a second, and each server's peak memory; and a 256 MiB cached
//! object fetched whole by one curl: MiB a second. Squid gets a memory cache and a disk cache
//! (`cache_dir ufs` in the lab's state dir) with the agent's object size limit (1 GiB).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::server::{
    bench_config, client_reservation, ensure_client_address, lease_client_address, Server,
};
use super::{results, Measurement, Report, RUN_SECS};
use crate::{deps, lab, process};

/// The origin: the cache tests' fixture.
const ORIGIN_SCRIPT: &str = include_str!("../../../tests/fixtures/cache_origin.py");
/// Its port in `up`.
const ORIGIN_PORT: u16 = 8090;
/// The objects measured: (label, path).
const OBJECTS: [(&str, &str); 2] = [("10 KiB hit", "/10k"), ("1 MiB hit", "/1m")];
/// The large object: its path and size in MiB, and how many timed fetches (the median counts).
const LARGE: (&str, u64) = ("/256m", 256);
const LARGE_RUNS: usize = 3;

/// Debian's Squid and wrk.
pub const PACKAGES: &[&str] = &["squid", "wrk"];

/// Installs Squid and wrk if missing; Squid's system service (a proxy on the host's port
/// 3128) is switched off, as the benchmark runs its own in the lab.
pub fn ensure_packages() -> Result<()> {
    let was_missing = !deps::is_installed("squid");
    deps::ensure_packages(PACKAGES, "for the proxy benchmark")?;
    if was_missing && Path::new("/run/systemd/system").exists() {
        if let Err(err) = process::run("systemctl", ["disable", "--now", "squid.service"]) {
            eprintln!("xtask: warning: {err:#}");
        }
    }
    Ok(())
}

pub(super) fn run(lab: &lab::Lab, agent: &Path) -> Result<Report> {
    let state = lab.state_dir();
    let (gw, client) = (lab.ns("gw"), lab.ns("c1"));
    ensure_client_address(lab)?;
    let script = state.join("cache_origin.py");
    std::fs::write(&script, ORIGIN_SCRIPT).context("writing the origin script")?;
    let origin_log = state.join("bench-origin.log");
    let _ = std::fs::remove_file(&origin_log);
    let version = state.join("bench-origin.version");
    std::fs::write(&version, "1").context("writing the origin's version file")?;
    let _origin = Server::spawn(
        &lab.ns("up"),
        &[
            "python3".into(),
            script.display().to_string(),
            lab::ORIGIN_IP.into(),
            ORIGIN_PORT.to_string(),
            origin_log.display().to_string(),
            version.display().to_string(),
        ],
    )?;
    let config = bench_config(
        lab,
        &format!(
            "[tor]\nenabled = false\n[dns]\nupstream = \"none\"\n[http_proxy]\negress = \
             \"direct\"\nports = [80, {ORIGIN_PORT}]\ncache_size = \"1 GiB\"\n{}",
            client_reservation(lab)?
        ),
    )?;
    let wrk_script = state.join("bench-proxy.lua");

    let mut rows = Vec::new();
    {
        let server = Server::agent(&gw, agent, &config)?;
        lease_client_address(lab)?;
        measure(
            &client,
            &wrk_script,
            &origin_log,
            "gateway-agent",
            &mut rows,
        )?;
        let rss = server.rss_kib("VmHWM");
        for row in rows.iter_mut() {
            row.peak_rss_kib = rss;
        }
    }
    {
        // The agent's macvlan went with it: Squid leaves from the parent NIC's spare address.
        let outside = lab::OUTSIDE_IF;
        let spare = lab.spare_uplink_ip();
        process::ns_run(
            &gw,
            "ip",
            ["addr", "add", &format!("{spare}/24"), "dev", outside],
        )?;
        let route = process::ns_run(
            &gw,
            "ip",
            [
                "route",
                "replace",
                "default",
                "via",
                lab::MODEM_IP,
                "dev",
                outside,
            ],
        );
        let conf = state.join("squid.conf");
        let cache_dir = state.join("squid-cache");
        let _ = std::fs::remove_dir_all(&cache_dir);
        std::fs::create_dir_all(&cache_dir)
            .with_context(|| format!("creating {}", cache_dir.display()))?;
        // Squid drops root for `cache_effective_user` before it touches the cache_dir.
        process::run("chown", [SQUID_USER, &cache_dir.display().to_string()])
            .context("handing the cache_dir to Squid's user")?;
        std::fs::write(&conf, squid_conf(&cache_dir)).context("writing squid.conf")?;
        // The disk cache's directories first (`squid -z` exits when done).
        process::ns_run(
            &gw,
            "squid",
            ["-N", "-z", "-f", &conf.display().to_string()],
        )
        .context("squid -z (making the cache_dir)")?;
        let result = route.and_then(|()| {
            let server = Server::spawn(
                &gw,
                &[
                    "squid".into(),
                    "-N".into(),
                    // Its cache log (important messages) to our stderr, which it already holds.
                    "-d1".into(),
                    "-f".into(),
                    conf.display().to_string(),
                ],
            )?;
            let start = rows.len();
            measure(&client, &wrk_script, &origin_log, "squid 5.7", &mut rows)?;
            let rss = server.rss_kib("VmHWM");
            for row in &mut rows[start..] {
                row.peak_rss_kib = rss;
            }
            Ok(())
        });
        let _ = process::ns_run(
            &gw,
            "ip",
            ["addr", "del", &format!("{spare}/24"), "dev", outside],
        );
        result?;
    }
    let mut notes = format!(
        "From c1, `wrk -t2 -c32 -d{RUN_SECS}s` with absolute-form requests to each proxy on \
         198.51.100.1:3128, for an object the proxy already holds (one request first fills the \
         cache): `/10k` (10 KiB) and `/1m` (1 MiB), both `max-age=600`, from \
         `cache_origin.py` in `up`. The agent first (`http_proxy.egress = \"direct\"`, its disk \
         cache in the lab's state dir, its XDP program attached), then Squid 5.7 after the agent \
         stopped (memory cache 512 MB for objects up to 8 MB, and a `cache_dir ufs` disk cache \
         of 2 GB in the lab's state dir for objects up to 1 GB, the agent's limit; no access \
         log). Rates are requests a second; \"unanswered\" counts wrk's errors and any request \
         that reached the origin during the run (a miss, not a hit). The 256 MiB row: one curl \
         from c1 fetching `/256m` (`max-age=600`, stored by a first fetch) whole through the \
         proxy, {LARGE_RUNS} times; the median in MiB a second (avg ms: that fetch's time). The \
         machine's 2 cores are shared with the lab, the client and the origin (and here with \
         other builds), so the numbers are noisy."
    );
    notes.push('\n');
    notes.push_str(&results::ratio_lines(&rows, "gateway-agent ", "Squid"));
    Ok(("HTTP caching proxy (cache hits)".into(), rows, notes))
}

/// The user Debian's Squid runs as.
const SQUID_USER: &str = "proxy:proxy";

/// Squid with a memory cache for small objects and a disk cache (`ufs` in `cache_dir`) with
/// the agent's default object size limit.
fn squid_conf(cache_dir: &Path) -> String {
    format!(
        "http_port {gw}:3128\nacl inside src 198.51.100.0/24\nhttp_access allow inside\n\
         http_access deny all\ncache_mem 512 MB\nmaximum_object_size_in_memory 8 MB\n\
         maximum_object_size 1 GB\ncache_dir ufs {dir} 2048 16 256\n\
         access_log none\ncache_log /dev/null\npid_filename none\n\
         visible_hostname bench-squid\nshutdown_lifetime 1 seconds\n\
         cache_effective_user proxy\n",
        gw = lab::GATEWAY_INSIDE_IP,
        dir = cache_dir.display(),
    )
}

/// Fills the cache with each object, then runs wrk against it; one row per object. The peak
/// memory is the caller's to fill in.
/// GETs in the origin's log so far.
fn origin_gets(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|text| text.lines().filter(|l| l.starts_with("GET ")).count())
        .unwrap_or(0)
}

fn measure(
    client: &str,
    wrk_script: &Path,
    origin_log: &Path,
    server: &str,
    rows: &mut Vec<Measurement>,
) -> Result<()> {
    let proxy = format!("http://{}:3128", lab::GATEWAY_INSIDE_IP);
    for (label, path) in OBJECTS {
        let url = format!("http://{}:{ORIGIN_PORT}{path}", lab::ORIGIN_IP);
        // Until the proxy answers (its uplink may still be coming up), then once more: a hit.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = process::ns_run_ok(
                client,
                "curl",
                ["-s", "-f", "-o", "/dev/null", "-m", "5", "-x", &proxy, &url],
            );
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!("{server} did not fetch {url}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        std::fs::write(wrk_script, format!("wrk.path = \"{url}\"\n"))
            .context("writing the wrk script")?;
        let fetched = origin_gets(origin_log);
        let out = process::ns_output(
            client,
            "wrk",
            [
                "-t2".to_owned(),
                "-c32".to_owned(),
                format!("-d{RUN_SECS}s"),
                "--latency".to_owned(),
                "-s".to_owned(),
                wrk_script.display().to_string(),
                format!("{proxy}/"),
            ],
        )
        .context("running wrk")?;
        let (rate, errors) = parse_wrk(&out).with_context(|| format!("wrk printed {out:?}"))?;
        // Hits only: a proxy that went to the origin during the run is not measuring its cache.
        let misses = origin_gets(origin_log) - fetched;
        if misses > 0 {
            eprintln!(
                "xtask: {server} sent {misses} requests for {path} to the origin during the run"
            );
        }
        rows.push(Measurement {
            server: format!("{server} {label} (req/s)"),
            rate,
            p99_ms: wrk_latency(&out, "99%"),
            avg_ms: wrk_latency(&out, "Latency"),
            // Errors, and requests that were not cache hits.
            lost: errors + misses as u64,
            ..Measurement::default()
        });
    }
    rows.push(large_object(client, origin_log, server)?);
    Ok(())
}

/// The large object: stored by a first fetch, then fetched whole [`LARGE_RUNS`] times by one
/// curl; the median rate in MiB a second.
fn large_object(client: &str, origin_log: &Path, server: &str) -> Result<Measurement> {
    let proxy = format!("http://{}:3128", lab::GATEWAY_INSIDE_IP);
    let (path, mib) = LARGE;
    let url = format!("http://{}:{ORIGIN_PORT}{path}", lab::ORIGIN_IP);
    let fetch = || {
        process::ns_output(
            client,
            "curl",
            [
                "-s",
                "-f",
                "-o",
                "/dev/null",
                "-m",
                "600",
                "-w",
                "%{size_download} %{time_total}",
                "-x",
                &proxy,
                &url,
            ],
        )
        .with_context(|| format!("{server}: fetching {url}"))
    };
    fetch()?;
    let fetched = origin_gets(origin_log);
    let mut runs = Vec::new();
    let mut short = 0u64;
    for _ in 0..LARGE_RUNS {
        let out = fetch()?;
        let mut fields = out.split_whitespace();
        let size: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let secs: f64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        if size != mib << 20 || secs <= 0.0 {
            short += 1;
            continue;
        }
        runs.push(secs);
    }
    runs.sort_by(f64::total_cmp);
    let median = runs
        .get(runs.len() / 2)
        .copied()
        .with_context(|| format!("{server}: no whole fetch of {url}"))?;
    let misses = origin_gets(origin_log) - fetched;
    Ok(Measurement {
        server: format!("{server} {mib} MiB hit (MiB/s)"),
        rate: mib as f64 / median,
        avg_ms: Some(median * 1000.0),
        lost: short + misses as u64,
        ..Measurement::default()
    })
}

/// wrk's requests a second and its non-2xx/socket-error count.
pub fn parse_wrk(out: &str) -> Result<(f64, u64)> {
    let rate = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .context("no Requests/sec line")?;
    let mut errors = 0;
    for line in out.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += n.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Ok((rate, errors))
}

/// A latency from wrk's output in milliseconds: the `Latency` average, or a percentile line.
fn wrk_latency(out: &str, key: &str) -> Option<f64> {
    let line = out.lines().map(str::trim).find(|l| l.starts_with(key))?;
    let value = line.split_whitespace().nth(1)?;
    let (number, unit) = value.split_at(value.find(|c: char| c.is_alphabetic())?);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 10s test @ http://198.51.100.1:3128/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  300.00us   9.10ms   80.00%
    Req/Sec    10.50k     1.00k   12.00k    70.00%
  Latency Distribution
     50%    1.40ms
     99%    3.20ms
  209000 requests in 10.00s, 30.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  20900.12
Transfer/sec:      3.00MB
";

    #[test]
    fn wrk_output() {
        let (rate, errors) = parse_wrk(SAMPLE).unwrap();
        assert!((rate - 20900.12).abs() < 0.01);
        assert_eq!(errors, 7);
        assert_eq!(wrk_latency(SAMPLE, "99%"), Some(3.2));
        assert_eq!(wrk_latency(SAMPLE, "Latency"), Some(1.52));
        assert!(parse_wrk("nothing").is_err());
    }
}
