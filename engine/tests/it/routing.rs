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
    cfg.routing.nodes = nodes
        .nodes()
        .iter()
        .map(|n| roomgate::config::NodeConfig {
            id: n.id.clone(),
            addr: n.addr.clone(),
        })
        .collect();
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
