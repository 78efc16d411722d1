//! The lease book: who holds a lease on this gateway, sans I/O.
//!
//! Every operation takes the current time and returns the [`Action`]s the caller must carry out
//! (configure or remove a subscriber's tunnel end); the book itself never touches the system, so
//! each rule is unit-tested here and only execution is tested end to end.

use crate::prefix::source_key;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// What names a subscriber to its tunnel method, as the caller supplies it: a second owner
/// presenting the same must not take over (or disturb) the first one's tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// What it is, for the refusal (`WireGuard public key`).
    pub what: &'static str,
    /// Its value as sent.
    pub value: String,
}

/// The identity in a request's method options, for the methods that have one (the ip tunnels
/// and plain routing know a subscriber by its address only).
pub fn identity_of(method: &str, options: &Map<String, Value>) -> Option<Identity> {
    let (what, field) = match method {
        "wireguard" => ("WireGuard public key", "publicKey"),
        // The certificate's subject is the gateway's choice (one per slot); what the caller
        // brings is its request, whose key is its own.
        "openvpn" => ("OpenVPN certificate request", "csr"),
        "cjdns" => ("cjdns key", crate::tunnel::cjdns::KEY_FIELD),
        _ => return None,
    };
    let value = options.get(field)?.as_str()?.trim().to_string();
    Some(Identity { what, value })
}

/// One subscriber's lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// Session id issued by the gateway.
    pub sid: String,
    /// The caller's source address: only it may renew or release.
    pub owner: IpAddr,
    /// The subscriber's node name.
    pub name: String,
    /// Tunnel method.
    pub method: String,
    /// Address-pool slot (0-based) assigned to this subscriber.
    pub slot: u32,
    /// Method-specific options the subscriber sent (e.g. its WireGuard public key).
    pub options: Map<String, Value>,
    /// Unix time of the grant.
    pub granted_at: i64,
    /// Unix time at which the lease ends unless renewed.
    pub expires_at: i64,
}

/// What the executor must do after a lease-book operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Configure this subscriber's tunnel end and NAT.
    Accept(Lease),
    /// Remove this subscriber's tunnel end and NAT.
    Remove(Lease),
}

/// Why a lease-book operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot is taken (temporary).
    Full,
    /// No live session has this sid.
    UnknownSession,
    /// The session belongs to another address.
    NotOwner,
    /// The key (certificate request...) is held by a live session of another address.
    IdentityInUse(&'static str),
    /// The caller's source (IPv4 address, IPv6 /64) already holds this many sessions.
    SourceFull(u32),
}

impl Refusal {
    /// The message sent to the caller.
    pub fn message(&self) -> String {
        match self {
            Refusal::Full => {
                "gateway is full: every subscriber slot is taken, try again later".into()
            }
            Refusal::UnknownSession => "unknown or expired session id".into(),
            Refusal::NotOwner => "session belongs to another address".into(),
            Refusal::IdentityInUse(what) => format!(
                "this {what} belongs to a live session of another subscriber; \
                 every subscriber must bring its own"
            ),
            Refusal::SourceFull(n) => format!(
                "your network already holds {n} session(s) on this gateway, the most one \
                 IPv4 address or IPv6 /64 may hold (max_sessions_per_source); try again later"
            ),
        }
    }

    /// Whether trying again later may succeed.
    pub fn temporary(&self) -> bool {
        matches!(self, Refusal::Full | Refusal::SourceFull(_))
    }
}

/// What a subscriber asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    /// The caller's source address.
    pub owner: IpAddr,
    /// A sid it already holds, if any.
    pub sid: Option<String>,
    /// Its node name.
    pub name: String,
    /// Tunnel method.
    pub method: String,
    /// Method-specific options.
    pub options: Map<String, Value>,
}

