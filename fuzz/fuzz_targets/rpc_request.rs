//! The JSON-RPC request decoder and the `requestConnection` parameter reader: any body decodes to
//! a request or a `BadRequest`, never a panic; a decoded request's answer serializes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnigs::protocol::{self, ConnectionRequest, Request};

fuzz_target!(|data: &[u8]| {
    match Request::parse(data) {
        Ok(req) => {
            let _ = ConnectionRequest::from_params(&req.params);
            let answer = protocol::answer(&req.id, req.version, serde_json::Value::Null);
            assert!(serde_json::to_vec(&answer).is_ok());
        }
        Err(bad) => {
            let answer = protocol::answer_error(&bad.id, bad.version, &bad.error);
            assert!(serde_json::to_vec(&answer).is_ok());
        }
    }
});
