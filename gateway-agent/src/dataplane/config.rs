//! `[dataplane]`: where the eBPF objects are pinned, how XDP attaches, and what the inside
//! address answers beyond the services. That no port is open twice spans tables
//! (`config::validate`).

use std::fmt;
use std::path::PathBuf;

use crate::config::reader::{self, Section};
use crate::config::values::{self, PortRule};
use crate::config::Errors;
use crate::dataplane::policy::Policy;

/// How the XDP program is attached (`dataplane.xdp_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// Native if the driver supports it, else generic (skb).
    #[default]
    Auto,
    Native,
    Skb,
}

impl XdpMode {
    /// The config spelling: `auto`, `native` or `skb`.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[dataplane]`: the eBPF side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataplane {
    /// The bpffs directory maps and links are pinned in.
    pub bpf_pin_dir: PathBuf,
    pub xdp_mode: XdpMode,
    /// Pass ICMP echo to the gateway's inside address.
    pub allow_ping: bool,
    /// Extra ports open on the gateway's inside address, beyond the enabled services.
    pub allow: Vec<PortRule>,
    /// The policy of clients `gateway-agent clients set` has not given one.
    pub default_policy: Policy,
}

impl Default for Dataplane {
    fn default() -> Self {
        Dataplane {
            bpf_pin_dir: PathBuf::from("/sys/fs/bpf/gateway"),
            xdp_mode: XdpMode::Auto,
            allow_ping: true,
            allow: Vec::new(),
            default_policy: Policy::Transparent,
        }
    }
}

/// Reads `[dataplane]`; also returns the `allow` entries that are valid, each with its key,
/// for the rule that no port is open twice.
pub(crate) fn read(
    section: &mut Section,
    errors: &mut Errors,
) -> (Option<Dataplane>, Vec<(String, PortRule)>) {
    let defaults = Dataplane::default();
    let bpf_pin_dir = section.optional("bpf_pin_dir", defaults.bpf_pin_dir, errors, |value| {
        values::absolute_path(&reader::string(value)?)
    });
    let xdp_mode = section.optional("xdp_mode", defaults.xdp_mode, errors, |value| {
        xdp_mode(&reader::string(value)?)
    });
    let allow_ping = section.optional("allow_ping", defaults.allow_ping, errors, reader::boolean);
    let default_policy =
        section.optional("default_policy", defaults.default_policy, errors, |value| {
            reader::string(value)?.parse::<Policy>()
        });
    let allow_key = section.key("allow");
    let entries = section.optional("allow", Vec::new(), errors, reader::array);

    let mut all_valid = entries.is_some();
    let mut allow = Vec::new();
    for (i, entry) in entries.unwrap_or_default().into_iter().enumerate() {
        let key = format!("{allow_key}[{i}]");
        let rule = reader::string(entry)
            .map_err(|problem| format!("{problem}, like \"tcp/22\""))
            .and_then(|text| text.parse::<PortRule>());
        match errors.check(&key, rule) {
            Some(rule) => allow.push((key, rule)),
            None => all_valid = false,
        }
    }

    let dataplane = match (bpf_pin_dir, xdp_mode, allow_ping, default_policy, all_valid) {
        (Some(bpf_pin_dir), Some(xdp_mode), Some(allow_ping), Some(default_policy), true) => {
            Some(Dataplane {
                bpf_pin_dir,
                xdp_mode,
                allow_ping,
                allow: allow.iter().map(|(_, rule)| *rule).collect(),
                default_policy,
            })
        }
        _ => None,
    };
    (dataplane, allow)
}

/// `auto`, `native` or `skb`.
fn xdp_mode(text: &str) -> Result<XdpMode, String> {
    [XdpMode::Auto, XdpMode::Native, XdpMode::Skb]
        .into_iter()
        .find(|mode| mode.as_str() == text)
        .ok_or_else(|| {
            format!("{text:?} is not an XDP mode; expected \"auto\", \"native\" or \"skb\"")
        })
}
