//! Bad input closes one connection with its documented code; others live on.

use roomgate::engine::Engine;
use roomgate::wire::{self, ClientFrame, CloseCode, ServerFrame};

use crate::client::{ticket, Viewer};
use crate::harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_documented_close_codes() {
    harness::init_tracing();
    let url = harness::shared_clickhouse();
    let mut cfg = harness::config(&url, "protocol");
    cfg.server.frame_timeout_ms = 500;
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg).await.unwrap();
    let addr = engine.quic_addr();

    // A healthy viewer stays connected through all of this.
    let mut good = Viewer::join(addr, &certs, 1, 1).await;

    let cases: Vec<(&str, Vec<u8>, CloseCode)> = vec![
        (
            "bad signature",
            wire::encode(&ClientFrame::Hello(wire::Hello {
                ticket: ticket(1, 2, 3600).replace(".k1.1.", ".k1.9."),
                client: String::new(),
            })),
            CloseCode::BadTicket,
        ),
        (
            "expired ticket",
            wire::encode(&ClientFrame::Hello(wire::Hello {
                ticket: ticket(1, 2, -10),
                client: String::new(),
            })),
            CloseCode::TicketExpired,
        ),
        (
            "chat before hello",
            wire::encode(&ClientFrame::Chat {
                client_msg_id: 1,
                text: "hi".into(),
            }),
            CloseCode::UnexpectedFrame,
        ),
        (
            "oversized length prefix",
            (1u32 << 20).to_be_bytes().to_vec(),
            CloseCode::FrameTooLarge,
        ),
        (
            "garbage body",
            [&40u32.to_be_bytes()[..], &[0xA5u8; 40][..]].concat(),
            CloseCode::MalformedFrame,
        ),
    ];
    for (name, bytes, want) in cases {
        let mut v = Viewer::open(addr, &certs).await;
        v.send_raw(&bytes).await;
        assert_eq!(v.close_code().await, Some(want), "{name}");
    }

    // After Hello: a second Hello, a zero-like frame.
    let mut v = Viewer::join(addr, &certs, 1, 3).await;
    v.send(&ClientFrame::Like { count: 0 }).await;
    assert_eq!(v.close_code().await, Some(CloseCode::InvalidField));
    let mut v = Viewer::join(addr, &certs, 1, 4).await;
    v.send(&ClientFrame::Hello(wire::Hello {
        ticket: ticket(1, 4, 3600),
        client: String::new(),
    }))
    .await;
    assert_eq!(v.close_code().await, Some(CloseCode::UnexpectedFrame));

    // A frame stalled half-sent: closed after server.frame_timeout_ms.
    let mut v = Viewer::join(addr, &certs, 1, 5).await;
    let chat = wire::encode(&ClientFrame::Chat {
        client_msg_id: 1,
        text: "never finished".into(),
    });
    v.send_raw(&chat[..chat.len() - 3]).await;
    assert_eq!(v.close_code().await, Some(CloseCode::FrameTimeout));

    // One ticket, three sessions: the newest two stay, the oldest is
    // replaced (guard.abuse.max_sessions_per_viewer = 2).
    let first = Viewer::join(addr, &certs, 1, 6).await;
    let _second = Viewer::join(addr, &certs, 1, 6).await;
    let mut third = Viewer::join(addr, &certs, 1, 6).await;
    assert_eq!(first.close_code().await, Some(CloseCode::SessionReplaced));
    third
        .send(&ClientFrame::Chat {
            client_msg_id: 9,
            text: "the newest session works".into(),
        })
        .await;
    assert!(matches!(
        third.next().await,
        Some(ServerFrame::Ack { client_id: 9, .. })
    ));

    // The healthy viewer still gets its acks, and Bye closes normally.
    good.send(&ClientFrame::Chat {
        client_msg_id: 1,
        text: "still here".into(),
    })
    .await;
    assert!(matches!(
        good.next().await,
        Some(ServerFrame::Ack {
            client_id: 1,
            verdict: 1,
            ..
        })
    ));
    good.send(&ClientFrame::Bye).await;
    assert_eq!(good.close_code().await, Some(CloseCode::Normal));
    engine.shutdown().await.unwrap();
}

/// A `roomgate/1` app (no consent version, no `Withdraw`) is still served:
/// its lead is stored with an empty consent version next to a
/// `roomgate/2` lead with its version; an unknown ALPN gets no handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roomgate_1_clients_are_still_served() {
    harness::init_tracing();
    let url = harness::shared_clickhouse();
    let cfg = harness::config(&url, "alpn_v1");
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg.clone()).await.unwrap();
    let addr = engine.quic_addr();

    let mut old = Viewer::join_alpn(addr, &certs, wire::ALPN_V1, 40, 1)
        .await
        .expect("a roomgate/1 client is let in");
    old.send_raw(&wire::encode(&wire::ClientFrameV1::Lead(wire::LeadV1 {
        client_lead_id: 7,
        phone: "13800138001".into(),
        consent: true,
        fill_ms: 9_000,
        ..wire::LeadV1::default()
    })))
    .await;
    let mut new = Viewer::join(addr, &certs, 40, 2).await;
    new.send(&ClientFrame::Lead(wire::Lead {
        client_lead_id: 8,
        phone: "13800138002".into(),
        consent: true,
        consent_version: "2026-12".into(),
        fill_ms: 9_000,
        ..wire::Lead::default()
    }))
    .await;
    for (v, id) in [(&mut old, 7), (&mut new, 8)] {
        match v.next_within(std::time::Duration::from_secs(10)).await {
            Some(ServerFrame::Ack {
                kind,
                client_id,
                verdict,
                ..
            }) => assert_eq!((kind, client_id, verdict), (2, id, 1)),
            other => panic!("lead {id}: {other:?}"),
        }
    }
    assert!(
        Viewer::join_alpn(addr, &certs, b"roomgate/9", 40, 3)
            .await
            .is_none(),
        "an unknown protocol version is refused at the handshake"
    );
    engine.shutdown().await.unwrap();
    let versions = harness::scalar(
        &cfg,
        "SELECT count() FROM {db}.leads WHERE (client_lead_id = 7 AND consent_version = '') \
         OR (client_lead_id = 8 AND consent_version = '2026-12')",
    )
    .await;
    assert_eq!(versions, 2);
}
