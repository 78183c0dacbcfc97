//! DHCP: the agent against Kea (memfile), with perfdhcp from c1 acting as a relay.

use std::{path::Path, process::Command, thread, time::Duration};

use anyhow::{Context, Result};

use super::server::{
    bench_config, client_reservation, ensure_client_address, lease_client_address, Server,
};
use super::{Measurement, Report, RUN_SECS};
use crate::lab;

pub(super) fn run(lab: &lab::Lab, agent: &Path) -> Result<Report> {
    let state = lab.state_dir();
    let client = lab.ns("c1");
    let gw = lab.ns("gw");
    ensure_client_address(lab)?;
    let config = bench_config(
        lab,
        &format!(
            "[dhcp]\naccept_relayed = true\npool = \"198.51.100.20-198.51.100.250\"\nlease_time = \"1h\"\nrate_limit = 100000\n{}",
            client_reservation(lab)?
        ),
    )?;
    let mut rows = Vec::new();
    {
        let server = Server::agent(&gw, agent, &config)?;
        // The IP source guard passes relayed requests only from a leased relay.
        lease_client_address(lab)?;
        thread::sleep(Duration::from_secs(1));
        let mut m = perfdhcp(&client)?;
        m.server = "gateway-agent".into();
        m.peak_rss_kib = server.rss_kib("VmHWM");
        rows.push(m);
    }
    {
        let kea_conf = state.join("kea-dhcp4.json");
        let leases = state.join("kea-leases4.csv");
        let lock_dir = state.join("kea-run");
        std::fs::create_dir_all(&lock_dir).context("creating Kea's run dir")?;
        std::fs::write(&kea_conf, kea_config(&leases)).context("writing Kea's config")?;
        let args = [
            "env".to_string(),
            format!("KEA_LOCKFILE_DIR={}", lock_dir.display()),
            format!("KEA_PIDFILE_DIR={}", lock_dir.display()),
            "kea-dhcp4".into(),
            "-c".into(),
            kea_conf.display().to_string(),
        ];
        let server = Server::spawn(&gw, &args)?;
        thread::sleep(Duration::from_secs(2));
        let mut m = perfdhcp(&client)?;
        m.server = "kea-dhcp4 (memfile)".into();
        m.peak_rss_kib = server.rss_kib("VmHWM");
        rows.push(m);
    }
    let notes = format!(
        "perfdhcp -4 -r {PERFDHCP_RATE} -R 200 for {RUN_SECS} s from c1, acting as a relay \
         (giaddr = c1) towards 198.51.100.1:67; both servers accept relayed requests, hand out \
         198.51.100.20-250 with 1 h leases. The agent commits leases to redb with an fsync before \
         it acknowledges them (crash safety is a requirement), one commit for all the requests \
         that queued up meanwhile; Kea's memfile appends to its CSV without an fsync. perfdhcp \
         reports no percentile, only the average. The agent runs with its XDP program attached, \
         Kea after the agent stopped."
    );
    Ok(("DHCP (perfdhcp)".into(), rows, notes))
}

fn kea_config(leases: &Path) -> String {
    format!(
        r#"{{ "Dhcp4": {{
  "interfaces-config": {{ "interfaces": [ "{inside}/{gw}" ], "dhcp-socket-type": "udp" }},
  "lease-database": {{ "type": "memfile", "persist": true, "name": "{leases}", "lfc-interval": 0 }},
  "valid-lifetime": 3600,
  "subnet4": [ {{ "id": 1, "subnet": "198.51.100.0/24",
     "pools": [ {{ "pool": "198.51.100.20 - 198.51.100.250" }} ],
     "option-data": [ {{ "name": "routers", "data": "{gw}" }},
                      {{ "name": "domain-name-servers", "data": "{gw}" }} ] }} ],
  "loggers": [ {{ "name": "kea-dhcp4", "severity": "WARN",
     "output_options": [ {{ "output": "stderr" }} ] }} ]
}} }}"#,
        inside = lab::INSIDE_IF,
        gw = lab::GATEWAY_INSIDE_IP,
        leases = leases.display(),
    )
}

/// Exchanges a second perfdhcp offers: more than either server keeps up with here, so the
/// ratio compares capacities rather than hitting the cap.
const PERFDHCP_RATE: u32 = 20000;

fn perfdhcp(client: &str) -> Result<Measurement> {
    let secs = RUN_SECS.to_string();
    let rate = PERFDHCP_RATE.to_string();
    let out = Command::new("ip")
        .args([
            "netns", "exec", client, "perfdhcp", "-4", "-r", &rate, "-R", "200",
        ])
        .args(["-p", &secs, "-l", "eth0", lab::GATEWAY_INSIDE_IP])
        .output()
        .context("running perfdhcp")?;
    // perfdhcp exits non-zero when it saw drops; the numbers are still what we want.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_perfdhcp(&text)
}

/// Reads perfdhcp's rate and the request (DO-RA second half) latency.
pub fn parse_perfdhcp(out: &str) -> Result<Measurement> {
    let rate = out
        .lines()
        .find(|l| l.trim_start().starts_with("Rate:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .context("perfdhcp printed no rate")?;
    // The "Statistics for: REQUEST-ACK" block has avg and std deviations; no percentile.
    let block = out.split("Statistics for:").nth(2).unwrap_or("");
    let avg_ms = block
        .lines()
        .find(|l| l.trim_start().starts_with("avg delay:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse::<f64>().ok());
    let lost = block
        .lines()
        .find(|l| l.trim_start().starts_with("drops:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Measurement {
        rate,
        avg_ms,
        lost,
        ..Default::default()
    })
}
