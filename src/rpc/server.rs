//! The JSON-RPC server: `POST /jsonrpc`, bodies up to [`MAX_BODY`], a few worker threads; and
//! `GET /` with the built-in page ([`crate::web`]) for callers the handler lets see it.

use crate::protocol::{self, BadRequest, MAX_BODY, Request, RpcError, Version, code};
use crate::web;
use serde_json::Value;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Who sent a request and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Source address (IPv4-mapped IPv6 addresses are turned back into IPv4).
    pub addr: IpAddr,
    /// The server address the caller wrote in its `Host` header, without port or brackets.
    pub host: Option<String>,
}

/// Answers decoded requests.
pub trait Handler: Send + Sync {
    /// Handles one call; `Ok` is the `result`, `Err` a JSON-RPC error.
    fn call(&self, caller: &Caller, request: &Request) -> Result<Value, RpcError>;

    /// Whether `caller` may load the built-in page; without it `GET /` answers 403.
    fn web_page(&self, _caller: &Caller) -> bool {
        false
    }
}

/// A running server; dropping it does not stop it, call [`Server::stop`].
pub struct Server {
    http: Vec<Arc<tiny_http::Server>>,
    workers: Vec<JoinHandle<()>>,
    port: u16,
}

/// How many threads serve each listening address.
const WORKERS: usize = 2;

impl Server {
    /// Listens on each of `listen` at `port` (0: any free port, the same for all addresses).
    pub fn start(
        listen: &[IpAddr],
        port: u16,
        handler: Arc<dyn Handler>,
    ) -> Result<Server, String> {
        let mut server = Server {
            http: Vec::new(),
            workers: Vec::new(),
            port,
        };
        for ip in listen {
            let addr = SocketAddr::new(*ip, server.port);
            let http = tiny_http::Server::http(addr)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            if server.port == 0 {
                server.port = http.server_addr().to_ip().map(|a| a.port()).unwrap_or(0);
            }
            let http = Arc::new(http);
            for _ in 0..WORKERS {
                let (http, handler) = (http.clone(), handler.clone());
                server
                    .workers
                    .push(std::thread::spawn(move || serve(&http, handler.as_ref())));
            }
            server.http.push(http);
        }
        Ok(server)
    }

    /// The port in use.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops accepting requests and waits for the workers.
    pub fn stop(self) {
        for http in &self.http {
            for _ in 0..WORKERS {
                http.unblock();
            }
        }
        for w in self.workers {
            let _ = w.join();
        }
    }
}

fn serve(http: &tiny_http::Server, handler: &dyn Handler) {
    while let Ok(request) = http.recv() {
        respond(request, handler);
    }
}

fn json_response(status: u16, body: &Value) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let header =
        tiny_http::Header::from_bytes("Content-Type", "application/json").expect("static header");
    tiny_http::Response::from_data(serde_json::to_vec(body).expect("JSON value serializes"))
        .with_status_code(status)
        .with_header(header)
}

fn refuse(request: tiny_http::Request, status: u16, code: i64, message: &str) {
    let body = protocol::answer_error(&Value::Null, Version::V2, &RpcError::new(code, message));
    let _ = request.respond(json_response(status, &body));
}

fn caller(request: &tiny_http::Request) -> Option<Caller> {
    let addr = request.remote_addr().map(|a| canonical(a.ip()))?;
    let host = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Host"))
        .map(|h| host_only(h.value.as_str()));
    Some(Caller { addr, host })
}

/// `GET /` and the page's assets.
fn serve_page(request: tiny_http::Request, asset: web::Asset, handler: &dyn Handler) {
    let allowed = caller(&request).is_some_and(|c| handler.web_page(&c));
    let header = |k: &str, v: &str| tiny_http::Header::from_bytes(k, v).expect("static header");
    if !allowed {
        let r = tiny_http::Response::from_string(
            "403 forbidden: this node does not show its page to you\n",
        )
        .with_status_code(403)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"));
        let _ = request.respond(r);
        return;
    }
    let r = tiny_http::Response::from_string(asset.body)
        .with_header(header("Content-Type", asset.content_type))
        .with_header(header(
            "Content-Security-Policy",
            web::CONTENT_SECURITY_POLICY,
        ))
        .with_header(header("X-Content-Type-Options", "nosniff"))
        .with_header(header("Cache-Control", "no-cache"));
    let _ = request.respond(r);
}

fn respond(mut request: tiny_http::Request, handler: &dyn Handler) {
    if matches!(
        request.method(),
        tiny_http::Method::Get | tiny_http::Method::Head
    ) && let Some(asset) = web::asset(request.url())
    {
        return serve_page(request, asset, handler);
    }
    if request.url() != "/jsonrpc" {
        return refuse(
            request,
            404,
            code::INVALID_REQUEST,
            "not found: JSON-RPC is served at /jsonrpc",
        );
    }
    if *request.method() != tiny_http::Method::Post {
        return refuse(
            request,
            405,
            code::INVALID_REQUEST,
            "JSON-RPC requests must use POST",
        );
    }
    let too_big = format!("request body larger than {MAX_BODY} bytes");
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return refuse(request, 413, code::INVALID_REQUEST, &too_big);
    }
    let mut body = Vec::new();
    if request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .is_err()
    {
        return refuse(
            request,
            400,
            code::INVALID_REQUEST,
            "could not read the request body",
        );
    }
    if body.len() > MAX_BODY {
        return refuse(request, 413, code::INVALID_REQUEST, &too_big);
    }
    let Some(caller) = caller(&request) else {
        return refuse(
            request,
            400,
            code::INVALID_REQUEST,
            "unknown caller address",
        );
    };
    let answer = match Request::parse(&body) {
        Ok(req) => match handler.call(&caller, &req) {
            Ok(result) => protocol::answer(&req.id, req.version, result),
            Err(e) => protocol::answer_error(&req.id, req.version, &e),
        },
        Err(BadRequest { id, version, error }) => protocol::answer_error(&id, version, &error),
    };
    let _ = request.respond(json_response(200, &answer));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_forms() {
        assert_eq!(host_only("[fd77::3]:65533"), "fd77::3");
        assert_eq!(host_only("10.77.0.3:65533"), "10.77.0.3");
        assert_eq!(host_only("10.77.0.3"), "10.77.0.3");
        assert_eq!(host_only("fd77::3"), "fd77::3");
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        assert_eq!(
            canonical("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            canonical("fd77::1".parse().unwrap()),
            "fd77::1".parse::<IpAddr>().unwrap()
        );
    }
}
