//! Guard unit tests: one or more per rule, sans-IO (time is the `now` passed
//! in; nothing sleeps, nothing touches a socket).

use proptest::prelude::*;

use super::*;
use crate::event::{Event, EventKind};
use crate::wire::{Lead, NoticeKind, Reason, Verdict};

// ---------------------------------------------------------------------------
// Helpers.

/// A realistic Unix-ms start time (slow mode treats 0 as "never chatted").
const T0: i64 = 1_700_000_000_000;
const ROOM: u64 = 7;
const SEC: i64 = 1_000;
const HOUR: i64 = 3_600 * SEC;
const DAY: i64 = 24 * HOUR;

fn guard() -> Guard {
    Guard::new(&GuardConfig::default()).expect("default config is valid")
}

fn guard_with(edit: impl FnOnce(&mut GuardConfig)) -> Guard {
    let mut cfg = GuardConfig::default();
    edit(&mut cfg);
    Guard::new(&cfg).expect("valid config")
}

fn event(room: u64, viewer: u64, kind: EventKind) -> Event {
    Event {
        room_id: room,
        viewer_id: viewer,
        session_id: viewer,
        received_at_ms: T0,
        kind,
    }
}

fn chat_ev(room: u64, viewer: u64, id: u64, text: &str) -> Event {
    event(
        room,
        viewer,
        EventKind::Chat {
            client_msg_id: id,
            text: text.to_owned(),
        },
    )
}

/// Chat in `room`.
fn say_in(g: &mut Guard, now: i64, room: u64, viewer: u64, id: u64, text: &str) -> Decision {
    g.decide(now, &chat_ev(room, viewer, id, text))
}

/// Chat in [`ROOM`].
fn say(g: &mut Guard, now: i64, viewer: u64, id: u64, text: &str) -> Decision {
    say_in(g, now, ROOM, viewer, id, text)
}

fn like(g: &mut Guard, now: i64, viewer: u64, count: u32) -> Decision {
    g.decide(
        now,
        &event(
            ROOM,
            viewer,
            EventKind::Like {
                count,
                spread_ms: 0,
            },
        ),
    )
}

fn join(g: &mut Guard, now: i64, room: u64, viewer: u64) -> Decision {
    let kind = EventKind::Join {
        client: "test/1".into(),
        ip: "10.0.0.1".into(),
    };
    g.decide(now, &event(room, viewer, kind))
}

fn leave(g: &mut Guard, now: i64, room: u64, viewer: u64) -> Decision {
    let kind = EventKind::Leave {
        joined_at_ms: T0,
        close: "normal",
    };
    g.decide(now, &event(room, viewer, kind))
}

fn ctl(g: &mut Guard, now: i64, c: Control) -> Effect {
    g.control(now, &c).expect("control applies")
}

fn slow_mode(g: &mut Guard, room: u64, secs: u32) {
    ctl(g, T0, Control::SlowMode { room, secs });
}

fn mute(g: &mut Guard, now: i64, viewer: u64, secs: u64) {
    ctl(
        g,
        now,
        Control::Mute {
            room: ROOM,
            viewer,
            secs,
        },
    );
}

fn dry_run(g: &mut Guard, rule: Reason, on: bool) {
    ctl(g, T0, Control::DryRun { rule, on });
}

fn room_cap(g: &mut Guard, per_sec: u32) {
    ctl(
        g,
        T0,
        Control::RoomLimits {
            room: ROOM,
            chat_per_sec: Some(per_sec),
            viewer_messages: None,
        },
    );
}

/// A distinct, harmless, long-enough text (no digits run, link or term).
fn text(i: usize) -> String {
    format!("hello everyone this is message {i}")
}

/// `n` CJK chars with no repetition unit, numeral, marker or term.
fn cjk(n: usize) -> String {
    const SAFE: &str =
        "的是了我你他她们这那有在不人大中上来到时要就出会可也对生能而子说得地着下看天好学";
    SAFE.chars().cycle().take(n).collect()
}

fn accepted(d: &Decision) -> bool {
    d.verdict == Verdict::Accepted && d.reason == Reason::None
}

fn assert_accepted(d: Decision) {
    assert!(accepted(&d), "expected a plain accept, got {d:?}");
    assert!(d.stores());
}

fn assert_rejected(d: Decision, reason: Reason) {
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Rejected, reason),
        "decision: {d:?}"
    );
    assert!(!d.stores());
}

fn lead(id: u64, phone: &str) -> Lead {
    Lead {
        client_lead_id: id,
        phone: phone.to_owned(),
        wechat: String::new(),
        name: "张三".into(),
        fields: Vec::new(),
        consent: true,
        consent_version: String::new(),
        honeypot: String::new(),
        fill_ms: 10_000,
    }
}

fn lead_ev(room: u64, viewer: u64, l: &Lead, ip: &str) -> Event {
    event(
        room,
        viewer,
        EventKind::Lead {
            lead: Box::new(l.clone()),
            ip: ip.to_owned(),
        },
    )
}

fn fake_key(p: &str) -> String {
    format!("k:{p}")
}

/// `lead_start`, every stage in order, then the room's checks only.
fn lead_check(
    g: &mut Guard,
    now: i64,
    room: u64,
    viewer: u64,
    ip: &str,
    l: &Lead,
) -> Result<LeadCheck, Decision> {
    let mut c = g.lead_start(now, &lead_ev(room, viewer, l, ip), l, ip, fake_key)?;
    for stage in LeadStage::ORDER {
        g.lead_stage(now, stage, &mut c);
    }
    Ok(c)
}

/// A full lead through one guard: start, stages, finish, seen.
fn submit(
    g: &mut Guard,
    now: i64,
    room: u64,
    viewer: u64,
    ip: &str,
    l: &Lead,
) -> Result<LeadVerdict, Decision> {
    let c = lead_check(g, now, room, viewer, ip, l)?;
    let v = g.lead_finish(&c);
    g.lead_seen(now, room, viewer, l.client_lead_id, &v.decision);
    Ok(v)
}

/// A lead from its own viewer and IP (no velocity interference).
fn submit_fresh(g: &mut Guard, now: i64, room: u64, n: u64, phone: &str) -> LeadVerdict {
    let ip = format!("10.1.{}.{}", n / 256, n % 256);
    submit(g, now, room, 1_000 + n, &ip, &lead(n, phone)).expect("not a replay")
}

fn assert_lead(v: &LeadVerdict, verdict: Verdict, reason: Reason) {
    assert_eq!(
        (v.decision.verdict, v.decision.reason),
        (verdict, reason),
        "lead verdict: {v:?}"
    );
}

const GOOD_PHONE: &str = "13912873465";

// ---------------------------------------------------------------------------
// Construction.

#[test]
fn new_rejects_unknown_dry_run_rule() {
    let cfg = GuardConfig {
        dry_run: vec!["contact_info".into(), "no_such_rule".into()],
        ..GuardConfig::default()
    };
    let err = Guard::new(&cfg).unwrap_err();
    assert!(err.contains("no_such_rule"), "{err}");
}

#[test]
fn new_accepts_known_dry_run_rules() {
    let g = guard_with(|c| c.dry_run = vec!["spam_wave".into(), "contact_info".into()]);
    assert!(g.is_dry_run(Reason::SpamWave));
    assert!(g.is_dry_run(Reason::ContactInfo));
    assert!(!g.is_dry_run(Reason::Link));
}

#[test]
fn new_rejects_a_global_term_without_letters() {
    let err = Guard::new(&GuardConfig {
        chat: ChatConfig {
            blocked_terms: vec!["*!*".into()],
            ..ChatConfig::default()
        },
        ..GuardConfig::default()
    })
    .unwrap_err();
    assert!(err.contains("blocked_terms"), "{err}");
}

// ---------------------------------------------------------------------------
// Chat: accept, replay.

#[test]
fn plain_message_is_accepted_and_stored() {
    let mut g = guard();
    let d = say(&mut g, T0, 1, 1, "主播好，今天讲什么");
    assert_eq!(d, Decision::ACCEPT);
    assert!(d.stores());
}

#[test]
fn replay_repeats_the_verdict_and_is_stored_once() {
    let mut g = guard();
    let first = say(&mut g, T0, 1, 42, &text(1));
    assert_accepted(first);
    let again = say(&mut g, T0 + 10, 1, 42, &text(1));
    assert_eq!(again.verdict, Verdict::Accepted);
    assert_eq!(again.reason, Reason::None);
    assert!(again.replay);
    assert!(!again.stores());
    assert_eq!(g.remembered(), 1);
}

#[test]
fn replay_is_keyed_by_client_id_not_text() {
    let mut g = guard();
    assert_accepted(say(&mut g, T0, 1, 42, &text(1)));
    let d = say(&mut g, T0 + 2 * SEC, 1, 42, "something else entirely");
    assert!(d.replay);
    assert!(!d.stores());
}

#[test]
fn replay_of_a_reject_repeats_the_reject_and_does_not_auto_mute() {
    let mut g = guard();
    let d = say(&mut g, T0, 1, 9, "see abc.com");
    assert_rejected(d, Reason::Link);
    for i in 0..10 {
        let r = say(&mut g, T0 + i, 1, 9, "see abc.com");
        assert_eq!(
            (r.verdict, r.reason, r.replay),
            (Verdict::Rejected, Reason::Link, true)
        );
        assert_eq!(r.muted_secs, 0);
    }
    assert_accepted(say(&mut g, T0 + 20, 1, 10, &text(1)));
}

#[test]
fn replay_is_per_room_and_viewer() {
    let mut g = guard();
    assert_accepted(say_in(&mut g, T0, 1, 1, 5, &text(1)));
    assert!(!say_in(&mut g, T0, 1, 2, 5, &text(1)).replay);
    assert!(!say_in(&mut g, T0, 2, 1, 5, &text(1)).replay);
    assert!(say_in(&mut g, T0, 1, 1, 5, &text(1)).replay);
}