/// The leases of one gateway.
#[derive(Debug, Clone)]
pub struct LeaseBook {
    capacity: u32,
    lease_seconds: u32,
    /// Most leases one source ([`source_key`]) may hold.
    per_source: u32,
    /// Boxed: a map whose values are one pointer shares its code with the other maps of
    /// boxed values (the firewall's sessions, cjdns's admitted): smaller on a router.
    leases: BTreeMap<String, Box<Lease>>,
    /// When each slot was last freed: a freed address rests for a lease length (quarantine)
    /// before it is handed out again, unless no other slot is free.
    freed: BTreeMap<u32, i64>,
}

impl LeaseBook {
    /// An empty book with `capacity` slots and leases of `lease_seconds`.
    pub fn new(capacity: u32, lease_seconds: u32) -> LeaseBook {
        LeaseBook {
            capacity,
            lease_seconds,
            per_source: u32::MAX,
            leases: BTreeMap::new(),
            freed: BTreeMap::new(),
        }
    }

    /// Caps the leases one source (an IPv4 address, an IPv6 /64) may hold; live leases beyond a
    /// lowered cap stay until they end.
    pub fn set_per_source(&mut self, per_source: u32) {
        self.per_source = per_source.max(1);
    }

    /// Number of slots.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Lease length in seconds.
    pub fn lease_seconds(&self) -> u32 {
        self.lease_seconds
    }

