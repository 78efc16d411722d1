//! The Yggdrasil admin-socket reader: bytes split at fuzzer-chosen points decode to values or an
//! error, never a panic or an endless loop; split or whole, the same values come out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnigs::discovery::yggdrasil::JsonStream;

fn drain(s: &mut JsonStream, out: &mut Vec<serde_json::Value>) -> bool {
    // Each value consumes at least one byte, so this ends; the bound guards against a regression.
    for _ in 0..100_000 {
        match s.next_value() {
            Ok(Some(v)) => out.push(v),
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
    panic!("next_value never ran out of values");
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(rest.len());
    let mut split = JsonStream::default();
    let mut from_split = Vec::new();
    split.push(&rest[..cut]);
    let mut ok = drain(&mut split, &mut from_split);
    if ok {
        split.push(&rest[cut..]);
        ok = drain(&mut split, &mut from_split);
    }
    let mut whole = JsonStream::default();
    let mut from_whole = Vec::new();
    whole.push(rest);
    let whole_ok = drain(&mut whole, &mut from_whole);
    if ok && whole_ok {
        assert_eq!(from_split, from_whole);
    }
});
