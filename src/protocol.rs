//! The wire protocol (README, "Protocol"): JSON-RPC envelopes and every method's parameters and
//! results.
//!
//! Pure: bytes or JSON values in, typed values out, and back. Both JSON-RPC 2.0 and the 1.0 style the
//! original Lua clients sent (no `jsonrpc` member, positional `params`) are understood; an answer uses
//! the style of its request.

use crate::json::{self, object};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::net::IpAddr;

/// Largest request body the server reads.
pub const MAX_BODY: usize = 64 * 1024;

/// JSON-RPC error codes used by mnigs.
pub mod code {
    /// The body is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON, but not a request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method (or not offered to this caller).
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Parameters missing or of the wrong type.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The server failed while handling the request.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The node refuses for now (connection caps, rate limit): ask again later
    /// ([`super::answer_busy`]).
    pub const BUSY: i64 = -32000;
}

/// Which JSON-RPC dialect a request used; its answer uses the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// JSON-RPC 1.0: no `jsonrpc` member; answers carry both `result` and `error`.
    V1,
    /// JSON-RPC 2.0.
    V2,
}

/// A protocol-level fault, sent as a JSON-RPC `error` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// One of [`code`].
    pub code: i64,
    /// What was wrong, for a person.
    pub message: String,
}

impl RpcError {
    /// An error with `code` and `message`.
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
        }
    }

    /// `-32602 invalid params` naming the problem.
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(code::INVALID_PARAMS, message)
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (JSON-RPC error {})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

/// Method parameters: by name (object), by position (array), or none.
#[derive(Debug, Clone, PartialEq)]
pub enum Params {
    /// No `params` member, or `null`.
    None,
    /// Named parameters.
    Named(Map<String, Value>),
    /// Positional parameters (the 1.0 style).
    Positional(Vec<Value>),
}

impl Params {
    /// The parameter called `name`, or at `position` for positional calls; `null` counts as absent.
    pub fn get(&self, name: &str, position: usize) -> Option<&Value> {
        let v = match self {
            Params::None => None,
            Params::Named(m) => m.get(name),
            Params::Positional(a) => a.get(position),
        };
        v.filter(|v| !v.is_null())
    }

    /// A required string parameter.
    pub fn string(&self, name: &str, position: usize) -> Result<&str, RpcError> {
        match self.get(name, position) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(RpcError::invalid_params(format!(
                "{name} must be a string, got {}",
                kind(other)
            ))),
            None => Err(RpcError::invalid_params(format!(
                "missing parameter {name}"
            ))),
        }
    }

    /// An optional string parameter.
    pub fn opt_string(&self, name: &str, position: usize) -> Result<Option<&str>, RpcError> {
        match self.get(name, position) {
            None => Ok(None),
            Some(_) => self.string(name, position).map(Some),
        }
    }

    /// An optional port number (accepts a JSON number or a decimal string, as old clients sent).
    pub fn opt_port(&self, name: &str, position: usize) -> Result<Option<u16>, RpcError> {
        let bad = || RpcError::invalid_params(format!("{name} must be a port number 1-65535"));
        match self.get(name, position) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|p| (1..=65535).contains(p))
                .map(|p| Some(p as u16))
                .ok_or_else(bad),
            Some(Value::String(s)) => s
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .map(Some)
                .ok_or_else(bad),
            Some(_) => Err(bad()),
        }
    }

    /// An optional object parameter (absent → empty).
    pub fn object(&self, name: &str, position: usize) -> Result<Map<String, Value>, RpcError> {
        match self.get(name, position) {
            None => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(other) => Err(RpcError::invalid_params(format!(
                "{name} must be an object, got {}",
                kind(other)
            ))),
        }
    }
}

/// A short name of a JSON value's type, for error messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The caller's id, echoed in the answer (`null` for notifications).
    pub id: Value,
    /// Dialect of the request.
    pub version: Version,
    /// Method name.
    pub method: String,
    /// Parameters.
    pub params: Params,
}

/// A request that could not be decoded: what to answer, with whatever id could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest {
    /// The id, if one could be read.
    pub id: Value,
    /// The dialect, as far as it could be told.
    pub version: Version,
    /// The error to send.
    pub error: RpcError,
}

