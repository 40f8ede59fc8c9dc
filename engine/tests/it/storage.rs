//! Acknowledged events are in ClickHouse exactly once; resends are replays.

use std::time::Duration;

use roomgate::engine::Engine;
use roomgate::wire::{ClientFrame, Lead, ServerFrame};

use crate::client::Viewer;
use crate::harness::{self, scalar};

fn lead(id: u64, phone: &str) -> ClientFrame {
    ClientFrame::Lead(Lead {
        client_lead_id: id,
        phone: phone.into(),
        wechat: "wx_abc".into(),
        name: "张三".into(),
        fields: vec![("city".into(), "杭州".into())],
        consent: true,
        consent_version: "2026-12".into(),
        honeypot: String::new(),
        fill_ms: 12_000,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_events_are_stored_exactly_once() {
    harness::init_tracing();
    let url = harness::shared_clickhouse();
    let cfg = harness::config(&url, "storage");
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg.clone()).await.unwrap();
    let addr = engine.quic_addr();

    let mut viewers = Vec::new();
    for (room, viewer) in [(10, 1), (10, 2), (11, 3)] {
        viewers.push(Viewer::join(addr, &certs, room, viewer).await);
    }
    for (n, v) in viewers.iter_mut().enumerate() {
        for id in 1..=5u64 {
            v.send(&ClientFrame::Chat {
                client_msg_id: id,
                text: format!("msg {id}"),
            })
            .await;
        }
        // A resend of message 3 (reconnect-and-resend).
        v.send(&ClientFrame::Chat {
            client_msg_id: 3,
            text: "msg 3".into(),
        })
        .await;
        v.send(&ClientFrame::Like { count: 7 }).await;
        v.send(&ClientFrame::Like { count: 5 }).await;
        // Each viewer its own phone (one phone per room is a duplicate lead).
        let phone = format!("138 0013 800{n}");
        v.send(&lead(1, &phone)).await;
        v.send(&lead(1, &phone)).await;
    }
    for v in viewers.iter_mut() {
        let (mut chat, mut chat_replay, mut leads, mut lead_replay) = (0, 0, 0, 0);
        while chat + chat_replay < 6 || leads + lead_replay < 2 {
            match v.next_within(Duration::from_secs(10)).await {
                Some(ServerFrame::Ack {
                    kind: 1,
                    verdict: 1,
                    replay,
                    ..
                }) => {
                    if replay {
                        chat_replay += 1
                    } else {
                        chat += 1
                    }
                }
                Some(ServerFrame::Ack {
                    kind: 2,
                    verdict: 1,
                    replay,
                    ..
                }) => {
                    if replay {
                        lead_replay += 1
                    } else {
                        leads += 1
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((chat, chat_replay, leads, lead_replay), (5, 1, 1, 1));
        v.send(&ClientFrame::Bye).await;
    }
    for v in &viewers {
        v.close_code().await;
    }
    engine.shutdown().await.unwrap();

    assert_eq!(
        scalar(&cfg, "SELECT count() FROM {db}.chat_messages").await,
        15
    );
    assert_eq!(
        scalar(
            &cfg,
            "SELECT uniqExact(viewer_id, client_msg_id) FROM {db}.chat_messages"
        )
        .await,
        15
    );
    assert_eq!(
        scalar(&cfg, "SELECT sum(taps) FROM {db}.like_ticks").await,
        36
    );
    assert_eq!(scalar(&cfg, "SELECT count() FROM {db}.leads").await, 3);
    // Masked and keyed (the scan for clear values is tests/it/pii.rs).
    assert_eq!(
        scalar(&cfg, "SELECT countIf(phone_masked LIKE '138****800_' AND length(phone_hmac) = 64 AND pii_key_id = 'k1') FROM {db}.leads").await,
        3
    );
    assert_eq!(
        scalar(&cfg, "SELECT countIf(event = 'join') FROM {db}.sessions").await,
        3
    );
    assert_eq!(
        scalar(&cfg, "SELECT countIf(event = 'leave') FROM {db}.sessions").await,
        3
    );
    assert_eq!(
        scalar(&cfg, "SELECT count() FROM {db}.moderation_events").await,
        0
    );
    assert_eq!(
        scalar(&cfg, "SELECT sum(chat_messages) FROM {db}.room_minute").await,
        15
    );
}