#[test]
fn chat_and_lead_ids_are_separate_namespaces() {
    let mut g = guard();
    assert_accepted(say(&mut g, T0, 1, 5, &text(1)));
    let v = submit(&mut g, T0, ROOM, 1, "10.0.0.1", &lead(5, GOOD_PHONE)).expect("not a replay");
    assert_lead(&v, Verdict::Accepted, Reason::None);
    assert!(!v.decision.replay);
}

#[test]
fn replay_is_forgotten_after_the_idempotency_window() {
    let mut g = guard();
    assert_accepted(say(&mut g, T0, 1, 5, &text(1)));
    assert!(say(&mut g, T0 + 599 * SEC, 1, 5, &text(1)).replay);
    g.tick(T0 + 600 * SEC);
    assert_eq!(g.remembered(), 0);
    let d = say(&mut g, T0 + 600 * SEC, 1, 5, &text(1));
    assert!(!d.replay);
    assert_accepted(d);
}

#[test]
fn idempotency_capacity_forgets_the_oldest_early() {
    let mut g = guard_with(|c| c.idempotency_capacity = 3);
    for i in 0..5u64 {
        say(&mut g, T0 + i as i64 * 2 * SEC, 1, i, &text(i as usize));
    }
    assert_eq!(g.remembered(), 3);
    assert_eq!(g.evicted_early(), 2);
    assert!(!say(&mut g, T0 + 20 * SEC, 1, 0, &text(0)).replay);
    assert!(say(&mut g, T0 + 20 * SEC, 1, 4, &text(4)).replay);
}

// ---------------------------------------------------------------------------
// Chat: per-viewer rate.

#[test]
fn rate_limited_after_the_burst_with_exact_retry_after() {
    // 20 per 30 s (one per 1.5 s), burst 5.
    let mut g = guard();
    for i in 0..5 {
        assert_accepted(say(&mut g, T0, 1, i, &text(i as usize)));
    }
    let d = say(&mut g, T0, 1, 5, &text(5));
    assert_rejected(d, Reason::RateLimited);
    assert_eq!(d.retry_after_ms, 1_500);
    let d = say(&mut g, T0 + 1_499, 1, 6, &text(6));
    assert_rejected(d, Reason::RateLimited);
    assert_eq!(d.retry_after_ms, 1);
    assert_accepted(say(&mut g, T0 + 1_500, 1, 7, &text(7)));
}

#[test]
fn rate_limited_reject_does_not_consume_budget() {
    let mut g = guard();
    for i in 0..5 {
        assert_accepted(say(&mut g, T0, 1, i, &text(i as usize)));
    }
    // Retrying early (three times, under the auto-mute threshold) does not
    // push the next slot further away.
    for (k, at) in [100, 700, 1_400].into_iter().enumerate() {
        let d = say(&mut g, T0 + at, 1, 10 + k as u64, &text(10 + k));
        assert_rejected(d, Reason::RateLimited);
        assert_eq!(d.retry_after_ms, (1_500 - at) as u32);
    }
    assert_accepted(say(&mut g, T0 + 1_500, 1, 20, &text(20)));
    // Exactly one slot freed.
    assert_rejected(
        say(&mut g, T0 + 1_500, 1, 21, &text(21)),
        Reason::RateLimited,
    );
}

#[test]
fn other_rejects_do_not_consume_rate_budget() {
    let mut g = guard_with(|c| c.chat.automute_rejects = 0);
    for i in 0..10 {
        assert_rejected(
            say(&mut g, T0, 1, i, &format!("go to site{i}.com")),
            Reason::Link,
        );
    }
    for i in 0..5 {
        assert_accepted(say(&mut g, T0, 1, 100 + i, &text(i as usize)));
    }
}

#[test]
fn rate_is_per_viewer() {
    let mut g = guard();
    for i in 0..5 {
        assert_accepted(say(&mut g, T0, 1, i, &text(i as usize)));
    }
    assert_rejected(say(&mut g, T0, 1, 5, &text(5)), Reason::RateLimited);
    assert_accepted(say(&mut g, T0, 2, 5, &text(5)));
}

#[test]
fn room_limits_override_the_viewer_rate() {
    let mut g = guard();
    let effect = ctl(
        &mut g,
        T0,
        Control::RoomLimits {
            room: ROOM,
            chat_per_sec: None,
            viewer_messages: Some(1),
        },
    );
    assert_eq!(effect, Effect::None);
    for i in 0..5 {
        assert_accepted(say(&mut g, T0, 1, i, &text(i as usize)));
    }
    let d = say(&mut g, T0, 1, 5, &text(5));
    assert_rejected(d, Reason::RateLimited);
    // One message per 30 s.
    assert_eq!(d.retry_after_ms, 30_000);
    // Other rooms keep the default.
    for i in 0..5 {
        assert_accepted(say_in(&mut g, T0, 8, 1, i, &text(i as usize)));
    }
    assert_eq!(say_in(&mut g, T0, 8, 1, 5, &text(5)).retry_after_ms, 1_500);
}

// ---------------------------------------------------------------------------
// Chat: slow mode.

#[test]
fn slow_mode_retry_after_is_the_remaining_wait() {
    let mut g = guard();
    let effect = ctl(
        &mut g,
        T0,
        Control::SlowMode {
            room: ROOM,
            secs: 10,
        },
    );
    assert_eq!(
        effect,
        Effect::Broadcast {
            room: ROOM,
            kind: NoticeKind::SlowMode,
            value: 10
        }
    );
    assert_accepted(say(&mut g, T0, 1, 1, &text(1)));
    let d = say(&mut g, T0 + 3_000, 1, 2, &text(2));
    assert_rejected(d, Reason::SlowMode);
    assert_eq!(d.retry_after_ms, 7_000);
    let d = say(&mut g, T0 + 9_999, 1, 3, &text(3));
    assert_rejected(d, Reason::SlowMode);
    assert_eq!(d.retry_after_ms, 1);
    assert_accepted(say(&mut g, T0 + 10_000, 1, 4, &text(4)));
}

#[test]
fn slow_mode_is_per_viewer_and_per_room() {
    let mut g = guard();
    slow_mode(&mut g, ROOM, 10);
    assert_accepted(say(&mut g, T0, 1, 1, &text(1)));
    assert_accepted(say(&mut g, T0 + 1, 2, 1, &text(2)));
    assert_accepted(say_in(&mut g, T0 + 2, 8, 1, 1, &text(1)));
    assert_accepted(say_in(&mut g, T0 + 3, 8, 1, 2, &text(2)));
}

#[test]
fn slow_mode_zero_turns_it_off() {
    let mut g = guard();
    slow_mode(&mut g, ROOM, 10);
    assert_accepted(say(&mut g, T0, 1, 1, &text(1)));
    slow_mode(&mut g, ROOM, 0);
    assert_accepted(say(&mut g, T0 + 1, 1, 2, &text(2)));
}

#[test]
fn slow_mode_default_from_config() {
    let mut g = guard_with(|c| c.chat.slow_mode_secs = 5);
    assert_accepted(say(&mut g, T0, 1, 1, &text(1)));
    let d = say(&mut g, T0 + 2_000, 1, 2, &text(2));
    assert_rejected(d, Reason::SlowMode);
    assert_eq!(d.retry_after_ms, 3_000);
}

#[test]
fn slow_mode_survives_leave_and_rejoin() {
    let mut g = guard();
    slow_mode(&mut g, ROOM, 60);
    join(&mut g, T0, ROOM, 1);
    assert_accepted(say(&mut g, T0, 1, 1, &text(1)));
    leave(&mut g, T0 + SEC, ROOM, 1);
    // Past the 30 s duplicate window, the viewer's state is swept.
    g.tick(T0 + 31 * SEC);
    join(&mut g, T0 + 31 * SEC, ROOM, 1);
    let d = say(&mut g, T0 + 32 * SEC, 1, 2, &text(2));
    assert_rejected(d, Reason::SlowMode);
    assert_eq!(d.retry_after_ms, 28_000);
}

// ---------------------------------------------------------------------------
// Chat: duplicates.

#[test]
fn same_text_again_is_a_duplicate() {
    let mut g = guard();
    assert_accepted(say(&mut g, T0, 1, 1, "主播这件衣服多少钱"));
    assert_rejected(
        say(&mut g, T0 + 2 * SEC, 1, 2, "主播这件衣服多少钱"),
        Reason::Duplicate,
    );
}

#[test]
fn normalized_variants_are_duplicates() {
    let mut g = guard();
    assert_accepted(say(&mut g, T0, 1, 1, "Hello there friend"));
    let variants = [
        "HELLO there FRIEND",                  // case
        "  hello   there\tfriend ",            // whitespace
        "hel\u{200B}lo the\u{200D}re friend",  // zero-width
        "ｈｅｌｌｏ\u{3000}ｔｈｅｒｅ friend", // full-width
    ];
    for (i, v) in variants.into_iter().enumerate() {
        let d = say(&mut g, T0 + (i as i64 + 1) * 2 * SEC, 1, 10 + i as u64, v);
        assert_rejected(d, Reason::Duplicate);
    }
}

#[test]
fn duplicate_is_per_viewer() {
    let mut g = guard();
    assert_accepted(say(&mut g, T0, 1, 1, &text(1)));
    assert_accepted(say(&mut g, T0, 2, 1, &text(1)));
}

#[test]
fn duplicate_is_forgotten_after_the_window() {
    // 30 s window.
    let mut g = guard();
    assert_accepted(say(&mut g, T0, 1, 1, &text(1)));
    assert_rejected(say(&mut g, T0 + 29_999, 1, 2, &text(1)), Reason::Duplicate);
    assert_accepted(say(&mut g, T0 + 30_000, 1, 3, &text(1)));
}

#[test]
fn duplicate_window_is_configurable() {
    let mut g = guard_with(|c| c.chat.duplicate_window_secs = 5);
    assert_accepted(say(&mut g, T0, 1, 1, &text(1)));
    assert_rejected(say(&mut g, T0 + 4 * SEC, 1, 2, &text(1)), Reason::Duplicate);
    assert_accepted(say(&mut g, T0 + 5 * SEC, 1, 3, &text(1)));
}