impl Request {
    /// Decodes a request body.
    pub fn parse(body: &[u8]) -> Result<Request, BadRequest> {
        let bad = |id: Value, version, code, msg: String| BadRequest {
            id,
            version,
            error: RpcError::new(code, msg),
        };
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            bad(
                Value::Null,
                Version::V2,
                code::PARSE_ERROR,
                format!("parse error: {e}"),
            )
        })?;
        let Value::Object(mut obj) = value else {
            let what = if value.is_array() {
                "batch requests are not supported"
            } else {
                "request must be a JSON object"
            };
            return Err(bad(
                Value::Null,
                Version::V2,
                code::INVALID_REQUEST,
                what.to_string(),
            ));
        };
        let id = obj.remove("id").unwrap_or(Value::Null);
        let version = match obj.get("jsonrpc") {
            None => Version::V1,
            Some(Value::String(s)) if s == "2.0" => Version::V2,
            Some(_) => {
                return Err(bad(
                    id,
                    Version::V2,
                    code::INVALID_REQUEST,
                    "jsonrpc must be \"2.0\"".into(),
                ));
            }
        };
        if !matches!(id, Value::Null | Value::String(_) | Value::Number(_)) {
            return Err(bad(
                Value::Null,
                version,
                code::INVALID_REQUEST,
                "id must be a string, a number or null".into(),
            ));
        }
        let method = match obj.remove("method") {
            Some(Value::String(m)) if !m.is_empty() => m,
            Some(_) => {
                return Err(bad(
                    id,
                    version,
                    code::INVALID_REQUEST,
                    "method must be a non-empty string".into(),
                ));
            }
            None => {
                return Err(bad(
                    id,
                    version,
                    code::INVALID_REQUEST,
                    "missing method".into(),
                ));
            }
        };
        let params = match obj.remove("params") {
            None | Some(Value::Null) => Params::None,
            Some(Value::Object(m)) => Params::Named(m),
            Some(Value::Array(a)) => Params::Positional(a),
            Some(_) => {
                return Err(bad(
                    id,
                    version,
                    code::INVALID_REQUEST,
                    "params must be an object or an array".into(),
                ));
            }
        };
        Ok(Request {
            id,
            version,
            method,
            params,
        })
    }

    /// Encodes a request (as the client sends it: JSON-RPC 2.0, named params).
    pub fn encode(id: u64, method: &str, params: Value) -> Vec<u8> {
        let body = object!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        serde_json::to_vec(&body).expect("a JSON value always serializes")
    }
}

/// The answer to a request with `result`.
pub fn answer(id: &Value, version: Version, result: Value) -> Value {
    match version {
        Version::V2 => object!({"jsonrpc": "2.0", "id": id, "result": result}),
        Version::V1 => object!({"id": id, "result": result, "error": Value::Null}),
    }
}

/// The answer to a request that failed at the protocol level.
pub fn answer_error(id: &Value, version: Version, error: &RpcError) -> Value {
    let err = object!({"code": error.code, "message": error.message});
    match version {
        Version::V2 => object!({"jsonrpc": "2.0", "id": id, "error": err}),
        Version::V1 => object!({"id": id, "result": Value::Null, "error": err}),
    }
}

/// The answer to a request refused for now, before it was read (so `id` is null): error
/// [`code::BUSY`] whose `data` marks it `temporaryError: true`, as application outcomes do, and
/// names the seconds to wait (`retryAfter`, also sent as the HTTP `Retry-After`).
pub fn answer_busy(message: &str, retry_after_secs: u64) -> Value {
    json!({"jsonrpc": "2.0", "id": null, "error": {
        "code": code::BUSY,
        "message": message,
        "data": {"temporaryError": true, "retryAfter": retry_after_secs},
    }})
}

/// Reads a response envelope: the `result`, or the `error` as an [`RpcError`].
pub fn parse_response(body: &[u8]) -> Result<Value, RpcError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| RpcError::new(code::PARSE_ERROR, format!("answer is not JSON: {e}")))?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let code = err
            .get("code")
            .and_then(Value::as_i64)
            .unwrap_or(code::INTERNAL_ERROR);
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("unknown error")
            .to_string();
        return Err(RpcError { code, message });
    }
    match v.get("result") {
        Some(r) => Ok(r.clone()),
        None => Err(RpcError::new(
            code::INVALID_REQUEST,
            "answer has neither result nor error",
        )),
    }
}

