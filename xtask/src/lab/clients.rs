//! The inside clients and their real DHCP clients (dhclient, udhcpc).

use std::fs::{self};
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::process;

use super::layout::{lab_script, Lab};

/// Client roles and the DHCP client each runs (`cargo xtask run` starts them).
pub const CLIENTS: [(&str, DhcpClient); 2] =
    [("c1", DhcpClient::Dhclient), ("c2", DhcpClient::Udhcpc)];

/// A real DHCP client a lab client runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpClient {
    /// ISC dhclient (isc-dhcp-client).
    Dhclient,
    /// busybox udhcpc.
    Udhcpc,
}

impl Lab {
    /// Where `role`'s DHCP client records its events (see `xtask/lab/*-script.sh`), in this
    /// slot's gateway dir.
    pub fn dhcp_log(&self, role: &str) -> PathBuf {
        self.gateway_dir().join(format!("{role}.dhcp-events"))
    }

    /// Starts a real DHCP client on `role`'s eth0 in the background; it keeps renewing until the
    /// lab goes down, sending `hostname` (option 12) if given. Returns once the client runs,
    /// not once it has a lease: read [`Lab::dhcp_log`] for that.
    pub fn start_dhcp_client(
        &self,
        role: &str,
        client: DhcpClient,
        hostname: Option<&str>,
    ) -> Result<()> {
        let ns = self.ns(role);
        let state = self.gateway_dir();
        let script = match client {
            DhcpClient::Dhclient => "dhclient-script.sh",
            DhcpClient::Udhcpc => "udhcpc-script.sh",
        };
        // dhclient gives its hook a fresh environment, so the log path travels in a wrapper.
        let hook = state.join(format!("{role}-dhcp-hook.sh"));
        fs::write(
            &hook,
            format!(
                "#!/bin/sh\nLAB_DHCP_LOG='{}' exec /bin/sh '{}' \"$@\"\n",
                self.dhcp_log(role).display(),
                lab_script(script).display()
            ),
        )
        .with_context(|| format!("writing {}", hook.display()))?;
        fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .with_context(|| format!("making {} executable", hook.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns]);
        match client {
            DhcpClient::Dhclient => {
                let conf = state.join(format!("{role}.dhclient.conf"));
                let text = hostname
                    .map(|name| format!("send host-name \"{name}\";\n"))
                    .unwrap_or_default();
                fs::write(&conf, text).with_context(|| format!("writing {}", conf.display()))?;
                // -nw: do not wait for a lease before going to the background.
                cmd.args(["dhclient", "-4", "-nw", "-cf"])
                    .arg(&conf)
                    .arg("-lf")
                    .arg(state.join(format!("{role}.dhclient.leases")))
                    .arg("-pf")
                    .arg(state.join(format!("{role}.dhclient.pid")))
                    .arg("-sf")
                    .arg(&hook)
                    .arg("eth0");
                process::run_command(&mut cmd).map(|_| ())
            }
            DhcpClient::Udhcpc => {
                // -b: go to the background if the first tries get no lease, and keep trying.
                cmd.args([
                    "udhcpc", "-b", "-i", "eth0", "-t", "5", "-T", "1", "-A", "1", "-s",
                ])
                .arg(&hook)
                .args(["-p"])
                .arg(state.join(format!("{role}.udhcpc.pid")));
                if let Some(name) = hostname {
                    cmd.args(["-x", &format!("hostname:{name}")]);
                }
                process::run_command(&mut cmd).map(|_| ())
            }
        }
    }
}
