//! The page as HTML: server-rendered, no external assets, readable without JavaScript. A small
//! inline script fetches `/status.json` every [`REFRESH_MS`] and swaps in its `live` part
//! (rendered here too, so there is one renderer). Every value from a service, a client or a
//! request goes through [`escape`].

use std::fmt::Write as _;

use super::chart;
use super::model::{Client, Model};
use crate::dataplane::policy::Policy;

/// How often the script refreshes the page's live part.
pub const REFRESH_MS: u64 = 1500;

/// Who is looking.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// The verified client certificate's name, if one was presented.
    pub name: Option<String>,
    /// Whether that name is in `status_page.admins`.
    pub admin: bool,
    /// The CSRF token for this viewer's forms (admins only).
    pub token: Option<String>,
}

/// The outcome of an action, shown above the page.
#[derive(Debug, Clone)]
pub enum Notice {
    Done(String),
    Failed(String),
}

/// `text` safe in HTML text and in quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1em 2em;color:#222}\
h1{font-size:1.4em;margin:0}h2{font-size:1.1em;margin:1.2em 0 .3em}\
table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.ok{color:#1e8449}.bad{color:#c0392b}\
.notice{padding:.5em;border:1px solid #888}section{margin-bottom:1em}\
details{display:inline-block;vertical-align:top;margin:0 1em .5em 0}form{margin:.3em 0}";

/// The script: refresh the live part, keeping which `<details>` were open.
const SCRIPT: &str = "(function(){var live=document.getElementById('live');\
function tick(){fetch('/status.json',{cache:'no-store'}).then(function(r){return r.ok?r.json():null})\
.then(function(j){if(j&&typeof j.live==='string'){var open={};\
live.querySelectorAll('details[open]').forEach(function(d){open[d.id]=1});\
live.innerHTML=j.live;live.querySelectorAll('details').forEach(function(d){if(open[d.id])d.open=true});\
document.body.dataset.refreshes=(+(document.body.dataset.refreshes||0)+1)}})\
.catch(function(){}).then(function(){setTimeout(tick,REFRESH)})}setTimeout(tick,REFRESH)})();";

/// The whole page for `viewer`; `nonce` lets the inline style and script past the
/// Content-Security-Policy; `issued` are the client certificate names (for the revoke form).
pub fn page(
    model: &Model,
    viewer: &Viewer,
    notice: Option<&Notice>,
    issued: &[String],
    nonce: &str,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>gateway status</title>\
         <style nonce=\"{nonce}\">{STYLE}</style></head><body data-refreshes=\"0\">\
         <header><h1>gateway status</h1><p id=\"viewer\">{}</p></header>",
        viewer_line(viewer)
    );
    match notice {
        Some(Notice::Done(text)) => {
            let _ = write!(
                out,
                "<p class=\"notice ok\" id=\"notice\">{}</p>",
                escape(text)
            );
        }
        Some(Notice::Failed(text)) => {
            let _ = write!(
                out,
                "<p class=\"notice bad\" id=\"notice\">{}</p>",
                escape(text)
            );
        }
        None => {}
    }
    let _ = write!(out, "<main id=\"live\">{}</main>", live(model));
    if viewer.admin {
        if let Some(token) = &viewer.token {
            out.push_str(&actions(model, token, issued));
        }
    }
    let script = SCRIPT.replace("REFRESH", &REFRESH_MS.to_string());
    let _ = write!(
        out,
        "<script nonce=\"{nonce}\">{script}</script></body></html>"
    );
    out
}

fn viewer_line(viewer: &Viewer) -> String {
    match (&viewer.name, viewer.admin) {
        (Some(name), true) => format!("admin certificate <b>{}</b>: actions below", escape(name)),
        (Some(name), false) => format!(
            "certificate <b>{}</b>, not in status_page.admins: read only",
            escape(name)
        ),
        (None, _) => "no client certificate: read only".to_owned(),
    }
}

/// The part the script refreshes.
pub fn live(model: &Model) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<p id=\"agent\">agent {} · up {} · inside {} · as of <time>{}</time> (unix)</p>",
        escape(&model.version),
        duration(model.uptime_secs),
        escape(&model.inside_address),
        model.now_unix
    );

    out.push_str("<section id=\"uplink\"><h2>Uplink</h2>");
    match &model.uplink {
        Some(up) => {
            let _ = write!(
                out,
                "<p>{} · address {} · lease left {}</p>",
                escape(&up.state),
                escape(up.address.as_deref().unwrap_or("none")),
                up.lease_left_secs.map_or_else(|| "-".to_owned(), duration)
            );
        }
        None => out.push_str("<p>not running</p>"),
    }
    out.push_str("</section><section id=\"tor\"><h2>Tor</h2>");
    match &model.tor {
        Some(tor) => {
            let _ = write!(
                out,
                "<p><progress max=\"100\" value=\"{}\"></progress> bootstrap {} %{} · {} · \
                 <span id=\"circuits\">{} circuits in use</span> ({} streams) · \
                 {} isolation groups</p><p>{}</p>",
                tor.percent,
                tor.percent,
                if tor.bootstrapped { " (ready)" } else { "" },
                if tor.reachable {
                    "<span class=\"ok\">network reachable</span>"
                } else {
                    "<span class=\"bad\">network unreachable</span>"
                },
                tor.circuits_in_use,
                tor.streams_open,
                tor.isolation_groups,
                escape(&tor.progress)
            );
        }
        None => out.push_str("<p>off</p>"),
    }
    out.push_str("</section>");

    clients(&mut out, &model.clients);

    out.push_str("<section id=\"drops\"><h2>Drops</h2>");
    out.push_str(&chart::svg(&model.drops_history, model.now_unix));
    if model.drops.is_empty() {
        out.push_str("<p>none</p>");
    } else {
        out.push_str("<table><tr><th>reason</th><th>packets</th></tr>");
        for (reason, count) in &model.drops {
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"n\">{count}</td></tr>",
                escape(reason)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section><section id=\"caches\"><h2>Caches</h2><p>");
    match &model.dns_cache {
        Some(ratio) => {
            let _ = write!(
                out,
                "DNS cache hits {} ({} of {})",
                ratio.percent(),
                ratio.hits,
                ratio.total
            );
        }
        None => out.push_str("DNS off"),
    }
    out.push_str("</p><p>");
    match &model.proxy_cache {
        Some(cache) => {
            let _ = write!(
                out,
                "HTTP cache hits {} ({} of {}) · {} objects, {} of {}",
                cache.ratio.percent(),
                cache.ratio.hits,
                cache.ratio.total,
                cache.entries,
                bytes(cache.size_bytes),
                bytes(cache.max_bytes)
            );
        }
        None => out.push_str("HTTP cache off"),
    }
    out.push_str("</p></section>");

    if let Some(repos) = &model.registry {
        out.push_str("<section id=\"registry\"><h2>Registry</h2>");
        if repos.is_empty() {
            out.push_str("<p>no repositories</p>");
        } else {
            out.push_str("<table><tr><th>repository</th><th>tags</th><th>size</th></tr>");
            for repo in repos {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
                    escape(&repo.name),
                    escape(&repo.tags.join(", ")),
                    bytes(repo.bytes)
                );
            }
            out.push_str("</table>");
        }
        out.push_str("</section>");
    }
    if let Some(upstreams) = &model.mirror {
        out.push_str(
            "<section id=\"mirror\"><h2>Mirror</h2><table><tr><th>upstream</th><th>url</th>\
             <th>cache</th></tr>",
        );
        for upstream in upstreams {
            let numbers = upstream
                .counters
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&upstream.name),
                escape(&upstream.url),
                escape(&numbers)
            );
        }
        out.push_str("</table></section>");
    }

    out.push_str("<section id=\"services\"><h2>Services</h2>");
    for service in &model.services {
        let _ = write!(
            out,
            "<details id=\"svc-{0}\"><summary><b>{0}</b> running</summary><table>",
            escape(&service.name)
        );
        for (key, value) in &service.counters {
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
                escape(key),
                escape(value)
            );
        }
        out.push_str("</table></details>");
    }
    if !model.off.is_empty() {
        let _ = write!(
            out,
            "<p>off in the config: {}</p>",
            escape(&model.off.join(", "))
        );
    }
    out.push_str("</section>");
    out
}

