//! UCI sections → [`Config`]: [`load`] and [`from_text`].
//!
//! [`from_text`] runs the UCI grammar ([`super::uci`]), then reads each known section into a
//! [`Config`] that starts as [`Config::default`]. It never stops at the first mistake: every
//! invalid value is an error and every unknown section or option a warning, each a [`Problem`]
//! with file, line, `section.option` and message, so `mnigs check-config` can show them all.
//!
//! Private: `Builder` (section dispatch and cross-checks) and `Reader` (typed access to one
//! section's options, recording problems and unknown options); the values themselves are
//! parsed by [`super::values`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::problems::{Problem, Severity};
use super::types::*;
use super::uci::{self, Section, UciOption, UciValue};
use super::values::*;
use crate::validate::{self, quoted};

/// Reads and checks the config file at `path`.
///
/// `Ok` carries the config and its warnings; `Err` carries every problem found, errors and
/// warnings, sorted by line. A file that cannot be read is one problem at line 0.
pub fn load(path: &Path) -> Result<(Config, Vec<Problem>), Vec<Problem>> {
    let file_problem = |line, message| {
        vec![Problem {
            severity: Severity::Error,
            file: path.to_path_buf(),
            line,
            place: String::new(),
            message,
        }]
    };
    let bytes = std::fs::read(path).map_err(|e| file_problem(0, format!("cannot read: {e}")))?;
    match String::from_utf8(bytes) {
        Ok(text) => from_text(&text, path),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let line = 1 + e.as_bytes()[..valid]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            Err(file_problem(line, "the file is not valid UTF-8".into()))
        }
    }
}

/// Checks config `text` as if read from `file` (used only in messages). Same results as [`load`].
pub fn from_text(text: &str, file: &Path) -> Result<(Config, Vec<Problem>), Vec<Problem>> {
    let sections = uci::parse(text).map_err(|e| {
        vec![Problem {
            severity: Severity::Error,
            file: file.to_path_buf(),
            line: e.line,
            place: String::new(),
            message: e.message,
        }]
    })?;
    let mut builder = Builder {
        file,
        config: Config::default(),
        problems: Vec::new(),
        subscriber_enabled_at: None,
    };
    builder.sections(&sections);
    builder.cross_checks();
    let Builder {
        config,
        mut problems,
        ..
    } = builder;
    problems.sort_by_key(|p| p.line);
    if problems.iter().any(Problem::is_error) {
        Err(problems)
    } else {
        Ok((config, problems))
    }
}

/// Section types of which a file may hold at most one.
const SINGLETONS: &[&str] = &[
    "mnigs",
    "gateway",
    "subscriber",
    "wireguard",
    "openvpn",
    "iptunnel",
    "cjdns",
    "socks",
    "softether",
];

/// Builds a [`Config`] from sections, collecting problems.
struct Builder<'f> {
    file: &'f Path,
    config: Config,
    problems: Vec<Problem>,
    /// Line and place of `option enabled` of an enabled subscriber, for the cross-check.
    subscriber_enabled_at: Option<(usize, String)>,
}

impl<'f> Builder<'f> {
    fn push(&mut self, severity: Severity, line: usize, place: String, message: String) {
        self.problems.push(Problem {
            severity,
            file: self.file.to_path_buf(),
            line,
            place,
            message,
        });
    }

    fn sections(&mut self, sections: &[Section]) {
        let mut per_type: HashMap<&str, usize> = HashMap::new();
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut singletons: HashMap<&str, usize> = HashMap::new();
        for s in sections {
            let index = per_type.entry(s.ty.as_str()).or_default();
            let label = match &s.name {
                Some(n) => n.clone(),
                None => format!("@{}[{}]", s.ty, index),
            };
            *index += 1;
            if let Some(name) = &s.name {
                if let Some(first) = names.get(name.as_str()) {
                    let msg = format!(
                        "section name '{name}' is already used on line {first}; this section is ignored"
                    );
                    self.push(Severity::Error, s.line, label, msg);
                    continue;
                }
                names.insert(name.as_str(), s.line);
            }
            if SINGLETONS.contains(&s.ty.as_str()) {
                if let Some(first) = singletons.get(s.ty.as_str()) {
                    let msg = format!(
                        "only one '{}' section is allowed (the first is on line {first}); this one is ignored",
                        s.ty
                    );
                    self.push(Severity::Error, s.line, label, msg);
                    continue;
                }
                singletons.insert(s.ty.as_str(), s.line);
            }
            match s.ty.as_str() {
                "mnigs" => self.main(s, label),
                "gateway" => self.gateway(s, label),
                "subscriber" => self.subscriber(s, label),
                "wireguard" => self.wireguard(s, label),
                "openvpn" => self.openvpn(s, label),
                "iptunnel" => self.iptunnel(s, label),
                "cjdns" => self.cjdns(s, label),
                "socks" => self.socks(s, label),
                "softether" => self.softether(s, label),
                "discovery" => self.discovery(s, label),
                other => {
                    let msg = format!("unknown section type {}, ignored", quoted(other));
                    self.push(Severity::Warning, s.line, label, msg);
                }
            }
        }
    }

