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
    /// The server is there but refused for now (HTTP 429 or 503: rate limit or connection
    /// caps); ask again after the `Retry-After` it gave ([`retry_after`]).
    Busy(SocketAddr, Duration),
}

/// Wait assumed when a busy answer names no (readable) `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest `Retry-After` honoured: a node cannot ask to be left alone for longer than this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The wait a `Retry-After` header value asks for: delta-seconds, capped at [`MAX_RETRY_AFTER`];
/// an HTTP-date or garbage counts as [`DEFAULT_RETRY_AFTER`].
pub fn retry_after(value: Option<&[u8]>) -> Duration {
    value
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok())
        .map_or(DEFAULT_RETRY_AFTER, Duration::from_secs)
        .min(MAX_RETRY_AFTER)
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(a, e) => write!(f, "cannot reach {a}: {e}"),
            ClientError::Timeout(a) => write!(f, "{a} did not answer in time"),
            ClientError::BadAnswer(a, why) => write!(f, "bad answer from {a}: {why}"),
            ClientError::Rpc(e) => e.fmt(f),
            ClientError::Busy(a, wait) => {
                write!(f, "{a} is busy, ask again in {} s", wait.as_secs())
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// The bytes of an HTTP request carrying one JSON-RPC call.
pub fn encode(addr: SocketAddr, method: &str, params: Value) -> Vec<u8> {
    encode_with_token(addr, method, params, None)
}

/// Like [`encode`], with the page token the node asks for on its action methods
/// (checked by the server's guard).
pub fn encode_with_token(
    addr: SocketAddr,
    method: &str,
    params: Value,
    token: Option<&str>,
) -> Vec<u8> {
    let body = Request::encode(1, method, params);
    let token = token.map_or(String::new(), |t| {
        format!("{}: {t}\r\n", crate::protocol::TOKEN_HEADER)
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
    if matches!(resp.code, Some(429 | 503)) {
        let value = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("retry-after"))
            .map(|h| h.value);
        return Err(ClientError::Busy(addr, retry_after(value)));
    }
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
    let (raw, ended) = fetch(addr, &request, timeout, max)?;
    answer_despite(addr, &within(addr, raw, max)?, ended)
}

/// Calls a local control method as the node's owner: for an action method the page token is
/// taken from the node's page first, as the page itself has it (the CLI and, through it, LuCI).
pub fn call_local(
    addr: SocketAddr,
    method: &str,
    params: Value,
    timeout: Duration,
) -> Result<Value, ClientError> {
    if crate::protocol::method_kind(method) != crate::protocol::Kind::Action {
        return call(addr, method, params, timeout);
    }
    let page = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (raw, ended) = fetch(addr, page.as_bytes(), timeout, MAX_ANSWER)?;
    ended?;
    let html = String::from_utf8_lossy(&raw);
    // No token (a caller who may not act): the call itself then gets the node's reason.
    let token = crate::web::token_in_page(&html);
    let request = encode_with_token(addr, method, params, token.as_deref());
    let (raw, ended) = fetch(addr, &request, timeout, MAX_ANSWER)?;
    answer_despite(addr, &within(addr, raw, MAX_ANSWER)?, ended)
}

/// Sends `request` and reads the whole answer (at most `max + 1` bytes), within `timeout` in
/// all. Returns what arrived and how the exchange ended: a server refusing the connection
/// (429/503) may answer and close before reading the request, so the write or the read then
/// fails while its answer is there to read.
fn fetch(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
    max: usize,
) -> Result<(Vec<u8>, Result<(), ClientError>), ClientError> {
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
    let sent = stream.write_all(request);
    stream.set_read_timeout(Some(left(()))).map_err(timed_out)?;
    let mut raw = Vec::new();
    let read = (&mut stream).take(max as u64 + 1).read_to_end(&mut raw);
    Ok((raw, sent.and(read.map(drop)).map_err(timed_out)))
}

/// The answer in `raw`, even when the exchange ended in `failed`: a server that refuses a
/// connection may say so and close before reading the request (a reset then follows). Without
/// an answer in `raw`, the failure stands.
fn answer_despite(
    addr: SocketAddr,
    raw: &[u8],
    failed: Result<(), ClientError>,
) -> Result<Value, ClientError> {
    match failed {
        Ok(()) => decode(addr, raw),
        Err(e) => match decode(addr, raw) {
            Err(ClientError::BadAnswer(..)) => Err(e),
            answer => answer,
        },
    }
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
        let bad = |e: std::io::Error| ClientError::BadAnswer(addr, e.to_string());
        let sent = stream.write_all(&encode(addr, method, params)).await;
        let mut raw = Vec::new();
        let read = (&mut stream)
            .take(max as u64 + 1)
            .read_to_end(&mut raw)
            .await;
        answer_despite(
            addr,
            &within(addr, raw, max)?,
            sent.and(read.map(drop)).map_err(bad),
        )
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

    #[test]
    fn a_refusal_sent_before_the_request_was_read_is_still_heard() {
        // Like the server's admission: answer at once, close without reading the request (the
        // unread request then makes the kernel send a reset).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let at = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().take(2) {
                let mut s = s.unwrap();
                let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 4\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let big = serde_json::json!({"pad": "x".repeat(200_000)});
        let r = call(at, "nodeInfo", big.clone(), Duration::from_secs(2));
        assert!(
            matches!(r, Err(ClientError::Busy(_, d)) if d.as_secs() == 4),
            "{r:?}"
        );
        let r = smol::block_on(call_async(
            at,
            "nodeInfo",
            big,
            Duration::from_secs(2),
            MAX_ANSWER,
        ));
        assert!(
            matches!(r, Err(ClientError::Busy(_, d)) if d.as_secs() == 4),
            "{r:?}"
        );
    }

    #[test]
    fn busy_answers_carry_their_retry_after() {
        let busy = |head: &str| decode(addr(), format!("{head}\r\n\r\n{{}}").as_bytes());
        let wait = |r: Result<Value, ClientError>| match r {
            Err(ClientError::Busy(a, d)) if a == addr() => Some(d.as_secs()),
            _ => None,
        };
        assert_eq!(
            wait(busy("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7")),
            Some(7)
        );
        assert_eq!(
            wait(busy("HTTP/1.1 503 Service Unavailable\r\nretry-after:  3 ")),
            Some(3)
        );
        // Without a usable value: the default; a huge one: the cap.
        assert_eq!(wait(busy("HTTP/1.1 503 Service Unavailable")), Some(1));
        assert_eq!(
            wait(busy(
                "HTTP/1.1 429 x\r\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT"
            )),
            Some(1)
        );
        assert_eq!(
            wait(busy("HTTP/1.1 429 x\r\nRetry-After: 99999999")),
            Some(600)
        );
        // Other refusals are not "busy".
        assert_eq!(wait(busy("HTTP/1.1 403 Forbidden")), None);
        assert_eq!(wait(busy("HTTP/1.1 408 Request Timeout")), None);
    }
}