#[test]
fn rejected_message_is_not_remembered_as_a_duplicate() {
    let mut g = guard();
    slow_mode(&mut g, ROOM, 10);
    assert_accepted(say(&mut g, T0, 1, 1, &text(1)));
    assert_rejected(say(&mut g, T0 + SEC, 1, 2, &text(2)), Reason::SlowMode);
    assert_accepted(say(&mut g, T0 + 10 * SEC, 1, 3, &text(2)));
}

#[test]
fn busy_message_resent_later_is_not_a_duplicate() {
    let mut g = guard();
    room_cap(&mut g, 1);
    assert_accepted(say(&mut g, T0, 1, 1, &text(1)));
    let d = say(&mut g, T0, 2, 1, &text(2));
    assert_rejected(d, Reason::Busy);
    // Resent as a new message (new id) after the wait: same text, no dup.
    assert_accepted(say(
        &mut g,
        T0 + i64::from(d.retry_after_ms),
        2,
        2,
        &text(2),
    ));
}

// ---------------------------------------------------------------------------
// Chat: flood, too long.

#[test]
fn repeated_character_flood_is_rejected() {
    let mut g = guard_with(|c| c.chat.automute_rejects = 0);
    for (i, t) in [
        "哈哈哈哈哈哈哈哈哈哈",
        "hahahahahahahahahaha",
        "!!!!!!!!!!!!",
    ]
    .into_iter()
    .enumerate()
    {
        assert_rejected(
            say(&mut g, T0 + i as i64 * 2 * SEC, 1, i as u64, t),
            Reason::Flood,
        );
    }
}

#[test]
fn short_repetitions_are_not_a_flood() {
    let mut g = guard();
    for (i, t) in ["666", "哈哈哈", "hahaha"].into_iter().enumerate() {
        assert_accepted(say(&mut g, T0 + i as i64 * 2 * SEC, 1, i as u64, t));
    }
}

#[test]
fn too_long_counts_chars_not_bytes() {
    // Default max 200 chars; a CJK char is 3 bytes.
    let mut g = guard();
    assert_accepted(say(&mut g, T0, 1, 1, &cjk(200)));
    assert_rejected(say(&mut g, T0 + 2 * SEC, 1, 2, &cjk(201)), Reason::TooLong);
}

#[test]
fn too_long_follows_max_chars() {
    let mut g = guard_with(|c| c.chat.max_chars = 10);
    assert_accepted(say(&mut g, T0, 1, 1, &cjk(10)));
    assert_rejected(say(&mut g, T0 + 2 * SEC, 1, 2, &cjk(11)), Reason::TooLong);
}

// ---------------------------------------------------------------------------
// Chat: blocked terms.

fn add_terms(g: &mut Guard, room: Option<u64>, terms: &[&str]) {
    ctl(
        g,
        T0,
        Control::AddTerms {
            room,
            terms: terms.iter().map(|t| t.to_string()).collect(),
        },
    );
}

#[test]
fn global_term_from_config_is_blocked_in_every_room() {
    let mut g = guard_with(|c| c.chat.blocked_terms = vec!["scam".into()]);
    assert_rejected(
        say_in(&mut g, T0, 1, 1, 1, "this is a scam"),
        Reason::BlockedTerm,
    );
    assert_rejected(
        say_in(&mut g, T0, 2, 1, 1, "this is a scam"),
        Reason::BlockedTerm,
    );
}

#[test]
fn blocked_term_evasions_are_caught() {
    let mut g = guard_with(|c| c.chat.automute_rejects = 0);
    add_terms(&mut g, None, &["scam", "傻逼"]);
    let evasions = [
        "SCAM",               // case
        "s c a m",            // spaces
        "s.c.a.m",            // punctuation
        "s-c_a*m!",           // mixed punctuation
        "sssccaaammm",        // repeated letters
        "ｓｃａｍ",           // full-width
        "s\u{200B}cam",       // zero-width
        "5c4m",               // leetspeak
        "傻 逼",              // CJK with a space
        "傻.逼",              // CJK with punctuation
        "what a s c 4 m lol", // inside a sentence
        "s💩c💩a💩m",         // emoji between letters
        "ѕсаm",               // Cyrillic look-alikes
        "𝐬𝐜𝐚𝐦",               // mathematical bold
        "ⓢⓒⓐⓜ",               // circled letters
        "s\u{0301}cam",       // combining mark
    ];
    for (i, t) in evasions.into_iter().enumerate() {
        let d = say(&mut g, T0 + i as i64 * 2 * SEC, 1, i as u64, t);
        assert_rejected(d, Reason::BlockedTerm);
    }
}

#[test]
fn room_term_only_blocks_that_room() {
    let mut g = guard();
    add_terms(&mut g, Some(1), &["cheap watches"]);
    assert_rejected(
        say_in(&mut g, T0, 1, 1, 1, "Cheap  Watches here"),
        Reason::BlockedTerm,
    );
    assert_accepted(say_in(&mut g, T0, 2, 1, 1, "Cheap  Watches here"));
}

#[test]
fn wildcard_term_matches_pieces_in_order() {
    let mut g = guard();
    add_terms(&mut g, Some(ROOM), &["free*money"]);
    assert_rejected(
        say(&mut g, T0, 1, 1, "free gifts and easy money"),
        Reason::BlockedTerm,
    );
    assert_rejected(say(&mut g, T0, 2, 1, "freemoney"), Reason::BlockedTerm);
    assert_accepted(say(&mut g, T0, 3, 1, "money is not free"));
}

#[test]
fn remove_terms_lifts_the_block() {
    let mut g = guard();
    add_terms(&mut g, Some(ROOM), &["scam"]);
    add_terms(&mut g, None, &["傻逼"]);
    assert_rejected(say(&mut g, T0, 1, 1, "total scam"), Reason::BlockedTerm);
    assert_rejected(say(&mut g, T0, 2, 1, "你个傻逼"), Reason::BlockedTerm);
    ctl(
        &mut g,
        T0,
        Control::RemoveTerms {
            room: Some(ROOM),
            terms: vec!["scam".into()],
        },
    );
    ctl(
        &mut g,
        T0,
        Control::RemoveTerms {
            room: None,
            terms: vec!["傻逼".into()],
        },
    );
    assert_accepted(say(&mut g, T0 + 2 * SEC, 1, 2, "total scam"));
    assert_accepted(say(&mut g, T0 + 2 * SEC, 2, 2, "你个傻逼"));
}

#[test]
fn invalid_term_is_refused_and_the_list_kept() {
    let mut g = guard();
    add_terms(&mut g, Some(ROOM), &["scam"]);
    let r = g.control(
        T0,
        &Control::AddTerms {
            room: Some(ROOM),
            terms: vec!["***".into()],
        },
    );
    assert!(matches!(r, Err(ControlError::Term(_))));
    assert_eq!(
        g.room_settings(ROOM).blocked_terms,
        vec!["scam".to_string()]
    );
    assert_rejected(say(&mut g, T0, 1, 1, "scam"), Reason::BlockedTerm);
    let r = g.control(
        T0,
        &Control::AddTerms {
            room: None,
            terms: vec!["!!".into()],
        },
    );
    assert!(r.is_err());
    assert!(g.room_settings(ROOM).global_terms.is_empty());
}

// ---------------------------------------------------------------------------
// Chat: links and contact info.

#[test]
fn links_are_rejected_including_evasions() {
    let mut g = guard_with(|c| c.chat.automute_rejects = 0);
    let links = [
        "see https://example.org/x",
        "www.example.org",
        "go to abc.com now",
        "abc dot com",
        "abc . com",
        "abc(.)com",
        "abc点com",
        "abc。com",
        "ａｂｃ．ｃｏｍ",
        "t.cn/abc",
        "bit.ly/xyz",
    ];
    for (i, t) in links.into_iter().enumerate() {
        assert_rejected(
            say(&mut g, T0 + i as i64 * 2 * SEC, 1, i as u64, t),
            Reason::Link,
        );
    }
}

#[test]
fn sentences_with_dots_are_not_links() {
    let mut g = guard();
    for (i, t) in ["thanks. me too", "hello.company is fine", "好的。明天见"]
        .into_iter()
        .enumerate()
    {
        assert_accepted(say(&mut g, T0 + i as i64 * 2 * SEC, 1, i as u64, t));
    }
}

#[test]
fn contact_info_is_rejected() {
    let mut g = guard_with(|c| c.chat.automute_rejects = 0);
    let contacts = [
        "call me 13800138000",         // phone
        "call 138 0013 8000",          // phone with spaces
        "一三八零零一三八零零零",      // phone in Chinese numerals
        "１３８００１３８０００",      // full-width digits
        "加微信 abc12345",             // WeChat
        "vx: wxid_abcdef",             // WeChat, short marker
        "v❤信 hello_kitty99",          // WeChat, decorated marker
        "qq 123456789",                // QQ
        "扣扣：88123",                 // QQ, Chinese marker
        "138\u{200B}0013\u{200B}8000", // phone with zero-width
        "ｖｘ：ａｂｃ１２３４５",      // full-width WeChat
    ];
    for (i, t) in contacts.into_iter().enumerate() {
        let d = say(&mut g, T0 + i as i64 * 2 * SEC, 1, i as u64, t);
        assert_rejected(d, Reason::ContactInfo);
    }
}

#[test]
fn ordinary_numbers_are_not_contact_info() {
    let mut g = guard();
    for (i, t) in [
        "这件99元",
        "我爱你5201314",
        "可以用微信支付吗",
        "do you have a wechat account",
    ]
    .into_iter()
    .enumerate()
    {
        assert_accepted(say(&mut g, T0 + i as i64 * 2 * SEC, 1, i as u64, t));
    }
}

// ---------------------------------------------------------------------------
// Chat: spam waves.

const WAVE: &str = "follow my channel for free gifts today";

#[test]
fn spam_wave_first_k_minus_one_copies_pass() {
    // 5 viewers within 20 s.
    let mut g = guard();
    for v in 1..=4 {
        assert_accepted(say(&mut g, T0 + v as i64 * SEC, v, 1, WAVE));
    }
    assert_rejected(say(&mut g, T0 + 5 * SEC, 5, 1, WAVE), Reason::SpamWave);
    assert_rejected(say(&mut g, T0 + 6 * SEC, 6, 1, WAVE), Reason::SpamWave);
}

