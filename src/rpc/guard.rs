//! Who may ask what of the node from a browser's point of view: the rules that keep a web page
//! from another origin (and a DNS-rebound name) from using the owner's browser against the node.
//! Pure functions on the request's headers, so every rule is tested without sockets.
//!
//! - Mesh protocol methods ([`MESH_METHODS`]) are called by other nodes by address: no rule here.
//! - Every other method and the page need a `Host` that is this node ([`host_allowed`]): an IP
//!   literal of the address the connection came in on, `localhost`, or a name (or a port
//!   forward's address) the owner lists
//!   (`list hostname`). A rebound name (`evil.example` resolving to the node) is refused, so a
//!   page on that name can neither read the node's state nor fetch the page's token.
//! - A present `Origin` must be the node itself (`http://` plus the `Host` the request names).
//! - Action methods (everything that is neither a mesh nor a read method, so future methods are
//!   actions until listed otherwise) also need a JSON `Content-Type` (a cross-site "simple"
//!   request can only send `text/plain`, form or multipart bodies) and the page token
//!   ([`TOKEN_HEADER`]) that the node puts into the page it serves to callers who may act.

use std::net::IpAddr;

/// JSON-RPC error code for a call the node refuses to answer to this caller.
pub const FORBIDDEN: i64 = -32001;

pub use crate::protocol::{Kind, MESH_METHODS, READ_METHODS, TOKEN_HEADER, method_kind as kind};

/// The headers the rules look at, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// `Host`, with its port.
    pub host: Option<String>,
    /// `Origin`.
    pub origin: Option<String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// [`TOKEN_HEADER`].
    pub token: Option<String>,
}

/// What the request is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// The node's address the connection came in on.
    pub local: Option<IpAddr>,
    /// Names the owner reaches the node by (`list hostname`), lower case.
    pub hostnames: &'a [String],
    /// This daemon's page token.
    pub token: &'a str,
}

/// Why a request was refused: the HTTP status and a message naming what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// 403 or 415.
    pub status: u16,
    /// Sent to the caller.
    pub message: String,
}

fn refuse(status: u16, message: String) -> Refused {
    Refused { status, message }
}

/// Turns `::ffff:a.b.c.d` into `a.b.c.d`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `[fd77::3]:65533` → `fd77::3`, `10.0.0.1:65533` → `10.0.0.1`, `name` → `name`.
pub fn host_only(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            h.to_string()
        }
        _ => host.to_string(),
    }
}

/// `Host` without port or brackets, lower case, without a trailing dot.
fn host_name(host: &str) -> String {
    host_only(host.trim())
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Whether `Host` names this node. No `Host` at all is no browser (every browser sends one).
pub fn host_allowed(host: Option<&str>, site: &Site<'_>) -> Result<(), Refused> {
    let Some(raw) = host else { return Ok(()) };
    let name = host_name(raw);
    let ok = match name.parse::<IpAddr>() {
        Ok(ip) => {
            let ip = canonical(ip);
            site.local.is_some_and(|l| canonical(l) == ip)
                || site.hostnames.contains(&ip.to_string())
        }
        Err(_) => name == "localhost" || site.hostnames.contains(&name),
    };
    if ok {
        return Ok(());
    }
    Err(refuse(
        403,
        format!(
            "Host '{}' is not this node: use one of its addresses, localhost, or a name listed \
             with `list hostname` in config mnigs 'main' (another name may be a DNS-rebinding page)",
            raw.escape_debug()
        ),
    ))
}

/// Whether a present `Origin` is the node itself: `http://` and the request's own `Host`.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>) -> Result<(), Refused> {
    let Some(origin) = origin else { return Ok(()) };
    let same = host.is_some_and(|h| {
        origin
            .trim()
            .eq_ignore_ascii_case(&format!("http://{}", h.trim()))
    });
    if same {
        return Ok(());
    }
    Err(refuse(
        403,
        format!(
            "cross-site request refused: Origin '{}' is not this node",
            origin.escape_debug()
        ),
    ))
}

