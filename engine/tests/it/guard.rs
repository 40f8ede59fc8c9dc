//! The guard end to end: a raid, a flooder, a harasser with evasions,
//! fake-lead bots and a legitimate viewer in one room, over real QUIC, with
//! the verdicts checked on the wire and the rows checked in ClickHouse; plus
//! live room controls through the admin API.

use std::time::Duration;

use roomgate::engine::Engine;
use roomgate::wire::{ClientFrame, CloseCode, Lead, NoticeKind, Reason, ServerFrame, Verdict};

use crate::client::Viewer;
use crate::harness::{self, admin, scalar};

const ROOM: u64 = 77;

/// Send a chat and return (verdict, reason).
async fn chat(v: &mut Viewer, id: u64, text: &str) -> (Verdict, Reason) {
    v.send(&ClientFrame::Chat {
        client_msg_id: id,
        text: text.into(),
    })
    .await;
    loop {
        match v.next_within(Duration::from_secs(10)).await {
            Some(ServerFrame::Ack {
                kind: 1,
                client_id,
                verdict,
                reason,
                ..
            }) if client_id == id => {
                return (
                    Verdict::from_u8(verdict).unwrap(),
                    Reason::from_code(reason).unwrap(),
                );
            }
            Some(ServerFrame::Notice(_)) => continue,
            other => panic!("chat {id}: unexpected {other:?}"),
        }
    }
}

fn lead(id: u64, phone: &str) -> Lead {
    Lead {
        client_lead_id: id,
        phone: phone.into(),
        name: "王五".into(),
        consent: true,
        fill_ms: 25_000,
        ..Lead::default()
    }
}

async fn send_lead(v: &mut Viewer, l: Lead) -> (Verdict, Reason) {
    let id = l.client_lead_id;
    v.send(&ClientFrame::Lead(l)).await;
    loop {
        match v.next_within(Duration::from_secs(10)).await {
            Some(ServerFrame::Ack {
                kind: 2,
                client_id,
                verdict,
                reason,
                ..
            }) if client_id == id => {
                return (
                    Verdict::from_u8(verdict).unwrap(),
                    Reason::from_code(reason).unwrap(),
                );
            }
            Some(ServerFrame::Notice(_)) => continue,
            other => panic!("lead {id}: unexpected {other:?}"),
        }
    }
}