#[test]
fn spam_wave_counts_normalized_variants() {
    let mut g = guard();
    let variants = [
        WAVE,
        "FOLLOW my channel for FREE gifts today",
        "follow  my channel\u{200B} for free gifts today",
        "ｆｏｌｌｏｗ my channel for free gifts today",
    ];
    for (v, t) in variants.into_iter().enumerate() {
        assert_accepted(say(&mut g, T0, v as u64 + 1, 1, t));
    }
    assert_rejected(
        say(&mut g, T0, 9, 1, " Follow my channel for free gifts today "),
        Reason::SpamWave,
    );
}

#[test]
fn spam_wave_needs_distinct_viewers_within_the_window() {
    let mut g = guard();
    // Copies 21 s apart never build a wave.
    for v in 1..=8 {
        assert_accepted(say(&mut g, T0 + v as i64 * 21 * SEC, v, 1, WAVE));
    }
}

#[test]
fn spam_wave_lasts_while_copies_keep_coming_and_ends_after_quiet() {
    let mut g = guard();
    for v in 1..=4 {
        assert_accepted(say(&mut g, T0, v, 1, WAVE));
    }
    assert_rejected(say(&mut g, T0, 5, 1, WAVE), Reason::SpamWave);
    // Copies 15 s apart keep the wave on, even though the first viewers
    // left the window.
    let mut last = T0;
    for v in 6..=10 {
        last += 15 * SEC;
        assert_rejected(say(&mut g, last, v, 1, WAVE), Reason::SpamWave);
    }
    // 20 s of quiet ends it.
    assert_rejected(say(&mut g, last + 19_999, 11, 1, WAVE), Reason::SpamWave);
    last += 19_999;
    assert_accepted(say(&mut g, last + 20_000, 12, 1, WAVE));
}

#[test]
fn spam_wave_is_per_room() {
    let mut g = guard();
    for v in 1..=4 {
        assert_accepted(say_in(&mut g, T0, 1, v, 1, WAVE));
    }
    assert_rejected(say_in(&mut g, T0, 1, 5, 1, WAVE), Reason::SpamWave);
    assert_accepted(say_in(&mut g, T0, 2, 5, 1, WAVE));
}

#[test]
fn short_cheers_never_make_a_wave() {
    // raid_min_chars 8: "主播今天真好看" has 7 chars.
    let mut g = guard();
    for v in 1..=30 {
        let at = T0 + v as i64 * 100;
        assert_accepted(say(&mut g, at, v, 1, "主播今天真好看"));
        assert_accepted(say(&mut g, at, v, 2, "666"));
    }
}

#[test]
fn texts_at_raid_min_chars_do_count() {
    let mut g = guard();
    for v in 1..=4 {
        assert_accepted(say(&mut g, T0, v, 1, "主播今天真好看啊"));
    }
    assert_rejected(say(&mut g, T0, 5, 1, "主播今天真好看啊"), Reason::SpamWave);
}

#[test]
fn raid_viewers_and_window_are_configurable() {
    let mut g = guard_with(|c| {
        c.chat.raid_viewers = 3;
        c.chat.raid_window_secs = 5;
    });
    assert_accepted(say(&mut g, T0, 1, 1, WAVE));
    assert_accepted(say(&mut g, T0, 2, 1, WAVE));
    assert_rejected(say(&mut g, T0, 3, 1, WAVE), Reason::SpamWave);
    assert_accepted(say(&mut g, T0 + 5 * SEC, 4, 1, WAVE));
}

// ---------------------------------------------------------------------------
// Chat: mute, auto-mute, ban.

#[test]
fn mute_rejects_with_the_remaining_time_then_expires() {
    let mut g = guard();
    let e = ctl(
        &mut g,
        T0,
        Control::Mute {
            room: ROOM,
            viewer: 1,
            secs: 60,
        },
    );
    assert_eq!(
        e,
        Effect::Viewer {
            room: ROOM,
            viewer: 1,
            kind: NoticeKind::Muted,
            value: 60
        }
    );
    let d = say(&mut g, T0 + SEC, 1, 1, &text(1));
    assert_rejected(d, Reason::Muted);
    assert_eq!(d.retry_after_ms, 59_000);
    assert_accepted(say(&mut g, T0 + SEC, 2, 1, &text(1)));
    assert_accepted(say_in(&mut g, T0 + SEC, 8, 1, 1, &text(1)));
    assert_accepted(say(&mut g, T0 + 60 * SEC, 1, 2, &text(1)));
}

#[test]
fn mute_zero_is_indefinite_until_unmuted() {
    let mut g = guard();
    mute(&mut g, T0, 1, 0);
    let later = T0 + 365 * DAY;
    g.tick(later);
    let d = say(&mut g, later, 1, 1, &text(1));
    assert_rejected(d, Reason::Muted);
    assert_eq!(d.retry_after_ms, 0);
    let e = ctl(
        &mut g,
        later,
        Control::Unmute {
            room: ROOM,
            viewer: 1,
        },
    );
    assert_eq!(
        e,
        Effect::Viewer {
            room: ROOM,
            viewer: 1,
            kind: NoticeKind::Unmuted,
            value: 0
        }
    );
    assert_accepted(say(&mut g, later, 1, 2, &text(1)));
}

#[test]
fn muted_rejects_do_not_extend_into_an_auto_mute() {
    let mut g = guard();
    mute(&mut g, T0, 1, 10);
    for i in 0..10 {
        let d = say(&mut g, T0 + i * 100, 1, i as u64, &text(i as usize));
        assert_rejected(d, Reason::Muted);
        assert_eq!(d.muted_secs, 0);
    }
    assert_accepted(say(&mut g, T0 + 10 * SEC, 1, 100, &text(100)));
}

#[test]
fn auto_mute_after_n_rejects_within_the_window() {
    // 5 rejects within 60 s → muted 300 s.
    let mut g = guard();
    for i in 0..4 {
        let d = say(
            &mut g,
            T0 + i * SEC,
            1,
            i as u64,
            &format!("visit site{i}.com"),
        );
        assert_rejected(d, Reason::Link);
        assert_eq!(d.muted_secs, 0);
    }
    let d = say(&mut g, T0 + 4 * SEC, 1, 4, "visit site4.com");
    assert_rejected(d, Reason::Link);
    assert_eq!(d.muted_secs, 300);
    let d = say(&mut g, T0 + 5 * SEC, 1, 5, &text(5));
    assert_rejected(d, Reason::Muted);
    assert_eq!(d.retry_after_ms, 299_000);
    assert_eq!(d.muted_secs, 0);
    assert_eq!(g.room_settings(ROOM).muted, vec![1]);
    assert_accepted(say(&mut g, T0 + 4 * SEC + 300 * SEC, 1, 6, &text(6)));
}

#[test]
fn auto_mute_counts_mixed_reject_reasons() {
    let mut g = guard_with(|c| c.chat.blocked_terms = vec!["scam".into()]);
    let msgs = [
        "scam",
        "abc.com",
        "call 13800138000",
        "哈哈哈哈哈哈哈哈哈哈",
    ];
    for (i, m) in msgs.into_iter().enumerate() {
        assert_eq!(
            say(&mut g, T0 + i as i64 * SEC, 1, i as u64, m).muted_secs,
            0
        );
    }
    assert_eq!(
        say(&mut g, T0 + 5 * SEC, 1, 9, "scam again").muted_secs,
        300
    );
}

#[test]
fn rejects_outside_the_auto_mute_window_do_not_add_up() {
    let mut g = guard();
    for i in 0..4 {
        say(&mut g, T0, 1, i, &format!("visit site{i}.com"));
    }
    let d = say(&mut g, T0 + 60 * SEC, 1, 10, "visit other.com");
    assert_rejected(d, Reason::Link);
    assert_eq!(d.muted_secs, 0);
    assert_accepted(say(&mut g, T0 + 61 * SEC, 1, 11, &text(11)));
}

#[test]
fn auto_mute_zero_is_off() {
    let mut g = guard_with(|c| c.chat.automute_rejects = 0);
    for i in 0..20 {
        let d = say(
            &mut g,
            T0 + i * 100,
            1,
            i as u64,
            &format!("visit site{i}.com"),
        );
        assert_rejected(d, Reason::Link);
        assert_eq!(d.muted_secs, 0);
    }
    assert_accepted(say(&mut g, T0 + 3 * SEC, 1, 100, &text(1)));
}

#[test]
fn ban_rejects_join_and_chat_until_unbanned() {
    let mut g = guard();
    let e = ctl(
        &mut g,
        T0,
        Control::Ban {
            room: ROOM,
            viewer: 1,
        },
    );
    assert_eq!(
        e,
        Effect::Kick {
            room: ROOM,
            viewer: 1
        }
    );
    assert_rejected(join(&mut g, T0, ROOM, 1), Reason::Banned);
    for i in 0..10 {
        let d = say(&mut g, T0 + i, 1, i as u64, &text(i as usize));
        assert_rejected(d, Reason::Banned);
        assert_eq!(d.muted_secs, 0);
    }
    // Other rooms are not affected.
    assert_accepted(join(&mut g, T0, 8, 1));
    assert_accepted(say_in(&mut g, T0, 8, 1, 1, &text(1)));
    assert_eq!(
        ctl(
            &mut g,
            T0,
            Control::Unban {
                room: ROOM,
                viewer: 1
            }
        ),
        Effect::None
    );
    assert_accepted(join(&mut g, T0 + SEC, ROOM, 1));
    assert_accepted(say(&mut g, T0 + SEC, 1, 100, &text(100)));
}

#[test]
fn ban_outlasts_tick() {
    let mut g = guard();
    ctl(
        &mut g,
        T0,
        Control::Ban {
            room: ROOM,
            viewer: 1,
        },
    );
    g.tick(T0 + 30 * DAY);
    assert_rejected(join(&mut g, T0 + 30 * DAY, ROOM, 1), Reason::Banned);
}