/// Whether `Content-Type` is a JSON type: `application/json` (any parameters), or the
/// `application/json-rpc` and `application/jsonrequest` of JSON-RPC 1.0 clients.
pub fn json_content_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let essence = ct.split(';').next().unwrap_or("").trim();
    [
        "application/json",
        "application/json-rpc",
        "application/jsonrequest",
    ]
    .iter()
    .any(|t| essence.eq_ignore_ascii_case(t))
}

/// Compares in time that depends only on the lengths, not on where the first difference is.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Checks a call to `method` against the rules of its [`Kind`].
pub fn check_call(method: &str, h: &Headers, site: &Site<'_>) -> Result<(), Refused> {
    let kind = kind(method);
    if kind == Kind::Mesh {
        return Ok(());
    }
    host_allowed(h.host.as_deref(), site)?;
    origin_allowed(h.origin.as_deref(), h.host.as_deref())?;
    if kind == Kind::Read {
        return Ok(());
    }
    if !json_content_type(h.content_type.as_deref()) {
        return Err(refuse(
            415,
            format!(
                "{m} needs Content-Type: application/json, not '{}' (a page from another site \
                 can send other types without asking)",
                h.content_type.as_deref().unwrap_or("none").escape_debug(),
                m = method.escape_debug()
            ),
        ));
    }
    match h.token.as_deref() {
        Some(t) if same_secret(t.trim(), site.token) => Ok(()),
        Some(_) => Err(refuse(
            403,
            format!(
                "{} is wrong: it changes at every daemon start; reload the page",
                TOKEN_HEADER
            ),
        )),
        None => Err(refuse(
            403,
            format!(
                "{m} needs the {TOKEN_HEADER} header the node's page carries (mnigs CLI and \
                 the page send it; a page from another site cannot read it)",
                m = method.escape_debug()
            ),
        )),
    }
}

/// Checks a request for the page or its assets (`Host` only: a navigation sends no `Origin`).
pub fn check_page(h: &Headers, site: &Site<'_>) -> Result<(), Refused> {
    host_allowed(h.host.as_deref(), site)
}

