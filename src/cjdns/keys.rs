//! cjdns keys, addresses and path labels (pure): a node's key (`<52 base32 chars>.k`), the
//! fc00::/8 address derived from it, and the labels and `v<ver>.<label>.<key>.k` node addresses
//! the admin API speaks.

use super::sha2::sha512;
use std::net::Ipv6Addr;

/// cjdns' base32 alphabet (not RFC 4648), least significant bits first.
const ALPHABET: &[u8; 32] = b"0123456789bcdfghjklmnpqrstuvwxyz";

/// The 32 key bytes of `name` (`<52 base32 chars>.k`, the `.k` optional).
pub fn key_bytes(name: &str) -> Result<[u8; 32], String> {
    let text = name.strip_suffix(".k").unwrap_or(name);
    if text.len() != 52 {
        return Err(format!(
            "cjdns key must be 52 characters, got {}",
            text.len()
        ));
    }
    let mut out = [0u8; 32];
    let (mut acc, mut bits, mut n) = (0u32, 0u32, 0usize);
    for c in text.bytes() {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .ok_or_else(|| format!("'{}' is not a cjdns base32 character", c as char))?;
        acc |= (v as u32) << bits;
        bits += 5;
        if bits >= 8 {
            if n == 32 {
                return Err("cjdns key too long".into());
            }
            out[n] = acc as u8;
            n += 1;
            acc >>= 8;
            bits -= 8;
        }
    }
    if n != 32 || acc != 0 {
        return Err("cjdns key has trailing bits".into());
    }
    Ok(out)
}

/// The text form (`….k`) of 32 key bytes.
pub fn encode_key(key: &[u8; 32]) -> String {
    let mut out = String::with_capacity(54);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in key {
        acc |= u32::from(*b) << bits;
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[(acc & 31) as usize] as char);
            acc >>= 5;
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[(acc & 31) as usize] as char);
    }
    out.push_str(".k");
    out
}

/// A node's IPv6 address: the first 16 bytes of sha512(sha512(key)); a key whose address does
/// not start with 0xfc is not a valid cjdns key.
pub fn address_of(key: &[u8; 32]) -> Result<Ipv6Addr, String> {
    let h = sha512(&sha512(key));
    let mut a = [0u8; 16];
    a.copy_from_slice(&h[..16]);
    if a[0] != 0xfc {
        return Err("key does not give an fc00::/8 address".into());
    }
    Ok(Ipv6Addr::from(a))
}

fn bit_len(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// The path from us to `child` (a label relative to the node at `parent` from us), or `None`
/// if it would not fit in 64 bits: `((child ^ 1) << (bits(parent) − 1)) ^ parent`.
pub fn splice(parent: u64, child: u64) -> Option<u64> {
    let shift = bit_len(parent).checked_sub(1)?;
    if child == 0 || bit_len(child ^ 1) + shift > 64 {
        return None;
    }
    Some(((child ^ 1) << shift) ^ parent)
}

/// A label as cjdns writes it: `0000.0000.0000.0013`.
pub fn format_label(label: u64) -> String {
    let h = format!("{label:016x}");
    format!("{}.{}.{}.{}", &h[0..4], &h[4..8], &h[8..12], &h[12..16])
}

/// A node address as the admin API writes it: `v22.0000.0000.0000.0013.<key>.k`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    /// Protocol version.
    pub version: u32,
    /// Path label (relative to whoever answered).
    pub label: u64,
    /// Key text, with `.k`.
    pub key: String,
}

