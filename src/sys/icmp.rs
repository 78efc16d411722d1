//! ICMP echo over a raw socket, optionally bound to one interface: the subscriber's probes
//! through its tunnel and the gateway's uplink check.
//!
//! A raw socket instead of spawning `ping` for every probe: probes run several times a second and
//! the RTT is measured without a process start in it. Needs CAP_NET_RAW (the daemon runs as root).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU16 = AtomicU16::new(1);

/// Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request (type 8 for IPv4, 128 for IPv6) with identifier `id` and sequence `seq`.
pub fn echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"mnigs-probe");
    if !v6 {
        // The kernel fills in the ICMPv6 checksum (it covers a pseudo-header); ICMPv4 is ours.
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// Whether `packet` (as a raw socket delivers it: with the IPv4 header, without an IPv6 one) is
/// the echo reply to `id`/`seq`.
pub fn is_reply(v6: bool, packet: &[u8], id: u16, seq: u16) -> bool {
    let icmp = if v6 {
        packet
    } else {
        let Some(first) = packet.first() else {
            return false;
        };
        let ihl = usize::from(first & 0x0f) * 4;
        match packet.get(ihl..) {
            Some(rest) => rest,
            None => return false,
        }
    };
    icmp.len() >= 8
        && icmp[0] == if v6 { 129 } else { 0 }
        && icmp[4..6] == id.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The TTL (IPv4) of a reply as a raw IPv4 socket delivers it (with its IP header).
pub fn ipv4_ttl(packet: &[u8]) -> Option<u8> {
    (packet.first()? >> 4 == 4).then(|| packet.get(8).copied())?
}

/// Hops to a host whose packet arrived with `ttl`: hosts start at 64 (Linux, BSD), 128
/// (Windows) or 255 (some routers), and every router on the way takes one off; the host next
/// to us is one hop away.
pub fn hops_from_ttl(ttl: u8) -> u32 {
    let start = [64u8, 128, 255]
        .into_iter()
        .find(|s| ttl <= *s)
        .unwrap_or(255);
    u32::from(start - ttl) + 1
}

/// An echo reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Round-trip time.
    pub rtt: Duration,
    /// The reply's TTL (IPv4) or hop limit (IPv6), if the kernel told it.
    pub ttl: Option<u8>,
}

/// Sends one echo request to `target` (out of `device` if given) and waits up to `timeout` for
/// the reply; returns the round-trip time.
pub fn echo(target: IpAddr, device: Option<&str>, timeout: Duration) -> io::Result<Duration> {
    echo_reply(target, device, timeout).map(|r| r.rtt)
}

/// [`echo`], with the TTL or hop limit the reply arrived with.
pub fn echo_reply(target: IpAddr, device: Option<&str>, timeout: Duration) -> io::Result<Reply> {
    let v6 = target.is_ipv6();
    let (domain, proto) = if v6 {
        (libc::AF_INET6, libc::IPPROTO_ICMPV6)
    } else {
        (libc::AF_INET, libc::IPPROTO_ICMP)
    };
    // SAFETY: plain socket(2); the descriptor is owned by `fd` from here on.
    let fd = unsafe {
        OwnedFd::from_raw_fd(check(libc::socket(
            domain,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            proto,
        ))?)
    };
    if let Some(dev) = device {
        // SAFETY: the option value is the interface name's bytes with their length.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                dev.as_ptr().cast(),
                dev.len() as libc::socklen_t,
            )
        })?;
    }
    if v6 {
        let on: libc::c_int = 1;
        // SAFETY: an int option with its size; the hop limit then comes as ancillary data.
        check(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_RECVHOPLIMIT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
    }
    let id = (std::process::id() as u16) ^ 0x6d6e;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let packet = echo_request(v6, id, seq);
    let addr = socket_addr(target);
    let started = Instant::now();
    // SAFETY: `addr` is a valid sockaddr of the given length; `packet` outlives the call.
    check(unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            0,
            addr.0.as_ptr().cast(),
            addr.1,
        ) as libc::c_int
    })?;
    let deadline = started + timeout;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no echo reply"));
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let ready = check(unsafe { libc::poll(&mut pfd, 1, ms) });
        match ready {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(0) => continue,
            Ok(_) => {}
        }
        // SAFETY: all-zero is valid for these plain-data structs.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: as above.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: `msg` points at `buf`, `from` and `control`, all valid for the lengths given.
        let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let packet = &buf[..n as usize];
        if from_ip(&from) == Some(target) && is_reply(v6, packet, id, seq) {
            let ttl = if v6 {
                hop_limit(&msg)
            } else {
                ipv4_ttl(packet)
            };
            return Ok(Reply {
                rtt: started.elapsed(),
                ttl,
            });
        }
    }
}

