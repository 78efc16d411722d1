//! The bencode decoder (cjdns admin answers): no panic, and whatever decodes re-encodes to bytes
//! that decode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnigs::cjdns::bencode;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = bencode::parse(data) {
        let again = bencode::parse(&v.emit()).expect("our own encoding decodes");
        assert_eq!(again, v);
    }
});