    /// Live leases, by sid.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values().map(Box::as_ref)
    }

    /// Number of live leases.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether no lease is live.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// The lease with this sid.
    pub fn get(&self, sid: &str) -> Option<&Lease> {
        self.leases.get(sid).map(Box::as_ref)
    }

    /// Grants a lease, or returns the caller's live one (idempotent repeat).
    ///
    /// A repeat with the same method and options changes nothing but the expiry. A repeat with other
    /// options or another method replaces the old tunnel end (remove, then accept). `new_sid` is only
    /// called when a new session is made. A key (any [`identity_of`]) that another owner's lease
    /// holds is refused, and so is a new lease for a source holding `per_source` already.
    pub fn grant(
        &mut self,
        now: i64,
        ask: Ask,
        new_sid: impl FnOnce() -> String,
    ) -> Result<(Lease, Vec<Action>), Refusal> {
        let held = ask.sid.as_ref().and_then(|sid| self.leases.get(sid));
        if held.is_some_and(|l| l.owner != ask.owner) {
            return Err(Refusal::NotOwner);
        }
        if let Some(id) = identity_of(&ask.method, &ask.options) {
            // Expired leases not yet swept count too: their removal would take the key's
            // tunnel end away from the newcomer.
            let taken = self.leases.values().any(|l| {
                l.owner != ask.owner
                    && l.method == ask.method
                    && identity_of(&l.method, &l.options).is_some_and(|o| o.value == id.value)
            });
            if taken {
                return Err(Refusal::IdentityInUse(id.what));
            }
        }
        let expires_at = now + i64::from(self.lease_seconds);
        let mut live = self.leases.values_mut().map(Box::as_mut);
        if let Some(existing) = live.find(|l| l.owner == ask.owner) {
            existing.expires_at = expires_at;
            if existing.method == ask.method && existing.options == ask.options {
                existing.name = ask.name;
                return Ok((existing.clone(), vec![]));
            }
            let old = existing.clone();
            existing.method = ask.method;
            existing.options = ask.options;
            existing.name = ask.name;
            let new = existing.clone();
            return Ok((new.clone(), vec![Action::Remove(old), Action::Accept(new)]));
        }
        let source = source_key(ask.owner);
        let mine = self
            .leases
            .values()
            .filter(|l| source_key(l.owner) == source)
            .count();
        if mine >= self.per_source as usize {
            return Err(Refusal::SourceFull(self.per_source));
        }
        let slot = self.free_slot(now).ok_or(Refusal::Full)?;
        let lease = Lease {
            sid: new_sid(),
            owner: ask.owner,
            name: ask.name,
            method: ask.method,
            slot,
            options: ask.options,
            granted_at: now,
            expires_at,
        };
        self.leases
            .insert(lease.sid.clone(), Box::new(lease.clone()));
        Ok((lease.clone(), vec![Action::Accept(lease)]))
    }

    /// Extends a lease by a full period; returns the new expiry.
    pub fn renew(&mut self, now: i64, owner: IpAddr, sid: &str) -> Result<i64, Refusal> {
        let expires_at = now + i64::from(self.lease_seconds);
        let lease = self.owned_mut(now, owner, sid)?;
        lease.expires_at = expires_at;
        Ok(lease.expires_at)
    }

    /// Ends a lease at its owner's request.
    pub fn release(&mut self, now: i64, owner: IpAddr, sid: &str) -> Result<Vec<Action>, Refusal> {
        self.owned_mut(now, owner, sid)?;
        let lease = *self.leases.remove(sid).expect("checked above");
        self.freed.insert(lease.slot, now);
        Ok(vec![Action::Remove(lease)])
    }

    /// Ends a lease whatever its owner (undoing a grant whose execution failed; shutdown).
    /// Its slot is not quarantined: use [`LeaseBook::revoke_at`] when the lease was used.
    pub fn revoke(&mut self, sid: &str) -> Option<Action> {
        self.leases.remove(sid).map(|l| Action::Remove(*l))
    }

    /// Ends a lease whatever its owner, at `now`: its address rests in quarantine.
    pub fn revoke_at(&mut self, now: i64, sid: &str) -> Option<Action> {
        let lease = *self.leases.remove(sid)?;
        self.freed.insert(lease.slot, now);
        Some(Action::Remove(lease))
    }

    /// Ends every lease whose time is up.
    pub fn expire(&mut self, now: i64) -> Vec<Action> {
        let dead: Vec<String> = self
            .leases
            .values()
            .filter(|l| l.expires_at <= now)
            .map(|l| l.sid.clone())
            .collect();
        dead.into_iter()
            .filter_map(|sid| self.revoke_at(now, &sid))
            .collect()
    }

    /// When the next lease ends, if any.
    pub fn next_expiry(&self) -> Option<i64> {
        self.leases.values().map(|l| l.expires_at).min()
    }

    /// Changes the number of slots and the lease length of a running book (config reload).
    ///
    /// Live leases keep their expiry; the new length applies from their next renewal. A lease
    /// whose slot no longer exists is ended (returned as `Remove`), the same rule as
    /// [`LeaseBook::restore`] applies after a restart; every other lease stays as it is.
    pub fn retune(&mut self, capacity: u32, lease_seconds: u32) -> Vec<Action> {
        self.capacity = capacity;
        self.lease_seconds = lease_seconds;
        let gone: Vec<String> = self
            .leases
            .values()
            .filter(|l| l.slot >= capacity)
            .map(|l| l.sid.clone())
            .collect();
        gone.into_iter()
            .filter_map(|sid| self.revoke(&sid))
            .collect()
    }

    /// Takes back leases saved before a restart: live ones are kept and must be re-applied (returned
    /// as `Accept`), expired ones and ones that no longer fit (slot beyond capacity, duplicate owner
    /// or slot) are dropped and returned as `Remove` so their remains are cleaned up.
    pub fn restore(&mut self, now: i64, saved: Vec<Lease>) -> Vec<Action> {
        let mut actions = Vec::new();
        for lease in saved {
            let id = identity_of(&lease.method, &lease.options);
            let clash = self.leases.values().any(|l| {
                l.owner == lease.owner
                    || l.slot == lease.slot
                    || (l.method == lease.method
                        && id.is_some()
                        && identity_of(&l.method, &l.options) == id)
            });
            if lease.expires_at <= now
                || lease.slot >= self.capacity
                || clash
                || self.leases.contains_key(&lease.sid)
            {
                actions.push(Action::Remove(lease));
            } else {
                self.leases
                    .insert(lease.sid.clone(), Box::new(lease.clone()));
                actions.push(Action::Accept(lease));
            }
        }
        actions
    }

    fn owned_mut(&mut self, now: i64, owner: IpAddr, sid: &str) -> Result<&mut Lease, Refusal> {
        let lease = self
            .leases
            .get_mut(sid)
            .filter(|l| l.expires_at > now)
            .ok_or(Refusal::UnknownSession)?;
        if lease.owner != owner {
            return Err(Refusal::NotOwner);
        }
        Ok(lease)
    }

    /// The lowest free slot out of quarantine; if every free slot is in quarantine, the one
    /// freed longest ago (a full gateway still serves, the address just rested less).
    fn free_slot(&self, now: i64) -> Option<u32> {
        if self.leases.len() >= self.capacity as usize {
            return None;
        }
        let used: std::collections::BTreeSet<u32> = self.leases.values().map(|l| l.slot).collect();
        let rest = i64::from(self.lease_seconds);
        let free = (0..self.capacity).filter(|s| !used.contains(s));
        let resting = |s: &u32| self.freed.get(s).is_some_and(|t| now < t + rest);
        free.clone()
            .find(|s| !resting(s))
            .or_else(|| free.min_by_key(|s| (self.freed.get(s).copied(), *s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_aligned_to_8() {
        // The firewall's sessions and cjdns's admitted keys are aligned alike (their tests pin
        // 8), so that the three maps of boxed values share one copy of the map code.
        assert_eq!(std::mem::align_of::<Lease>(), 8);
    }
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ask(owner: &str) -> Ask {
        Ask {
            owner: ip(owner),
            sid: None,
            name: "n".into(),
            method: "wireguard".into(),
            options: Map::new(),
        }
    }

    fn sids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("sid{n}")
        }
    }

    #[test]
    fn retune_keeps_leases_that_still_fit() {
        let mut book = LeaseBook::new(3, 100);
        let mut next = sids();
        let (a, _) = book.grant(0, ask("10.0.0.1"), &mut next).unwrap();
        let (b, _) = book.grant(0, ask("10.0.0.2"), &mut next).unwrap();
        let (c, _) = book.grant(0, ask("10.0.0.3"), &mut next).unwrap();
        assert_eq!((a.slot, b.slot, c.slot), (0, 1, 2));
        let actions = book.retune(2, 30);
        assert_eq!(actions.len(), 1);
        assert!(matches!(&actions[0], Action::Remove(l) if l.sid == c.sid));
        assert_eq!(
            book.get(&a.sid).unwrap().expires_at,
            100,
            "expiry untouched"
        );
        assert_eq!(
            book.renew(10, ip("10.0.0.1"), &a.sid),
            Ok(40),
            "new length on renewal"
        );
        assert_eq!(
            book.grant(10, ask("10.0.0.4"), &mut next).unwrap_err(),
            Refusal::Full
        );
        assert!(book.retune(5, 30).is_empty(), "growing ends nothing");
        assert_eq!(
            book.grant(10, ask("10.0.0.4"), &mut next).unwrap().0.slot,
            2
        );
    }

    #[test]
    fn grants_and_assigns_distinct_slots() {
        let mut b = LeaseBook::new(3, 60);
        let mut s = sids();
        let (a, acts) = b.grant(100, ask("fd77::1"), &mut s).unwrap();
        assert_eq!(acts, vec![Action::Accept(a.clone())]);
        assert_eq!((a.slot, a.expires_at, a.granted_at), (0, 160, 100));
        let (c, _) = b.grant(100, ask("fd77::2"), &mut s).unwrap();
        assert_eq!(c.slot, 1);
        assert_ne!(a.sid, c.sid);
    }

    #[test]
    fn repeat_from_same_caller_is_idempotent() {
        let mut b = LeaseBook::new(3, 60);
        let mut s = sids();
        let (a, _) = b.grant(100, ask("fd77::1"), &mut s).unwrap();
        let (again, acts) = b.grant(110, ask("fd77::1"), &mut s).unwrap();
        assert!(acts.is_empty());
        assert_eq!(again.sid, a.sid);
        assert_eq!(again.expires_at, 170);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn repeat_with_new_key_replaces_the_tunnel_end() {
        let mut b = LeaseBook::new(3, 60);
        let mut s = sids();
        let (a, _) = b.grant(100, ask("fd77::1"), &mut s).unwrap();
        let mut second = ask("fd77::1");
        second.options.insert("publicKey".into(), json!("new"));
        let (n, acts) = b.grant(101, second, &mut s).unwrap();
        assert_eq!(n.sid, a.sid);
        assert_eq!(n.slot, a.slot);
        assert!(
            matches!(&acts[..], [Action::Remove(old), Action::Accept(new)] if old.options.is_empty() && new.options["publicKey"] == "new")
        );
    }

    #[test]
    fn full_is_temporary_and_frees_on_release() {
        let mut b = LeaseBook::new(1, 60);
        let mut s = sids();
        let (a, _) = b.grant(0, ask("fd77::1"), &mut s).unwrap();
        let e = b.grant(0, ask("fd77::2"), &mut s).unwrap_err();
        assert_eq!(e, Refusal::Full);
        assert!(e.temporary());
        assert_eq!(
            b.release(1, ip("fd77::1"), &a.sid).unwrap(),
            vec![Action::Remove(a)]
        );
        assert!(b.grant(2, ask("fd77::2"), &mut s).is_ok());
    }

    #[test]
    fn a_freed_address_rests_while_others_are_free() {
        let mut b = LeaseBook::new(3, 60);
        let mut s = sids();
        let (a, _) = b.grant(0, ask("fd77::1"), &mut s).unwrap();
        assert_eq!(a.slot, 0);
        b.release(10, ip("fd77::1"), &a.sid).unwrap();
        // The next caller does not get A's address while slots 1 and 2 are free.
        let (c, _) = b.grant(11, ask("fd77::2"), &mut s).unwrap();
        assert_eq!(c.slot, 1);
        let (d, _) = b.grant(12, ask("fd77::3"), &mut s).unwrap();
        assert_eq!(d.slot, 2);
        // Only slot 0 is left: a full gateway still serves, with the resting address.
        b.release(13, ip("fd77::2"), &c.sid).unwrap();
        let (e, _) = b.grant(14, ask("fd77::4"), &mut s).unwrap();
        assert_eq!(e.slot, 0, "freed longest ago");
        // After a lease length the rest is over and the lowest slot is used again.
        b.release(20, ip("fd77::3"), &d.sid).unwrap();
        let (f, _) = b.grant(80, ask("fd77::5"), &mut s).unwrap();
        assert_eq!(f.slot, 1);
    }

    #[test]
    fn an_expired_address_rests_too() {
        let mut b = LeaseBook::new(2, 60);
        let mut s = sids();
        let (a, _) = b.grant(0, ask("fd77::1"), &mut s).unwrap();
        assert_eq!(b.expire(60).len(), 1);
        assert_eq!(b.grant(61, ask("fd77::2"), &mut s).unwrap().0.slot, 1);
        assert_ne!(a.slot, 1);
    }

    #[test]
    fn only_the_owner_may_renew_or_release() {
        let mut b = LeaseBook::new(2, 60);
        let (a, _) = b.grant(0, ask("fd77::1"), sids()).unwrap();
        assert_eq!(b.renew(1, ip("fd77::9"), &a.sid), Err(Refusal::NotOwner));
        assert_eq!(b.release(1, ip("fd77::9"), &a.sid), Err(Refusal::NotOwner));
        assert_eq!(
            b.renew(1, ip("fd77::1"), "nope"),
            Err(Refusal::UnknownSession)
        );
        assert_eq!(b.renew(30, ip("fd77::1"), &a.sid), Ok(90));
        assert_eq!(b.len(), 1);
        // Naming someone else's sid in a request is refused too.
        let mut thief = ask("fd77::9");
        thief.sid = Some(a.sid.clone());
        assert_eq!(b.grant(31, thief, sids()).unwrap_err(), Refusal::NotOwner);
    }

    #[test]
    fn leases_expire_on_time_even_if_the_subscriber_vanished() {
        let mut b = LeaseBook::new(2, 60);
        let (a, _) = b.grant(0, ask("fd77::1"), sids()).unwrap();
        assert_eq!(b.next_expiry(), Some(60));
        assert!(b.expire(59).is_empty());
        assert_eq!(b.expire(60), vec![Action::Remove(a.clone())]);
        assert!(b.is_empty());
        assert_eq!(
            b.renew(61, ip("fd77::1"), &a.sid),
            Err(Refusal::UnknownSession)
        );
        assert_eq!(b.next_expiry(), None);
    }

    #[test]
    fn an_expired_but_not_yet_swept_lease_cannot_be_renewed() {
        let mut b = LeaseBook::new(2, 60);
        let (a, _) = b.grant(0, ask("fd77::1"), sids()).unwrap();
        assert_eq!(
            b.renew(60, ip("fd77::1"), &a.sid),
            Err(Refusal::UnknownSession)
        );
    }

    #[test]
    fn two_callers_racing_for_the_last_slot() {
        use std::sync::{Arc, Barrier, Mutex};
        let book = Arc::new(Mutex::new(LeaseBook::new(2, 60)));
        book.lock()
            .unwrap()
            .grant(0, ask("fd77::1"), || "first".into())
            .unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = ["fd77::2", "fd77::3"]
            .into_iter()
            .map(|who| {
                let (book, barrier) = (book.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    book.lock()
                        .unwrap()
                        .grant(0, ask(who), || format!("sid-{who}"))
                        .map(|(l, _)| l.slot)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert_eq!(
            results.iter().filter(|r| **r == Err(Refusal::Full)).count(),
            1
        );
        assert!(results.contains(&Ok(1)));
        assert_eq!(book.lock().unwrap().len(), 2);
    }

    #[test]
    fn restore_keeps_live_leases_and_drops_the_rest() {
        let mut b = LeaseBook::new(2, 60);
        let mk = |sid: &str, owner: &str, slot, exp| Lease {
            sid: sid.into(),
            owner: ip(owner),
            name: "n".into(),
            method: "wireguard".into(),
            slot,
            options: Map::new(),
            granted_at: 0,
            expires_at: exp,
        };
        let live = mk("a", "fd77::1", 0, 100);
        let dead = mk("b", "fd77::2", 1, 10);
        let too_far = mk("c", "fd77::3", 5, 100);
        let same_slot = mk("d", "fd77::4", 0, 100);
        let acts = b.restore(
            50,
            vec![
                live.clone(),
                dead.clone(),
                too_far.clone(),
                same_slot.clone(),
            ],
        );
        assert_eq!(
            acts,
            vec![
                Action::Accept(live),
                Action::Remove(dead),
                Action::Remove(too_far),
                Action::Remove(same_slot)
            ]
        );
        assert_eq!(b.len(), 1);
    }

    fn keyed(owner: &str, method: &str, field: &str, key: &str) -> Ask {
        let mut a = ask(owner);
        a.method = method.into();
        a.options.insert(field.into(), json!(key));
        a
    }

    #[test]
    fn another_owners_key_is_refused_and_the_holder_untouched() {
        let mut b = LeaseBook::new(5, 60);
        let mut s = sids();
        let (victim, _) = b
            .grant(0, keyed("fd77::1", "wireguard", "publicKey", "K"), &mut s)
            .unwrap();
        let before = b.clone();
        for (method, field, what) in [
            ("wireguard", "publicKey", "WireGuard public key"),
            ("openvpn", "csr", "OpenVPN certificate request"),
            ("cjdns", "key", "cjdns key"),
        ] {
            let mut b = LeaseBook::new(5, 60);
            let mut s = sids();
            b.grant(0, keyed("fd77::1", method, field, "K"), &mut s)
                .unwrap();
            // A new caller, and a caller that holds a lease of its own and re-keys to the victim's.
            b.grant(0, keyed("10.0.0.9", method, field, "mine"), &mut s)
                .unwrap();
            for thief in ["fd99::2", "10.0.0.9"] {
                let e = b
                    .grant(1, keyed(thief, method, field, " K\n"), &mut s)
                    .unwrap_err();
                assert_eq!(e, Refusal::IdentityInUse(what));
                assert!(!e.temporary(), "permanent");
                assert!(e.message().contains(what), "{}", e.message());
            }
        }
        let e = b
            .grant(1, keyed("fd99::2", "wireguard", "publicKey", "K"), &mut s)
            .unwrap_err();
        assert_eq!(e, Refusal::IdentityInUse("WireGuard public key"));
        assert_eq!(
            b.leases().collect::<Vec<_>>(),
            before.leases().collect::<Vec<_>>()
        );
        // The owner itself repeats and re-registers with its own key as before.
        let (again, acts) = b
            .grant(2, keyed("fd77::1", "wireguard", "publicKey", "K"), &mut s)
            .unwrap();
        assert_eq!((again.sid.as_str(), acts.len()), (victim.sid.as_str(), 0));
        // The same key under another method is another thing; after release it is free.
        assert!(
            b.grant(3, keyed("fd99::3", "gre", "publicKey", "K"), &mut s)
                .is_ok()
        );
        b.release(4, ip("fd77::1"), &victim.sid).unwrap();
        assert!(
            b.grant(5, keyed("fd99::2", "wireguard", "publicKey", "K"), &mut s)
                .is_ok()
        );
    }

    #[test]
    fn sessions_per_source_are_capped_per_ipv4_address_and_ipv6_64() {
        let mut b = LeaseBook::new(20, 60);
        b.set_per_source(2);
        let mut s = sids();
        assert!(b.grant(0, ask("fd77::1:1"), &mut s).is_ok());
        assert!(b.grant(0, ask("fd77::ffff:2"), &mut s).is_ok());
        let e = b.grant(0, ask("fd77::abcd:3"), &mut s).unwrap_err();
        assert_eq!(e, Refusal::SourceFull(2));
        assert!(e.temporary());
        assert!(e.message().contains("max_sessions_per_source"));
        assert!(
            b.grant(0, ask("fd77:0:0:1::3"), &mut s).is_ok(),
            "another /64"
        );
        // A repeat of a holder is no new session.
        assert!(b.grant(1, ask("fd77::1:1"), &mut s).is_ok());
        // IPv4: every address is its own source (and holds one lease anyway).
        for last in 1..=5 {
            assert!(b.grant(0, ask(&format!("10.0.0.{last}")), &mut s).is_ok());
        }
        let mut one = LeaseBook::new(5, 60);
        one.set_per_source(1);
        let (a, _) = one.grant(0, ask("fd77::1"), &mut s).unwrap();
        assert_eq!(
            one.grant(0, ask("fd77::2"), &mut s).unwrap_err(),
            Refusal::SourceFull(1)
        );
        one.release(1, ip("fd77::1"), &a.sid).unwrap();
        assert!(
            one.grant(2, ask("fd77::2"), &mut s).is_ok(),
            "freed by release"
        );
        assert_eq!(b.len(), 8);
    }

    #[test]
    fn restore_drops_a_second_holder_of_one_key() {
        let mut b = LeaseBook::new(4, 60);
        let mk = |sid: &str, owner: &str, slot| {
            let mut options = Map::new();
            options.insert("publicKey".into(), json!("K"));
            Lease {
                sid: sid.into(),
                owner: ip(owner),
                name: "n".into(),
                method: "wireguard".into(),
                slot,
                options,
                granted_at: 0,
                expires_at: 100,
            }
        };
        let acts = b.restore(1, vec![mk("a", "fd77::1", 0), mk("b", "fd99::1", 1)]);
        assert!(
            matches!(&acts[..], [Action::Accept(a), Action::Remove(r)] if a.sid == "a" && r.sid == "b")
        );
    }
}
