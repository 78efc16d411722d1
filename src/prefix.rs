//! [`Prefix`]: an IPv4 or IPv6 prefix such as `100.127.0.0/24`.
//!
//! A leaf: the config's pools, the firewall's rules, gossip and the subscriber's trust checks all
//! share this type, and it depends on nothing in the crate. Parsing a prefix from text, with every
//! check, is [`crate::validate::prefix`] (also reached through `str::parse`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 prefix such as `100.127.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// Network address (host bits are zero after validation).
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

impl Prefix {
    /// Address width in bits: 32 or 128.
    fn width(&self) -> u32 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// Number of host bits; 0 if `len` is longer than the address (a hand-built, invalid prefix).
    fn host_bits(&self) -> u32 {
        self.width().saturating_sub(u32::from(self.len))
    }

    /// True for an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// The network address: `addr` with the host bits cleared.
    pub fn network(&self) -> IpAddr {
        let hb = self.host_bits();
        let net = bits(self.addr)
            .checked_shr(hb)
            .unwrap_or(0)
            .checked_shl(hb)
            .unwrap_or(0);
        from_bits(self.is_ipv4(), net)
    }

    /// True if `ip` is of the same family and inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let hb = self.host_bits();
        ip.is_ipv4() == self.is_ipv4()
            && bits(ip).checked_shr(hb).unwrap_or(0) == bits(self.addr).checked_shr(hb).unwrap_or(0)
    }

    /// How many addresses the prefix holds (`2^(width - len)`), including the network and
    /// broadcast addresses. `::/0` holds 2^128, which saturates to `u128::MAX`.
    pub fn host_count(&self) -> u128 {
        1u128.checked_shl(self.host_bits()).unwrap_or(u128::MAX)
    }

    /// The network address plus `n`, or `None` if that is outside the prefix.
    /// `nth_host(0)` is the network address itself.
    pub fn nth_host(&self, n: u128) -> Option<IpAddr> {
        let hb = self.host_bits();
        if hb < 128 && n >= 1u128 << hb {
            return None;
        }
        let net = bits(self.network());
        Some(from_bits(self.is_ipv4(), net + n))
    }
}

/// An address as an integer (IPv4 in the low 32 bits).
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The inverse of [`bits`]; for IPv4 only the low 32 bits are used.
fn from_bits(v4: bool, x: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(x as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(x))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The address a limit counts against: IPv4 addresses as they are, IPv6 addresses by their /64
/// (one host usually owns a whole /64, so changing the low bits must not buy a fresh budget).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// Whether `a` can name no node beyond this one link or host: unspecified, loopback, multicast
/// or link-local.
pub fn is_special(a: IpAddr) -> bool {
    a.is_unspecified() || a.is_loopback() || a.is_multicast() || is_link_local(a)
}

/// Whether `a` is link-local (169.254.0.0/16, fe80::/10): meaningless beyond one link.
pub fn is_link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => v.segments()[0] & 0xffc0 == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pfx(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_helpers() {
        let p = pfx("100.127.0.0/24");
        assert_eq!(p.to_string(), "100.127.0.0/24");
        assert_eq!(p.host_count(), 256);
        assert_eq!(p.nth_host(0), Some(IpAddr::from([100, 127, 0, 0])));
        assert_eq!(p.nth_host(1), Some(IpAddr::from([100, 127, 0, 1])));
        assert_eq!(p.nth_host(255), Some(IpAddr::from([100, 127, 0, 255])));
        assert_eq!(p.nth_host(256), None);
        assert!(p.contains(IpAddr::from([100, 127, 0, 77])));
        assert!(!p.contains(IpAddr::from([100, 127, 1, 0])));
        assert!(!p.contains("::ffff:100.127.0.1".parse().unwrap()));
        assert_eq!(p.network(), p.addr);

        let v6 = pfx("fd7e:7e7e::/64");
        assert_eq!(v6.to_string(), "fd7e:7e7e::/64");
        assert_eq!(v6.host_count(), 1 << 64);
        assert_eq!(
            v6.nth_host(0x1234),
            Some("fd7e:7e7e::1234".parse().unwrap())
        );
        assert_eq!(v6.nth_host(1 << 64), None);
        assert!(v6.contains("fd7e:7e7e::ffff:1".parse().unwrap()));
        assert!(!v6.contains("fd7e:7e7f::1".parse().unwrap()));
        assert!(!v6.contains(IpAddr::from([10, 0, 0, 1])));

        let all4 = pfx("0.0.0.0/0");
        assert_eq!(all4.host_count(), 1 << 32);
        assert_eq!(
            all4.nth_host(u128::from(u32::MAX)),
            Some(IpAddr::from([255, 255, 255, 255]))
        );
        assert_eq!(all4.nth_host(1 << 32), None);
        assert!(all4.contains(IpAddr::from([8, 8, 8, 8])));

        let all6 = pfx("::/0");
        assert_eq!(all6.host_count(), u128::MAX);
        assert_eq!(
            all6.nth_host(u128::MAX),
            Some(IpAddr::V6(Ipv6Addr::from(u128::MAX)))
        );
        assert!(all6.contains("2001:db8::1".parse().unwrap()));

        let host = pfx("10.1.2.3/32");
        assert_eq!(
            (host.host_count(), host.nth_host(0), host.nth_host(1)),
            (1, Some(host.addr), None)
        );
        assert!(host.contains(host.addr));
        assert!(!host.contains(IpAddr::from([10, 1, 2, 4])));

        // A hand-built prefix with host bits set still answers by its network.
        let sloppy = Prefix {
            addr: IpAddr::from([10, 1, 2, 3]),
            len: 24,
        };
        assert_eq!(sloppy.network(), IpAddr::from([10, 1, 2, 0]));
        assert_eq!(sloppy.nth_host(5), Some(IpAddr::from([10, 1, 2, 5])));
        assert!(sloppy.contains(IpAddr::from([10, 1, 2, 200])));
        // An impossible length is treated as a host route rather than panicking.
        let bogus = Prefix {
            addr: IpAddr::from([10, 1, 2, 3]),
            len: 40,
        };
        assert_eq!((bogus.host_count(), bogus.nth_host(1)), (1, None));
    }
}
