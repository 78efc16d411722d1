//! The built-in web page served on the RPC port (`GET /`): status, gateways with Connect buttons,
//! sessions, Scan and Disconnect, and a mesh graph drawn as inline SVG. Everything is embedded in
//! the binary and the page fetches nothing but `/jsonrpc` on the same origin, so it works on a
//! mesh without Internet access.
//!
//! # Layout
//! - `index.html`, `app.js`, `style.css`: the page, embedded with `include_str!`.
//! - [`graph`]: the nodes and links the page draws, built from what discovery saw.
//! - [`Access`]: what callers outside `authorized_network` may do (`option web`).

pub mod graph;

/// What a caller outside `authorized_network` gets (`option web` in the main section).
/// Callers inside it always get the full page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The page and every local control method, actions included (only for meshes where every
    /// node is trusted).
    Full,
    /// The page and the read methods (status, gateways, sessions, graph); actions are refused.
    /// What the shipped config sets.
    Readonly,
    /// No page (403) and no local control method, as before the page existed. The default when
    /// the option is absent.
    Off,
}

/// The values `option web` accepts.
pub const ACCESS_NAMES: &[&str] = &["full", "readonly", "off"];

impl Access {
    /// Parses `full`, `readonly` or `off`.
    pub fn parse(s: &str) -> Result<Access, String> {
        match s {
            "full" => Ok(Access::Full),
            "readonly" => Ok(Access::Readonly),
            "off" => Ok(Access::Off),
            other => Err(format!(
                "must be one of full, readonly, off, not '{}'",
                other.escape_debug()
            )),
        }
    }

    /// The name as the page and `status` show it.
    pub fn name(self) -> &'static str {
        match self {
            Access::Full => "full",
            Access::Readonly => "readonly",
            Access::Off => "off",
        }
    }
}

/// One embedded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// The file's text.
    pub body: &'static str,
}

const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_str!("index.html"),
};
const APP: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("app.js"),
};
const STYLE: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_str!("style.css"),
};

/// The embedded file at URL `path` (query string ignored), if any.
pub fn asset(path: &str) -> Option<Asset> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    match path {
        "/" | "/index.html" => Some(INDEX),
        "/app.js" => Some(APP),
        "/style.css" => Some(STYLE),
        _ => None,
    }
}

/// Where the page carries its token (see [`crate::rpc::guard`]): empty in the embedded file.
const TOKEN_SLOT: &str = "<meta name=\"mnigs-token\" content=\"\">";

/// The asset's text as served: the page with `token` in its token slot (an empty token leaves
/// the slot empty: a caller who may not act gets no token).
pub fn with_token(asset: Asset, token: &str) -> String {
    debug_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()));
    if token.is_empty() {
        return asset.body.to_string();
    }
    asset.body.replacen(
        TOKEN_SLOT,
        &format!("<meta name=\"mnigs-token\" content=\"{token}\">"),
        1,
    )
}

/// Sent with every page response: the browser itself refuses anything from another origin, so a
/// later change to the page cannot start fetching from the Internet unnoticed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page token inside `html` (the `<meta name="mnigs-token">` the page is served with).
pub fn token_in_page(html: &str) -> Option<String> {
    let at = html.find("name=\"mnigs-token\" content=\"")?;
    let rest = &html[at + "name=\"mnigs-token\" content=\"".len()..];
    let token = rest.split('"').next()?;
    (!token.is_empty()).then(|| token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_three_files_and_nothing_else() {
        assert_eq!(asset("/").unwrap().content_type, INDEX.content_type);
        assert_eq!(asset("/?x=1").unwrap().body, INDEX.body);
        assert!(asset("/app.js").unwrap().body.contains("jsonrpc"));
        assert!(asset("/style.css").is_some());
        assert!(asset("/../etc/passwd").is_none());
        assert!(asset("/jsonrpc").is_none());
    }

    #[test]
    fn page_fetches_nothing_from_elsewhere() {
        for a in [INDEX, APP, STYLE] {
            for bad in ["http://", "https://", "//cdn", "@import"] {
                // The SVG namespace is an identifier, not a fetch.
                let text = a.body.replace("http://www.w3.org/2000/svg", "");
                assert!(!text.contains(bad), "{bad} in {}", a.content_type);
            }
        }
        assert!(INDEX.body.contains("src=\"/app.js\""));
    }

    #[test]
    fn the_page_carries_the_token_given() {
        assert!(INDEX.body.contains(TOKEN_SLOT));
        let served = with_token(INDEX, "abc123");
        assert_eq!(token_in_page(&served).as_deref(), Some("abc123"));
        assert_eq!(token_in_page(&with_token(INDEX, "")), None);
        assert_eq!(with_token(APP, "abc123"), APP.body);
    }

    #[test]
    fn access_names_round_trip() {
        for n in ACCESS_NAMES {
            assert_eq!(Access::parse(n).unwrap().name(), *n);
        }
        assert!(Access::parse("yes").is_err());
    }
}