fn clients(out: &mut String, clients: &[Client]) {
    out.push_str("<section id=\"clients\"><h2>Clients</h2>");
    if clients.is_empty() {
        out.push_str("<p>none yet</p></section>");
        return;
    }
    out.push_str(
        "<table><tr><th>name</th><th>MAC</th><th>address</th><th>lease</th><th>expires in</th>\
         <th>policy</th><th>packets</th><th>bytes</th><th>dropped</th></tr>",
    );
    let dash = |v: &Option<String>| escape(v.as_deref().unwrap_or("-"));
    for c in clients {
        let _ = write!(
            out,
            "<tr><td class=\"client-name\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            dash(&c.name),
            escape(&c.mac),
            dash(&c.address),
            dash(&c.lease),
            c.lease_left_secs.map_or_else(|| "-".to_owned(), duration),
            escape(&c.policy),
            if c.policy_set { "" } else { " (default)" },
            c.packets,
            bytes(c.bytes),
            c.dropped
        );
    }
    out.push_str("</table></section>");
}

/// The admin's forms (outside the refreshed part, so typing is never interrupted).
fn actions(model: &Model, token: &str, issued: &[String]) -> String {
    let token = escape(token);
    let mut out = String::from("<section id=\"actions\"><h2>Actions</h2>");
    out.push_str("<datalist id=\"macs\">");
    for c in &model.clients {
        let _ = write!(out, "<option value=\"{}\">", escape(&c.mac));
    }
    out.push_str("</datalist><datalist id=\"names\">");
    for name in issued {
        let _ = write!(out, "<option value=\"{}\">", escape(name));
    }
    out.push_str("</datalist>");
    let _ = write!(
        out,
        "<form method=\"post\" action=\"/action/policy\">\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\
         <label>client MAC <input name=\"mac\" list=\"macs\" required size=\"17\"></label> \
         <label>policy <select name=\"policy\">"
    );
    for policy in Policy::ALL {
        let _ = write!(out, "<option>{policy}</option>");
    }
    let _ = write!(
        out,
        "</select></label> <button>set policy</button></form>\
         <form method=\"post\" action=\"/action/purge\">\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\
         <label>purge cached URL <input name=\"url\" type=\"url\" required size=\"50\"></label> \
         <button>purge</button></form>\
         <form method=\"post\" action=\"/action/revoke\">\
         <input type=\"hidden\" name=\"token\" value=\"{token}\">\
         <label>revoke client certificate <input name=\"name\" list=\"names\" required></label> \
         <button>revoke</button></form></section>"
    );
    out
}