#[test]
fn banned_wins_over_muted() {
    let mut g = guard();
    mute(&mut g, T0, 1, 60);
    ctl(
        &mut g,
        T0,
        Control::Ban {
            room: ROOM,
            viewer: 1,
        },
    );
    assert_rejected(say(&mut g, T0, 1, 1, &text(1)), Reason::Banned);
}

// ---------------------------------------------------------------------------
// Chat: room cap (`busy`).

#[test]
fn room_cap_answers_busy_with_retry_after() {
    let mut g = guard();
    room_cap(&mut g, 2);
    assert_accepted(say(&mut g, T0, 1, 1, &text(1)));
    assert_accepted(say(&mut g, T0, 2, 1, &text(2)));
    let d = say(&mut g, T0, 3, 1, &text(3));
    assert_rejected(d, Reason::Busy);
    assert_eq!(d.retry_after_ms, 500);
    assert_accepted(say(&mut g, T0 + 500, 3, 2, &text(3)));
}

#[test]
fn busy_does_not_count_for_auto_mute_or_rate() {
    let mut g = guard();
    room_cap(&mut g, 1);
    assert_accepted(say(&mut g, T0, 1, 1, &text(1)));
    // Ten attempts: more than the viewer's burst of 5 and the auto-mute
    // threshold of 5, yet all stay `busy`.
    for i in 0..10 {
        let d = say(&mut g, T0 + i, 2, i as u64, &text(100 + i as usize));
        assert_rejected(d, Reason::Busy);
        assert_eq!(d.muted_secs, 0);
    }
    assert_accepted(say(&mut g, T0 + SEC, 2, 100, &text(200)));
}

#[test]
fn busy_client_id_is_decided_afresh() {
    let mut g = guard();
    room_cap(&mut g, 1);
    assert_accepted(say(&mut g, T0, 1, 1, &text(1)));
    let d = say(&mut g, T0, 2, 77, &text(2));
    assert_rejected(d, Reason::Busy);
    assert_eq!(g.remembered(), 1);
    let again = say(&mut g, T0 + i64::from(d.retry_after_ms), 2, 77, &text(2));
    assert!(!again.replay);
    assert_accepted(again);
    assert!(say(&mut g, T0 + 2 * SEC, 2, 77, &text(2)).replay);
}

#[test]
fn room_cap_is_per_room() {
    let mut g = guard();
    room_cap(&mut g, 1);
    assert_accepted(say(&mut g, T0, 1, 1, &text(1)));
    assert_rejected(say(&mut g, T0, 2, 1, &text(2)), Reason::Busy);
    assert_accepted(say_in(&mut g, T0, 8, 2, 1, &text(2)));
}

#[test]
fn resend_after_rate_limited_retry_after_is_decided_afresh() {
    let mut g = guard();
    for i in 0..5 {
        assert_accepted(say(&mut g, T0, 1, i, &text(i as usize)));
    }
    let d = say(&mut g, T0, 1, 5, &text(5));
    assert_rejected(d, Reason::RateLimited);
    // The client waits as told and resends with the same id (PROTOCOL.md:
    // "keep it across resends").
    let again = say(&mut g, T0 + i64::from(d.retry_after_ms), 1, 5, &text(5));
    assert!(!again.replay, "{again:?}");
    assert_accepted(again);
}

// ---------------------------------------------------------------------------
// Chat: rule order.

#[test]
fn first_failing_rule_decides() {
    let mut g = guard_with(|c| {
        c.chat.blocked_terms = vec!["scam".into()];
        c.chat.automute_rejects = 0;
    });
    // Blocked term before link before contact.
    assert_rejected(
        say(&mut g, T0, 1, 1, "scam at abc.com 13800138000"),
        Reason::BlockedTerm,
    );
    assert_rejected(say(&mut g, T0, 2, 1, "abc.com 13800138000"), Reason::Link);
    // Too long before everything content-based.
    let long = format!("scam {}", cjk(300));
    assert_rejected(say(&mut g, T0, 3, 1, &long), Reason::TooLong);
}

// ---------------------------------------------------------------------------
// Dry-run.

#[test]
fn dry_run_rule_lets_the_event_pass_and_records_the_reason() {
    let mut g = guard_with(|c| c.dry_run = vec!["contact_info".into()]);
    let d = say(&mut g, T0, 1, 1, "call me 13800138000");
    assert_eq!(d.verdict, Verdict::Accepted);
    assert_eq!(d.reason, Reason::None);
    assert!(d.dry_run.contains(Reason::ContactInfo));
    assert!(d.stores());
}

#[test]
fn dry_run_control_switches_the_rule() {
    let mut g = guard_with(|c| c.dry_run = vec!["contact_info".into()]);
    dry_run(&mut g, Reason::ContactInfo, false);
    assert!(!g.is_dry_run(Reason::ContactInfo));
    let d = say(&mut g, T0, 1, 1, "call me 13800138000");
    assert_rejected(d, Reason::ContactInfo);
    assert!(d.dry_run.is_empty());
    dry_run(&mut g, Reason::ContactInfo, true);
    let d = say(&mut g, T0, 2, 1, "call me 13800138000");
    assert_eq!(d.verdict, Verdict::Accepted);
    assert!(d.dry_run.contains(Reason::ContactInfo));
}

#[test]
fn dry_run_rule_does_not_hide_a_later_real_reject() {
    let mut g = guard_with(|c| c.dry_run = vec!["link".into()]);
    let d = say(&mut g, T0, 1, 1, "abc.com or 13800138000");
    assert_rejected(d, Reason::ContactInfo);
    assert!(d.dry_run.contains(Reason::Link));
}

#[test]
fn dry_run_spam_wave_and_duplicate() {
    let mut g = guard_with(|c| c.dry_run = vec!["spam_wave".into(), "duplicate".into()]);
    for v in 1..=4 {
        assert_accepted(say(&mut g, T0, v, 1, WAVE));
    }
    let d = say(&mut g, T0, 5, 1, WAVE);
    assert_eq!(d.verdict, Verdict::Accepted);
    assert!(d.dry_run.contains(Reason::SpamWave));
    let d = say(&mut g, T0 + 2 * SEC, 5, 2, WAVE);
    assert_eq!(d.verdict, Verdict::Accepted);
    assert!(d.dry_run.contains(Reason::Duplicate));
}

#[test]
fn dry_run_does_not_count_for_auto_mute() {
    let mut g = guard_with(|c| c.dry_run = vec!["link".into()]);
    for i in 0..4 {
        let d = say(
            &mut g,
            T0 + i * 2 * SEC,
            1,
            i as u64,
            &format!("visit site{i}.com"),
        );
        assert_eq!(d.verdict, Verdict::Accepted);
        assert_eq!(d.muted_secs, 0);
    }
    for i in 0..4 {
        let d = say(
            &mut g,
            T0 + (10 + i) * 2 * SEC,
            1,
            10 + i as u64,
            &format!("visit moresite{i}.com"),
        );
        assert_eq!(d.verdict, Verdict::Accepted);
        assert_eq!(d.muted_secs, 0);
    }
}

#[test]
fn dry_run_rate_limited_for_likes_admits_every_tap() {
    let mut g = guard_with(|c| c.dry_run = vec!["rate_limited".into()]);
    let d = like(&mut g, T0, 1, 100);
    assert_eq!(d.verdict, Verdict::Accepted);
    assert_eq!(d.admitted, 100);
    assert!(d.dry_run.contains(Reason::RateLimited));
}

// ---------------------------------------------------------------------------
// Likes.

#[test]
fn likes_within_the_cap_are_all_admitted() {
    let mut g = guard();
    let d = like(&mut g, T0, 1, 20);
    assert_eq!(d.verdict, Verdict::Accepted);
    assert_eq!(d.reason, Reason::None);
    assert_eq!(d.admitted, 20);
    assert!(d.stores());
}

#[test]
fn likes_over_the_cap_are_partly_admitted_then_rejected_then_recover() {
    // 20 taps/s, burst 20.
    let mut g = guard();
    let d = like(&mut g, T0, 1, 50);
    assert_eq!(
        (d.verdict, d.reason, d.admitted),
        (Verdict::Accepted, Reason::RateLimited, 20)
    );
    assert!(d.stores());
    let d = like(&mut g, T0 + 10, 1, 5);
    assert_eq!(
        (d.verdict, d.reason, d.admitted),
        (Verdict::Rejected, Reason::RateLimited, 0)
    );
    assert!(!d.stores());
    let d = like(&mut g, T0 + SEC, 1, 50);
    assert_eq!(d.admitted, 20);
    // Another viewer has their own cap.
    assert_eq!(like(&mut g, T0, 2, 20).admitted, 20);
}

#[test]
fn likes_admitted_over_time_stay_within_rate_plus_burst() {
    let mut g = guard();
    let mut total = 0u32;
    // Ten seconds of 100-tap frames every 100 ms.
    for step in 0..100 {
        total += like(&mut g, T0 + step * 100, 1, 100).admitted;
    }
    // Over [T0, T0 + 9.9 s]: at most burst + rate × 9.9 s.
    assert!(total <= 20 + 198, "{total}");
    // And the steady state is the cap: every second after the first admits 20.
    let mut g = guard();
    like(&mut g, T0, 1, 1_000);
    for s in 1..10 {
        assert_eq!(like(&mut g, T0 + s * SEC, 1, 1_000).admitted, 20);
    }
}

#[test]
fn like_config_sets_the_cap() {
    let mut g = guard_with(|c| {
        c.likes.viewer_per_sec = 5;
        c.likes.viewer_burst = 5;
    });
    assert_eq!(like(&mut g, T0, 1, 50).admitted, 5);
    assert_eq!(like(&mut g, T0 + SEC, 1, 50).admitted, 5);
}

// ---------------------------------------------------------------------------
// Leads: the room's checks.

#[test]
fn good_lead_is_accepted_with_full_score() {
    let mut g = guard();
    let c = lead_check(&mut g, T0, ROOM, 1, "10.0.0.1", &lead(1, "138 0013 8000")).unwrap();
    assert_eq!(c.phone_e164, "+8613800138000");
    assert_eq!(c.phone_key, "k:+8613800138000");
    let v = g.lead_finish(&c);
    assert_lead(&v, Verdict::Accepted, Reason::None);
    assert_eq!(v.score, 100);
    assert!(v.reasons.is_empty());
    assert!(v.decision.stores());
}

