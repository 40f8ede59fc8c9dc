//! Steering each QUIC packet to the endpoint that owns its connection.
//!
//! With `server.endpoints` > 1 the engine binds that many UDP sockets on
//! one address with `SO_REUSEPORT`, each with its own quinn endpoint. Left
//! to itself the kernel picks a socket by hashing the packet's addresses
//! and ports, so a viewer whose address or port changes mid-connection (a
//! phone moving from Wi-Fi to cellular, a NAT rebinding) would land on an
//! endpoint that does not know its connection, and be reset.
//!
//! So the endpoints route by connection ID instead, the way QUIC load
//! balancers do: every connection ID endpoint `i` of `n` issues has a
//! first byte equal to `i` modulo `n` ([`RoutedCids`]), and a classic BPF
//! program attached to the sockets' reuse-port group ([`attach`]) reads
//! that byte from the packet's destination connection ID and picks socket
//! `byte % n`. The sockets are bound in endpoint order, so socket `i` is
//! endpoint `i`. A client's first packets carry a connection ID the client
//! chose at random: they go to a random endpoint, which then hands out its
//! own IDs; from there on every packet of the connection, from whatever
//! address, reaches that endpoint.
//!
//! The byte says which of the node's endpoints holds a connection, and
//! nothing else: the rest of the ID is random, with a keyed check
//! ([`RoutedCids::validate`]) that lets an endpoint drop packets whose ID
//! it cannot have issued without looking them up.

use std::hash::{Hash, Hasher};

use quinn::{ConnectionId, ConnectionIdGenerator};

/// Length of the connection IDs the engine issues.
pub const CID_LEN: usize = 8;
/// Random bytes after the routing byte.
const NONCE_LEN: usize = 3;

/// Connection IDs for endpoint `index` of `count`: `[route | nonce (3) |
/// check (4)]`, where `route % count == index` and the rest of `route` is
/// random, and `check` is a keyed hash of the first four bytes.
#[derive(Debug, Clone)]
pub struct RoutedCids {
    index: u8,
    count: u8,
    key: u64,
}

impl RoutedCids {
    /// Endpoint `index` of `count` (at most 255 endpoints, as the routing
    /// byte is one byte); `key` is shared by the node's endpoints.
    pub fn new(index: u8, count: u8, key: u64) -> Self {
        let count = count.max(1);
        Self {
            index: index % count,
            count,
            key,
        }
    }

    /// The routing byte for `random`: `index` plus a random multiple of
    /// `count`, so every value below 256 that maps to this endpoint can
    /// come out (nearly uniformly: `256 / count` slots from 256 values).
    fn route(&self, random: u8) -> u8 {
        let slots = 256 / u16::from(self.count);
        let r = u16::from(random) % slots;
        // r * count + index < slots * count <= 256.
        u8::try_from(r * u16::from(self.count) + u16::from(self.index)).unwrap_or(self.index)
    }

    fn check(&self, head: &[u8]) -> [u8; CID_LEN - 1 - NONCE_LEN] {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.key.hash(&mut h);
        head.hash(&mut h);
        let b = h.finish().to_le_bytes();
        [b[0], b[1], b[2], b[3]]
    }

    /// A new ID from 4 random bytes (the generator's randomness, passed in
    /// so tests can enumerate it).
    pub fn cid_from(&self, random: [u8; 1 + NONCE_LEN]) -> [u8; CID_LEN] {
        let mut cid = [0u8; CID_LEN];
        cid[0] = self.route(random[0]);
        cid[1..=NONCE_LEN].copy_from_slice(&random[1..]);
        let check = self.check(&cid[..=NONCE_LEN]);
        cid[1 + NONCE_LEN..].copy_from_slice(&check);
        cid
    }

