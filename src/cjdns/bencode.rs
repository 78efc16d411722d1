//! Bencode, the encoding of cjdns' admin API: integers `i42e`, byte strings `4:spam`, lists
//! `l…e` and dictionaries `d…e` with keys in byte order.
//!
//! [`parse`] is strict about structure (no trailing bytes, bounded nesting, lengths within the
//! input) but accepts zero-padded string lengths, because cjdroute pads the FIRST key's length
//! to align its answers (`d0000005:error…`). [`Value::emit`] writes canonical bencode.

use std::collections::BTreeMap;
use std::fmt;

/// Deepest nesting accepted; cjdns answers nest three or four levels.
const MAX_DEPTH: usize = 32;

/// A bencoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `i…e`.
    Int(i64),
    /// `N:bytes`.
    Bytes(Vec<u8>),
    /// `l…e`.
    List(Vec<Value>),
    /// `d…e`; keys are byte strings, kept sorted.
    Dict(BTreeMap<Vec<u8>, Value>),
}

/// Why bytes are not bencode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Offset of the problem.
    pub at: usize,
    /// What is wrong there.
    pub why: &'static str,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad bencode at byte {}: {}", self.at, self.why)
    }
}

impl std::error::Error for Error {}

impl Value {
    /// A byte string from text.
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    /// A dictionary from `(key, value)` pairs.
    pub fn dict<'a>(pairs: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Dict(
            pairs
                .into_iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v))
                .collect(),
        )
    }

    /// The value under `key`, if this is a dictionary that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.get(key.as_bytes()),
            _ => None,
        }
    }

    /// The text of a byte string that is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The number of an integer.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The items of a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// Canonical bencode of this value.
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.emit_into(&mut out);
        out
    }

    fn emit_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(n) => out.extend_from_slice(format!("i{n}e").as_bytes()),
            Value::Bytes(b) => emit_bytes(b, out),
            Value::List(l) => {
                out.push(b'l');
                for v in l {
                    v.emit_into(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    emit_bytes(k, out);
                    v.emit_into(out);
                }
                out.push(b'e');
            }
        }
    }
}

fn emit_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

/// Parses exactly one value filling all of `input`.
pub fn parse(input: &[u8]) -> Result<Value, Error> {
    let mut p = Parser { input, pos: 0 };
    let v = p.value(0)?;
    if p.pos != input.len() {
        return Err(p.error("bytes after the value"));
    }
    Ok(v)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, why: &'static str) -> Error {
        Error { at: self.pos, why }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        match self.peek() {
            Some(b'i') => self.int(),
            Some(b'0'..=b'9') => self.bytes().map(Value::Bytes),
            Some(b'l') => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek() != Some(b'e') {
                    if self.peek().is_none() {
                        return Err(self.error("list not closed"));
                    }
                    items.push(self.value(depth + 1)?);
                }
                self.pos += 1;
                Ok(Value::List(items))
            }
            Some(b'd') => {
                self.pos += 1;
                let mut d = BTreeMap::new();
                while self.peek() != Some(b'e') {
                    match self.peek() {
                        None => return Err(self.error("dictionary not closed")),
                        Some(b'0'..=b'9') => {}
                        Some(_) => return Err(self.error("dictionary key is not a string")),
                    }
                    let k = self.bytes()?;
                    let v = self.value(depth + 1)?;
                    if d.insert(k, v).is_some() {
                        return Err(self.error("repeated dictionary key"));
                    }
                }
                self.pos += 1;
                Ok(Value::Dict(d))
            }
            Some(_) => Err(self.error("not a value")),
            None => Err(self.error("input ends early")),
        }
    }

    fn int(&mut self) -> Result<Value, Error> {
        self.pos += 1;
        let start = self.pos;
        while self.peek().is_some_and(|b| b == b'-' || b.is_ascii_digit()) {
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.input[start..self.pos]).unwrap_or("");
        let canonical =
            text == "0" || (!text.starts_with('0') && !text.starts_with("-0") && text != "-");
        let n = text
            .parse::<i64>()
            .ok()
            .filter(|_| canonical)
            .ok_or_else(|| self.error("bad integer"))?;
        if self.peek() != Some(b'e') {
            return Err(self.error("integer not closed"));
        }
        self.pos += 1;
        Ok(Value::Int(n))
    }

    /// `N:bytes`; N may carry leading zeros (cjdroute's alignment padding).
    fn bytes(&mut self) -> Result<Vec<u8>, Error> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        if self.pos - start > 12 {
            return Err(self.error("string length too long"));
        }
        let len: usize = std::str::from_utf8(&self.input[start..self.pos])
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| self.error("bad string length"))?;
        if self.peek() != Some(b':') {
            return Err(self.error("expected ':' after a string length"));
        }
        self.pos += 1;
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.input.len())
            .ok_or_else(|| self.error("string runs past the end"))?;
        let b = self.input[self.pos..end].to_vec();
        self.pos = end;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cjdroute_answers_with_padded_first_key() {
        let v = parse(b"d000001:q4:pong4:txid8:XPPRFPROe").unwrap();
        assert_eq!(v.get("q").and_then(Value::as_str), Some("pong"));
        assert_eq!(v.get("txid").and_then(Value::as_str), Some("XPPRFPRO"));
        let v = parse(b"d0000005:error12:Auth failed.4:txid2:t1e").unwrap();
        assert_eq!(v.get("error").and_then(Value::as_str), Some("Auth failed."));
        let v = parse(b"d5:peersl3:ab13:cd2e4:morei1e2:msi-3ee").unwrap();
        assert_eq!(
            v.get("peers").and_then(Value::as_list).map(<[_]>::len),
            Some(2)
        );
        assert_eq!(v.get("more").and_then(Value::as_int), Some(1));
        assert_eq!(v.get("ms").and_then(Value::as_int), Some(-3));
    }

    #[test]
    fn emits_canonical_bencode_and_round_trips() {
        let v = Value::dict([
            ("q", Value::str("auth")),
            ("args", Value::dict([("page", Value::Int(0))])),
            ("aq", Value::str("RouterModule_getPeers")),
            (
                "list",
                Value::List(vec![Value::Int(-7), Value::Bytes(vec![0, 255])]),
            ),
        ]);
        let raw = v.emit();
        assert_eq!(
            raw,
            b"d2:aq21:RouterModule_getPeers4:argsd4:pagei0ee4:listli-7e2:\x00\xffe1:q4:authe"
        );
        assert_eq!(parse(&raw).unwrap(), v);
    }

    #[test]
    fn rejects_malformed_input() {
        for bad in [
            &b""[..],
            b"i01e",
            b"i-0e",
            b"ie",
            b"i1",
            b"5:abc",
            b"3abc",
            b"l",
            b"d1:a",
            b"di1e1:ae",
            b"d1:ai1e1:ai2ee",
            b"i1ei2e",
            b"x",
            b"99999999999999:a",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{}{}", "l".repeat(40), "e".repeat(40));
        assert_eq!(parse(deep.as_bytes()).unwrap_err().why, "nested too deeply");
    }
}