/// An application outcome that is not a success: `{"success": false, "errorMsg", "temporaryError"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// Always false.
    pub success: bool,
    /// What went wrong, naming the problem.
    pub error_msg: String,
    /// True when trying again later may succeed (gateway full, uplink down).
    pub temporary_error: bool,
}

impl Failure {
    /// A permanent failure.
    pub fn permanent(msg: impl Into<String>) -> Failure {
        Failure {
            success: false,
            error_msg: msg.into(),
            temporary_error: false,
        }
    }
    /// A temporary failure.
    pub fn temporary(msg: impl Into<String>) -> Failure {
        Failure {
            success: false,
            error_msg: msg.into(),
            temporary_error: true,
        }
    }
    /// As a JSON result value.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("plain struct serializes")
    }
}

/// Terms of access a gateway offers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Terms {
    /// Most subscribers served at once.
    pub max_subscribers: u32,
    /// Subscribers served now.
    pub subscribers: u32,
    /// Length of a lease; subscribers renew before it runs out.
    pub lease_seconds: u32,
    /// Price per lease period (0: free).
    pub price: u32,
    /// Advertised downstream bandwidth in kbit/s (0: unknown).
    pub bandwidth_down: u32,
    /// Advertised upstream bandwidth in kbit/s (0: unknown).
    pub bandwidth_up: u32,
}

/// The gateway's own view of its Internet uplink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Uplink {
    /// Whether the uplink works.
    pub healthy: bool,
    /// Seconds since it was last checked (absent: never checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_ago: Option<u64>,
    /// Addresses the gateway checks its uplink against and that answer; subscribers probe them
    /// through their tunnels (absent from older gateways; at most [`MAX_UPLINK_TARGETS`] are
    /// used, see [`sane_uplink_targets`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<IpAddr>,
}

/// Most uplink targets a gateway advertises and a subscriber takes.
pub const MAX_UPLINK_TARGETS: usize = 4;

/// The advertised uplink targets worth probing: unicast addresses only (no loopback, multicast,
/// unspecified, broadcast or link-local: those would test nothing or something on the wrong
/// side of the tunnel), without duplicates, at most [`MAX_UPLINK_TARGETS`].
pub fn sane_uplink_targets(list: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for a in list {
        let bad = a.is_loopback()
            || a.is_multicast()
            || a.is_unspecified()
            || match a {
                IpAddr::V4(v4) => v4.is_broadcast() || v4.is_link_local(),
                IpAddr::V6(v6) => v6.is_unicast_link_local(),
            };
        if !bad && !out.contains(a) {
            out.push(*a);
        }
        if out.len() == MAX_UPLINK_TARGETS {
            break;
        }
    }
    out
}

/// A gateway another node knows of (gossip).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GossipEntry {
    /// Mesh address of the gateway.
    pub address: String,
    /// Its RPC port.
    pub port: u16,
    /// Seconds since it was last seen.
    pub seen_ago: u64,
}

/// The answer to `nodeInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// Always true.
    pub success: bool,
    /// The node's name.
    pub name: String,
    /// mnigs version.
    pub version: String,
    /// Whether the node is a gateway accepting subscribers.
    pub gateway: bool,
    /// Tunnel methods offered, in the gateway's order of preference.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Terms of access.
    #[serde(default)]
    pub terms: Terms,
    /// Uplink health.
    #[serde(default)]
    pub uplink: Uplink,
    /// Gateways this node knows of.
    #[serde(default)]
    pub gateways: Vec<GossipEntry>,
    /// The node's own mesh addresses (a gateway's; at most [`MAX_ADDRESSES`]): two answers are
    /// one node when each lists the address the other answered at (`discovery::nodes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
}

/// Most addresses a node lists in `nodeInfo` (and a subscriber keeps from one answer).
pub const MAX_ADDRESSES: usize = 8;

