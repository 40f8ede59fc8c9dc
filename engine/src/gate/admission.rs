//! Who may start a handshake: the sans-IO admission decision of the accept
//! loop (no sockets, no clock; the gate calls it per incoming connection).
//!
//! Checked in order, before any TLS work:
//! 1. **Retry**: above `retry_above_handshakes` handshakes in progress, an
//!    address QUIC has not validated gets a Retry packet. A real client
//!    answers it (one round trip more); a spoofed source never sees it, so
//!    spoofed Initials cannot hold handshake slots.
//! 2. **Connection cap**: at `max_connections` the attempt is refused.
//! 3. **Per address**: at `max_connections_per_ip` connections or
//!    `max_handshakes_per_ip` handshakes in progress from its address, the
//!    attempt is refused.
//!
//! A refusal is QUIC's `CONNECTION_REFUSED`, sent without a handshake.
//!
//! "Address" is an IPv4 address, or an IPv6 /64: one subscriber usually
//! holds a whole /64, so counting single IPv6 addresses would let one
//! client rotate through 2^64 of them.

use std::collections::HashMap;
use std::net::IpAddr;

/// The limits, from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// `server.max_connections`.
    pub max_connections: usize,
    /// `server.max_connections_per_ip` (0 = no cap).
    pub max_connections_per_ip: usize,
    /// `server.max_handshakes_per_ip` (0 = no cap).
    pub max_handshakes_per_ip: usize,
    /// `server.retry_above_handshakes` (0 = always retry).
    pub retry_above_handshakes: usize,
}

/// Why an attempt was refused (the discriminant indexes [`Refusal::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Refusal {
    /// At `max_connections`.
    ServerFull = 0,
    /// Its address is at `max_connections_per_ip`.
    IpConnections = 1,
    /// Its address is at `max_handshakes_per_ip`.
    IpHandshakes = 2,
}

impl Refusal {
    /// Every refusal.
    pub const ALL: [Refusal; 3] = [
        Refusal::ServerFull,
        Refusal::IpConnections,
        Refusal::IpHandshakes,
    ];

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ServerFull => "server_full",
            Refusal::IpConnections => "ip_connections",
            Refusal::IpHandshakes => "ip_handshakes",
        }
    }
}

/// What to do with an incoming connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Start the handshake (the connection and its handshake are counted).
    Accept,
    /// Answer with a Retry packet (nothing counted).
    Retry,
    /// Refuse without a handshake (nothing counted).
    Refuse(Refusal),
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct IpUse {
    connections: usize,
    handshakes: usize,
}

/// Connections and handshakes in progress, in total and per address.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    per_ip: HashMap<IpAddr, IpUse>,
    open: usize,
    handshaking: usize,
}

impl Admission {
    /// Nothing admitted yet.
    pub fn new(limits: AdmissionLimits) -> Self {
        Admission {
            limits,
            per_ip: HashMap::new(),
            open: 0,
            handshaking: 0,
        }
    }

