//! Type checks for strings that reach a program's argv or the wire.
//!
//! mnigs never runs a shell, but an argv element can still do harm: `-x` is read as an option, a
//! newline splits a line-oriented protocol, and a Cyrillic `е` makes `eth0` a different interface
//! that looks the same in a log. So every string that comes from the config file or from another
//! node is checked here, against a narrow ASCII character set, before it is used. The config
//! layer and the RPC layer share these functions, so both accept exactly the same values.
//!
//! Each check returns `Err` with a short English message that names the rule and shows the
//! offending value through [`quoted`] (escaped, so a hostile value cannot forge log lines).
//!
//! # Layout
//! - names: [`ifname`], [`node_name`], [`route_protocol`], [`method`]
//! - numbers and addresses: [`prefix`]
//! - secrets and paths: [`wg_key`] (with its [`base64_decode`]), [`path`]

use std::net::IpAddr;
use std::str::FromStr;

use crate::prefix::Prefix;

/// Tunnel methods this build implements, in order of preference.
pub const METHODS: &[&str] = &[
    "wireguard",
    "openvpn",
    "gre",
    "ipip",
    "route",
    "cjdns",
    "socks",
    "softether",
];

/// Longest path accepted by [`path`], in bytes (Linux `PATH_MAX`).
pub const MAX_PATH: usize = 4096;

/// Longest part of a value that [`quoted`] shows.
const SHOWN_CHARS: usize = 64;

/// The `socks` subscriber's tun2socks program when `option client` is not set.
pub const SOCKS_CLIENT: &str = "tun2proxy-bin";

/// The tun2socks programs the subscriber side can run, by the file name of `option client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// `tun2proxy` / `tun2proxy-bin` (crates.io): options in the argv.
    Tun2proxy,
    /// `hev-socks5-tunnel` (OpenWrt's packages feed): a YAML configuration file.
    Hev,
}

impl ClientKind {
    /// The programs' file names, and their kinds.
    pub const PROGRAMS: [(&str, ClientKind); 3] = [
        ("tun2proxy", ClientKind::Tun2proxy),
        ("tun2proxy-bin", ClientKind::Tun2proxy),
        ("hev-socks5-tunnel", ClientKind::Hev),
    ];

    /// The kind of `program` (a name on PATH or an absolute path), or why it is none.
    pub fn of(program: &str) -> Result<ClientKind, String> {
        let name = program.rsplit('/').next().unwrap_or_default();
        match Self::PROGRAMS.iter().find(|(n, _)| *n == name) {
            Some((_, kind)) => Ok(*kind),
            None => Err(format!(
                "must be hev-socks5-tunnel, tun2proxy or tun2proxy-bin (a name on PATH or an \
                 absolute path), got {}",
                quoted(program)
            )),
        }
    }
}

/// Renders `s` for an error message: in single quotes, at most 64 characters, with quotes,
/// backslashes, control characters and every non-ASCII character escaped (`\n`, `\u{435}`),
/// so lookalike letters are visible and nothing can break the line.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(SHOWN_CHARS) + 2);
    out.push('\'');
    for (i, c) in s.chars().enumerate() {
        if i == SHOWN_CHARS {
            out.push_str("...");
            break;
        }
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            _ => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
        }
    }
    out.push('\'');
    out
}

/// True if every byte of `s` is ASCII alphanumeric or one of `extra`.
fn only(s: &str, extra: &[u8]) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// Checks a Linux network interface name: 1-15 bytes of `A-Z a-z 0-9 . _ -`, not starting
/// with `-` (it would be read as an option) and not `.` or `..` (they are paths in sysfs).
pub fn ifname(s: &str) -> Result<(), String> {
    let ok = (1..=15).contains(&s.len())
        && only(s, b"._-")
        && !s.starts_with('-')
        && s != "."
        && s != "..";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "interface name must be 1-15 characters of A-Z a-z 0-9 . _ -, not starting with '-' \
             and not '.' or '..', got {}",
            quoted(s)
        ))
    }
}