    fn reader<'s>(&mut self, section: &'s Section, label: String) -> Reader<'s, '_, 'f> {
        Reader {
            section,
            label,
            builder: self,
            used: vec![false; section.options.len()],
        }
    }

    fn main(&mut self, s: &Section, label: String) {
        if s.name.as_deref() != Some("main") {
            let msg = "the mnigs section should be named 'main' (config mnigs 'main'), \
                       or `uci get mnigs.main.*` will not find it"
                .to_string();
            self.push(Severity::Warning, s.line, label.clone(), msg);
        }
        let mut m = self.config.main.clone();
        let mut r = self.reader(s, label);
        r.single("name", &mut m.name, |v| {
            // Empty (as shipped): the host name, read at every start, so a renamed router is
            // renamed in the mesh too, and the shipped conffile is never rewritten.
            if v.is_empty() {
                Ok(host_name())
            } else {
                text(validate::node_name)(v)
            }
        });
        r.single("rpc_port", &mut m.rpc_port, port);
        r.list("listen", &mut m.listen, ip_address);
        r.list("listen_interface", &mut m.listen_interfaces, |v| {
            if v == "*" {
                Ok(v.to_string())
            } else {
                text(validate::ifname)(v)
            }
        });
        r.single("database", &mut m.database, |v| {
            validate::path(v).map(|()| PathBuf::from(v))
        });
        r.list(
            "authorized_network",
            &mut m.authorized_network,
            validate::prefix,
        );
        r.list("hostname", &mut m.hostname, validate::host_name);
        r.single("log_level", &mut m.log_level, one_of(LOG_LEVELS));
        r.single("web", &mut m.web, crate::web::Access::parse);
        r.single("persist_path", &mut m.persist_path, |v| {
            if v.is_empty() {
                Ok(None)
            } else {
                validate::path(v).map(|()| Some(PathBuf::from(v)))
            }
        });
        r.single(
            "persist_interval",
            &mut m.persist_interval,
            number(1, 604_800),
        );
        r.single("rate_limit", &mut m.rate_limit, number(0, 100_000));
        r.single("rate_burst", &mut m.rate_burst, number(1, 100_000));
        r.single("max_connections", &mut m.max_connections, number(1, 10_000));
        r.single("read_timeout", &mut m.read_timeout, number(1, 3600));
        if m.persist_path.as_deref() == Some(m.database.as_path()) {
            r.error_at(
                "persist_path",
                "must differ from database: the live database is copied there".into(),
            );
        }
        if m.listen.is_empty() {
            r.error_at("listen", "at least one address is required".into());
        }
        r.finish();
        self.config.main = m;
    }

    fn gateway(&mut self, s: &Section, label: String) {
        let mut g = self.config.gateway.clone();
        let mut r = self.reader(s, label);
        r.single("enabled", &mut g.enabled, boolean);
        r.single("max_subscribers", &mut g.max_subscribers, number(1, 65535));
        r.single(
            "max_sessions_per_source",
            &mut g.max_sessions_per_source,
            number(1, 65535),
        );
        r.single("lease_seconds", &mut g.lease_seconds, number(5, 86400));
        r.single(
            "wan_interface",
            &mut g.wan_interface,
            text(validate::ifname),
        );
        r.single("ipv4_pool", &mut g.ipv4_pool, ipv4_pool);
        r.single("ipv6_pool", &mut g.ipv6_pool, ipv6_pool);
        r.single("price", &mut g.price, number(0, u32::MAX));
        r.single("bandwidth_down", &mut g.bandwidth_down, number(0, u32::MAX));
        r.single("bandwidth_up", &mut g.bandwidth_up, number(0, u32::MAX));
        r.list("method", &mut g.methods, text(validate::method));
        r.single("nat", &mut g.nat, one_of(NAT_BACKENDS));
        r.list("uplink_target", &mut g.uplink_targets, ip_address);
        r.single("uplink_interval", &mut g.uplink_interval, number(1, 3600));
        r.single("uplink_check", &mut g.uplink_check, boolean);
        r.single("keep_sessions", &mut g.keep_sessions, boolean);
        r.list(
            "mesh_interface",
            &mut g.mesh_interfaces,
            text(validate::ifname),
        );
        r.list("allow_destination", &mut g.allow_destinations, |v| {
            validate::prefix(v)
        });
        if g.enabled && g.methods.is_empty() {
            r.error_at(
                "method",
                "the gateway is enabled but has no tunnel method".into(),
            );
        }
        r.finish();
        self.config.gateway = g;
    }

    fn subscriber(&mut self, s: &Section, label: String) {
        let mut sub = self.config.subscriber.clone();
        let mut r = self.reader(s, label.clone());
        r.single("enabled", &mut sub.enabled, boolean);
        r.list("method", &mut sub.methods, text(validate::method));
        r.single("scan_interval", &mut sub.scan_interval, number(1, 86400));
        r.single("probe_interval", &mut sub.probe_interval, number(1, 3600));
        r.single("max_price", &mut sub.max_price, number(0, u32::MAX));
        for event in crate::hooks::Event::ALL {
            r.single(event.option(), sub.hooks.slot(event), hook_path);
        }
        r.single("hook_timeout", &mut sub.hook_timeout, number(1, 3600));
        if s.get("probe_interval").is_some() && s.get("probe_interval_ms").is_none() {
            sub.probe_interval_ms = sub.probe_interval.saturating_mul(1000);
        }
        r.single(
            "probe_interval_ms",
            &mut sub.probe_interval_ms,
            number(50, 60_000),
        );
        r.single("down_after", &mut sub.down_after, number(1, 100));
        r.list("probe_target", &mut sub.probe_targets, ip_address);
        r.single("prefer", &mut sub.prefer, |v| gateway_ref(v).map(Some));
        r.list("exclude", &mut sub.exclude, gateway_ref);
        r.list("grant_allow", &mut sub.grant_allow, validate::prefix);
        r.single("failback_after", &mut sub.failback_after, number(0, 86400));
        r.single("negative_cache", &mut sub.negative_cache, number(0, 86400));
        r.single("hot_standby", &mut sub.hot_standby, boolean);
        r.single("fail_closed", &mut sub.fail_closed, boolean);
        let interval_given =
            s.get("probe_interval").is_some() || s.get("probe_interval_ms").is_some();
        if sub.hot_standby && !interval_given {
            // A false alarm costs only a rule switch with a standby ready: probe twice as often.
            sub.probe_interval_ms = HOT_STANDBY_PROBE_INTERVAL_MS;
        }
        if sub.enabled && sub.methods.is_empty() {
            r.error_at(
                "method",
                "the subscriber is enabled but has no tunnel method".into(),
            );
        }
        r.finish();
        if sub.enabled {
            let line = s.get("enabled").map_or(s.line, |o| o.line);
            self.subscriber_enabled_at = Some((line, format!("{label}.enabled")));
        }
        self.config.subscriber = sub;
    }

    fn wireguard(&mut self, s: &Section, label: String) {
        let mut w = self.config.wireguard.clone();
        let mut r = self.reader(s, label);
        r.single("interface", &mut w.interface, text(validate::ifname));
        r.single(
            "client_interface",
            &mut w.client_interface,
            text(validate::ifname),
        );
        r.single("listen_port", &mut w.listen_port, port);
        r.single("client_listen_port", &mut w.client_listen_port, port);
        r.single("mtu", &mut w.mtu, |v| {
            number(1280, 9000)(v).map(|n| u16::try_from(n).unwrap_or(u16::MAX))
        });
        r.finish();
        self.config.wireguard = w;
    }

    fn openvpn(&mut self, s: &Section, label: String) {
        let mut o = self.config.openvpn.clone();
        let mut r = self.reader(s, label);
        r.single("interface", &mut o.interface, text(validate::ifname));
        r.single(
            "client_interface",
            &mut o.client_interface,
            text(validate::ifname),
        );
        r.single("port", &mut o.port, port);
        r.single("mtu", &mut o.mtu, |v| {
            number(1280, 9000)(v).map(|n| u16::try_from(n).unwrap_or(u16::MAX))
        });
        r.single("directory", &mut o.directory, absolute_dir);
        r.finish();
        self.config.openvpn = o;
    }

    fn softether(&mut self, s: &Section, label: String) {
        let mut o = self.config.softether.clone();
        let mut r = self.reader(s, label);
        let short_name = |v: &str| {
            if (1..=11).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                Ok(v.to_string())
            } else {
                Err(format!(
                    "must be 1-11 letters and digits, got {}",
                    quoted(v)
                ))
            }
        };
        r.single("vpncmd", &mut o.vpncmd, |v| {
            if v.starts_with('/') {
                validate::path(v).map(|()| v.to_string())
            } else if v == "vpncmd" {
                Ok(v.to_string())
            } else {
                Err(format!(
                    "must be an absolute path or 'vpncmd', got {}",
                    quoted(v)
                ))
            }
        });
        r.single("admin", &mut o.admin, |v| {
            match v.parse::<std::net::SocketAddrV4>() {
                Ok(a) if a.port() > 0 => Ok(v.to_string()),
                _ => Err(format!(
                    "must be IPV4:PORT such as 127.0.0.1:5555, got {}",
                    quoted(v)
                )),
            }
        });
        r.single("admin_password", &mut o.admin_password, |v| {
            if (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()) {
                Ok(v.to_string())
            } else {
                Err("must be 1-128 printable ASCII characters without spaces".into())
            }
        });
        r.single("hub", &mut o.hub, |v| {
            crate::validate::check_credential("hub", v).map(|()| v.to_string())
        });
        r.single("port", &mut o.port, port);
        r.single("device", &mut o.device, short_name);
        r.single("client_nic", &mut o.client_nic, short_name);
        r.single("directory", &mut o.directory, absolute_dir);
        r.finish();
        self.config.softether = o;
    }

    fn socks(&mut self, s: &Section, label: String) {
        let mut o = self.config.socks.clone();
        let mut r = self.reader(s, label);
        r.single("interface", &mut o.interface, text(validate::ifname));
        r.single("port", &mut o.port, port);
        r.single("mtu", &mut o.mtu, |v| {
            number(1280, 9000)(v).map(|n| u16::try_from(n).unwrap_or(u16::MAX))
        });
        r.single("directory", &mut o.directory, absolute_dir);
        r.single("listen", &mut o.listen, |v| {
            v.parse::<IpAddr>()
                .map_err(|_| format!("must be an IP address, got {}", quoted(v)))
        });
        r.single("client", &mut o.client, |v| {
            validate::ClientKind::of(v)?;
            if v.contains('/') {
                validate::path(v)?;
            }
            Ok(v.to_string())
        });
        r.finish();
        self.config.socks = o;
    }

    fn iptunnel(&mut self, s: &Section, label: String) {
        let mut t = self.config.iptunnel.clone();
        let mut r = self.reader(s, label);
        r.single("interface_prefix", &mut t.interface_prefix, |v| {
            if v.len() > 7 {
                return Err(format!("must be at most 7 characters, got {}", quoted(v)));
            }
            text(validate::ifname)(v)
        });
        r.single(
            "client_interface",
            &mut t.client_interface,
            text(validate::ifname),
        );
        r.single("mtu", &mut t.mtu, |v| {
            number(1280, 9000)(v).map(|n| u16::try_from(n).unwrap_or(u16::MAX))
        });
        r.finish();
        self.config.iptunnel = t;
    }

    fn cjdns(&mut self, s: &Section, label: String) {
        let mut c = self.config.cjdns.clone();
        let mut r = self.reader(s, label);
        r.single("admin", &mut c.admin, |v| {
            if v.starts_with("unix://") {
                return Err(format!(
                    "cjdroute's admin API is UDP: HOST:PORT, got {}",
                    quoted(v)
                ));
            }
            admin_endpoint(v).map(|()| (!v.is_empty()).then(|| v.to_string()))
        });
        r.single("password", &mut c.password, |v| {
            admin_password(v).map(|()| (!v.is_empty()).then(|| v.to_string()))
        });
        r.single("cjdroute_conf", &mut c.cjdroute_conf, |v| {
            if v.is_empty() {
                Ok(None)
            } else {
                validate::path(v).map(|()| Some(PathBuf::from(v)))
            }
        });
        r.single("interface", &mut c.interface, text(validate::ifname));
        r.single("timeout_ms", &mut c.timeout_ms, number(50, 60000));
        r.finish();
        self.config.cjdns = c;
    }

    fn discovery(&mut self, s: &Section, label: String) {
        let mut d = DiscoveryConfig {
            section: label.clone(),
            ..DiscoveryConfig::default()
        };
        let mut r = self.reader(s, label);
        r.single("method", &mut d.method, discovery_method);
        r.single("protocol", &mut d.protocol, |v| {
            if v.is_empty() {
                Ok(None)
            } else {
                validate::route_protocol(v).map(|()| Some(v.to_string()))
            }
        });
        r.list("interface", &mut d.interfaces, text(validate::ifname));
        r.list("port", &mut d.ports, port);
        r.list("prefix", &mut d.prefixes, validate::prefix);
        r.single("concurrency", &mut d.concurrency, number(1, 1024));
        r.single("timeout_ms", &mut d.timeout_ms, number(50, 60000));
        r.single("route_gateways", &mut d.route_gateways, boolean);
        r.single("sweep", &mut d.sweep, sweep_prefix);
        r.single("admin", &mut d.admin, |v| {
            admin_endpoint(v).map(|()| (!v.is_empty()).then(|| v.to_string()))
        });
        r.single("max_depth", &mut d.max_depth, number(1, 64));
        r.single("max_nodes", &mut d.max_nodes, number(1, 1_000_000));
        r.single("password", &mut d.password, |v| {
            admin_password(v).map(|()| (!v.is_empty()).then(|| v.to_string()))
        });
        r.single("nodeinfo_only", &mut d.nodeinfo_only, boolean);
        r.single("cjdroute_conf", &mut d.cjdroute_conf, |v| {
            if v.is_empty() {
                Ok(None)
            } else {
                validate::path(v).map(|()| Some(PathBuf::from(v)))
            }
        });
        if d.ports.is_empty() {
            r.error_at("port", "at least one port is required".into());
        }
        r.finish();
        self.config.discovery.push(d);
    }

    fn cross_checks(&mut self) {
        if let Some((line, place)) = self.subscriber_enabled_at.take()
            && self.config.discovery.is_empty()
        {
            let msg = "subscriber is enabled but no discovery section is configured".into();
            self.push(Severity::Error, line, place, msg);
        }
    }
}