/// The IPV6_HOPLIMIT ancillary value of a received message.
fn hop_limit(msg: &libc::msghdr) -> Option<u8> {
    // SAFETY: the CMSG macros walk the control buffer `msg` describes, which recvmsg filled.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IPV6 && (*c).cmsg_type == libc::IPV6_HOPLIMIT {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

fn socket_addr(ip: IpAddr) -> (Vec<u8>, libc::socklen_t) {
    match ip {
        IpAddr::V4(v4) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.octets()),
                },
                sin_zero: [0; 8],
            };
            (
                struct_bytes(&sa),
                std::mem::size_of_val(&sa) as libc::socklen_t,
            )
        }
        IpAddr::V6(v6) => {
            // SAFETY: sockaddr_in6 is plain data; all-zero is valid.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sa.sin6_addr.s6_addr = v6.octets();
            (
                struct_bytes(&sa),
                std::mem::size_of_val(&sa) as libc::socklen_t,
            )
        }
    }
}

fn struct_bytes<T>(v: &T) -> Vec<u8> {
    // SAFETY: reading the bytes of a plain-data C struct.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

fn from_ip(sa: &libc::sockaddr_storage) -> Option<IpAddr> {
    match i32::from(sa.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin =
                unsafe { &*(sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6 =
                unsafe { &*(sa as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(IpAddr::from(sin6.sin6_addr.s6_addr))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_request_verifies_to_zero() {
        let p = echo_request(false, 0x1234, 7);
        assert_eq!(checksum(&p), 0);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
        assert_eq!(echo_request(true, 1, 1)[0], 128);
    }

    #[test]
    fn replies_are_matched_by_type_id_and_seq() {
        let mut ip = vec![0x45u8; 1];
        ip.extend_from_slice(&[0; 19]);
        let mut reply = ip.clone();
        reply.extend_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert!(is_reply(false, &reply, 0x1234, 7));
        assert!(!is_reply(false, &reply, 0x1234, 8));
        let mut request = ip;
        request.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 7]);
        assert!(!is_reply(false, &request, 0x1234, 7));
        assert!(is_reply(true, &[129, 0, 0, 0, 0, 1, 0, 2], 1, 2));
        assert!(!is_reply(false, &[0x4f], 1, 2));
    }

    #[test]
    fn hops_count_the_routers_a_reply_crossed() {
        assert_eq!(
            hops_from_ttl(64),
            1,
            "a neighbour's reply arrives untouched"
        );
        assert_eq!(hops_from_ttl(62), 3);
        assert_eq!(hops_from_ttl(127), 2, "a host starting at 128");
        assert_eq!(hops_from_ttl(250), 6, "a router starting at 255");
        assert_eq!(hops_from_ttl(1), 64);
    }

    #[test]
    fn the_ttl_is_read_from_an_ipv4_header_only() {
        let mut p = vec![0x45u8, 0, 0, 28, 0, 0, 0, 0, 61, 1];
        p.extend_from_slice(&[0; 18]);
        assert_eq!(ipv4_ttl(&p), Some(61));
        p[0] = 0x60;
        assert_eq!(ipv4_ttl(&p), None);
        assert_eq!(ipv4_ttl(&[0x45, 0, 0]), None);
    }

    #[test]
    fn loopback_echo_when_root() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let rtt = echo("127.0.0.1".parse().unwrap(), None, Duration::from_secs(1));
        assert!(rtt.is_ok(), "{rtt:?}");
        for local in ["127.0.0.1", "::1"] {
            let r = echo_reply(local.parse().unwrap(), None, Duration::from_secs(1));
            // Our own reply leaves and arrives without crossing a router.
            assert_eq!(
                r.map(|r| r.ttl.map(hops_from_ttl)).ok(),
                Some(Some(1)),
                "{local}"
            );
        }
    }
}