/// `requestConnection(sid?, name, port, method, options)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionRequest {
    /// A session id the caller already holds (renewing a registration), if any.
    pub sid: Option<String>,
    /// The caller's node name.
    pub name: String,
    /// The caller's RPC port.
    pub port: Option<u16>,
    /// The tunnel method wanted.
    pub method: String,
    /// Method-specific options (e.g. WireGuard `publicKey`).
    pub options: Map<String, Value>,
}

impl ConnectionRequest {
    /// Reads the parameters of a `requestConnection` call (types only; values are validated by the gateway).
    pub fn from_params(p: &Params) -> Result<ConnectionRequest, RpcError> {
        Ok(ConnectionRequest {
            sid: p.opt_string("sid", 0)?.map(str::to_string),
            name: p.string("name", 1)?.to_string(),
            port: p.opt_port("port", 2)?,
            method: p.string("method", 3)?.to_string(),
            options: p.object("options", 4)?,
        })
    }

    /// As named parameters.
    pub fn to_params(&self) -> Value {
        let mut m = object!({"name": self.name, "method": self.method, "options": self.options});
        if let Some(sid) = &self.sid {
            json::set(&mut m, "sid", &sid);
        }
        if let Some(port) = self.port {
            json::set(&mut m, "port", &port);
        }
        m
    }
}

/// A successful `requestConnection` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// Always true.
    pub success: bool,
    /// Session id (32 hex digits: 128 bits from the OS CSPRNG).
    pub sid: String,
    /// Lease length in seconds.
    pub timeout: u32,
    /// Tunnel method granted.
    pub method: String,
    /// The subscriber's IPv4 address inside the tunnel.
    pub ipv4: String,
    /// Its prefix length.
    pub cidr4: u8,
    /// The gateway's IPv4 address inside the tunnel.
    pub ipv4gateway: String,
    /// The subscriber's IPv6 address, if the gateway has an IPv6 pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// Its prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr6: Option<u8>,
    /// The gateway's IPv6 address inside the tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6gateway: Option<String>,
    /// The gateway's working uplink targets (as in `nodeInfo.uplink.targets`), for the
    /// subscriber to probe through this tunnel; absent from older gateways.
    #[serde(
        default,
        rename = "uplinkTargets",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub uplink_targets: Vec<IpAddr>,
    /// Method-specific fields (WireGuard: `publicKey`, `endpoint`, `mtu`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The answer to `renewConnection`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewal {
    /// Always true.
    pub success: bool,
    /// Seconds until the lease ends.
    pub timeout: u32,
}

/// An application outcome: success with a typed body, or a [`Failure`].
pub fn outcome<T: for<'de> Deserialize<'de>>(v: Value) -> Result<Result<T, Failure>, RpcError> {
    let bad = |e: serde_json::Error| {
        RpcError::new(code::INVALID_REQUEST, format!("unexpected answer: {e}"))
    };
    match v.get("success") {
        Some(Value::Bool(true)) => serde_json::from_value(v).map(Ok).map_err(bad),
        Some(Value::Bool(false)) => serde_json::from_value(v).map(Err).map_err(bad),
        _ => Err(RpcError::new(
            code::INVALID_REQUEST,
            "answer has no boolean success member",
        )),
    }
}

// --- Who may call what (shared by the server, its guard and the client) -----------------

/// The header carrying the page token.
pub const TOKEN_HEADER: &str = "X-Mnigs-Token";

/// Methods other nodes call by address (the wire protocol between nodes).
pub const MESH_METHODS: &[&str] = &[
    "nodeInfo",
    "requestConnection",
    "renewConnection",
    "releaseConnection",
];

/// Local control methods that only read.
pub const READ_METHODS: &[&str] = &["status", "listGateways", "listSessions", "meshGraph"];

/// What a method does, as far as cross-site rules go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Called by other nodes by address.
    Mesh,
    /// Reads the node's state.
    Read,
    /// Changes something (and every method not known to be one of the others).
    Action,
}

/// The kind of `method`.
pub fn method_kind(method: &str) -> Kind {
    if MESH_METHODS.contains(&method) {
        Kind::Mesh
    } else if READ_METHODS.contains(&method) {
        Kind::Read
    } else {
        Kind::Action
    }
}