/// Checks a node name (what a node calls itself in `nodeInfo` and registrations):
/// 1-63 characters of `A-Z a-z 0-9 . _ -`, not starting with `-`.
pub fn node_name(s: &str) -> Result<(), String> {
    let starts_well = s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
    if (1..=63).contains(&s.len()) && only(s, b"._-") && starts_well {
        Ok(())
    } else {
        Err(format!(
            "node name must be 1-63 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit, got {}",
            quoted(s)
        ))
    }
}

/// Value of one standard base64 character, or `None` for anything else (including `=`).
fn sextet(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes strict standard base64 (RFC 4648 §4, alphabet `A-Z a-z 0-9 + /`, `=` padding).
///
/// Strict means one spelling per byte string: the length must be a multiple of 4, padding may
/// only end the text, and the unused bits before the padding must be zero (as `wg` requires).
pub fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(format!(
            "base64 length must be a multiple of 4, got {} characters",
            bytes.len()
        ));
    }
    let quads = bytes.len() / 4;
    let mut out = Vec::with_capacity(quads * 3);
    for (i, quad) in bytes.chunks_exact(4).enumerate() {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != quads) {
            return Err("base64 padding '=' is misplaced".to_string());
        }
        let mut acc: u32 = 0;
        for &c in &quad[..4 - pad] {
            let v = sextet(c).ok_or_else(|| {
                "base64 may only contain A-Z a-z 0-9 + / and trailing '='".to_string()
            })?;
            acc = (acc << 6) | v;
        }
        acc <<= 6 * pad;
        let group = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        let used = 3 - pad;
        if group[used..].iter().any(|&b| b != 0) {
            return Err("base64 is not canonical (bits before the padding are not zero)".into());
        }
        out.extend_from_slice(&group[..used]);
    }
    Ok(out)
}

/// Checks a WireGuard key: 44 characters of standard base64 (ending in one `=`) that decode to
/// exactly 32 bytes. The key itself never appears in the message, as it may be a private key.
pub fn wg_key(s: &str) -> Result<(), String> {
    const RULE: &str =
        "WireGuard key must be 44 characters of standard base64 ending in '=' (32 bytes)";
    if !s.is_ascii() {
        return Err(format!("{RULE}, got a non-ASCII character"));
    }
    if s.len() != 44 {
        return Err(format!("{RULE}, got {} characters", s.len()));
    }
    match base64_decode(s) {
        Ok(key) if key.len() == 32 => Ok(()),
        Ok(key) => Err(format!("{RULE}, got {} bytes", key.len())),
        Err(e) => Err(format!("{RULE}: {e}")),
    }
}

/// Parses and checks a prefix `ADDRESS/LENGTH` (`LENGTH` at most 32 for IPv4, 128 for IPv6,
/// decimal without leading zeros). Host bits must be zero; the error names the network address.
pub fn prefix(s: &str) -> Result<Prefix, String> {
    let Some((addr, len)) = s.split_once('/') else {
        return Err(format!(
            "prefix must be ADDRESS/LENGTH such as 10.0.0.0/24, got {}",
            quoted(s)
        ));
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("prefix must start with an IP address, got {}", quoted(s)))?;
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let digits_ok = (1..=3).contains(&len.len())
        && len.bytes().all(|b| b.is_ascii_digit())
        && (len == "0" || !len.starts_with('0'));
    let len = match len.parse::<u8>() {
        Ok(n) if digits_ok && n <= max => n,
        _ => {
            return Err(format!(
                "prefix length must be a number 0-{max}, got {}",
                quoted(s)
            ));
        }
    };
    let p = Prefix { addr, len };
    let network = p.network();
    if network != addr {
        return Err(format!(
            "prefix {} has host bits set; the network address is {}",
            quoted(s),
            Prefix { addr: network, len }
        ));
    }
    Ok(p)
}

impl FromStr for Prefix {
    type Err = String;

    /// Parses `ADDRESS/LENGTH` with [`prefix`] (host bits must be zero).
    fn from_str(s: &str) -> Result<Prefix, String> {
        prefix(s)
    }
}

/// Checks a route protocol as `ip route` takes it: a number 0-255 (no leading zeros, which `ip`
/// would read as octal), or a name of 1-31 characters `a-z 0-9 _ -` starting with a letter.
pub fn route_protocol(s: &str) -> Result<(), String> {
    let number = (1..=3).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'))
        && s.parse::<u16>().is_ok_and(|n| n <= 255);
    let name = (1..=31).contains(&s.len())
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if number || name {
        Ok(())
    } else {
        Err(format!(
            "route protocol must be a number 0-255 or a name of 1-31 characters a-z 0-9 _ - \
             starting with a letter, got {}",
            quoted(s)
        ))
    }
}