    /// Whether `cid` could have been issued by one of this node's
    /// endpoints (any of them: the check's key is shared). A packet whose
    /// ID passes but whose connection this endpoint does not hold (one that
    /// reached the wrong endpoint, where the kernel could not steer, or
    /// from before a restart) is answered with a stateless reset, so its
    /// client reconnects at once instead of waiting out the idle timeout;
    /// one that fails is dropped without an answer.
    pub fn is_ours(&self, cid: &[u8]) -> bool {
        cid.len() == CID_LEN && cid[1 + NONCE_LEN..] == self.check(&cid[..=NONCE_LEN])
    }

    /// The endpoint (of `count`) an ID routes to.
    pub fn endpoint_of(&self, cid: &[u8]) -> Option<u8> {
        cid.first().map(|b| b % self.count)
    }
}

impl ConnectionIdGenerator for RoutedCids {
    fn generate_cid(&mut self) -> ConnectionId {
        ConnectionId::new(&self.cid_from(rand::random()))
    }

    fn validate(&self, cid: &ConnectionId) -> Result<(), quinn_proto::InvalidCid> {
        if self.is_ours(cid) {
            Ok(())
        } else {
            Err(quinn_proto::InvalidCid)
        }
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

/// The socket a packet goes to among `count`, as the BPF program of
/// [`attach`] decides it (the same steps, for tests and documentation):
/// the first byte of the destination connection ID (offset 6 in a long
/// header, 1 in a short one) modulo `count`; a packet too short to hold it
/// goes to socket 0.
pub fn socket_for(packet: &[u8], count: u8) -> u8 {
    let count = count.max(1);
    let at = match packet.first() {
        Some(b) if b & 0x80 != 0 => 6,
        Some(_) => 1,
        None => return 0,
    };
    packet.get(at).map_or(0, |b| b % count)
}

/// The classic BPF program for a reuse-port group of `count` sockets:
/// returns [`socket_for`]'s index.
#[cfg(target_os = "linux")]
fn program(count: u8) -> [libc::sock_filter; 7] {
    use libc::{
        BPF_A, BPF_ABS, BPF_ALU, BPF_B, BPF_JA, BPF_JMP, BPF_JSET, BPF_K, BPF_LD, BPF_MOD, BPF_RET,
    };
    // Classic BPF opcodes (linux/filter.h); they all fit in the u16 field.
    let code = |bits: u32| u16::try_from(bits).unwrap_or(u16::MAX);
    let (ld_b_abs, jset_k, ja) = (
        code(BPF_LD | BPF_B | BPF_ABS),
        code(BPF_JMP | BPF_JSET | BPF_K),
        code(BPF_JMP | BPF_JA),
    );
    let (mod_k, ret_a) = (code(BPF_ALU | BPF_MOD | BPF_K), code(BPF_RET | BPF_A));
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    [
        // A = packet[0] (the offset is from the UDP payload).
        op(ld_b_abs, 0, 0, 0),
        // Long header (first bit set)? Next instruction; else skip 2.
        op(jset_k, 0, 2, 0x80),
        // Long: flags (1), version (4), DCID length (1), then the DCID.
        op(ld_b_abs, 0, 0, 6),
        op(ja, 0, 0, 1),
        // Short: flags (1), then the DCID.
        op(ld_b_abs, 0, 0, 1),
        op(mod_k, 0, 0, u32::from(count.max(1))),
        op(ret_a, 0, 0, 0),
    ]
}

/// Attach the steering program for `count` sockets to `socket`'s reuse-port
/// group. Call it after `bind` (a socket given a group before it binds
/// cannot join the port's group: `EADDRINUSE`); an error
/// means the kernel hashes addresses instead (the engine logs it and runs
/// on, with the caveat the module describes).
#[cfg(target_os = "linux")]
pub fn attach(socket: &std::net::UdpSocket, count: u8) -> std::io::Result<()> {
    let mut filter = program(count);
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    set_option(
        socket,
        libc::SOL_SOCKET,
        libc::SO_ATTACH_REUSEPORT_CBPF,
        &prog,
    )
}

/// Turn UDP receive offload (GRO) off on a steered socket. quinn turns it
/// on; with it the kernel may merge datagrams of one client address and
/// port before the steering program sees them, and deliver the batch by
/// its first datagram's connection ID. A client that runs several
/// connections over one socket (the loadgen does) would then have some of
/// its packets delivered to the wrong endpoint. Viewers send small, sparse
/// packets, so GRO merged little for them anyway.
#[cfg(target_os = "linux")]
pub fn no_gro(socket: &std::net::UdpSocket) -> std::io::Result<()> {
    set_option(socket, libc::SOL_UDP, libc::UDP_GRO, &0 as &libc::c_int)
}

/// `setsockopt(socket, level, name, value)`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn set_option<T>(
    socket: &std::net::UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` is a live reference for the whole call and `len` is
    // its size; the kernel copies what it needs during `setsockopt` (a BPF
    // program included) and keeps no pointer into this memory. The fd is
    // the socket's own, open while `socket` is borrowed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere there is no reuse-port program: sockets are picked by
/// address hash.
#[cfg(not(target_os = "linux"))]
pub fn attach(_socket: &std::net::UdpSocket, _count: u8) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "no SO_ATTACH_REUSEPORT_CBPF on this platform",
    ))
}

/// No steering elsewhere, so nothing to keep GRO from.
#[cfg(not(target_os = "linux"))]
pub fn no_gro(_socket: &std::net::UdpSocket) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_routes_to_its_endpoint_and_passes_its_check() {
        for count in 1..=9u8 {
            for index in 0..count {
                let g = RoutedCids::new(index, count, 0x5eed);
                let mut seen = std::collections::HashSet::new();
                for b in 0..=255u8 {
                    let cid = g.cid_from([b, b ^ 0x5a, 7, b.wrapping_mul(3)]);
                    assert_eq!(
                        cid[0] % count,
                        index,
                        "count {count} index {index} byte {b}"
                    );
                    assert!(g.is_ours(&cid));
                    seen.insert(cid[0]);
                    // What the kernel program picks for the packets that
                    // carry it, short and long header.
                    let mut short = vec![0x40];
                    short.extend_from_slice(&cid);
                    assert_eq!(socket_for(&short, count), index);
                    let mut long = vec![0xc0, 0, 0, 0, 1, CID_LEN as u8];
                    long.extend_from_slice(&cid);
                    assert_eq!(socket_for(&long, count), index);
                }
                // The routing byte keeps all the entropy the modulus leaves.
                assert_eq!(seen.len(), 256 / usize::from(count));
            }
        }
    }

    #[test]
    fn ids_of_another_node_or_altered_fail_the_check_and_the_nodes_endpoints_share_it() {
        let a = RoutedCids::new(0, 2, 1);
        let b = RoutedCids::new(1, 2, 1);
        let other_key = RoutedCids::new(0, 2, 2);
        let cid = a.cid_from([4, 5, 6, 7]);
        assert!(a.is_ours(&cid));
        // Endpoint b of the same node recognizes it (and answers a packet
        // that reached it by mistake with a stateless reset).
        assert!(b.is_ours(&cid));
        assert_eq!(b.endpoint_of(&cid), Some(0));
        assert!(!other_key.is_ours(&cid));
        for i in 0..CID_LEN {
            let mut bad = cid;
            bad[i] ^= 1;
            assert!(!a.is_ours(&bad), "byte {i} altered");
        }
        assert!(!a.is_ours(&cid[..CID_LEN - 1]));
    }

    #[test]
    fn short_or_empty_packets_go_to_socket_zero() {
        assert_eq!(socket_for(&[], 4), 0);
        assert_eq!(socket_for(&[0x40], 4), 0);
        assert_eq!(socket_for(&[0xc0, 0, 0, 0, 1, 8], 4), 0);
        assert_eq!(socket_for(&[0x40, 7], 4), 3);
    }
}
