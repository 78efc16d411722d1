//! The RPC server's HTTP request reader on arbitrary bytes: a request or a refusal within the
//! limits, never a panic; a request read never carries more than the body limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnigs::protocol::MAX_BODY;
use mnigs::rpc::limits::Limits;
use mnigs::rpc::server::read_request;
use std::io::{Cursor, Read, Write};

struct Wire {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut wire = Wire {
        input: Cursor::new(data.to_vec()),
        output: Vec::new(),
    };
    let limits = Limits::default();
    if let Ok(req) = read_request(&mut wire, &limits, |_, _| Ok(())) {
        assert!(req.body.len() <= MAX_BODY);
    }
});