/// Checks a tunnel method name against [`METHODS`].
pub fn method(s: &str) -> Result<(), String> {
    if METHODS.contains(&s) {
        Ok(())
    } else {
        Err(format!(
            "unknown tunnel method {}; supported: {}",
            quoted(s),
            METHODS.join(", ")
        ))
    }
}

/// Checks a file path: absolute, at most [`MAX_PATH`] bytes, and free of NUL, newline and every
/// other control character.
pub fn path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err(format!(
            "path must be absolute (start with '/'), got {}",
            quoted(s)
        ));
    }
    if s.len() > MAX_PATH {
        return Err(format!(
            "path must be at most {MAX_PATH} bytes, got {} bytes",
            s.len()
        ));
    }
    if s.contains('\0') {
        return Err(format!(
            "path must not contain a NUL byte, got {}",
            quoted(s)
        ));
    }
    if s.chars().any(|c| c.is_ascii_control()) {
        return Err(format!(
            "path must not contain a newline or other control character, got {}",
            quoted(s)
        ));
    }
    Ok(())
}

/// Checks a name the owner reaches the node by (`list hostname`): a DNS name — labels of
/// `A-Z a-z 0-9 -` (not starting or ending with `-`, at most 63 characters) joined by dots, at
/// most 253 characters — returned in lower case without a trailing dot; or an IP address that is
/// not the node's own (a port forward's), returned in its canonical form.
pub fn host_name(s: &str) -> Result<String, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) && name.parse::<IpAddr>().is_err() {
        Ok(name)
    } else {
        Err(format!(
            "must be a DNS name (labels of A-Z a-z 0-9 - joined by dots) or an IP address, got {}",
            quoted(s)
        ))
    }
}

/// Longest user name, password or hub name accepted from a grant (ours are 10 and 32 characters).
pub const MAX_CREDENTIAL: usize = 48;