impl PeerAddr {
    /// Parses `v<ver>.<4×4 hex>.<key>.k`.
    pub fn parse(s: &str) -> Result<PeerAddr, String> {
        let bad = || format!("not a cjdns node address: {}", crate::validate::quoted(s));
        let parts: Vec<&str> = s.split('.').collect();
        let [v, a, b, c, d, key, k] = parts[..] else {
            return Err(bad());
        };
        let version = v
            .strip_prefix('v')
            .and_then(|n| n.parse().ok())
            .ok_or_else(bad)?;
        if [a, b, c, d].iter().any(|g| g.len() != 4) || k != "k" {
            return Err(bad());
        }
        let label = u64::from_str_radix(&format!("{a}{b}{c}{d}"), 16).map_err(|_| bad())?;
        key_bytes(key)?;
        Ok(PeerAddr {
            version,
            label,
            key: format!("{key}.k"),
        })
    }

    /// The text form.
    pub fn render(&self) -> String {
        let key = self.key.strip_suffix(".k").unwrap_or(&self.key);
        format!("v{}.{}.{key}.k", self.version, format_label(self.label))
    }
}

/// Checks a cjdns key (`<52 cjdns-base32 chars>.k` of a valid fc00::/8 node) and returns its
/// address.
pub fn check_key(key: &str) -> Result<Ipv6Addr, String> {
    let quoted = || crate::validate::quoted(key);
    if !key.ends_with(".k") || key.len() != 54 {
        return Err(format!(
            "cjdns key must be 52 base32 characters and '.k', got {}",
            quoted()
        ));
    }
    let bytes = key_bytes(key).map_err(|e| format!("{e}: {}", quoted()))?;
    address_of(&bytes).map_err(|e| format!("{e}: {}", quoted()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Key/address pairs published in cjdroute.conf examples.
    pub(crate) const PAIRS: &[(&str, &str)] = &[
        (
            "u2jf87mgqlxfzdnywp60z3tx6tkulvgh2nyc2jk1zc69zzt2s8u0.k",
            "fcff:a215:1e7b:a4e9:c00d:813:93b3:7c87",
        ),
        (
            "hukfzjh5n30m10303bkhjg1wvuft90s0cqqg5jrjgg781dbly2z0.k",
            "fccf:4352:ac9:7d1f:b32b:ba08:f086:8432",
        ),
        (
            "kmzm4w0kj9bswd5qmx74nu7kusv5pj40vcsmp781j6xxgpd59z00.k",
            "fc41:94b5:925:7ba9:3959:11ab:a006:367a",
        ),
    ];

    #[test]
    fn addresses_from_keys() {
        for (key, addr) in PAIRS {
            let k = key_bytes(key).unwrap();
            assert_eq!(address_of(&k).unwrap().to_string(), *addr, "{key}");
            assert_eq!(encode_key(&k), *key);
        }
        assert!(key_bytes("u2jf87").is_err());
        assert!(key_bytes("a2jf87mgqlxfzdnywp60z3tx6tkulvgh2nyc2jk1zc69zzt2s8u0.k").is_err());
        // 52 × 5 = 260 bits: the last 4 must be zero.
        assert!(key_bytes("u2jf87mgqlxfzdnywp60z3tx6tkulvgh2nyc2jk1zc69zzt2s8uz.k").is_err());
    }

    #[test]
    fn labels_splice_and_render() {
        assert_eq!(splice(0x13, 0x15), Some(0x153));
        assert_eq!(splice(1, 0x15), Some(0x15));
        assert_eq!(splice(0x13, 1), Some(0x13));
        assert_eq!(splice(1 << 62, 0x15), None);
        assert_eq!(splice(0, 0x15), None);
        assert_eq!(format_label(0x153), "0000.0000.0000.0153");
        let a = PeerAddr::parse(&format!("v22.0000.0000.0000.0153.{}", PAIRS[0].0)).unwrap();
        assert_eq!((a.version, a.label), (22, 0x153));
        assert_eq!(
            a.render(),
            format!("v22.0000.0000.0000.0153.{}", PAIRS[0].0)
        );
        assert!(PeerAddr::parse("v22.0000.0000.0153.x.k").is_err());
        assert!(PeerAddr::parse(&format!("22.0000.0000.0000.0153.{}", PAIRS[0].0)).is_err());
    }
}