async fn notice(v: &mut Viewer) -> (NoticeKind, u32) {
    match v.next_within(Duration::from_secs(10)).await {
        Some(ServerFrame::Notice(n)) => {
            let kind = match n.kind {
                1 => NoticeKind::SlowMode,
                2 => NoticeKind::Muted,
                3 => NoticeKind::Unmuted,
                _ => NoticeKind::ShuttingDown,
            };
            (kind, n.value)
        }
        other => panic!("expected a notice, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_is_stopped_and_the_legitimate_viewer_is_not() {
    harness::init_tracing();
    let url = harness::shared_clickhouse();
    let mut cfg = harness::config(&url, "guard");
    cfg.guard.chat.raid_viewers = 3;
    cfg.guard.chat.blocked_terms = vec!["傻*逼".into(), "idiot".into()];
    // Every test client shares 127.0.0.1: IP velocity has its own unit test.
    cfg.guard.leads.max_per_ip = 1_000;
    cfg.server.admin_token = Some("test-admin-token".into());
    // A room configured in the file: slow mode and a room blocked term.
    cfg.rooms = vec![roomgate::guard::RoomConfig {
        id: 78,
        slow_mode_secs: Some(10),
        blocked_terms: vec!["加群".into()],
        ..Default::default()
    }];
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let engine = Engine::start(cfg.clone()).await.unwrap();
    let addr = engine.quic_addr();
    let admin_addr = engine.admin_addr();
    let join = |viewer: u64| Viewer::join(addr, &certs, ROOM, viewer);

    // The legitimate viewer: a few messages, likes within the cap, a lead.
    let mut legit = join(1).await;
    for (i, t) in [
        "主播好！",
        "这个课程多少钱？",
        "how much is the wedding package?",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            chat(&mut legit, i as u64 + 1, t).await,
            (Verdict::Accepted, Reason::None),
            "{t}"
        );
    }
    legit.send(&ClientFrame::Like { count: 10 }).await;
    assert_eq!(
        send_lead(&mut legit, lead(1, "138 0013 8000")).await,
        (Verdict::Accepted, Reason::None)
    );

    // A copy-paste raid: 3 distinct viewers with the same text make a wave.
    let raid_text = "快来看 免费领取 限时福利";
    let mut raid_rejects = 0;
    for viewer in 10..16 {
        let mut v = join(viewer).await;
        let (verdict, reason) = chat(&mut v, 1, raid_text).await;
        if viewer < 12 {
            assert_eq!(verdict, Verdict::Accepted, "raider {viewer}");
        } else {
            assert_eq!(
                (verdict, reason),
                (Verdict::Rejected, Reason::SpamWave),
                "raider {viewer}"
            );
            raid_rejects += 1;
        }
    }

    // A flooder: burst of 5, then rate limited; a like flood over the cap.
    let mut flooder = join(20).await;
    let mut limited = 0;
    for i in 0..8u64 {
        let (verdict, reason) = chat(&mut flooder, i + 1, &format!("buy now {i}")).await;
        if i < 5 {
            assert_eq!(verdict, Verdict::Accepted);
        } else {
            assert_eq!(reason, Reason::RateLimited);
            limited += 1;
        }
    }
    flooder.send(&ClientFrame::Like { count: 100 }).await;

    // A harasser with evasions.
    let mut harasser = join(30).await;
    assert_eq!(
        chat(&mut harasser, 1, "你个傻 x 逼").await.1,
        Reason::BlockedTerm
    );
    assert_eq!(
        chat(&mut harasser, 2, "i d i o t host").await.1,
        Reason::BlockedTerm
    );
    assert_eq!(
        chat(&mut harasser, 3, "ｗｗｗ．ｓｐａｍ．ｃｏｍ").await.1,
        Reason::Link
    );
    assert_eq!(
        chat(&mut harasser, 4, "加我微信 abc12345").await.1,
        Reason::ContactInfo
    );
    assert_eq!(
        chat(&mut harasser, 5, "哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈")
            .await
            .1,
        Reason::Flood
    );
    // Five rejects in a minute: auto-muted, told so.
    assert_eq!(notice(&mut harasser).await.0, NoticeKind::Muted);
    assert_eq!(chat(&mut harasser, 6, "hello").await.1, Reason::Muted);

    // Fake-lead bots.
    let mut bot = join(40).await;
    let mut honeypot = lead(1, "139 1234 5678");
    honeypot.honeypot = "http://spam".into();
    assert_eq!(
        send_lead(&mut bot, honeypot).await,
        (Verdict::Rejected, Reason::BotHoneypot)
    );
    let mut bot = join(41).await;
    assert_eq!(
        send_lead(&mut bot, lead(1, "1064812345678")).await,
        (Verdict::Rejected, Reason::PhoneUnreachable)
    );
    let mut bot = join(42).await;
    let mut fast = lead(1, "137 1111 2222");
    fast.fill_ms = 400;
    assert_eq!(
        send_lead(&mut bot, fast).await,
        (Verdict::Rejected, Reason::TooFast)
    );
    let mut bot = join(43).await;
    for i in 0..3u64 {
        assert_eq!(
            send_lead(&mut bot, lead(i + 1, &format!("1502873649{i}")))
                .await
                .0,
            Verdict::Accepted
        );
    }
    assert_eq!(
        send_lead(&mut bot, lead(4, "15028736499")).await,
        (Verdict::Rejected, Reason::VelocityViewer)
    );
    // The legitimate viewer's phone again, from someone else: a duplicate.
    let mut copycat = join(44).await;
    assert_eq!(
        send_lead(&mut copycat, lead(1, "+86 13800138000")).await,
        (Verdict::Duplicate, Reason::DuplicateLead)
    );
    // One phone across many rooms (different viewers): the 6th room trips.
    for room in 0..7u64 {
        let mut v = Viewer::join(addr, &certs, 900 + room, 500 + room).await;
        let got = send_lead(&mut v, lead(1, "186 5739 2846")).await;
        if room < 5 {
            assert_eq!(got.0, Verdict::Accepted, "room {room}");
        } else {
            assert_eq!(
                got,
                (Verdict::Rejected, Reason::VelocityPhone),
                "room {room}"
            );
        }
    }

    // [[rooms]] from the config file: announced at join, enforced.
    let mut configured = Viewer::join(addr, &certs, 78, 3).await;
    assert_eq!(notice(&mut configured).await, (NoticeKind::SlowMode, 10));
    assert_eq!(
        chat(&mut configured, 1, "大家 加 群 吧").await.1,
        Reason::BlockedTerm
    );
    assert_eq!(
        chat(&mut configured, 2, "hello everyone").await.0,
        Verdict::Accepted
    );
    assert_eq!(
        chat(&mut configured, 3, "hello again").await.1,
        Reason::SlowMode
    );

    // Live controls: dry-run a rule, slow mode, mute and ban.
    let token = "test-admin-token";
    assert_eq!(
        admin(
            admin_addr,
            "PUT",
            "/admin/rules/contact_info/dry-run",
            None,
            r#"{"on":true}"#
        )
        .await
        .0,
        401
    );
    assert_eq!(
        admin(
            admin_addr,
            "PUT",
            "/admin/rules/contact_info/dry-run",
            Some(token),
            r#"{"on":true}"#
        )
        .await
        .0,
        200
    );
    let mut chatty = join(2).await;
    assert_eq!(
        chat(&mut chatty, 1, "加我微信 zhangsan888").await,
        (Verdict::Accepted, Reason::None)
    );
    let (status, _) = admin(
        admin_addr,
        "PUT",
        &format!("/admin/rooms/{ROOM}/slow-mode"),
        Some(token),
        r#"{"secs":30}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(notice(&mut chatty).await, (NoticeKind::SlowMode, 30));
    assert_eq!(
        chat(&mut chatty, 2, "second message").await.1,
        Reason::SlowMode
    );
    let (status, body) = admin(
        admin_addr,
        "GET",
        &format!("/admin/rooms/{ROOM}"),
        Some(token),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("\"slow_mode_secs\":30") && body.contains("contact_info"),
        "{body}"
    );
    let banned = join(31).await;
    assert_eq!(
        admin(
            admin_addr,
            "POST",
            &format!("/admin/rooms/{ROOM}/viewers/31/ban"),
            Some(token),
            ""
        )
        .await
        .0,
        200
    );
    assert_eq!(banned.close_code().await, Some(CloseCode::Banned));
    let mut again = Viewer::open(addr, &certs).await;
    again
        .send(&ClientFrame::Hello(roomgate::wire::Hello {
            ticket: crate::client::ticket(ROOM, 31, 3600),
            client: String::new(),
        }))
        .await;
    assert_eq!(again.close_code().await, Some(CloseCode::Banned));

    legit.send(&ClientFrame::Bye).await;
    legit.close_code().await;
    engine.shutdown().await.unwrap();

    let q = |sql: &'static str| scalar(&cfg, sql);
    // Chat: the legitimate viewer's three, 2 raiders, 5 flooder messages,
    // 1 dry-run contact message, 1 in the configured room.
    assert_eq!(
        q("SELECT count() FROM {db}.chat_messages WHERE viewer_id = 1").await,
        3
    );
    assert_eq!(
        q("SELECT count() FROM {db}.chat_messages").await,
        3 + 2 + 5 + 1 + 1
    );
    assert_eq!(
        q("SELECT count() FROM {db}.chat_messages WHERE has(dry_run_reasons, 'contact_info')")
            .await,
        1
    );
    let reasons = |r: &'static str, dry: u8| {
        let cfg = cfg.clone();
        async move {
            scalar(&cfg, &format!("SELECT sum(count) FROM {{db}}.moderation_events WHERE reason = '{r}' AND dry_run = {dry}")).await
        }
    };
    assert_eq!(reasons("spam_wave", 0).await, raid_rejects);
    assert_eq!(reasons("rate_limited", 0).await, limited + 1); // + the like frame
    assert_eq!(reasons("blocked_term", 0).await, 3);
    assert_eq!(reasons("link", 0).await, 1);
    assert_eq!(reasons("contact_info", 0).await, 1);
    assert_eq!(reasons("contact_info", 1).await, 1);
    assert_eq!(reasons("flood", 0).await, 1);
    assert_eq!(reasons("muted", 0).await, 1);
    assert_eq!(reasons("slow_mode", 0).await, 2);
    assert_eq!(
        q("SELECT sum(count) FROM {db}.moderation_events WHERE viewer_id = 1").await,
        0
    );
    // Likes: the viewer's 10 and the flooder's 20 admitted of 100.
    assert_eq!(q("SELECT sum(taps) FROM {db}.like_ticks").await, 30);
    // Leads: every lead stored once with its verdict.
    assert_eq!(q("SELECT count() FROM {db}.leads").await, 1 + 3 + 4 + 1 + 7);
    assert_eq!(q("SELECT countIf(viewer_id = 1 AND verdict = 'accepted' AND score = 100) FROM {db}.leads").await, 1);
    assert_eq!(q("SELECT countIf(verdict = 'duplicate' AND has(reasons, 'duplicate_lead')) FROM {db}.leads").await, 1);
    assert_eq!(
        q("SELECT countIf(has(reasons, 'bot_honeypot') AND verdict = 'rejected') FROM {db}.leads")
            .await,
        1
    );
    assert_eq!(
        q("SELECT countIf(has(reasons, 'phone_unreachable')) FROM {db}.leads").await,
        1
    );
    assert_eq!(
        q("SELECT countIf(has(reasons, 'velocity_viewer')) FROM {db}.leads").await,
        1
    );
    assert_eq!(
        q("SELECT countIf(has(reasons, 'velocity_phone')) FROM {db}.leads").await,
        2
    );
}