/// Who sent a request and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Source address (IPv4-mapped IPv6 addresses are turned back into IPv4).
    pub addr: IpAddr,
    /// The server address the caller wrote in its `Host` header, without port or brackets.
    pub host: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v2_named() {
        let r =
            Request::parse(br#"{"jsonrpc":"2.0","id":7,"method":"nodeInfo","params":{}}"#).unwrap();
        assert_eq!(r.version, Version::V2);
        assert_eq!(r.id, json!(7));
        assert_eq!(r.method, "nodeInfo");
        assert_eq!(r.params, Params::Named(Map::new()));
    }

    #[test]
    fn parses_v1_positional_request_connection() {
        let body = br#"{"id":"a","method":"requestConnection","params":[null,"node-2",65533,"wireguard",{"publicKey":"k"}]}"#;
        let r = Request::parse(body).unwrap();
        assert_eq!(r.version, Version::V1);
        let c = ConnectionRequest::from_params(&r.params).unwrap();
        assert_eq!(c.sid, None);
        assert_eq!(c.name, "node-2");
        assert_eq!(c.port, Some(65533));
        assert_eq!(c.method, "wireguard");
        assert_eq!(c.options["publicKey"], json!("k"));
    }

    #[test]
    fn round_trips_connection_request() {
        let c = ConnectionRequest {
            sid: Some("ab".into()),
            name: "n".into(),
            port: Some(1),
            method: "wireguard".into(),
            options: Map::new(),
        };
        let body = Request::encode(1, "requestConnection", c.to_params());
        let r = Request::parse(&body).unwrap();
        assert_eq!(ConnectionRequest::from_params(&r.params).unwrap(), c);
    }

    #[test]
    fn answers_in_the_requests_dialect() {
        let v1 = answer(&json!(1), Version::V1, json!({"success": true}));
        assert_eq!(
            v1,
            json!({"id": 1, "result": {"success": true}, "error": null})
        );
        assert!(v1.get("jsonrpc").is_none());
        let v2 = answer_error(
            &json!("x"),
            Version::V2,
            &RpcError::new(code::METHOD_NOT_FOUND, "no"),
        );
        assert_eq!(v2["jsonrpc"], "2.0");
        assert_eq!(v2["error"]["code"], -32601);
        assert_eq!(
            parse_response(&serde_json::to_vec(&v2).unwrap())
                .unwrap_err()
                .code,
            -32601
        );
        assert_eq!(
            parse_response(&serde_json::to_vec(&v1).unwrap()).unwrap()["success"],
            true
        );
    }

    #[test]
    fn rejects_malformed_requests_with_the_right_code() {
        let cases: &[(&[u8], i64)] = &[
            (b"not json", code::PARSE_ERROR),
            (b"", code::PARSE_ERROR),
            (b"[1,2]", code::INVALID_REQUEST),
            (b"42", code::INVALID_REQUEST),
            (br#"{"jsonrpc":"2.0","id":1}"#, code::INVALID_REQUEST),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":5}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"1.5","id":1,"method":"x"}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
                code::INVALID_REQUEST,
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"x","params":"s"}"#,
                code::INVALID_REQUEST,
            ),
        ];
        for (body, code) in cases {
            let e = Request::parse(body).unwrap_err();
            assert_eq!(e.error.code, *code, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn wrong_param_types_are_invalid_params() {
        let r = Request::parse(br#"{"jsonrpc":"2.0","id":1,"method":"requestConnection","params":{"name":5,"method":"wireguard"}}"#).unwrap();
        let e = ConnectionRequest::from_params(&r.params).unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);
        assert!(e.message.contains("name must be a string"), "{}", e.message);
        let r = Request::parse(br#"{"jsonrpc":"2.0","id":1,"method":"requestConnection","params":{"name":"a","method":"w","port":70000}}"#).unwrap();
        assert!(
            ConnectionRequest::from_params(&r.params)
                .unwrap_err()
                .message
                .contains("port")
        );
        let r = Request::parse(br#"{"jsonrpc":"2.0","id":1,"method":"requestConnection","params":{"name":"a","method":"w","options":[]}}"#).unwrap();
        assert!(
            ConnectionRequest::from_params(&r.params)
                .unwrap_err()
                .message
                .contains("options must be an object")
        );
    }

    #[test]
    fn grant_round_trip_keeps_method_fields() {
        let g = json!({"success": true, "sid": "00", "timeout": 300, "method": "wireguard", "ipv4": "100.127.0.2",
            "cidr4": 24, "ipv4gateway": "100.127.0.1", "publicKey": "K", "endpoint": "[fd77::3]:51820", "mtu": 1420});
        let parsed: Grant = outcome(g.clone()).unwrap().unwrap();
        assert_eq!(parsed.extra["publicKey"], "K");
        assert_eq!(parsed.ipv6, None);
        assert_eq!(serde_json::to_value(&parsed).unwrap(), g);
        let f: Result<Grant, Failure> = outcome(Failure::temporary("full").to_value()).unwrap();
        assert_eq!(f.unwrap_err(), Failure::temporary("full"));
        assert!(outcome::<Grant>(json!({"nothing": 1})).is_err());
    }

    #[test]
    fn node_info_uses_camel_case() {
        let n = NodeInfo {
            success: true,
            name: "gw".into(),
            version: "0.1.0".into(),
            gateway: true,
            methods: vec!["wireguard".into()],
            terms: Terms {
                max_subscribers: 10,
                lease_seconds: 300,
                ..Terms::default()
            },
            uplink: Uplink {
                healthy: true,
                checked_ago: None,
                targets: vec![],
            },
            gateways: vec![],
            addresses: vec![],
        };
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v["terms"]["maxSubscribers"], 10);
        assert_eq!(v["terms"]["leaseSeconds"], 300);
        assert_eq!(serde_json::from_value::<NodeInfo>(v).unwrap(), n);
    }

    #[test]
    fn uplink_targets_are_optional_both_ways() {
        // An older gateway's answers (no targets) still parse, and an answer without targets
        // looks as before (no new member).
        let old = json!({"success": true, "name": "g", "version": "0.1", "gateway": true,
                         "uplink": {"healthy": true, "checkedAgo": 3}});
        let n: NodeInfo = serde_json::from_value(old.clone()).unwrap();
        assert!(n.uplink.targets.is_empty());
        assert!(
            serde_json::to_value(&n).unwrap()["uplink"]
                .get("targets")
                .is_none()
        );
        let grant = json!({"success": true, "sid": "s", "timeout": 60, "method": "wireguard",
                           "ipv4": "100.127.0.2", "cidr4": 24, "ipv4gateway": "100.127.0.1"});
        let g: Grant = serde_json::from_value(grant).unwrap();
        assert!(g.uplink_targets.is_empty());
        assert!(
            serde_json::to_value(&g)
                .unwrap()
                .get("uplinkTargets")
                .is_none()
        );
        // A newer one's: the member names are part of the wire protocol.
        let mut g2 = g.clone();
        g2.uplink_targets = vec!["203.0.113.7".parse().unwrap()];
        let v = serde_json::to_value(&g2).unwrap();
        assert_eq!(v["uplinkTargets"], json!(["203.0.113.7"]));
        assert_eq!(serde_json::from_value::<Grant>(v).unwrap(), g2);
        let mut n2 = n.clone();
        n2.uplink.targets = vec!["2001:db8::1".parse().unwrap()];
        let v = serde_json::to_value(&n2).unwrap();
        assert_eq!(v["uplink"]["targets"], json!(["2001:db8::1"]));
        // An older subscriber ignores the new member (it lands among the method fields).
        assert!(g2.extra.is_empty());
    }

    #[test]
    fn sane_uplink_targets_drop_what_tests_nothing_and_cap() {
        let ips = |l: &[&str]| -> Vec<IpAddr> { l.iter().map(|s| s.parse().unwrap()).collect() };
        let bad = ips(&[
            "127.0.0.1",
            "::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "ff02::1",
            "255.255.255.255",
            "169.254.1.1",
            "fe80::1",
        ]);
        assert!(sane_uplink_targets(&bad).is_empty());
        let good = ips(&[
            "203.0.113.7",
            "203.0.113.7",
            "2001:db8::1",
            "1.1.1.1",
            "8.8.8.8",
            "9.9.9.9",
        ]);
        assert_eq!(
            sane_uplink_targets(&good),
            ips(&["203.0.113.7", "2001:db8::1", "1.1.1.1", "8.8.8.8"])
        );
    }
}
