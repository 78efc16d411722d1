//! README's config documentation and the config reader cannot drift apart: every config block
//! README shows is read by `check-config`'s reader without an "unknown" warning, and every
//! option README names in its prose (`` `option NAME` ``, `` `list NAME` ``) is known to at least
//! one section type.

use mnigs::config::model::{Problem, from_text};
use std::path::Path;

const README: &str = include_str!("../README.md");

/// The section types the reader knows.
const SECTION_TYPES: &[&str] = &[
    "mnigs",
    "gateway",
    "subscriber",
    "wireguard",
    "openvpn",
    "iptunnel",
    "cjdns",
    "socks",
    "discovery",
];

fn problems(text: &str) -> Vec<Problem> {
    match from_text(text, Path::new("README.md")) {
        Ok((_, p)) | Err(p) => p,
    }
}

fn unknown(p: &Problem) -> bool {
    p.message.starts_with("unknown option") || p.message.starts_with("unknown section")
}

/// README's fenced blocks that hold UCI config (a line starting with `config `), with the
/// README line each starts on.
fn config_blocks() -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in README.lines().enumerate() {
        if line.starts_with("```") {
            match current.take() {
                Some(block) => out.push(block),
                None => current = Some((i + 2, String::new())),
            }
        } else if let Some((_, text)) = &mut current {
            text.push_str(line);
            text.push('\n');
        }
    }
    out.into_iter()
        .filter(|(_, t)| t.lines().any(|l| l.starts_with("config ")))
        .collect()
}

#[test]
fn every_config_block_in_readme_is_known_to_check_config() {
    let blocks = config_blocks();
    assert!(
        blocks.len() >= 4,
        "README's config blocks were not found ({} found)",
        blocks.len()
    );
    let mut bad = Vec::new();
    for (line, text) in &blocks {
        for p in problems(text).iter().filter(|p| unknown(p)) {
            bad.push(format!("README block at line {line}: {p}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The names in `` `option NAME` `` and `` `list NAME` `` outside the config blocks.
fn named_in_prose() -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_block = false;
    for (i, line) in README.lines().enumerate() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        for code in line.split('`').skip(1).step_by(2) {
            let mut words = code.split_whitespace();
            if let (Some("option" | "list"), Some(name)) = (words.next(), words.next())
                && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            {
                out.push((i + 1, name.to_string()));
            }
        }
    }
    out
}

fn known_somewhere(name: &str) -> bool {
    SECTION_TYPES.iter().any(|ty| {
        let text = format!("config {ty} 'probe'\n\toption {name} 'x'\n");
        !problems(&text)
            .iter()
            .any(|p| unknown(p) && p.place.ends_with(&format!(".{name}")))
    })
}

#[test]
fn every_option_readme_names_is_known_to_check_config() {
    let named = named_in_prose();
    assert!(
        named.iter().any(|(_, n)| n == "hook_timeout"),
        "README's prose options were not found: {named:?}"
    );
    let bad: Vec<String> = named
        .iter()
        .filter(|(_, n)| !known_somewhere(n))
        .map(|(line, n)| format!("README line {line}: option {n} is unknown to every section"))
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn an_undocumented_option_is_caught() {
    // The check itself can fail: an option no section reads is reported.
    assert!(!known_somewhere("no_such_option"));
    let p = problems("config wireguard 'wireguard'\n\toption no_such_option '1'\n");
    assert!(p.iter().any(unknown), "{p:?}");
}

#[test]
fn client_listen_port_is_read() {
    let (c, p) = from_text(
        "config wireguard 'wireguard'\n\toption client_listen_port '51900'\n",
        Path::new("t"),
    )
    .unwrap();
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(c.wireguard.client_listen_port, 51900);
    let e = from_text(
        "config wireguard 'wireguard'\n\toption client_listen_port '70000'\n",
        Path::new("t"),
    )
    .unwrap_err();
    assert!(
        e.iter()
            .any(|p| p.is_error() && p.place == "wireguard.client_listen_port"),
        "{e:?}"
    );
}
