//! Personal data never lands in clear: after chat with phone numbers and
//! WeChat IDs (rejected, rate-limited and in dry-run) and leads with phone,
//! WeChat and name, every column of every table and every file of the data
//! directory (log and dead letters) is scanned for the values sent. The
//! lead's ciphertexts decrypt, but only in their own row and column.

use std::time::Duration;

use roomgate::engine::Engine;
use roomgate::pii::Aad;
use roomgate::wire::{ClientFrame, Lead, ServerFrame};

use crate::client::Viewer;
use crate::harness;

/// Every spelling of a contact the test sends, as it must never be stored.
const CLEAR: &[&str] = &[
    "18401980579",
    "184 0198 0579",
    "8618401980579",
    "一三三九五六二九九一八",
    "13395629918",
    "wxid_secret42",
    "qq_hidden_77",
    "3456789012",
    "张三丰",
    "15912345678",
    "1591234",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_table_and_no_file_holds_a_contact_in_clear() {
    harness::init_tracing();
    let url = harness::shared_clickhouse();
    let mut cfg = harness::config(&url, "pii");
    cfg.server.admin_token = Some("test-admin-token".into());
    let certs = cfg.server.dev_cert_dir.clone().unwrap();
    let data_dir = cfg.storage.dir.clone();
    let keys = cfg.pii.keys().unwrap();
    let engine = Engine::start(cfg.clone()).await.unwrap();
    let addr = engine.quic_addr();
    let mut v = Viewer::join(addr, &certs, 31, 1).await;
    let mut id = 0u64;
    let mut chat = |text: &str| {
        id += 1;
        ClientFrame::Chat {
            client_msg_id: id,
            text: text.into(),
        }
    };
    // Rejected as contact_info: the sample in moderation_events.detail.
    let contacts = [
        "电话 184 0198 0579",
        "找我：一三三九五六二九九一八",
        "加v信 wxid_secret42 有优惠",
        "扣扣 3456789012 联系",
    ];
    let mut frames: Vec<ClientFrame> = contacts.iter().map(|t| chat(t)).collect();
    // A burst: rate-limited and duplicate rejects keep the text too.
    for _ in 0..12 {
        frames.push(chat("call 18401980579 now"));
    }
    for f in &frames {
        v.send(f).await;
    }
    let mut acks = 0;
    while acks < frames.len() {
        match v.next_within(Duration::from_secs(5)).await {
            Some(ServerFrame::Ack { .. }) => acks += 1,
            Some(_) => {}
            None => panic!("{acks} of {} chat acks", frames.len()),
        }
    }
    // Dry-run: the message is stored in chat_messages, masked.
    let (status, body) = harness::admin(
        engine.admin_addr(),
        "PUT",
        "/admin/rules/contact_info/dry-run",
        Some("test-admin-token"),
        r#"{"on": true}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The app's self-description is free text too (`sessions.client`).
    let mut w = Viewer::open(addr, &certs).await;
    w.send(&ClientFrame::Hello(roomgate::wire::Hello {
        ticket: crate::client::ticket(31, 2, 3600),
        client: "app/1.0 call 13395629918".into(),
    }))
    .await;
    assert!(matches!(w.next().await, Some(ServerFrame::Welcome(_))));
    w.send(&ClientFrame::Chat {
        client_msg_id: 1,
        text: "我的手机 159 1234 5678 微信 wxid_secret42".into(),
    })
    .await;
    assert!(matches!(
        w.next_within(Duration::from_secs(5)).await,
        Some(ServerFrame::Ack { verdict: 1, .. })
    ));
    // A lead with every personal field.
    w.send(&ClientFrame::Lead(Lead {
        client_lead_id: 5,
        phone: "184 0198 0579".into(),
        wechat: "wxid_secret42".into(),
        name: "张三丰".into(),
        consent: true,
        fill_ms: 9_000,
        fields: vec![("note".into(), "qq_hidden_77".into())],
        ..Lead::default()
    }))
    .await;
    assert!(matches!(
        w.next_within(Duration::from_secs(5)).await,
        Some(ServerFrame::Ack { kind: 2, .. })
    ));
    for x in [&mut v, &mut w] {
        x.send(&ClientFrame::Bye).await;
        x.close_code().await;
    }
    engine.shutdown().await.unwrap();

    // Every table, every column, as text.
    let client = clickhouse::Client::default().with_url(&url);
    let db = &cfg.clickhouse.database;
    let tables: Vec<String> = client
        .query("SELECT name FROM system.tables WHERE database = ? AND engine NOT IN ('View', 'MaterializedView')")
        .bind(db)
        .fetch_all::<String>()
        .await
        .unwrap();
    assert!(tables.len() >= 5, "{tables:?}");
    let mut rows = 0;
    for t in &tables {
        let text = harness::http_query(&url, &format!("SELECT * FROM {db}.{t} FORMAT TSV")).await;
        rows += text.lines().count();
        for clear in CLEAR {
            assert!(!text.contains(clear), "{clear:?} in clear in {t}:\n{text}");
        }
    }
    assert!(rows > 10, "the scan saw {rows} rows");
    // The samples are there, masked.
    let detail = harness::http_query(
        &url,
        &format!("SELECT detail FROM {db}.moderation_events WHERE kind = 'chat' FORMAT TSV"),
    )
    .await;
    assert!(detail.contains("电话 [number]"), "{detail}");
    assert!(detail.contains("[id]"), "{detail}");
    let dry = harness::http_query(
        &url,
        &format!("SELECT text FROM {db}.chat_messages FORMAT TSV"),
    )
    .await;
    assert!(dry.contains("我的手机 [number] 微信 [id]"), "{dry}");

    // Every file the engine wrote: the log's segments, dead letters.
    let mut files = 0;
    let mut stack = vec![data_dir];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&p).unwrap();
            for clear in CLEAR {
                assert!(
                    !bytes.windows(clear.len()).any(|w| w == clear.as_bytes()),
                    "{clear:?} in clear in {}",
                    p.display()
                );
            }
        }
    }
    assert!(files >= 1, "the log left no file to scan");

    // The lead's phone decrypts in its own place only.
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Enc {
        phone_enc: String,
        wechat_enc: String,
        name_enc: String,
    }
    let enc = client
        .query(&format!(
            "SELECT phone_enc, wechat_enc, name_enc FROM {db}.leads"
        ))
        .fetch_one::<Enc>()
        .await
        .unwrap();
    let at = |column| Aad {
        table: "leads",
        column,
        room_id: 31,
        viewer_id: 2,
        client_id: 5,
    };
    assert_eq!(
        keys.decrypt_hex(&enc.phone_enc, at("phone_enc")).as_deref(),
        Some("+8618401980579")
    );
    assert_eq!(
        keys.decrypt_hex(&enc.wechat_enc, at("wechat_enc"))
            .as_deref(),
        Some("wxid_secret42")
    );
    assert_eq!(
        keys.decrypt_hex(&enc.name_enc, at("name_enc")).as_deref(),
        Some("张三丰")
    );
    assert_eq!(keys.decrypt_hex(&enc.phone_enc, at("name_enc")), None);
}
