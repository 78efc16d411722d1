//! JSON-RPC over HTTP/1.1, as a client: blocking for the CLI and registration, async (smol) for
//! probing many candidates at once. Both share the framing below.

use crate::protocol::{self, Request, RpcError};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest answer [`call`] reads (the local control calls: `listGateways`, `scan`).
pub const MAX_ANSWER: usize = 1024 * 1024;

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// Nobody answered at the address (connection refused, unreachable).
    Connect(SocketAddr, std::io::Error),
    /// No complete answer in time.
    Timeout(SocketAddr),
    /// The answer was not a valid HTTP JSON-RPC answer.
    BadAnswer(SocketAddr, String),
    /// The server answered with a JSON-RPC error.
    Rpc(RpcError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(a, e) => write!(f, "cannot reach {a}: {e}"),
            ClientError::Timeout(a) => write!(f, "{a} did not answer in time"),
            ClientError::BadAnswer(a, why) => write!(f, "bad answer from {a}: {why}"),
            ClientError::Rpc(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ClientError {}

/// The bytes of an HTTP request carrying one JSON-RPC call.
pub fn encode(addr: SocketAddr, method: &str, params: Value) -> Vec<u8> {
    encode_with_token(addr, method, params, None)
}

/// Like [`encode`], with the page token the node asks for on its action methods
/// ([`crate::rpc::guard`]).
pub fn encode_with_token(
    addr: SocketAddr,
    method: &str,
    params: Value,
    token: Option<&str>,
) -> Vec<u8> {
    let body = Request::encode(1, method, params);
    let token = token.map_or(String::new(), |t| {
        format!("{}: {t}\r\n", crate::rpc::guard::TOKEN_HEADER)
    });
    let mut out = format!(
        "POST /jsonrpc HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{token}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Reads a whole HTTP answer (the server closes the connection) into the JSON-RPC result.
pub fn decode(addr: SocketAddr, raw: &[u8]) -> Result<Value, ClientError> {
    let bad = |why: String| ClientError::BadAnswer(addr, why);
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let start = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(bad("answer cut short".into())),
        Err(e) => return Err(bad(format!("not HTTP: {e}"))),
    };
    let length = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let mut body = &raw[start..];
    if let Some(n) = length {
        if body.len() < n {
            return Err(bad("answer cut short".into()));
        }
        body = &body[..n];
    }
    match protocol::parse_response(body) {
        Ok(v) => Ok(v),
        Err(e) if resp.code == Some(200) => Err(ClientError::Rpc(e)),
        Err(e) => Err(bad(format!(
            "HTTP {}: {}",
            resp.code.unwrap_or(0),
            e.message
        ))),
    }
}

/// Calls `method` at `addr` and waits at most `timeout` in all.
pub fn call(
    addr: SocketAddr,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, ClientError> {
    call_bounded(addr, method, params, timeout, MAX_ANSWER)
}

/// The answer read so far, or an error if it is longer than `max` bytes: a node that answers
/// more than it could mean is refused without holding more than `max + 1` bytes.
fn within(addr: SocketAddr, raw: Vec<u8>, max: usize) -> Result<Vec<u8>, ClientError> {
    if raw.len() > max {
        Err(ClientError::BadAnswer(
            addr,
            format!("answer longer than {max} bytes"),
        ))
    } else {
        Ok(raw)
    }
}

/// [`call`], refusing answers longer than `max` bytes (calls to other nodes).
pub fn call_bounded(
    addr: SocketAddr,
    method: &str,
    params: Value,
    timeout: Duration,
    max: usize,
) -> Result<Value, ClientError> {
    let request = encode(addr, method, params);
    decode(addr, &fetch(addr, &request, timeout, max)?)
}

/// Calls a local control method as the node's owner: for an action method the page token is
/// taken from the node's page first, as the page itself has it (the CLI and, through it, LuCI).
pub fn call_local(
    addr: SocketAddr,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, ClientError> {
    if crate::rpc::guard::kind(method) != crate::rpc::guard::Kind::Action {
        return call(addr, method, params, timeout);
    }
    let page = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let raw = fetch(addr, page.as_bytes(), timeout, MAX_ANSWER)?;
    let html = String::from_utf8_lossy(&raw);
    // No token (a caller who may not act): the call itself then gets the node's reason.
    let token = crate::rpc::guard::token_in_page(&html);
    let request = encode_with_token(addr, method, params, token.as_deref());
    decode(addr, &fetch(addr, &request, timeout, MAX_ANSWER)?)
}

/// Sends `request` and reads the whole answer (at most `max` bytes), within `timeout` in all.
fn fetch(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
    max: usize,
) -> Result<Vec<u8>, ClientError> {
    let deadline = std::time::Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => ClientError::Timeout(addr),
        _ => ClientError::Connect(addr, e),
    })?;
    let left = |_| {
        deadline
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_millis(1))
    };
    let timed_out = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => ClientError::Timeout(addr),
        _ => ClientError::BadAnswer(addr, e.to_string()),
    };
    stream
        .set_write_timeout(Some(left(())))
        .map_err(timed_out)?;
    stream.write_all(request).map_err(timed_out)?;
    stream.set_read_timeout(Some(left(()))).map_err(timed_out)?;
    let mut raw = Vec::new();
    stream
        .take(max as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(timed_out)?;
    within(addr, raw, max)
}

/// Async [`call_bounded`], for use inside a smol executor.
pub async fn call_async(
    addr: SocketAddr,
    method: &str,
    params: Value,
    timeout: Duration,
    max: usize,
) -> Result<Value, ClientError> {
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = smol::net::TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect(addr, e))?;
        stream
            .write_all(&encode(addr, method, params))
            .await
            .map_err(|e| ClientError::BadAnswer(addr, e.to_string()))?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(max as u64 + 1)
            .read_to_end(&mut raw)
            .await
            .map_err(|e| ClientError::BadAnswer(addr, e.to_string()))?;
        decode(addr, &within(addr, raw, max)?)
    };
    smol::future::or(exchange, async {
        smol::Timer::after(timeout).await;
        Err(ClientError::Timeout(addr))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "[fd77::3]:65533".parse().unwrap()
    }

    #[test]
    fn request_names_the_host() {
        let raw = String::from_utf8(encode(addr(), "nodeInfo", serde_json::json!({}))).unwrap();
        assert!(raw.starts_with("POST /jsonrpc HTTP/1.1\r\nHost: [fd77::3]:65533\r\n"));
        assert!(
            raw.ends_with(r#""method":"nodeInfo","params":{}}"#),
            "{raw}"
        );
    }

    #[test]
    fn decodes_result_and_errors() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 41\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"a\":1}}";
        assert_eq!(decode(addr(), ok).unwrap()["a"], 1);
        let err = b"HTTP/1.1 200 OK\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32601,\"message\":\"no\"}}";
        assert!(matches!(decode(addr(), err), Err(ClientError::Rpc(e)) if e.code == -32601));
        assert!(matches!(
            decode(addr(), b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n{}"),
            Err(ClientError::BadAnswer(..))
        ));
        assert!(matches!(
            decode(addr(), b"garbage"),
            Err(ClientError::BadAnswer(..))
        ));
    }
}