    /// The unit the per-address caps count: the IPv4 address (also when
    /// mapped into IPv6), or the IPv6 /64.
    pub fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
            },
        }
    }

    /// Decide on a connection attempt from `ip`. `validated`: QUIC has
    /// validated its address (it answered a Retry); `may_retry`: a Retry
    /// may still be sent to it.
    pub fn admit(&mut self, ip: IpAddr, validated: bool, may_retry: bool) -> Admit {
        let ip = Self::key(ip);
        if !validated && may_retry && self.handshaking >= self.limits.retry_above_handshakes {
            return Admit::Retry;
        }
        if self.open >= self.limits.max_connections {
            return Admit::Refuse(Refusal::ServerFull);
        }
        let u = self.per_ip.get(&ip).copied().unwrap_or_default();
        let cap = |limit: usize, n: usize| limit > 0 && n >= limit;
        if cap(self.limits.max_connections_per_ip, u.connections) {
            return Admit::Refuse(Refusal::IpConnections);
        }
        if cap(self.limits.max_handshakes_per_ip, u.handshakes) {
            return Admit::Refuse(Refusal::IpHandshakes);
        }
        let u = self.per_ip.entry(ip).or_default();
        u.connections += 1;
        u.handshakes += 1;
        self.open += 1;
        self.handshaking += 1;
        Admit::Accept
    }

    /// An accepted connection from `ip` finished its handshake (a valid
    /// `Hello`), or gave up on it.
    pub fn handshake_over(&mut self, ip: IpAddr) {
        let ip = Self::key(ip);
        if let Some(u) = self.per_ip.get_mut(&ip) {
            if u.handshakes > 0 {
                u.handshakes -= 1;
                self.handshaking = self.handshaking.saturating_sub(1);
            }
        }
    }

    /// An accepted connection from `ip` ended.
    pub fn closed(&mut self, ip: IpAddr) {
        let ip = Self::key(ip);
        if let Some(u) = self.per_ip.get_mut(&ip) {
            u.connections = u.connections.saturating_sub(1);
            self.open = self.open.saturating_sub(1);
            if u.connections == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open
    }

    /// Handshakes in progress now.
    pub fn handshaking(&self) -> usize {
        self.handshaking
    }

    /// Addresses with a connection open (memory is bounded by connections).
    pub fn addresses(&self) -> usize {
        self.per_ip.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            max_connections: 11,
            max_connections_per_ip: 4,
            max_handshakes_per_ip: 2,
            retry_above_handshakes: 6,
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn per_address_caps_then_retry_then_the_global_cap() {
        let mut a = Admission::new(limits());
        // Two handshakes per address at once.
        assert_eq!(a.admit(ip(1), false, true), Admit::Accept);
        assert_eq!(a.admit(ip(1), false, true), Admit::Accept);
        assert_eq!(
            a.admit(ip(1), false, true),
            Admit::Refuse(Refusal::IpHandshakes)
        );
        a.handshake_over(ip(1));
        a.handshake_over(ip(1));
        // Four connections per address.
        assert_eq!(a.admit(ip(1), false, true), Admit::Accept);
        assert_eq!(a.admit(ip(1), false, true), Admit::Accept);
        a.handshake_over(ip(1));
        a.handshake_over(ip(1));
        assert_eq!(
            a.admit(ip(1), false, true),
            Admit::Refuse(Refusal::IpConnections)
        );
        // 6 handshakes in progress: unvalidated addresses get a Retry,
        // validated ones go on.
        for n in 2..5 {
            assert_eq!(a.admit(ip(n), false, true), Admit::Accept);
            assert_eq!(a.admit(ip(n), false, true), Admit::Accept);
        }
        assert_eq!(a.handshaking(), 6);
        assert_eq!(a.admit(ip(9), false, true), Admit::Retry);
        assert_eq!(a.admit(ip(9), true, false), Admit::Accept);
        // 4 + 6 + 1 = 11 connections: the global cap is reached.
        assert_eq!(a.open(), 11);
        assert_eq!(
            a.admit(ip(8), true, false),
            Admit::Refuse(Refusal::ServerFull)
        );
        for _ in 0..4 {
            a.closed(ip(1));
        }
        assert_eq!(a.open(), 7);
        assert_eq!(a.addresses(), 4);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_address() {
        let mut a = Admission::new(limits());
        let v6 = |last: u16| IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, last]);
        assert_eq!(a.admit(v6(1), false, true), Admit::Accept);
        assert_eq!(a.admit(v6(2), false, true), Admit::Accept);
        assert_eq!(
            a.admit(v6(3), false, true),
            Admit::Refuse(Refusal::IpHandshakes)
        );
        // Another /64 is another address; a v4-mapped address is its v4.
        assert_eq!(
            a.admit(IpAddr::from([0x2001, 0xdb8, 1, 3, 0, 0, 0, 1]), false, true),
            Admit::Accept
        );
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Admission::key(mapped), ip(1));
        a.handshake_over(v6(7));
        a.closed(v6(9));
        assert_eq!((a.open(), a.handshaking()), (2, 2));
    }

    #[test]
    fn zero_means_no_per_address_cap() {
        let mut a = Admission::new(AdmissionLimits {
            max_connections: 1_000,
            max_connections_per_ip: 0,
            max_handshakes_per_ip: 0,
            retry_above_handshakes: 1_000,
        });
        for _ in 0..500 {
            assert_eq!(a.admit(ip(1), false, true), Admit::Accept);
        }
    }

    proptest::proptest! {
        /// Whatever the order of attempts, handshake ends and closes, no cap
        /// is ever exceeded and the counters return to zero.
        #[test]
        fn caps_hold_and_counters_balance(ops in proptest::collection::vec((0u8..4, 0u8..6), 0..400)) {
            let l = limits();
            let mut a = Admission::new(l);
            // Connections alive per address, and whether each still handshakes.
            let mut live: Vec<(u8, bool)> = Vec::new();
            for (op, who) in ops {
                match op {
                    0 | 1 => {
                        if a.admit(ip(who), op == 1, op == 0) == Admit::Accept {
                            live.push((who, true));
                        }
                    }
                    2 => {
                        if let Some(c) = live.iter_mut().find(|c| c.0 == who && c.1) {
                            c.1 = false;
                            a.handshake_over(ip(who));
                        }
                    }
                    _ => {
                        if let Some(i) = live.iter().position(|c| c.0 == who) {
                            let (w, hs) = live.remove(i);
                            if hs {
                                a.handshake_over(ip(w));
                            }
                            a.closed(ip(w));
                        }
                    }
                }
                proptest::prop_assert!(a.open() <= l.max_connections);
                proptest::prop_assert_eq!(a.open(), live.len());
                proptest::prop_assert_eq!(a.handshaking(), live.iter().filter(|c| c.1).count());
                for n in 0..6u8 {
                    let c = live.iter().filter(|c| c.0 == n).count();
                    let h = live.iter().filter(|c| c.0 == n && c.1).count();
                    proptest::prop_assert!(c <= l.max_connections_per_ip);
                    proptest::prop_assert!(h <= l.max_handshakes_per_ip);
                }
            }
            for (w, hs) in live.drain(..) {
                if hs {
                    a.handshake_over(ip(w));
                }
                a.closed(ip(w));
            }
            proptest::prop_assert_eq!((a.open(), a.handshaking(), a.addresses()), (0, 0, 0));
        }
    }
}
