//! Lead facts of the whole cluster, read from ClickHouse, and how a shard's
//! guard merges them with what it saw itself (docs/ROUTING.md, "Cross-node
//! facts").
//!
//! With several engine nodes, the same phone or IP can leave leads on more
//! than one node, and a room that moved has its earlier leads on its old
//! node. Every few seconds each node reads `lead_facts` (every node's
//! leads, its own included) and hands each shard the facts of the keys it
//! owns ([`Guard::merge_facts`]). The lead stages then judge on both:
//!
//! - `velocity_phone`: the rooms of a phone are the union of the local
//!   rooms and the remote ones. A union counts this node's own leads, read
//!   back, once.
//! - `duplicate_lead`: the phone is a duplicate in the room if it was
//!   registered there locally or, per ClickHouse, on any node.
//! - `velocity_ip`: counts do not union; see [`merged_count`].
//!
//! Remote facts are per minute (`minute_ms`, the minute's start). A minute
//! counts only when it lies wholly inside the window, so a remote fact never
//! makes a lead older than the window count; at worst the oldest minute of
//! the window is left out. Merging is idempotent: the same batch merged
//! twice changes nothing, so reads may overlap.
//!
//! This node's own leads are not always in ClickHouse yet, and other
//! nodes' never are until they are written and read: a lead decided on
//! another node within (its write lag + the read interval) of a lead here
//! is not seen. Every rule errs on the side of the local decision: remote
//! facts can add a flag the local state missed, never one the leads do not
//! justify.

use super::{Guard, LeadVerdict};
use crate::wire::{Reason, Verdict};

/// At least this many remote rooms are kept per phone (more if
/// `max_rooms_per_phone` needs it); beyond, the least recent room goes.
pub const REMOTE_ROOMS: usize = 64;

/// What one read of `lead_facts` says, for the keys of one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FactBatch {
    /// When the read was sent (Unix ms, this node's clock): a lead this
    /// node decided later cannot be in it.
    pub read_at_ms: i64,
    /// Phones seen in rooms.
    pub phones: Vec<PhoneFact>,
    /// Leads per IP.
    pub ips: Vec<IpFact>,
}

/// A phone left a lead in a room in a minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneFact {
    /// `leads.phone_hmac`, which is [`LeadCheck::phone_key`](super::LeadCheck::phone_key).
    pub phone_key: String,
    /// Room.
    pub room_id: u64,
    /// Start of the minute, Unix ms.
    pub minute_ms: i64,
    /// A lead of that minute registered the phone in the room, as the
    /// phone stage does: it was not rejected before the phone stage and was
    /// not itself a duplicate.
    pub registered: bool,
}

/// An IP left leads in a minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpFact {
    /// `leads.ip_hmac`, which is [`LeadCheck::ip`](super::LeadCheck::ip).
    pub ip_key: String,
    /// Start of the minute, Unix ms.
    pub minute_ms: i64,
    /// Distinct leads in that minute.
    pub leads: u32,
}

/// A room where ClickHouse saw a phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RemoteRoom {
    pub(crate) room: u64,
    /// Latest minute with a lead of the phone in the room.
    pub(crate) seen_ms: i64,
    /// Latest minute with a registering lead; `i64::MIN` = none.
    pub(crate) registered_ms: i64,
}

/// Leads of an IP per minute, as last read.
#[derive(Debug, Clone, Default)]
pub(crate) struct RemoteCount {
    /// The latest read that reported this IP.
    pub(crate) read_at_ms: i64,
    /// (minute start ms, leads).
    minutes: Vec<(i64, u32)>,
}

impl RemoteCount {
    /// Leads in minutes wholly inside the window at `now_ms`.
    pub(crate) fn in_window(&self, now_ms: i64, window_ms: i64) -> usize {
        self.minutes
            .iter()
            .filter(|(m, _)| *m > now_ms - window_ms)
            .map(|(_, n)| *n as usize)
            .sum()
    }

    fn merge(&mut self, f: &IpFact, read_at_ms: i64, oldest_ms: i64) {
        self.minutes.retain(|(m, _)| *m > oldest_ms);
        match self.minutes.iter_mut().find(|(m, _)| *m == f.minute_ms) {
            // A later read of the same minute knows at least as much.
            Some((_, n)) => *n = (*n).max(f.leads),
            None => self.minutes.push((f.minute_ms, f.leads)),
        }
        self.read_at_ms = self.read_at_ms.max(read_at_ms);
    }
}