/// A new page token: 128 bits from the OS CSPRNG, as hex.
pub fn new_token() -> String {
    crate::ids::new_sid()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    fn site(names: &[String]) -> Site<'_> {
        Site {
            local: Some("127.0.0.1".parse().unwrap()),
            hostnames: names,
            token: TOKEN,
        }
    }

    fn good() -> Headers {
        Headers {
            host: Some("127.0.0.1:65533".into()),
            origin: Some("http://127.0.0.1:65533".into()),
            content_type: Some("application/json".into()),
            token: Some(TOKEN.into()),
        }
    }

    #[test]
    fn kinds() {
        assert_eq!(kind("requestConnection"), Kind::Mesh);
        assert_eq!(kind("status"), Kind::Read);
        for m in ["scan", "connect", "disconnect", "someFutureMethod"] {
            assert_eq!(kind(m), Kind::Action, "{m}");
        }
    }

    #[test]
    fn the_page_and_the_cli_pass() {
        let names = vec![];
        for m in ["scan", "connect", "disconnect", "status"] {
            assert_eq!(check_call(m, &good(), &site(&names)), Ok(()));
        }
        let mut no_origin = good();
        no_origin.origin = None;
        assert_eq!(check_call("scan", &no_origin, &site(&names)), Ok(()));
        let mut charset = good();
        charset.content_type = Some("Application/JSON; charset=utf-8".into());
        assert_eq!(check_call("scan", &charset, &site(&names)), Ok(()));
    }

    #[test]
    fn cross_site_attempts_are_refused() {
        let names = vec!["router.lan".to_string()];
        let s = site(&names);
        let with = |f: &dyn Fn(&mut Headers)| {
            let mut h = good();
            f(&mut h);
            check_call("disconnect", &h, &s).map_err(|r| r.status)
        };
        assert_eq!(
            with(&|h| h.content_type = Some("text/plain;charset=UTF-8".into())),
            Err(415)
        );
        assert_eq!(
            with(&|h| h.content_type = Some("application/x-www-form-urlencoded".into())),
            Err(415)
        );
        assert_eq!(
            with(&|h| h.content_type = Some("multipart/form-data; boundary=x".into())),
            Err(415)
        );
        assert_eq!(with(&|h| h.content_type = None), Err(415));
        assert_eq!(
            with(&|h| h.content_type = Some("application/jsonp".into())),
            Err(415)
        );
        assert_eq!(
            with(&|h| h.origin = Some("http://evil.example".into())),
            Err(403)
        );
        assert_eq!(with(&|h| h.origin = Some("null".into())), Err(403));
        assert_eq!(
            with(&|h| h.origin = Some("https://127.0.0.1:65533".into())),
            Err(403),
            "another scheme"
        );
        assert_eq!(
            with(&|h| h.origin = Some("http://127.0.0.1:8080".into())),
            Err(403),
            "another port"
        );
        assert_eq!(
            with(&|h| {
                h.host = Some("evil.example:65533".into());
                h.origin = Some("http://evil.example:65533".into());
            }),
            Err(403),
            "rebinding"
        );
        assert_eq!(with(&|h| h.host = Some("10.9.9.9".into())), Err(403));
        assert_eq!(with(&|h| h.token = None), Err(403));
        assert_eq!(with(&|h| h.token = Some("x".into())), Err(403));
        assert_eq!(with(&|h| h.token = Some(TOKEN.replace('0', "1"))), Err(403));
        // The names the owner lists, and localhost, are the node.
        assert_eq!(
            with(&|h| {
                h.host = Some("Router.LAN.:65533".into());
                h.origin = Some("http://Router.LAN.:65533".into());
            }),
            Ok(())
        );
        assert_eq!(
            with(&|h| {
                h.host = Some("localhost:65533".into());
                h.origin = None;
            }),
            Ok(())
        );
    }

    #[test]
    fn reads_need_the_host_and_origin_only_and_mesh_methods_nothing() {
        let names = vec![];
        let s = site(&names);
        let plain = Headers {
            host: Some("127.0.0.1:1".into()),
            ..Headers::default()
        };
        assert_eq!(check_call("status", &plain, &s), Ok(()));
        let rebound = Headers {
            host: Some("evil.example".into()),
            ..Headers::default()
        };
        assert_eq!(check_call("status", &rebound, &s).unwrap_err().status, 403);
        assert_eq!(check_page(&rebound, &s).unwrap_err().status, 403);
        assert_eq!(check_call("nodeInfo", &rebound, &s), Ok(()));
        assert_eq!(check_call("requestConnection", &rebound, &s), Ok(()));
    }

    #[test]
    fn ipv6_hosts() {
        let names = vec![];
        let s = Site {
            local: Some("fd77::3".parse().unwrap()),
            hostnames: &names,
            token: TOKEN,
        };
        assert!(host_allowed(Some("[fd77::3]:65533"), &s).is_ok());
        assert!(host_allowed(Some("[fd77::4]:65533"), &s).is_err());
        let forwarded = vec!["203.0.113.5".to_string()];
        let s = Site {
            hostnames: &forwarded,
            ..s
        };
        assert!(host_allowed(Some("203.0.113.5:8080"), &s).is_ok());
        assert!(host_allowed(Some("203.0.113.6:8080"), &s).is_err());
        let mapped = Site {
            local: Some("::ffff:10.0.0.1".parse().unwrap()),
            hostnames: &names,
            token: TOKEN,
        };
        assert!(host_allowed(Some("10.0.0.1:65533"), &mapped).is_ok());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(TOKEN, TOKEN));
        assert!(!same_secret(TOKEN, &TOKEN[1..]));
        assert!(!same_secret("", TOKEN));
        assert!(same_secret("", ""));
    }

    #[test]
    fn token_is_found_in_the_page() {
        let page = "<head><meta name=\"mnigs-token\" content=\"abc123\"></head>";
        assert_eq!(crate::web::token_in_page(page).as_deref(), Some("abc123"));
        assert_eq!(
            crate::web::token_in_page("<meta name=\"mnigs-token\" content=\"\">"),
            None
        );
        assert_ne!(new_token(), new_token());
        assert_eq!(new_token().len(), 32);
    }
}
