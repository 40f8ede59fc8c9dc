//! Tickets during a session: the engine warns before expiry, a `Refresh`
//! with a fresh ticket keeps the session, silence ends it with
//! `ticket_expired`; tickets for someone else or living too long are
//! refused. Also the admin port's liveness and readiness.

use std::time::Duration;

use roomgate::engine::Engine;
use roomgate::wire::{self, ClientFrame, CloseCode, NoticeKind, ServerFrame};

use crate::client::{ticket, Viewer};
use crate::harness;

/// Next notice of `kind` within `d`, skipping other frames.
async fn notice(v: &mut Viewer, kind: NoticeKind, d: Duration) -> Option<wire::Notice> {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match v.next_within(left).await? {
            ServerFrame::Notice(n) if n.kind == kind as u8 => return Some(n),
            _ => {}
        }
    }
}

async fn join_with(addr: std::net::SocketAddr, certs: &std::path::Path, t: String) -> Viewer {
    let mut v = Viewer::open(addr, certs).await;
    v.send(&ClientFrame::Hello(wire::Hello {
        ticket: t,
        client: "it".into(),
    }))
    .await;
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_expire_during_a_session_unless_refreshed() {
    harness::init_tracing();
    let url = harness::shared_clickhouse();
    let mut cfg = harness::config(&url, "tickets");
    cfg.tickets.refresh_notice_secs = 2;
    cfg.tickets.max_ttl_secs = 600;
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg).await.unwrap();
    let addr = engine.quic_addr();

    // Each joins on a ticket with 3 s left.
    let mut keeps = join_with(addr, &certs, ticket(7, 1, 3)).await;
    let mut ignores = join_with(addr, &certs, ticket(7, 2, 3)).await;
    let mut swaps = join_with(addr, &certs, ticket(7, 3, 3)).await;
    for v in [&mut keeps, &mut ignores, &mut swaps] {
        assert!(matches!(v.next().await, Some(ServerFrame::Welcome(_))));
    }

    // The warning comes about 2 s before expiry, with the seconds left.
    let n = notice(
        &mut keeps,
        NoticeKind::TicketExpiring,
        Duration::from_secs(4),
    )
    .await
    .expect("ticket_expiring notice");
    assert!(n.value <= 3, "{n:?}");
    keeps
        .send(&ClientFrame::Refresh {
            ticket: ticket(7, 1, 300),
        })
        .await;
    let n = notice(
        &mut keeps,
        NoticeKind::TicketRefreshed,
        Duration::from_secs(2),
    )
    .await
    .expect("ticket_refreshed notice");
    assert!((298..=300).contains(&n.value), "{n:?}");

    // A fresh ticket for another viewer is not a refresh.
    notice(
        &mut swaps,
        NoticeKind::TicketExpiring,
        Duration::from_secs(4),
    )
    .await
    .expect("ticket_expiring notice");
    swaps
        .send(&ClientFrame::Refresh {
            ticket: ticket(7, 99, 300),
        })
        .await;
    assert_eq!(swaps.close_code().await, Some(CloseCode::BadTicket));

    // Silence: closed at expiry.
    assert_eq!(ignores.close_code().await, Some(CloseCode::TicketExpired));

    // Past the first ticket's expiry, the refreshed session still works.
    tokio::time::sleep(Duration::from_secs(2)).await;
    keeps
        .send(&ClientFrame::Chat {
            client_msg_id: 1,
            text: "still here".into(),
        })
        .await;
    let acked = loop {
        match keeps.next_within(Duration::from_secs(5)).await {
            Some(ServerFrame::Ack { client_id: 1, .. }) => break true,
            Some(_) => {}
            None => break false,
        }
    };
    assert!(acked, "the refreshed session is acked after the old expiry");

    // A ticket living longer than tickets.max_ttl_secs is refused.
    let mut long = join_with(addr, &certs, ticket(7, 4, 3_600)).await;
    assert_eq!(long.close_code().await, Some(CloseCode::BadTicket));
    assert!(long.next().await.is_none());

    let metrics = engine.metrics().render();
    assert!(
        metrics.contains("roomgate_ticket_refreshes_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("roomgate_connection_closes_total{code=\"ticket_expired\"} 1"));
    engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_and_readyz_say_what_they_see() {
    harness::init_tracing();
    let url = harness::shared_clickhouse();
    let cfg = harness::config(&url, "ready");
    let engine = Engine::start(cfg).await.unwrap();
    let admin = engine.admin_addr();
    let (status, body) = harness::admin(admin, "GET", "/livez", None, "").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = harness::admin(admin, "GET", "/readyz", None, "").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true, "{body}");
    assert_eq!(v["clickhouse"], "ok", "{body}");
    assert_eq!(v["migrations_applied"], true, "{body}");
    engine.shutdown().await.unwrap();
}