/// Leads of one key in the window before the current one, from the
/// shard's own hits and ClickHouse's count: `max(remote, local_before) +
/// local_after`.
///
/// `remote` (read at some time T) also holds this node's leads that were
/// written by T, and nothing says which. `local_before` are this node's
/// hits at or before T (some may be in `remote`), `local_after` its hits
/// after T (none can be). Each part is a set of distinct leads and the
/// last is disjoint from the other two, so the result never counts a lead
/// twice: it is at most the true count. It is short only by leads
/// ClickHouse did not have at T (this node's when `local_before` is the
/// larger, and other nodes' written or decided after T).
pub fn merged_count(remote: usize, local_before: usize, local_after: usize) -> usize {
    remote.max(local_before) + local_after
}

/// True when ClickHouse saw the phone registered in `room` within the
/// duplicate window.
pub(crate) fn registered_in(rooms: &[RemoteRoom], room: u64, now_ms: i64, window_ms: i64) -> bool {
    rooms
        .iter()
        .any(|r| r.room == room && r.registered_ms > now_ms - window_ms)
}

/// The rooms where ClickHouse saw the phone within the velocity window.
pub(crate) fn rooms_in(rooms: &[RemoteRoom], now_ms: i64, window_ms: i64) -> Vec<u64> {
    rooms
        .iter()
        .filter(|r| r.seen_ms > now_ms - window_ms)
        .map(|r| r.room)
        .collect()
}

fn merge_room(rooms: &mut Vec<RemoteRoom>, f: &PhoneFact, cap: usize) {
    let registered = if f.registered { f.minute_ms } else { i64::MIN };
    match rooms.iter_mut().find(|r| r.room == f.room_id) {
        Some(r) => {
            r.seen_ms = r.seen_ms.max(f.minute_ms);
            r.registered_ms = r.registered_ms.max(registered);
        }
        None => rooms.push(RemoteRoom {
            room: f.room_id,
            seen_ms: f.minute_ms,
            registered_ms: registered,
        }),
    }
    if rooms.len() > cap {
        if let Some(oldest) = rooms
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| r.seen_ms)
            .map(|(i, _)| i)
        {
            rooms.swap_remove(oldest);
        }
    }
}

impl Guard {
    /// Merge one read of the cluster's lead facts: those of the phone and
    /// IP keys this shard owns (`shard_of(LeadStage::fact_key(key))`).
    /// Facts too old for any window are skipped. Idempotent. Returns how
    /// many facts were taken.
    pub fn merge_facts(&mut self, now_ms: i64, batch: &FactBatch) -> usize {
        self.last_now_ms = self.last_now_ms.max(now_ms);
        let l = &self.cfg.leads;
        let vel = (l.velocity_window_secs as i64).saturating_mul(1000);
        let dup = (l.duplicate_window_secs as i64).saturating_mul(1000);
        let cap = (l.max_rooms_per_phone as usize + 1).max(REMOTE_ROOMS);
        let mut taken = 0;
        for f in &batch.phones {
            let useful = f.minute_ms > now_ms - vel || (f.registered && f.minute_ms > now_ms - dup);
            if !useful {
                continue;
            }
            let mut rooms = self
                .remote_phones
                .take(&f.phone_key, now_ms)
                .unwrap_or_default();
            merge_room(&mut rooms, f, cap);
            self.remote_phones
                .insert(f.phone_key.clone(), rooms, now_ms);
            taken += 1;
        }
        for f in &batch.ips {
            if f.minute_ms <= now_ms - vel {
                continue;
            }
            let mut count = self.remote_ips.take(&f.ip_key, now_ms).unwrap_or_default();
            count.merge(f, batch.read_at_ms, now_ms - vel);
            self.remote_ips.insert(f.ip_key.clone(), count, now_ms);
            taken += 1;
        }
        taken
    }

    /// Phone and IP keys with remote facts now (tests, memory checks).
    pub fn remote_keys(&self) -> usize {
        self.remote_phones.len() + self.remote_ips.len()
    }
}