#[test]
fn phone_invalid_is_rejected() {
    let mut g = guard();
    for (n, p) in [
        "not a phone",
        "",
        "12012873465",
        "1391287346",
        "+86 139 1287 3465 999",
    ]
    .into_iter()
    .enumerate()
    {
        let v = submit_fresh(&mut g, T0, ROOM, n as u64, p);
        assert_lead(&v, Verdict::Rejected, Reason::PhoneInvalid);
        assert_eq!(v.score, 0);
        assert!(!v.decision.stores());
    }
}

#[test]
fn phone_unreachable_iot_and_data_only_ranges() {
    let mut g = guard();
    // 13-digit IoT 10648, 11-digit 146 (IoT) and 13-digit 1440.
    for (n, p) in ["1064812345678", "14612873465", "1440 1287 3465 1"]
        .into_iter()
        .enumerate()
    {
        let v = submit_fresh(&mut g, T0, ROOM, n as u64, p);
        assert_lead(&v, Verdict::Rejected, Reason::PhoneUnreachable);
        assert!(v.reasons.contains(Reason::PhoneUnreachable));
    }
}

#[test]
fn voice_capable_14x_is_accepted() {
    let mut g = guard();
    let v = submit_fresh(&mut g, T0, ROOM, 1, "14712873465");
    assert_lead(&v, Verdict::Accepted, Reason::None);
}

#[test]
fn virtual_operator_is_accepted_but_flagged_with_a_lower_score() {
    // Penalty 30, suspect below 60: 70 is accepted.
    let mut g = guard();
    let v = submit_fresh(&mut g, T0, ROOM, 1, "17055512398");
    assert_lead(&v, Verdict::Accepted, Reason::VirtualOperator);
    assert_eq!(v.score, 70);
    assert!(v.reasons.contains(Reason::VirtualOperator));
    assert!(!v.reasons.contains(Reason::LowScore));
    assert!(v.decision.stores());
}

#[test]
fn virtual_operator_is_suspect_when_the_penalty_crosses_the_threshold() {
    let mut g = guard_with(|c| c.leads.virtual_operator_penalty = 50);
    let v = submit_fresh(&mut g, T0, ROOM, 1, "17055512398");
    assert_lead(&v, Verdict::Suspect, Reason::VirtualOperator);
    assert_eq!(v.score, 50);
    assert!(v.reasons.contains(Reason::LowScore));
    assert!(v.decision.stores());

    let mut g = guard_with(|c| c.leads.suspect_below = 71);
    let v = submit_fresh(&mut g, T0, ROOM, 1, "16512873465");
    assert_lead(&v, Verdict::Suspect, Reason::VirtualOperator);
    assert_eq!(v.score, 70);
}

#[test]
fn fake_pattern_lowers_the_score_to_suspect() {
    // Penalty 50 → score 50 < 60.
    let mut g = guard();
    for (n, p) in ["13812345678", "13888888888", "13987654321"]
        .into_iter()
        .enumerate()
    {
        let v = submit_fresh(&mut g, T0, ROOM, n as u64, p);
        assert_lead(&v, Verdict::Suspect, Reason::FakePattern);
        assert_eq!(v.score, 50);
        assert!(v.reasons.contains(Reason::LowScore));
    }
}

#[test]
fn suspect_threshold_is_strictly_below() {
    let mut g = guard_with(|c| c.leads.suspect_below = 50);
    let v = submit_fresh(&mut g, T0, ROOM, 1, "13812345678");
    assert_lead(&v, Verdict::Accepted, Reason::FakePattern);
    assert_eq!(v.score, 50);
    let mut g = guard_with(|c| c.leads.suspect_below = 51);
    let v = submit_fresh(&mut g, T0, ROOM, 1, "13812345678");
    assert_lead(&v, Verdict::Suspect, Reason::FakePattern);
}

#[test]
fn virtual_and_fake_penalties_add_up() {
    let mut g = guard();
    let v = submit_fresh(&mut g, T0, ROOM, 1, "17012345678");
    assert_lead(&v, Verdict::Suspect, Reason::VirtualOperator);
    assert_eq!(v.score, 20);
    assert!(v.reasons.contains(Reason::FakePattern));
    assert!(v.reasons.contains(Reason::LowScore));
}

#[test]
fn score_never_goes_below_zero() {
    let mut g = guard_with(|c| {
        c.leads.virtual_operator_penalty = 90;
        c.leads.fake_pattern_penalty = 90;
    });
    let v = submit_fresh(&mut g, T0, ROOM, 1, "17012345678");
    assert_eq!(v.score, 0);
    assert_eq!(v.decision.verdict, Verdict::Suspect);
}

#[test]
fn duplicate_wins_over_a_low_score() {
    let mut g = guard();
    let v = submit_fresh(&mut g, T0, ROOM, 1, "13812345678");
    assert_lead(&v, Verdict::Suspect, Reason::FakePattern);
    let v = submit_fresh(&mut g, T0, ROOM, 2, "13812345678");
    assert_lead(&v, Verdict::Duplicate, Reason::DuplicateLead);
    assert_eq!(v.score, 50);
}

#[test]
fn no_consent_is_rejected() {
    let mut g = guard();
    let mut l = lead(1, GOOD_PHONE);
    l.consent = false;
    let v = submit(&mut g, T0, ROOM, 1, "10.0.0.1", &l).unwrap();
    assert_lead(&v, Verdict::Rejected, Reason::NoConsent);
    assert_eq!(v.score, 0);
}

#[test]
fn filled_honeypot_is_rejected() {
    let mut g = guard();
    let mut l = lead(1, GOOD_PHONE);
    l.honeypot = "http://spam".into();
    let v = submit(&mut g, T0, ROOM, 1, "10.0.0.1", &l).unwrap();
    assert_lead(&v, Verdict::Rejected, Reason::BotHoneypot);
}

#[test]
fn too_fast_boundary_is_min_fill_ms() {
    let mut g = guard();
    let mut l = lead(1, GOOD_PHONE);
    l.fill_ms = 2_999;
    let v = submit(&mut g, T0, ROOM, 1, "10.0.0.1", &l).unwrap();
    assert_lead(&v, Verdict::Rejected, Reason::TooFast);
    let mut l = lead(2, "13912873466");
    l.fill_ms = 3_000;
    let v = submit(&mut g, T0, ROOM, 2, "10.0.0.2", &l).unwrap();
    assert_lead(&v, Verdict::Accepted, Reason::None);
}

#[test]
fn hard_reject_reason_follows_priority_and_lists_all() {
    let mut g = guard();
    let mut l = lead(1, "13812345678");
    l.consent = false;
    l.fill_ms = 10;
    let v = submit(&mut g, T0, ROOM, 1, "10.0.0.1", &l).unwrap();
    assert_lead(&v, Verdict::Rejected, Reason::NoConsent);
    for r in [Reason::NoConsent, Reason::TooFast, Reason::FakePattern] {
        assert!(v.reasons.contains(r), "{r:?} in {:?}", v.reasons);
    }
}

// ---------------------------------------------------------------------------
// Leads: cross-room facts (stages).

#[test]
fn duplicate_lead_same_phone_same_room() {
    let mut g = guard();
    let v = submit_fresh(&mut g, T0, ROOM, 1, GOOD_PHONE);
    assert_lead(&v, Verdict::Accepted, Reason::None);
    // Same number typed differently, another viewer.
    let v = submit_fresh(&mut g, T0 + HOUR, ROOM, 2, "+86 139-1287-3465");
    assert_lead(&v, Verdict::Duplicate, Reason::DuplicateLead);
    assert!(v.reasons.contains(Reason::DuplicateLead));
    assert!(v.decision.stores());
}

#[test]
fn duplicate_lead_different_room_is_fine() {
    let mut g = guard();
    submit_fresh(&mut g, T0, 1, 1, GOOD_PHONE);
    let v = submit_fresh(&mut g, T0, 2, 2, GOOD_PHONE);
    assert_lead(&v, Verdict::Accepted, Reason::None);
}

#[test]
fn duplicate_lead_expires_after_24_hours() {
    let mut g = guard();
    submit_fresh(&mut g, T0, ROOM, 1, GOOD_PHONE);
    let v = submit_fresh(&mut g, T0 + DAY - 1, ROOM, 2, GOOD_PHONE);
    assert_lead(&v, Verdict::Duplicate, Reason::DuplicateLead);
    let v = submit_fresh(&mut g, T0 + 2 * DAY, ROOM, 3, GOOD_PHONE);
    assert_lead(&v, Verdict::Accepted, Reason::None);
}

#[test]
fn rejected_lead_does_not_make_the_next_one_a_duplicate() {
    let mut g = guard();
    let mut l = lead(1, GOOD_PHONE);
    l.consent = false;
    let v = submit(&mut g, T0, ROOM, 1, "10.0.0.1", &l).unwrap();
    assert_lead(&v, Verdict::Rejected, Reason::NoConsent);
    // The viewer ticks the box and submits again.
    let v = submit(
        &mut g,
        T0 + 30 * SEC,
        ROOM,
        1,
        "10.0.0.1",
        &lead(2, GOOD_PHONE),
    )
    .unwrap();
    assert_lead(&v, Verdict::Accepted, Reason::None);
}

#[test]
fn velocity_viewer_rejects_the_fourth_lead_in_an_hour() {
    let mut g = guard();
    let phones = ["13912873461", "13912873462", "13912873463", "13912873464"];
    for (i, p) in phones[..3].iter().enumerate() {
        let v = submit(&mut g, T0, ROOM, 1, "10.0.0.1", &lead(i as u64, p)).unwrap();
        assert_lead(&v, Verdict::Accepted, Reason::None);
    }
    let v = submit(&mut g, T0, ROOM, 1, "10.0.0.1", &lead(3, phones[3])).unwrap();
    assert_lead(&v, Verdict::Rejected, Reason::VelocityViewer);
    // A viewer is counted across rooms.
    let v = submit(&mut g, T0, 8, 1, "10.0.0.1", &lead(4, "13912873460")).unwrap();
    assert_lead(&v, Verdict::Rejected, Reason::VelocityViewer);
    // Another viewer on the same IP is fine.
    let v = submit(&mut g, T0, ROOM, 2, "10.0.0.1", &lead(0, "13912873459")).unwrap();
    assert_lead(&v, Verdict::Accepted, Reason::None);
    // After the window the viewer may submit again.
    let v = submit(
        &mut g,
        T0 + HOUR,
        ROOM,
        1,
        "10.0.0.9",
        &lead(5, "13912873458"),
    )
    .unwrap();
    assert_lead(&v, Verdict::Accepted, Reason::None);
}