/// Checks a user name, password or hub name from a grant: 1–48 ASCII letters and digits (it goes
/// into an argv, a URL or a vpncmd command line, so nothing that needs quoting or splits).
pub fn check_credential(what: &str, s: &str) -> Result<(), String> {
    if (1..=MAX_CREDENTIAL).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(format!(
            "{what} must be 1-{MAX_CREDENTIAL} letters and digits, got {}",
            quoted(s)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    /// Values no check may accept, whatever it checks.
    const HOSTILE: &[&str] = &[
        "",
        "-x",
        "--help",
        "a b",
        "a;b",
        "a|b",
        "a&b",
        "$(id)",
        "`id`",
        "a'b",
        "a\"b",
        "a\nb",
        "a\rb",
        "a\0b",
        "a\tb",
        "a/b",
        "a\\b",
        "a*",
        "a>b",
        "\u{435}th0",   // Cyrillic е
        "eth\u{200b}0", // zero-width space
        "eth\u{ff10}",  // fullwidth digit zero
        "\u{2010}x",    // Unicode hyphen
        "caf\u{e9}",
    ];

    #[test]
    fn quoted_escapes_and_truncates() {
        assert_eq!(quoted("eth0"), "'eth0'");
        assert_eq!(quoted("a'b\\c"), "'a\\'b\\\\c'");
        assert_eq!(quoted("a\nb\0"), "'a\\nb\\u{0}'");
        assert_eq!(quoted("\u{435}th0"), "'\\u{435}th0'");
        let long = "x".repeat(100);
        assert_eq!(quoted(&long), format!("'{}...'", "x".repeat(64)));
    }

    #[test]
    fn ifname_accepts_real_names() {
        for ok in [
            "eth0",
            "br-lan",
            "wlan0.100",
            "mnigs-wg",
            "wg_0",
            "a",
            "abcdefghijklmno",
            "0",
        ] {
            assert_eq!(ifname(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn ifname_rejects_hostile_and_malformed() {
        for bad in HOSTILE
            .iter()
            .copied()
            .chain(["abcdefghijklmnop", ".", "..", "-", "eth0:1"])
        {
            let e = ifname(bad).unwrap_err();
            assert!(
                e.starts_with("interface name must be 1-15 characters"),
                "{e}"
            );
        }
        // The message shows the value escaped, never raw.
        assert!(ifname("a\nb").unwrap_err().ends_with("got 'a\\nb'"));
    }

    #[test]
    fn node_name_rules() {
        for ok in ["node-1", "mnigs", "A.b_c", "n".repeat(63).as_str(), "1"] {
            assert_eq!(node_name(ok), Ok(()), "{ok}");
        }
        for bad in HOSTILE
            .iter()
            .copied()
            .chain(["-node", "n".repeat(64).as_str()])
        {
            let e = node_name(bad).unwrap_err();
            assert!(
                e.starts_with("node name must be 1-63 characters"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn base64_decodes_rfc4648_vectors() {
        let cases: &[(&str, &[u8])] = &[
            ("", b""),
            ("Zg==", b"f"),
            ("Zm8=", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYg==", b"foob"),
            ("Zm9vYmE=", b"fooba"),
            ("Zm9vYmFy", b"foobar"),
            ("+/+/", &[0xfb, 0xff, 0xbf]),
        ];
        for (text, bytes) in cases {
            assert_eq!(base64_decode(text).as_deref(), Ok(*bytes), "{text}");
        }
    }

    #[test]
    fn base64_rejects_sloppy_input() {
        for bad in [
            "Zg", "Zg=", "Zg===", "Z===", "Zg==Zg==", "Zm9v\n", "Zm-v", "Zm_v", "Zh==", "Zm9=",
            "=Zm9",
        ] {
            assert!(base64_decode(bad).is_err(), "{bad:?}");
        }
    }

    const KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

    #[test]
    fn wg_key_accepts_a_real_key() {
        assert_eq!(wg_key(KEY), Ok(()));
        assert_eq!(wg_key(&format!("{}=", "A".repeat(43))), Ok(()));
    }

    #[test]
    fn wg_key_rejects_wrong_shapes() {
        let no_pad = &KEY[..43];
        let extra = format!("{KEY}=");
        let urlsafe = KEY.replace('+', "-");
        let trailing_bits = format!("{}B=", &KEY[..42]); // last char must leave 2 zero bits
        let two_pad = format!("{}==", "A".repeat(42)); // decodes to 31 bytes
        let newline = format!("{}\n", &KEY[..43]);
        let unicode = KEY.replacen('y', "\u{443}", 1); // 45 bytes
        let dash = format!("-{}", &KEY[1..]);
        for bad in [
            no_pad,
            &extra,
            &urlsafe,
            &trailing_bits,
            &two_pad,
            &newline,
            &unicode,
            &dash,
            "",
        ] {
            let e = wg_key(bad).unwrap_err();
            assert!(
                e.starts_with("WireGuard key must be 44 characters"),
                "{bad:?}: {e}"
            );
            assert!(!e.contains(&KEY[4..20]), "key leaked into {e}");
        }
    }

    #[test]
    fn prefix_from_str_uses_the_validator() {
        assert_eq!(
            "10.0.0.0/8".parse::<Prefix>(),
            Ok(prefix("10.0.0.0/8").unwrap())
        );
        assert_eq!(
            "10.0.0.1/8".parse::<Prefix>(),
            Err(prefix("10.0.0.1/8").unwrap_err())
        );
        for p in ["0.0.0.0/0", "::/0", "2001:db8::/32", "192.168.1.128/25"] {
            assert_eq!(prefix(p).unwrap().to_string(), p);
        }
    }

    #[test]
    fn prefix_parses_both_families() {
        let p = prefix("100.127.0.0/24").unwrap();
        assert_eq!(
            p,
            Prefix {
                addr: IpAddr::V4(Ipv4Addr::new(100, 127, 0, 0)),
                len: 24
            }
        );
        let p = prefix("fd7e:7e7e::/64").unwrap();
        assert_eq!(
            p.addr,
            IpAddr::V6("fd7e:7e7e::".parse::<Ipv6Addr>().unwrap())
        );
        assert_eq!(p.len, 64);
        assert!(prefix("0.0.0.0/0").is_ok());
        assert!(prefix("::/0").is_ok());
        assert!(prefix("10.1.2.3/32").is_ok());
        assert!(prefix("::1/128").is_ok());
    }

    #[test]
    fn prefix_names_the_network_when_host_bits_are_set() {
        assert_eq!(
            prefix("10.1.2.3/24").unwrap_err(),
            "prefix '10.1.2.3/24' has host bits set; the network address is 10.1.2.0/24"
        );
        assert_eq!(
            prefix("fd00::1/64").unwrap_err(),
            "prefix 'fd00::1/64' has host bits set; the network address is fd00::/64"
        );
    }

    #[test]
    fn prefix_rejects_malformed() {
        for bad in [
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/024",
            "10.0.0.0/+24",
            "10.0.0.0/-1",
            "10.0.0.0/24/8",
            "10.0.0.0/2x",
            "010.0.0.0/8",
            " 10.0.0.0/8",
            "10.0.0.0/8 ",
            "10.0.0.0/8\n",
            "1\u{ff10}.0.0.0/8",
            "fe80::1%eth0/64",
            "-10.0.0.0/8",
            "$(id)/8",
            "/8",
        ] {
            assert!(prefix(bad).is_err(), "{bad:?}");
        }
        for bad in HOSTILE {
            assert!(prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn route_protocol_rules() {
        for ok in [
            "babel",
            "static",
            "kernel",
            "bird",
            "ospf-2",
            "x_y",
            "0",
            "42",
            "255",
            "a".repeat(31).as_str(),
        ] {
            assert_eq!(route_protocol(ok), Ok(()), "{ok}");
        }
        for bad in [
            "256",
            "010",
            "0x10",
            "1e2",
            "Babel",
            "_x",
            "9abc",
            "a".repeat(32).as_str(),
        ] {
            assert!(route_protocol(bad).is_err(), "{bad:?}");
        }
        for bad in HOSTILE {
            assert!(route_protocol(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn method_lists_the_supported_ones() {
        for m in [
            "wireguard",
            "openvpn",
            "gre",
            "ipip",
            "route",
            "cjdns",
            "socks",
        ] {
            assert_eq!(method(m), Ok(()));
        }
        assert_eq!(
            method("l2tp").unwrap_err(),
            "unknown tunnel method 'l2tp'; supported: wireguard, openvpn, gre, ipip, route, cjdns, socks, softether"
        );
        for bad in HOSTILE
            .iter()
            .copied()
            .chain(["WireGuard", "wireguard ", "wireguard\n"])
        {
            assert!(method(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn path_rules() {
        for ok in ["/", "/var/lib/mnigs/mnigs.db", "/tmp/a b", "/tmp/caf\u{e9}"] {
            assert_eq!(path(ok), Ok(()), "{ok}");
        }
        assert!(path(&format!("/{}", "a".repeat(MAX_PATH - 1))).is_ok());
        assert!(
            path(&format!("/{}", "a".repeat(MAX_PATH)))
                .unwrap_err()
                .contains("at most 4096")
        );
        assert!(path("relative/db").unwrap_err().contains("absolute"));
        assert!(path("-rf").unwrap_err().contains("absolute"));
        assert!(path("").unwrap_err().contains("absolute"));
        assert!(path("/tmp/a\0b").unwrap_err().contains("NUL"));
        assert!(path("/tmp/a\nb").unwrap_err().contains("newline"));
        assert!(path("/tmp/a\rb").unwrap_err().contains("control"));
        assert!(path("/tmp/\u{1b}[2J").unwrap_err().contains("control"));
    }

    #[test]
    fn host_names_for_list_hostname() {
        assert_eq!(host_name("Router.LAN.").unwrap(), "router.lan");
        assert_eq!(host_name("gw-1").unwrap(), "gw-1");
        assert_eq!(host_name("FD77:0::3").unwrap(), "fd77::3");
        for bad in [
            "",
            "a..b",
            "-a",
            "a-",
            "[::1]",
            "a b",
            "a_b",
            "a/b",
            &"x".repeat(64),
        ] {
            assert!(host_name(bad).is_err(), "{bad}");
        }
    }
}