/// Whether a decided lead registers its phone in its room for
/// `duplicate_lead`, as the phone stage does: not rejected before the phone
/// stage (`velocity_phone`, decided there, is the last hard reject) and not
/// itself a duplicate. The `registered` column of `lead_facts`
/// (schemas/007_lead_facts.sql) computes the same from the stored row.
pub fn registers(v: &LeadVerdict) -> bool {
    !v.reasons.contains(Reason::DuplicateLead)
        && (matches!(v.decision.verdict, Verdict::Accepted | Verdict::Suspect)
            || v.decision.reason == Reason::VelocityPhone)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::event::{Event, EventKind};
    use crate::guard::{GuardConfig, LeadCheck, LeadStage};
    use crate::wire::Lead;

    /// A minute boundary, so tests can place leads in minutes.
    const T0: i64 = 1_700_000_040_000;
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const PHONE: &str = "13912873465";
    /// The phone key the helpers' key function gives [`PHONE`].
    const PHONE_KEY: &str = "k:+8613912873465";

    fn guard(edit: impl FnOnce(&mut GuardConfig)) -> Guard {
        let mut cfg = GuardConfig::default();
        edit(&mut cfg);
        Guard::new(&cfg).expect("valid config")
    }

    /// A lead through every stage of one guard.
    fn decide(
        g: &mut Guard,
        now: i64,
        room: u64,
        viewer: u64,
        ip: &str,
    ) -> (LeadVerdict, LeadCheck) {
        let lead = Lead {
            client_lead_id: viewer,
            phone: PHONE.into(),
            consent: true,
            fill_ms: 10_000,
            ..Lead::default()
        };
        let ev = Event {
            room_id: room,
            viewer_id: viewer,
            session_id: 1,
            received_at_ms: now,
            kind: EventKind::Lead {
                lead: Box::new(lead.clone()),
                ip: ip.into(),
            },
        };
        let mut c = g
            .lead_start(now, &ev, &lead, ip, |p| format!("k:{p}"))
            .expect("not a replay");
        for stage in LeadStage::ORDER {
            g.lead_stage(now, stage, &mut c);
        }
        (g.lead_finish(&c), c)
    }

    fn phone(room: u64, minute_ms: i64, registered: bool) -> PhoneFact {
        PhoneFact {
            phone_key: PHONE_KEY.into(),
            room_id: room,
            minute_ms,
            registered,
        }
    }

    fn ip(minute_ms: i64, leads: u32) -> IpFact {
        IpFact {
            ip_key: "ip".into(),
            minute_ms,
            leads,
        }
    }

    fn verdict(v: &LeadVerdict) -> (Verdict, Reason) {
        (v.decision.verdict, v.decision.reason)
    }

    #[test]
    fn rooms_seen_on_other_nodes_count_for_velocity_phone() {
        let mut g = guard(|c| c.leads.max_rooms_per_phone = 2);
        let batch = FactBatch {
            read_at_ms: T0,
            phones: vec![phone(10, T0 - MIN, true), phone(11, T0 - MIN, true)],
            ips: Vec::new(),
        };
        assert_eq!(g.merge_facts(T0, &batch), 2);
        let (v, c) = decide(&mut g, T0 + 1, 12, 1, "ip");
        assert_eq!(verdict(&v), (Verdict::Rejected, Reason::VelocityPhone));
        assert!(c.remote.contains(Reason::VelocityPhone));
        // Without the facts the lead passes.
        let mut alone = guard(|c| c.leads.max_rooms_per_phone = 2);
        let (v, _) = decide(&mut alone, T0 + 1, 12, 1, "ip");
        assert_eq!(verdict(&v), (Verdict::Accepted, Reason::None));
    }

    #[test]
    fn own_leads_read_back_count_once() {
        let mut g = guard(|c| {
            c.leads.max_rooms_per_phone = 2;
            c.leads.max_per_ip = 3;
        });
        for (room, viewer) in [(1, 1), (2, 2)] {
            let (v, _) = decide(&mut g, T0 + 1_000, room, viewer, "ip");
            assert_eq!(verdict(&v), (Verdict::Accepted, Reason::None));
        }
        // ClickHouse hands this node's two leads back.
        let batch = FactBatch {
            read_at_ms: T0 + 5_000,
            phones: vec![phone(1, T0, true), phone(2, T0, true)],
            ips: vec![ip(T0, 2)],
        };
        g.merge_facts(T0 + 5_000, &batch);
        g.merge_facts(T0 + 6_000, &batch);
        // Room 1 again: a duplicate, not a third room; the IP's third lead
        // is not its fifth.
        let (v, c) = decide(&mut g, T0 + 7_000, 1, 3, "ip");
        assert_eq!(verdict(&v), (Verdict::Duplicate, Reason::DuplicateLead));
        assert!(c.remote.is_empty(), "{:?}", c.remote);
        // The fourth lead of the IP is over the cap, from local hits alone.
        let (v, c) = decide(&mut g, T0 + 8_000, 2, 4, "ip");
        assert_eq!(verdict(&v), (Verdict::Rejected, Reason::VelocityIp));
        assert!(c.remote.is_empty());
    }

    #[test]
    fn a_phone_registered_on_another_node_is_a_duplicate_in_that_room_only() {
        let mut g = guard(|_| {});
        let batch = FactBatch {
            read_at_ms: T0,
            phones: vec![phone(5, T0 - 10 * MIN, true), phone(6, T0 - MIN, false)],
            ips: Vec::new(),
        };
        g.merge_facts(T0, &batch);
        let (v, c) = decide(&mut g, T0 + 1, 5, 1, "ip-a");
        assert_eq!(verdict(&v), (Verdict::Duplicate, Reason::DuplicateLead));
        assert!(c.remote.contains(Reason::DuplicateLead));
        // Room 6 only saw a lead that did not register the phone (it was
        // rejected before the phone stage): not a duplicate.
        let (v, _) = decide(&mut g, T0 + 2, 6, 2, "ip-b");
        assert_eq!(verdict(&v), (Verdict::Accepted, Reason::None));
        // After the duplicate window the old registration is forgotten.
        let later = T0 - 10 * MIN + 24 * HOUR;
        let (v, _) = decide(&mut g, later, 5, 3, "ip-c");
        assert_eq!(verdict(&v), (Verdict::Accepted, Reason::None));
    }

    #[test]
    fn ip_counts_take_the_larger_side_then_add_later_local_hits() {
        let mut g = guard(|c| c.leads.max_per_ip = 4);
        // One local lead, then a read saying 3 leads (this one and two from
        // other nodes) in the minute.
        let (v, _) = decide(&mut g, T0 + 1_000, 1, 1, "ip");
        assert_eq!(verdict(&v), (Verdict::Accepted, Reason::None));
        g.merge_facts(
            T0 + 2_000,
            &FactBatch {
                read_at_ms: T0 + 2_000,
                phones: Vec::new(),
                ips: vec![ip(T0, 3)],
            },
        );
        // max(3, 1) + 0 = 3 before: the fourth lead passes.
        let (v, c) = decide(&mut g, T0 + 3_000, 2, 2, "ip");
        assert_eq!(verdict(&v), (Verdict::Accepted, Reason::None), "{c:?}");
        // max(3, 1) + 1 = 4 before: the fifth is over, because of the facts.
        let (v, c) = decide(&mut g, T0 + 4_000, 3, 3, "ip");
        assert_eq!(verdict(&v), (Verdict::Rejected, Reason::VelocityIp));
        assert!(c.remote.contains(Reason::VelocityIp));
    }

    #[test]
    fn a_minute_counts_only_wholly_inside_the_window() {
        let mut g = guard(|c| c.leads.max_per_ip = 2);
        let now = T0 + HOUR;
        g.merge_facts(
            now - 1,
            &FactBatch {
                read_at_ms: now - 1,
                phones: Vec::new(),
                // The minute starting exactly an hour ago reaches outside
                // the window; the next one does not.
                ips: vec![ip(T0, 5), ip(T0 + MIN, 1)],
            },
        );
        let (v, _) = decide(&mut g, now, 1, 1, "ip");
        assert_eq!(verdict(&v), (Verdict::Accepted, Reason::None));
        let (v, c) = decide(&mut g, now + 1, 1, 2, "ip");
        assert_eq!(verdict(&v).1, Reason::VelocityIp, "{c:?}");
        assert!(c.remote.contains(Reason::VelocityIp));
    }

    #[test]
    fn remote_state_is_bounded_and_expires() {
        let mut g = guard(|c| c.leads.capacity = 10);
        let phones = (0..500u64)
            .map(|i| PhoneFact {
                phone_key: format!("p{}", i % 20),
                room_id: i,
                minute_ms: T0,
                registered: true,
            })
            .collect();
        g.merge_facts(
            T0,
            &FactBatch {
                read_at_ms: T0,
                phones,
                ips: Vec::new(),
            },
        );
        assert!(g.remote_keys() <= 10);
        // Rooms per phone: the least recently seen goes first.
        let mut rooms = Vec::new();
        for room in 0..(REMOTE_ROOMS as u64 + 5) {
            merge_room(
                &mut rooms,
                &phone(room, T0 + room as i64 * MIN, false),
                REMOTE_ROOMS,
            );
        }
        assert_eq!(rooms.len(), REMOTE_ROOMS);
        assert!(rooms.iter().all(|r| r.room >= 5));
        // Facts older than both windows are not taken at all.
        let old = FactBatch {
            read_at_ms: T0,
            phones: vec![phone(1, T0 - 25 * HOUR, true)],
            ips: vec![ip(T0 - 2 * HOUR, 1)],
        };
        let mut fresh = guard(|_| {});
        assert_eq!(fresh.merge_facts(T0, &old), 0);
        g.tick(T0 + 25 * HOUR);
        assert_eq!(g.remote_keys(), 0);
    }

    /// A lead in the simulated cluster: who decided it, when, when its row
    /// reached ClickHouse, and what the row says.
    #[derive(Debug, Clone)]
    struct Row {
        node: usize,
        at: i64,
        written: i64,
        room: u64,
        registers: bool,
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// A lead on a node, in a room, written to ClickHouse `lag` ms later.
        Lead { node: usize, room: u64, lag: i64 },
        /// A node reads `lead_facts` (merging the batch twice or once).
        Read { node: usize, twice: bool },
    }

    fn op() -> impl Strategy<Value = (i64, Op)> {
        let lead = (0..2usize, 0..5u64, 1..20_000i64).prop_map(|(node, room, lag)| Op::Lead {
            node,
            room,
            lag,
        });
        let read = (0..2usize, any::<bool>()).prop_map(|(node, twice)| Op::Read { node, twice });
        (1..20_000i64, prop_oneof![3 => lead, 2 => read])
    }

    /// What ClickHouse holds at `now`, as a read of `lead_facts` returns it.
    fn read(rows: &[Row], now: i64) -> FactBatch {
        use std::collections::BTreeMap;
        let mut phones: BTreeMap<(u64, i64), bool> = BTreeMap::new();
        let mut ips: BTreeMap<i64, u32> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.written <= now) {
            let minute = r.at - r.at.rem_euclid(MIN);
            *phones.entry((r.room, minute)).or_default() |= r.registers;
            *ips.entry(minute).or_default() += 1;
        }
        FactBatch {
            read_at_ms: now,
            phones: phones
                .into_iter()
                .map(|((room, m), registered)| phone(room, m, registered))
                .collect(),
            ips: ips.into_iter().map(|(m, n)| ip(m, n)).collect(),
        }
    }

    proptest! {
        /// Two nodes deciding leads of one phone and one IP, reading each
        /// other's through a model of `lead_facts`: a cross-room rule never
        /// fires unless the leads of the whole cluster justify it, and when
        /// the last read was complete (every earlier lead written by then,
        /// none on the other node since) each rule decides exactly as one
        /// node seeing every lead would.
        #[test]
        fn merged_facts_never_overcount_and_are_exact_when_complete(
            ops in proptest::collection::vec(op(), 1..60),
            max_ip in 1u32..8,
            max_rooms in 1u32..4,
        ) {
            let mut nodes: Vec<Guard> = (0..2)
                .map(|_| guard(|c| {
                    c.leads.max_per_ip = max_ip;
                    c.leads.max_rooms_per_phone = max_rooms;
                }))
                .collect();
            let mut last_read: [Option<i64>; 2] = [None, None];
            let mut rows: Vec<Row> = Vec::new();
            let mut now = T0;
            for (i, (dt, op)) in ops.into_iter().enumerate() {
                now += dt;
                match op {
                    Op::Read { node, twice } => {
                        let batch = read(&rows, now);
                        nodes[node].merge_facts(now, &batch);
                        if twice {
                            nodes[node].merge_facts(now, &batch);
                        }
                        last_read[node] = Some(now);
                    }
                    Op::Lead { node, room, lag } => {
                        let (v, _) = decide(&mut nodes[node], now, room, i as u64, "ip");
                        let leads_before = rows.len();
                        let mut rooms: Vec<u64> = rows.iter().map(|r| r.room).collect();
                        rooms.push(room);
                        rooms.sort_unstable();
                        rooms.dedup();
                        let registered = rows.iter().any(|r| r.room == room && r.registers);
                        let ip_over = v.reasons.contains(Reason::VelocityIp);
                        let phone_over = v.reasons.contains(Reason::VelocityPhone);
                        let dup = v.reasons.contains(Reason::DuplicateLead);
                        // Never more than the whole cluster justifies.
                        prop_assert!(!ip_over || leads_before >= max_ip as usize);
                        prop_assert!(!phone_over || rooms.len() > max_rooms as usize);
                        prop_assert!(!dup || registered);
                        let other = 1 - node;
                        let complete = rows.iter().all(|r| match last_read[node] {
                            Some(t) => (r.at > t || r.written <= t) && !(r.node == other && r.at > t),
                            None => r.node != other,
                        });
                        if complete {
                            prop_assert_eq!(ip_over, leads_before >= max_ip as usize);
                            prop_assert_eq!(phone_over, rooms.len() > max_rooms as usize);
                            prop_assert_eq!(dup, registered);
                        }
                        rows.push(Row {
                            node,
                            at: now,
                            written: now + lag,
                            room,
                            registers: registers(&v),
                        });
                    }
                }
            }
        }
    }
}
