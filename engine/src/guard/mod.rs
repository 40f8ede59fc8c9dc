//! The guard: every accept / reject decision, sans-IO.
//!
//! A shard worker owns one [`Guard`] and calls [`Guard::decide`] once per
//! event with the current time; the guard returns a [`Decision`] and never
//! touches a socket, a clock or a lock. All state is bounded and expires.
//!
//! Rules, in order:
//! 1. client idempotency: a `(room, viewer, kind, client id)` seen within the
//!    idempotency window is a *replay*: acknowledged again with the first
//!    verdict, stored nothing.
//!
//! The anti-abuse rules (rate limits, filters, lead checks) slot in after the
//! idempotency check, each returning a [`Reason`].

pub mod window;

use serde::Deserialize;

use crate::event::{Event, EventKind};
use crate::wire::{Reason, Verdict};
use window::Window;

/// Guard settings (`[guard]` in the config file).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// How long a chat / lead client id is remembered for replay detection,
    /// seconds. Default 600.
    pub idempotency_window_secs: u64,
    /// Most client ids remembered per shard; beyond it the oldest are
    /// forgotten early (counted). Default 1,000,000.
    pub idempotency_capacity: usize,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            idempotency_window_secs: 600,
            idempotency_capacity: 1_000_000,
        }
    }
}

/// The guard's answer for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Outcome.
    pub verdict: Verdict,
    /// Why (`Reason::None` when accepted without remark).
    pub reason: Reason,
    /// Suggested wait before retrying, ms (0 = none).
    pub retry_after_ms: u32,
    /// The event repeats one already decided: ack again, store nothing.
    pub replay: bool,
}

impl Decision {
    /// Plain accept.
    pub const ACCEPT: Decision = Decision {
        verdict: Verdict::Accepted,
        reason: Reason::None,
        retry_after_ms: 0,
        replay: false,
    };

    /// True when the event's row should be written to its table.
    pub fn stores(&self) -> bool {
        !self.replay && self.verdict != Verdict::Rejected
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ClientKey {
    room: u64,
    viewer: u64,
    lead: bool,
    id: u64,
}

/// Per-shard guard state.
#[derive(Debug)]
pub struct Guard {
    seen: Window<ClientKey, (Verdict, Reason)>,
}

impl Guard {
    /// A guard with `cfg`.
    pub fn new(cfg: &GuardConfig) -> Self {
        Guard {
            seen: Window::new(
                (cfg.idempotency_window_secs as i64).saturating_mul(1000),
                cfg.idempotency_capacity,
            ),
        }
    }

    /// Decide on `ev` at `now_ms` (Unix milliseconds).
    pub fn decide(&mut self, now_ms: i64, ev: &Event) -> Decision {
        let key = match &ev.kind {
            EventKind::Chat { client_msg_id, .. } => ClientKey {
                room: ev.room_id,
                viewer: ev.viewer_id,
                lead: false,
                id: *client_msg_id,
            },
            EventKind::Lead { lead, .. } => ClientKey {
                room: ev.room_id,
                viewer: ev.viewer_id,
                lead: true,
                id: lead.client_lead_id,
            },
            EventKind::Join { .. } | EventKind::Leave { .. } | EventKind::Like { .. } => {
                return Decision::ACCEPT;
            }
        };
        if let Some(&(verdict, reason)) = self.seen.get(&key, now_ms) {
            return Decision {
                verdict,
                reason,
                retry_after_ms: 0,
                replay: true,
            };
        }
        let decision = Decision::ACCEPT;
        self.seen
            .insert(key, (decision.verdict, decision.reason), now_ms);
        decision
    }

    /// Housekeeping when idle: expire old state.
    pub fn tick(&mut self, now_ms: i64) {
        self.seen.expire(now_ms);
    }

    /// Client ids currently remembered.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }

    /// Client ids forgotten before their window ended (capacity pressure).
    pub fn evicted_early(&self) -> u64 {
        self.seen.evicted_early()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(viewer: u64, id: u64) -> Event {
        Event {
            room_id: 1,
            viewer_id: viewer,
            session_id: 1,
            received_at_ms: 0,
            kind: EventKind::Chat {
                client_msg_id: id,
                text: "hi".into(),
            },
        }
    }

    #[test]
    fn resend_is_a_replay_stored_once() {
        let mut g = Guard::new(&GuardConfig::default());
        let first = g.decide(0, &chat(1, 10));
        assert!(first.stores());
        let again = g.decide(5_000, &chat(1, 10));
        assert!(again.replay && !again.stores());
        assert_eq!(again.verdict, Verdict::Accepted);
        // Another viewer may use the same client id.
        assert!(g.decide(5_000, &chat(2, 10)).stores());
    }

    #[test]
    fn chat_and_lead_ids_are_separate_namespaces() {
        let mut g = Guard::new(&GuardConfig::default());
        assert!(g.decide(0, &chat(1, 10)).stores());
        let lead = Event {
            kind: EventKind::Lead {
                lead: Box::default(),
                ip: String::new(),
            },
            ..chat(1, 0)
        };
        let mut lead10 = lead.clone();
        if let EventKind::Lead { lead, .. } = &mut lead10.kind {
            lead.client_lead_id = 10;
        }
        assert!(g.decide(0, &lead10).stores());
        assert!(g.decide(1, &lead10).replay);
    }

    #[test]
    fn window_forgets_after_ttl() {
        let cfg = GuardConfig {
            idempotency_window_secs: 10,
            ..GuardConfig::default()
        };
        let mut g = Guard::new(&cfg);
        assert!(g.decide(0, &chat(1, 1)).stores());
        assert!(g.decide(9_999, &chat(1, 1)).replay);
        g.tick(20_000);
        assert_eq!(g.remembered(), 0);
    }
}
