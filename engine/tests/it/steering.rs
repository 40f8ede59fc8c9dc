//! Several QUIC endpoints on one port (`server.endpoints`): the kernel
//! sends each packet to the endpoint whose connection ID it carries
//! (`roomgate::gate::steer`), so a viewer whose address changes keeps its
//! session.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use roomgate::engine::Engine;
use roomgate::gate::steer;
use roomgate::wire::{ClientFrame, ServerFrame};

use crate::client::Viewer;
use crate::harness;

/// Bind `n` reuse-port sockets on one loopback port, in order, each with
/// the steering program, as the engine does.
fn group(n: u8) -> Vec<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&addr.into()).unwrap();
        let s: UdpSocket = s.into();
        steer::attach(&s, n).expect("the steering program attaches on Linux");
        addr = s.local_addr().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        out.push(s);
    }
    out
}

/// Crafted datagrams from many source ports land on the socket the first
/// byte of their destination connection ID names, whatever the source:
/// the kernel runs the program `steer::socket_for` documents. Datagrams too
/// short to hold that byte go to socket 0.
#[test]
fn the_kernel_steers_datagrams_by_connection_id_not_by_address() {
    const N: u8 = 3;
    let servers = group(N);
    let to = servers[0].local_addr().unwrap();
    let mut sent = 0;
    for c in 0..12u8 {
        // A new source port per round: the address hash would spread these.
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        for route in [c, c + 1, c + 2, 200 + c] {
            let mut short = vec![0x40, route];
            short.extend_from_slice(&[c; 20]);
            let mut long = vec![0xc0, 0, 0, 0, 1, 8, route];
            long.extend_from_slice(&[c; 20]);
            for packet in [short, long] {
                client.send_to(&packet, to).unwrap();
                let want = usize::from(route % N);
                let mut buf = [0u8; 64];
                let (len, _) = servers[want]
                    .recv_from(&mut buf)
                    .unwrap_or_else(|e| panic!("packet {packet:?} not on socket {want}: {e}"));
                assert_eq!(&buf[..len], &packet[..]);
                sent += 1;
            }
        }
    }
    // Too short to carry a connection ID byte: socket 0.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for packet in [vec![0x40], vec![0xc0, 0, 0, 0, 1, 8]] {
        assert_eq!(steer::socket_for(&packet, N), 0);
        client.send_to(&packet, to).unwrap();
        let mut buf = [0u8; 64];
        let (len, _) = servers[0].recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], &packet[..]);
        sent += 1;
    }
    // And nothing went anywhere else.
    for s in &servers {
        s.set_nonblocking(true).unwrap();
        assert!(s.recv_from(&mut [0u8; 64]).is_err(), "a stray packet");
    }
    assert_eq!(sent, 12 * 4 * 2 + 2);
}

/// Send a chat and wait for its ack (any verdict: the point is that the
/// connection carries it).
async fn chat_acked(v: &mut Viewer, id: u64) -> bool {
    v.send(&ClientFrame::Chat {
        client_msg_id: id,
        text: format!("still here {id}"),
    })
    .await;
    loop {
        match v.next_within(Duration::from_secs(5)).await {
            Some(ServerFrame::Ack { client_id, .. }) if client_id == id => return true,
            Some(ServerFrame::Ack { .. } | ServerFrame::Notice(_)) => continue,
            _ => return false,
        }
    }
}

/// Viewers on an engine with three endpoints move to new ports twice
/// mid-session (a NAT rebinding, a phone changing networks): every chat
/// after each move is acked on the same connection. Routed by address, two
/// in three moves would land on an endpoint that does not know the
/// connection (which answers with a stateless reset: the viewer would have
/// to reconnect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_whose_address_changes_keeps_its_session() {
    harness::init_tracing();
    let url = harness::shared_clickhouse();
    let mut cfg = harness::config(&url, "steering");
    cfg.server.endpoints = 3;
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg).await.unwrap();
    let addr = engine.quic_addr();

    let mut viewers = Vec::new();
    for id in 1..=8u64 {
        let mut v = Viewer::join(addr, &certs, 5, id).await;
        assert!(chat_acked(&mut v, 1).await, "viewer {id}: first chat");
        viewers.push(v);
    }
    for round in 0..2u64 {
        for (i, v) in viewers.iter_mut().enumerate() {
            let from = v.rebind();
            let id = 2 + round;
            assert!(
                chat_acked(v, id).await,
                "viewer {} lost its session after moving to {from} (round {round}): {:?}",
                i + 1,
                v.conn.close_reason()
            );
            assert!(v.conn.close_reason().is_none());
        }
    }
    drop(viewers);
    engine.shutdown().await.unwrap();
}