#[test]
fn velocity_ip_rejects_the_eleventh_lead_in_an_hour() {
    let mut g = guard();
    for n in 0..10u64 {
        let phone = format!("139128734{n:02}");
        let v = submit(&mut g, T0, ROOM, 100 + n, "10.9.9.9", &lead(n, &phone)).unwrap();
        assert_lead(&v, Verdict::Accepted, Reason::None);
    }
    let v = submit(&mut g, T0, ROOM, 200, "10.9.9.9", &lead(1, "13912873499")).unwrap();
    assert_lead(&v, Verdict::Rejected, Reason::VelocityIp);
    let v = submit(&mut g, T0, ROOM, 201, "10.9.9.8", &lead(1, "13912873498")).unwrap();
    assert_lead(&v, Verdict::Accepted, Reason::None);
    let v = submit(
        &mut g,
        T0 + HOUR,
        ROOM,
        202,
        "10.9.9.9",
        &lead(1, "13912873497"),
    )
    .unwrap();
    assert_lead(&v, Verdict::Accepted, Reason::None);
}

#[test]
fn velocity_phone_rejects_the_sixth_room_in_an_hour() {
    let mut g = guard();
    for room in 1..=5u64 {
        let v = submit_fresh(&mut g, T0 + room as i64, room, room, GOOD_PHONE);
        assert_lead(&v, Verdict::Accepted, Reason::None);
    }
    // A room already counted is a duplicate, not a new room.
    let v = submit_fresh(&mut g, T0 + 6, 3, 6, GOOD_PHONE);
    assert_lead(&v, Verdict::Duplicate, Reason::DuplicateLead);
    let v = submit_fresh(&mut g, T0 + 10, 6, 7, GOOD_PHONE);
    assert_lead(&v, Verdict::Rejected, Reason::VelocityPhone);
    // Once over, the phone stays over for the window, whatever the room.
    let v = submit_fresh(&mut g, T0 + 11, 1, 8, GOOD_PHONE);
    assert_lead(&v, Verdict::Rejected, Reason::VelocityPhone);
    // After the window the phone may go elsewhere.
    let v = submit_fresh(&mut g, T0 + 10 + HOUR, 7, 9, GOOD_PHONE);
    assert_lead(&v, Verdict::Accepted, Reason::None);
}

#[test]
fn velocity_limits_are_configurable() {
    let mut g = guard_with(|c| {
        c.leads.max_per_viewer = 1;
        c.leads.velocity_window_secs = 60;
    });
    let v = submit(&mut g, T0, ROOM, 1, "10.0.0.1", &lead(1, GOOD_PHONE)).unwrap();
    assert_lead(&v, Verdict::Accepted, Reason::None);
    let v = submit(
        &mut g,
        T0 + 59 * SEC,
        ROOM,
        1,
        "10.0.0.1",
        &lead(2, "13912873466"),
    )
    .unwrap();
    assert_lead(&v, Verdict::Rejected, Reason::VelocityViewer);
    let v = submit(
        &mut g,
        T0 + 119 * SEC,
        ROOM,
        1,
        "10.0.0.1",
        &lead(3, "13912873467"),
    )
    .unwrap();
    assert_lead(&v, Verdict::Accepted, Reason::None);
}

#[test]
fn lead_seen_makes_a_resend_a_replay() {
    let mut g = guard();
    let l = lead(9, GOOD_PHONE);
    let v = submit(&mut g, T0, ROOM, 1, "10.0.0.1", &l).unwrap();
    assert_lead(&v, Verdict::Accepted, Reason::None);
    let err = g
        .lead_start(
            T0 + SEC,
            &lead_ev(ROOM, 1, &l, "10.0.0.1"),
            &l,
            "10.0.0.1",
            fake_key,
        )
        .unwrap_err();
    assert!(err.replay);
    assert_eq!((err.verdict, err.reason), (Verdict::Accepted, Reason::None));
    assert!(!err.stores());
    // Another viewer's id 9 is theirs.
    assert!(submit(&mut g, T0, ROOM, 2, "10.0.0.2", &lead(9, "13912873466")).is_ok());
}

#[test]
fn replay_of_a_duplicate_lead_repeats_duplicate() {
    let mut g = guard();
    submit_fresh(&mut g, T0, ROOM, 1, GOOD_PHONE);
    let l = lead(5, GOOD_PHONE);
    let v = submit(&mut g, T0, ROOM, 2, "10.0.0.2", &l).unwrap();
    assert_lead(&v, Verdict::Duplicate, Reason::DuplicateLead);
    let err = submit(&mut g, T0 + SEC, ROOM, 2, "10.0.0.2", &l).unwrap_err();
    assert_eq!(
        (err.verdict, err.reason, err.replay),
        (Verdict::Duplicate, Reason::DuplicateLead, true)
    );
}

#[test]
fn lead_without_lead_seen_is_not_a_replay() {
    let mut g = guard();
    let l = lead(9, GOOD_PHONE);
    lead_check(&mut g, T0, ROOM, 1, "10.0.0.1", &l).unwrap();
    assert!(g
        .lead_start(
            T0,
            &lead_ev(ROOM, 1, &l, "10.0.0.1"),
            &l,
            "10.0.0.1",
            fake_key
        )
        .is_ok());
}

#[test]
fn lead_stage_keys_follow_their_fields() {
    let mut g = guard();
    let a = lead_check(&mut g, T0, 1, 1, "10.0.0.1", &lead(1, GOOD_PHONE)).unwrap();
    let b = lead_check(&mut g, T0, 2, 2, "10.0.0.1", &lead(1, "139 1287 3465")).unwrap();
    assert_eq!(LeadStage::Phone.key(&a), LeadStage::Phone.key(&b));
    assert_eq!(LeadStage::Ip.key(&a), LeadStage::Ip.key(&b));
    assert_ne!(LeadStage::Viewer.key(&a), LeadStage::Viewer.key(&b));
}

// ---------------------------------------------------------------------------
// Leads: dry-run.

#[test]
fn lead_dry_run_goes_to_check_dry_run_not_reasons() {
    let mut g = guard_with(|c| c.dry_run = vec!["too_fast".into()]);
    let mut l = lead(1, GOOD_PHONE);
    l.fill_ms = 100;
    let c = lead_check(&mut g, T0, ROOM, 1, "10.0.0.1", &l).unwrap();
    assert!(c.dry_run.contains(Reason::TooFast));
    assert!(!c.reasons.contains(Reason::TooFast));
    let v = g.lead_finish(&c);
    assert_lead(&v, Verdict::Accepted, Reason::None);
    assert_eq!(v.score, 100);
    assert!(v.decision.dry_run.contains(Reason::TooFast));
}

#[test]
fn lead_dry_run_score_flag_has_no_penalty() {
    let mut g = guard_with(|c| c.dry_run = vec!["fake_pattern".into()]);
    let v = submit_fresh(&mut g, T0, ROOM, 1, "13812345678");
    assert_lead(&v, Verdict::Accepted, Reason::None);
    assert_eq!(v.score, 100);
    assert!(v.decision.dry_run.contains(Reason::FakePattern));
}

#[test]
fn lead_dry_run_velocity_and_duplicate_keep_the_verdict() {
    let mut g = guard_with(|c| c.dry_run = vec!["velocity_viewer".into(), "duplicate_lead".into()]);
    for i in 0..4u64 {
        let v = submit(&mut g, T0, ROOM, 1, "10.0.0.1", &lead(i, GOOD_PHONE)).unwrap();
        assert_lead(&v, Verdict::Accepted, Reason::None);
        assert_eq!(v.decision.dry_run.contains(Reason::DuplicateLead), i >= 1);
        assert_eq!(v.decision.dry_run.contains(Reason::VelocityViewer), i >= 3);
    }
}

#[test]
fn lead_dry_run_does_not_hide_another_reject() {
    let mut g = guard_with(|c| c.dry_run = vec!["no_consent".into()]);
    let mut l = lead(1, GOOD_PHONE);
    l.consent = false;
    l.honeypot = "x".into();
    let v = submit(&mut g, T0, ROOM, 1, "10.0.0.1", &l).unwrap();
    assert_lead(&v, Verdict::Rejected, Reason::BotHoneypot);
    assert!(v.decision.dry_run.contains(Reason::NoConsent));
    assert!(!v.reasons.contains(Reason::NoConsent));
}

// ---------------------------------------------------------------------------
// Room settings.

#[test]
fn room_settings_defaults_for_an_unknown_room() {
    let g = guard();
    let s = g.room_settings(99);
    assert_eq!(s.room, 99);
    assert_eq!(s.slow_mode_secs, 0);
    assert_eq!(s.chat_per_sec, 40);
    assert_eq!(s.viewer_messages, 20);
    assert!(s.blocked_terms.is_empty() && s.global_terms.is_empty());
    assert!(s.muted.is_empty() && s.banned.is_empty() && s.dry_run.is_empty());
    assert_eq!(s.viewers_tracked, 0);
}