/// `1 h 02 min`, `3 min 05 s`, `42 s`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s >= 86_400 => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
        s if s >= 3600 => format!("{} h {:02} min", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{} min {:02} s", s / 60, s % 60),
        s => format!("{s} s"),
    }
}

/// `512 B`, `1.5 KiB`, `20.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::super::model::{Repository, ServiceCounters};
    use super::*;

    fn hostile() -> &'static str {
        "<script>alert(\"x\")</script>&'"
    }

    fn model() -> Model {
        Model {
            now_unix: 1000,
            version: "0.1".into(),
            inside_address: "198.51.100.1/24".into(),
            clients: vec![Client {
                mac: "02:00:00:00:00:0a".into(),
                name: Some(hostile().into()),
                address: Some("198.51.100.50".into()),
                lease: Some("bound".into()),
                lease_left_secs: Some(3600),
                policy: "transparent".into(),
                policy_set: false,
                packets: 1,
                bytes: 2048,
                dropped: 0,
            }],
            registry: Some(vec![Repository {
                name: hostile().into(),
                tags: vec![hostile().into()],
                bytes: 1,
            }]),
            services: vec![ServiceCounters {
                name: "dns".into(),
                counters: vec![("queries".into(), "5".into())],
            }],
            ..Model::default()
        }
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(hostile()),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(escape("c1.home.arpa"), "c1.home.arpa");
    }

    #[test]
    fn nothing_from_a_client_reaches_the_page_unescaped() {
        let viewer = Viewer {
            name: Some(hostile().into()),
            admin: true,
            token: Some("\"><b>".into()),
        };
        let notice = Notice::Failed(hostile().into());
        let html = page(
            &model(),
            &viewer,
            Some(&notice),
            &[hostile().into()],
            "n0nce",
        );
        // The only scripts are the page's own.
        assert_eq!(html.matches("<script").count(), 1, "{html}");
        assert!(html.contains("<script nonce=\"n0nce\">"));
        assert!(!html.contains(hostile()));
        assert!(!html.contains("\"><b>"));
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)"));
    }

    #[test]
    fn the_page_has_its_sections_and_no_external_assets() {
        let html = page(&model(), &Viewer::default(), None, &[], "n");
        for id in [
            "uplink", "tor", "clients", "drops", "caches", "registry", "services",
        ] {
            assert!(html.contains(&format!("<section id=\"{id}\">")), "{id}");
        }
        assert!(html.contains("drops-chart"));
        assert!(html.contains("198.51.100.50"));
        assert!(html.contains("1 h 00 min"));
        assert!(html.contains("2.0 KiB"));
        for external in ["src=", "href=\"http", "@import", "url("] {
            assert!(!html.contains(external), "{external}");
        }
        assert!(html.contains("fetch('/status.json'"));
        assert!(html.contains("setTimeout(tick,1500)"));
    }

    #[test]
    fn forms_are_for_admins_only_and_carry_the_token() {
        let reader = page(&model(), &Viewer::default(), None, &[], "n");
        assert!(!reader.contains("<form"));
        let not_admin = Viewer {
            name: Some("laptop".into()),
            admin: false,
            token: None,
        };
        assert!(!page(&model(), &not_admin, None, &[], "n").contains("<form"));
        let admin = Viewer {
            name: Some("admin".into()),
            admin: true,
            token: Some("1a.bc".into()),
        };
        let html = page(&model(), &admin, None, &["laptop".into()], "n");
        assert_eq!(html.matches("<form method=\"post\"").count(), 3);
        assert_eq!(
            html.matches("<input type=\"hidden\" name=\"token\" value=\"1a.bc\">")
                .count(),
            3
        );
        assert!(html.contains("<option>proxy-only</option>"));
        assert!(html.contains("<option value=\"laptop\">"));
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(20 << 20), "20.0 MiB");
        assert_eq!(duration(42), "42 s");
        assert_eq!(duration(185), "3 min 05 s");
        assert_eq!(duration(90_000), "1 d 1 h");
    }
}
