//! Several engine nodes: a viewer for a room another node owns is closed
//! with `wrong_node` naming the owner; when the node list changes
//! (`PUT /admin/routing`), sessions of rooms that moved are closed the same
//! way, and the rooms that stayed keep their sessions.

use roomgate::engine::Engine;
use roomgate::route::NodeSet;
use roomgate::wire::{self, ClientFrame, CloseCode};

use crate::client::{ticket, Viewer};
use crate::harness;

const TOKEN: &str = "routing-test-admin-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_of_other_nodes_are_sent_to_their_owner() {
    harness::init_tracing();
    let url = harness::shared_clickhouse();
    let mut cfg = harness::config(&url, "routing");
    cfg.server.admin_token = Some(TOKEN.into());
    let list = "node-a=10.0.0.1:4433,node-b=10.0.0.2:4433,node-c=10.0.0.3:4433";
    let nodes: NodeSet = list.parse().unwrap();
    cfg.routing.node_id = "node-a".into();
    cfg.routing.nodes = nodes.nodes().iter().map(Into::into).collect();
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg.validate().unwrap()).await.unwrap();
    let addr = engine.quic_addr();
    // Rooms of node-a and of the others (docs/ROUTING.md's vectors: room 1
    // is node-a's, room 0 node-c's).
    let mine: Vec<u64> = (1..200)
        .filter(|r| nodes.owner(*r).id == "node-a")
        .take(3)
        .collect();
    let theirs: Vec<u64> = (1..200)
        .filter(|r| nodes.owner(*r).id != "node-a")
        .take(3)
        .collect();
    assert!(mine.contains(&1));

    // A viewer for another node's room: closed at Hello, told where to go.
    for &room in &theirs {
        let mut v = Viewer::open(addr, &certs).await;
        v.send(&ClientFrame::Hello(wire::Hello {
            ticket: ticket(room, 5, 3600),
            client: "it".into(),
        }))
        .await;
        assert_eq!(v.next().await, None, "no Welcome for room {room}");
        let owner = nodes.owner(room);
        assert_eq!(
            v.close_reason().await,
            Some((
                CloseCode::WrongNode,
                format!("wrong_node {} {}", owner.id, owner.addr)
            ))
        );
    }
    let mut sessions = Vec::new();
    for &room in &mine {
        sessions.push((room, Viewer::join(addr, &certs, room, 5).await));
    }

    // node-a leaves the list: its rooms go to the next-ranked nodes and
    // their sessions are closed, naming the new owner.
    let (status, body) = harness::admin(
        engine.admin_addr(),
        "PUT",
        "/admin/routing",
        Some(TOKEN),
        r#"{"nodes":[{"id":"node-b","addr":"10.0.0.2:4433"},{"id":"node-c","addr":"10.0.0.3:4433"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["moving_sessions"], 3, "{body}");
    assert_eq!(reply["node_id"], "node-a");
    let bc: NodeSet = "node-b=10.0.0.2:4433,node-c=10.0.0.3:4433".parse().unwrap();
    for (room, v) in &mut sessions {
        let owner = bc.owner(*room);
        assert_eq!(
            owner,
            nodes.ranked(*room)[1],
            "the next-ranked node takes over"
        );
        assert_eq!(
            v.close_reason().await,
            Some((
                CloseCode::WrongNode,
                format!("wrong_node {} {}", owner.id, owner.addr)
            ))
        );
    }

    // Back in the list: node-a's rooms are served again; a bad list is refused.
    let (status, body) = harness::admin(
        engine.admin_addr(),
        "PUT",
        "/admin/routing",
        Some(TOKEN),
        r#"{"nodes":[{"id":"node-a","addr":"10.0.0.1:4433"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut v = Viewer::join(addr, &certs, theirs[0], 6).await;
    v.send(&ClientFrame::Bye).await;
    let (status, body) = harness::admin(
        engine.admin_addr(),
        "PUT",
        "/admin/routing",
        Some(TOKEN),
        r#"{"nodes":[{"id":"node-a","addr":"no-port"}]}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not host:port"), "{body}");
    let (status, body) = harness::admin(
        engine.admin_addr(),
        "GET",
        "/admin/routing",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("10.0.0.1:4433") && !body.contains("node-b"),
        "{body}"
    );
    assert_eq!(v.next().await, None);
    assert_eq!(v.close_code().await, Some(CloseCode::Normal));
    engine.shutdown().await.unwrap();
}

/// A lead stored by another node while this one held it in its log (it
/// died before the ack left; the client resent the lead there) is not
/// stored a second time when this node's writers catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_another_node_stored_is_not_stored_twice() {
    use roomgate::wire::{Lead, ServerFrame};
    use std::time::Duration;
    harness::init_tracing();
    let url = harness::shared_clickhouse();
    let mut cfg = harness::config(&url, "routing_skip");
    cfg.routing.node_id = "node-a".into();
    cfg.routing.nodes = vec![roomgate::config::NodeConfig {
        id: "node-a".into(),
        addr: "127.0.0.1:4433".into(),
    }];
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg.clone().validate().unwrap())
        .await
        .unwrap();
    let addr = engine.quic_addr();
    // "node-b" stored lead 77 of viewer 5 in room 9: a row under its key.
    harness::scalar(&cfg, "SELECT count() FROM {db}.leads").await;
    let insert = format!(
        "INSERT INTO {}.leads (room_id, ts, viewer_id, session_id, client_lead_id, verdict, \
         phone_hmac) VALUES (9, now64(3), 5, 1, 77, 'accepted', 'from-node-b')",
        cfg.clickhouse.database
    );
    harness::http_query(&url, &insert).await;
    let mut v = Viewer::join(addr, &certs, 9, 5).await;
    for id in [77, 78] {
        v.send(&ClientFrame::Lead(Lead {
            client_lead_id: id,
            phone: format!("1380013800{id}"),
            name: "王五".into(),
            consent: true,
            fill_ms: 25_000,
            ..Lead::default()
        }))
        .await;
        loop {
            match v.next_within(Duration::from_secs(10)).await {
                Some(ServerFrame::Ack { client_id, .. }) if client_id == id => break,
                Some(_) => {}
                None => panic!("no ack for lead {id}"),
            }
        }
    }
    v.send(&ClientFrame::Bye).await;
    let metrics = engine.metrics().clone();
    engine.shutdown().await.unwrap();
    let count = |id: u64| {
        let cfg = cfg.clone();
        async move {
            harness::scalar(
                &cfg,
                &format!(
                    "SELECT count() FROM {{db}}.leads WHERE room_id = 9 AND client_lead_id = {id}"
                ),
            )
            .await
        }
    };
    assert_eq!(count(77).await, 1, "node-b's row only");
    assert_eq!(count(78).await, 1, "a new lead is stored");
    assert_eq!(
        metrics.tables[roomgate::table::Table::Leads.index()]
            .skipped_stored
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