#[test]
fn room_settings_reflect_controls() {
    let mut g = guard_with(|c| c.chat.blocked_terms = vec!["scam".into()]);
    slow_mode(&mut g, ROOM, 15);
    ctl(
        &mut g,
        T0,
        Control::RoomLimits {
            room: ROOM,
            chat_per_sec: Some(3),
            viewer_messages: Some(7),
        },
    );
    add_terms(&mut g, Some(ROOM), &["cheap watches", "cheap watches"]);
    add_terms(&mut g, None, &["傻逼"]);
    mute(&mut g, T0, 4, 0);
    ctl(
        &mut g,
        T0,
        Control::Ban {
            room: ROOM,
            viewer: 5,
        },
    );
    dry_run(&mut g, Reason::Link, true);
    let s = g.room_settings(ROOM);
    assert_eq!(s.slow_mode_secs, 15);
    assert_eq!(s.chat_per_sec, 3);
    assert_eq!(s.viewer_messages, 7);
    assert_eq!(s.blocked_terms, vec!["cheap watches".to_string()]);
    assert_eq!(s.global_terms, vec!["scam".to_string(), "傻逼".to_string()]);
    assert_eq!(s.muted, vec![4]);
    assert_eq!(s.banned, vec![5]);
    assert_eq!(s.dry_run, vec!["link"]);
    assert_eq!(s.viewers_tracked, 2);
    // Other rooms keep the defaults but share the global settings.
    let other = g.room_settings(8);
    assert_eq!(other.slow_mode_secs, 0);
    assert!(other.blocked_terms.is_empty());
    assert_eq!(other.global_terms, s.global_terms);
    assert_eq!(other.dry_run, vec!["link"]);
}

#[test]
fn room_limits_leave_unset_fields_alone() {
    let mut g = guard();
    ctl(
        &mut g,
        T0,
        Control::RoomLimits {
            room: ROOM,
            chat_per_sec: Some(3),
            viewer_messages: Some(7),
        },
    );
    ctl(
        &mut g,
        T0,
        Control::RoomLimits {
            room: ROOM,
            chat_per_sec: None,
            viewer_messages: Some(9),
        },
    );
    let s = g.room_settings(ROOM);
    assert_eq!((s.chat_per_sec, s.viewer_messages), (3, 9));
}

#[test]
fn room_settings_reflect_unmute_and_unban() {
    let mut g = guard();
    mute(&mut g, T0, 4, 60);
    ctl(
        &mut g,
        T0,
        Control::Ban {
            room: ROOM,
            viewer: 5,
        },
    );
    ctl(
        &mut g,
        T0,
        Control::Unmute {
            room: ROOM,
            viewer: 4,
        },
    );
    ctl(
        &mut g,
        T0,
        Control::Unban {
            room: ROOM,
            viewer: 5,
        },
    );
    let s = g.room_settings(ROOM);
    assert!(s.muted.is_empty());
    assert!(s.banned.is_empty());
}

#[test]
fn room_settings_drop_an_expired_mute() {
    let mut g = guard();
    join(&mut g, T0, ROOM, 4);
    mute(&mut g, T0, 4, 10);
    g.tick(T0 + 20 * SEC);
    assert_accepted(say(&mut g, T0 + 20 * SEC, 4, 1, &text(1)));
    assert!(g.room_settings(ROOM).muted.is_empty());
}

#[test]
fn room_settings_survive_tick() {
    let mut g = guard();
    slow_mode(&mut g, ROOM, 15);
    g.tick(T0 + 30 * DAY);
    assert_eq!(g.rooms(), 1);
    assert_eq!(g.room_settings(ROOM).slow_mode_secs, 15);
}

// ---------------------------------------------------------------------------
// Memory bounds.

#[test]
fn sessions_keep_a_viewer_tracked_until_leave() {
    let mut g = guard();
    join(&mut g, T0, ROOM, 1);
    join(&mut g, T0, ROOM, 1);
    g.tick(T0 + HOUR);
    assert_eq!(g.room_settings(ROOM).viewers_tracked, 1);
    leave(&mut g, T0 + HOUR, ROOM, 1);
    g.tick(T0 + HOUR + SEC);
    assert_eq!(g.room_settings(ROOM).viewers_tracked, 1);
    leave(&mut g, T0 + HOUR, ROOM, 1);
    g.tick(T0 + HOUR + 2 * SEC);
    assert_eq!(g.room_settings(ROOM).viewers_tracked, 0);
    assert_eq!(g.rooms(), 0);
}

#[test]
fn tick_sweeps_at_most_once_a_second() {
    let mut g = guard();
    assert_accepted(say(&mut g, T0, 1, 1, &text(1)));
    g.tick(T0 + 599 * SEC + 500);
    // Within a second of the last sweep: no sweep.
    g.tick(T0 + 600 * SEC + 400);
    assert_eq!(g.remembered(), 1);
    g.tick(T0 + 600 * SEC + 500);
    assert_eq!(g.remembered(), 0);
}

fn raids_len(g: &Guard, room: u64) -> (usize, usize) {
    g.rooms
        .get(&room)
        .map_or((0, 0), |r| (r.raids.len(), r.raid_order.len()))
}

fn lead_state_len(g: &Guard) -> usize {
    g.phone_rooms.len() + g.phone_velocity.len() + g.ip_velocity.len() + g.viewer_velocity.len()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Unique viewers chatting and liking once each: after the windows,
    /// every room, viewer and client id is forgotten.
    #[test]
    fn chat_state_shrinks_back_after_the_windows(
        n in 1usize..300,
        gaps in proptest::collection::vec(0i64..2_000, 300),
        rooms in 1u64..5,
        sessions in any::<bool>(),
    ) {
        let mut g = guard();
        let mut now = T0;
        for (i, gap) in gaps.iter().take(n).enumerate() {
            now += gap;
            let (room, viewer) = (i as u64 % rooms, i as u64);
            if sessions {
                join(&mut g, now, room, viewer);
            }
            say_in(&mut g, now, room, viewer, i as u64, &text(i));
            g.decide(now, &event(room, viewer, EventKind::Like { count: 30, spread_ms: 0 }));
            if sessions {
                leave(&mut g, now, room, viewer);
            }
            g.tick(now);
        }
        prop_assert!(g.rooms() as u64 <= rooms);
        prop_assert!(g.remembered() <= n);
        // Longest window: idempotency, 600 s.
        g.tick(now + 600 * SEC);
        prop_assert_eq!(g.rooms(), 0);
        prop_assert_eq!(g.remembered(), 0);
        for room in 0..rooms {
            prop_assert_eq!(g.room_settings(room).viewers_tracked, 0);
        }
    }

    /// Unique texts in one room never grow the raid map past its capacity,
    /// and it empties after the raid window.
    #[test]
    fn raid_map_never_exceeds_capacity(
        cap in 1usize..16,
        n in 1usize..200,
        gap in 0i64..200,
    ) {
        let mut g = guard_with(|c| c.chat.raid_capacity = cap);
        let mut now = T0;
        for i in 0..n {
            now += gap;
            say(&mut g, now, i as u64 % 7, i as u64, &text(i));
            let (raids, order) = raids_len(&g, ROOM);
            prop_assert!(raids <= cap, "{raids} > {cap}");
            prop_assert!(order <= cap, "{order} > {cap}");
            g.tick(now);
        }
        g.tick(now + 20 * SEC);
        prop_assert_eq!(raids_len(&g, ROOM), (0, 0));
    }

    /// Unique phones, IPs and viewers: lead state is forgotten after the
    /// duplicate window (the longest, 24 h), and client ids after theirs.
    #[test]
    fn lead_state_shrinks_back_after_the_windows(
        n in 1u64..200,
        gap in 0i64..60_000,
    ) {
        let mut g = guard();
        let mut now = T0;
        for i in 0..n {
            now += gap;
            let phone = format!("139{:08}", 10_203_040 + i * 7);
            let ip = format!("10.2.{}.{}", i / 256, i % 256);
            submit(&mut g, now, i % 3, i, &ip, &lead(i, &phone)).expect("fresh id");
            g.tick(now);
        }
        prop_assert!(lead_state_len(&g) > 0);
        g.tick(now + HOUR);
        prop_assert_eq!(g.ip_velocity.len() + g.viewer_velocity.len() + g.phone_velocity.len(), 0);
        prop_assert_eq!(g.remembered(), 0);
        g.tick(now + DAY);
        prop_assert_eq!(lead_state_len(&g), 0);
    }

    /// Whatever the other viewers do within the room's rate, a viewer
    /// sending distinct long texts at least one per-viewer interval apart
    /// (30 s / 20 = 1.5 s) is always accepted.
    #[test]
    fn legitimate_viewer_is_always_accepted(
        others in proptest::collection::vec((2u64..40, 50i64..400), 1..300),
        mine in proptest::collection::vec(1_500i64..4_000, 1..40),
        cross_talk in any::<bool>(),
    ) {
        let mut g = guard();
        let mut now = T0;
        let mut next_mine = T0;
        let mut mine = mine.into_iter();
        let mut sent = 0usize;
        for (k, (viewer, gap)) in others.into_iter().enumerate() {
            now += gap;
            while next_mine <= now {
                let Some(wait) = mine.next() else { break };
                let msg = format!("my honest question about the product, part {sent}");
                let d = say(&mut g, next_mine, 1, sent as u64, &msg);
                prop_assert!(accepted(&d), "message {} at +{} ms: {:?}", sent, next_mine - T0, d);
                sent += 1;
                next_mine += wait;
            }
            // Other viewers: short cheers, repeats among themselves, links.
            let other = match (k % 4, cross_talk) {
                (0, _) => "666".to_owned(),
                (1, true) => "see abc.com".to_owned(),
                (2, _) => format!("viewer {viewer} says hello"),
                _ => "主播好漂亮呀".to_owned(),
            };
            say(&mut g, now, viewer, k as u64, &other);
            g.tick(now);
        }
    }
}

#[test]
fn coalesced_likes_are_judged_over_their_spread() {
    // Two seconds of 15 taps/s held back by a full queue arrive as one
    // event of 30 taps spread over 2 s: within the 20/s cap, all admitted.
    let mut g = guard();
    let ev = event(
        ROOM,
        1,
        EventKind::Like {
            count: 30,
            spread_ms: 2_000,
        },
    );
    assert_eq!(g.decide(T0, &ev).admitted, 30);
    // The same 30 taps in one instant exceed the burst of 20.
    let ev = event(
        ROOM,
        2,
        EventKind::Like {
            count: 30,
            spread_ms: 0,
        },
    );
    assert_eq!(g.decide(T0, &ev).admitted, 20);
}