/// Typed access to one section's options. Records a problem for every invalid value (leaving
/// the default in place) and, in [`Reader::finish`], a warning for every option not asked for.
struct Reader<'s, 'b, 'f> {
    section: &'s Section,
    label: String,
    builder: &'b mut Builder<'f>,
    used: Vec<bool>,
}

impl<'s> Reader<'s, '_, '_> {
    fn problem(&mut self, severity: Severity, line: usize, option: &str, message: String) {
        let place = format!("{}.{option}", self.label);
        self.builder.push(severity, line, place, message);
    }

    /// An error about `option`, at its line if it is set, else at the section's line.
    fn error_at(&mut self, option: &str, message: String) {
        let line = self
            .section
            .get(option)
            .map_or(self.section.line, |o| o.line);
        self.problem(Severity::Error, line, option, message);
    }

    /// The option called `name`, now counted as known.
    fn take(&mut self, name: &str) -> Option<&'s UciOption> {
        let i = self.section.options.iter().position(|o| o.name == name)?;
        self.used[i] = true;
        Some(&self.section.options[i])
    }

    /// Sets `target` from a single-valued option, if present and valid.
    fn single<T>(&mut self, name: &str, target: &mut T, parse: impl Fn(&str) -> Result<T, String>) {
        let Some(opt) = self.take(name) else { return };
        match &opt.value {
            UciValue::Single(v) => match parse(v) {
                Ok(x) => *target = x,
                Err(msg) => self.problem(Severity::Error, opt.line, name, msg),
            },
            UciValue::List(_) => {
                let msg = "takes a single value: use 'option', not 'list'".to_string();
                self.problem(Severity::Error, opt.line, name, msg);
            }
        }
    }

    /// Replaces `target` with the values of a list option (`list`, or a single `option`), if
    /// present and all valid. Empty values are skipped, so `option NAME ''` means an empty list.
    fn list<T>(
        &mut self,
        name: &str,
        target: &mut Vec<T>,
        parse: impl Fn(&str) -> Result<T, String>,
    ) {
        let Some(opt) = self.take(name) else { return };
        let mut values = Vec::new();
        let mut ok = true;
        for (v, line) in opt.value.values(opt.line) {
            if v.is_empty() {
                continue;
            }
            match parse(v) {
                Ok(x) => values.push(x),
                Err(msg) => {
                    ok = false;
                    self.problem(Severity::Error, line, name, msg);
                }
            }
        }
        if ok {
            *target = values;
        }
    }

    /// Warns about options nobody asked for and about values a later `option` replaced.
    fn finish(mut self) {
        let section = self.section;
        for (o, used) in section.options.iter().zip(std::mem::take(&mut self.used)) {
            if !used {
                self.problem(
                    Severity::Warning,
                    o.line,
                    &o.name,
                    "unknown option, ignored".into(),
                );
            }
        }
        for old in &section.overridden {
            let last = section.get(&old.name).map_or(0, |o| o.line);
            let msg = format!("set again on line {last}; this value is ignored");
            self.problem(Severity::Warning, old.line, &old.name, msg);
        }
    }
}

#[cfg(test)]
mod tests;
