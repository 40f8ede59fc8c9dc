//! Cross-node lead facts: two engine nodes on one database see each other's
//! leads through `lead_facts` (docs/ROUTING.md, "Cross-node facts"): the
//! same phone in too many rooms across the nodes, the same phone twice in a
//! room that moved, one IP over its cap across the nodes.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use roomgate::config::Config;
use roomgate::engine::Engine;
use roomgate::route::NodeSet;
use roomgate::wire::{ClientFrame, Lead, Reason, ServerFrame, Verdict};

use crate::client::Viewer;
use crate::harness::{self, scalar};

const TOKEN: &str = "facts-test-admin-token";
const NODES: &str = "node-a=10.0.0.1:4433,node-b=10.0.0.2:4433,node-c=10.0.0.3:4433";

fn node_config(url: &str, id: &str, nodes: &NodeSet) -> Config {
    let mut cfg = harness::config(url, "facts");
    cfg.server.admin_token = Some(TOKEN.into());
    cfg.routing.node_id = id.into();
    cfg.routing.nodes = nodes.nodes().iter().map(Into::into).collect();
    cfg.routing.facts_interval_secs = 1;
    cfg.guard.leads.max_rooms_per_phone = 2;
    // Every test viewer is 127.0.0.1: six leads from it in the hour are
    // allowed, the seventh is over.
    cfg.guard.leads.max_per_ip = 6;
    cfg
}

fn lead(phone: &str) -> Lead {
    Lead {
        client_lead_id: 1,
        phone: phone.into(),
        name: "王五".into(),
        consent: true,
        fill_ms: 25_000,
        ..Lead::default()
    }
}

/// A new viewer sends one lead in `room` on `node`: (verdict, reason).
async fn send_lead(
    node: &Engine,
    cfg: &Config,
    room: u64,
    viewer: u64,
    phone: &str,
) -> (Verdict, Reason) {
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let mut v = Viewer::join(node.quic_addr(), &certs, room, viewer).await;
    v.send(&ClientFrame::Lead(lead(phone))).await;
    loop {
        match v.next_within(Duration::from_secs(10)).await {
            Some(ServerFrame::Ack {
                kind: 2,
                verdict,
                reason,
                ..
            }) => {
                v.send(&ClientFrame::Bye).await;
                return (
                    Verdict::from_u8(verdict).unwrap(),
                    Reason::from_code(reason).unwrap(),
                );
            }
            Some(ServerFrame::Notice(_)) => continue,
            other => panic!("lead of viewer {viewer}: unexpected {other:?}"),
        }
    }
}

/// Wait until ClickHouse holds `leads` leads and `node` has then read and
/// merged the facts twice (so at least one read began after they were
/// there). Bounded: fails after 30 s.
async fn facts_read(node: &Engine, cfg: &Config, leads: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while scalar(cfg, "SELECT count() FROM {db}.leads").await < leads {
        assert!(
            Instant::now() < deadline,
            "{leads} leads never reached ClickHouse"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reads = || node.metrics().facts.reads.load(Relaxed);
    let first = reads();
    while reads() < first + 2 {
        assert!(
            Instant::now() < deadline,
            "facts not read: {}",
            node.metrics().render()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_see_each_others_leads() {
    harness::init_tracing();
    let url = harness::shared_clickhouse();
    let nodes: NodeSet = NODES.parse().unwrap();
    let cfg_a = node_config(&url, "node-a", &nodes);
    let mut cfg_b = node_config(&url, "node-b", &nodes);
    cfg_b.clickhouse.database = cfg_a.clickhouse.database.clone();
    let a = Engine::start(cfg_a.clone().validate().unwrap())
        .await
        .unwrap();
    let b = Engine::start(cfg_b.clone().validate().unwrap())
        .await
        .unwrap();
    let owned =
        |id: &str| -> Vec<u64> { (1..500u64).filter(|r| nodes.owner(*r).id == id).collect() };
    // A room of node-a that goes to node-b once node-a leaves the list,
    // and two that stay with node-a.
    let moving = *owned("node-a")
        .iter()
        .find(|r| nodes.ranked(**r)[1].id == "node-b")
        .unwrap();
    let rooms_a: Vec<u64> = owned("node-a")
        .into_iter()
        .filter(|r| *r != moving)
        .take(2)
        .collect();
    let room_b = owned("node-b")[0];
    let cross = |rule| b.metrics().cross_node_count(rule);

    // One phone in two rooms on node-a, then in a third on node-b: over
    // max_rooms_per_phone only counting node-a's rooms.
    for (i, room) in rooms_a.iter().enumerate() {
        assert_eq!(
            send_lead(&a, &cfg_a, *room, 10 + i as u64, "139 1287 3465").await,
            (Verdict::Accepted, Reason::None)
        );
    }
    facts_read(&b, &cfg_b, 2).await;
    assert_eq!(cross(Reason::VelocityPhone), 0);
    assert_eq!(
        send_lead(&b, &cfg_b, room_b, 20, "139 1287 3465").await,
        (Verdict::Rejected, Reason::VelocityPhone)
    );
    assert_eq!(cross(Reason::VelocityPhone), 1);

    // A phone left in a room on node-a; the room moves to node-b, where the
    // same phone again is a duplicate.
    assert_eq!(
        send_lead(&a, &cfg_a, moving, 30, "139 1287 3466").await,
        (Verdict::Accepted, Reason::None)
    );
    facts_read(&b, &cfg_b, 4).await;
    let (status, body) = harness::admin(
        b.admin_addr(),
        "PUT",
        "/admin/routing",
        Some(TOKEN),
        r#"{"nodes":[{"id":"node-b","addr":"10.0.0.2:4433"},{"id":"node-c","addr":"10.0.0.3:4433"}]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        send_lead(&b, &cfg_b, moving, 31, "139 1287 3466").await,
        (Verdict::Duplicate, Reason::DuplicateLead)
    );
    assert_eq!(cross(Reason::DuplicateLead), 1);

    // The IP's sixth lead on node-a; its seventh, on node-b (which decided
    // two of them), is over max_per_ip.
    assert_eq!(
        send_lead(&a, &cfg_a, rooms_a[0], 40, "139 1287 3467").await,
        (Verdict::Accepted, Reason::None)
    );
    facts_read(&b, &cfg_b, 6).await;
    assert_eq!(
        send_lead(&b, &cfg_b, room_b, 41, "139 1287 3468").await,
        (Verdict::Rejected, Reason::VelocityIp)
    );
    assert_eq!(cross(Reason::VelocityIp), 1);
    // Node-a decided everything from its own state plus facts: nothing
    // was flagged there.
    for rule in [
        Reason::DuplicateLead,
        Reason::VelocityIp,
        Reason::VelocityPhone,
    ] {
        assert_eq!(a.metrics().cross_node_count(rule), 0);
    }
    let text = b.metrics().render();
    assert!(
        text.contains("roomgate_cross_node_facts_total{rule=\"velocity_phone\"} 1"),
        "{text}"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
