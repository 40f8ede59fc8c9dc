//! Ground truth: which behaviour class a simulated viewer belongs to, and so
//! what every event it sends *should* get from the guard.
//!
//! Classes are assigned by viewer index ranges that are the same in every
//! room (`viewer_id = room_id * VIEWER_ID_STRIDE + index`), so a ClickHouse
//! row maps back to its class with plain SQL ([`ClassLayout::sql_class`]).

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Viewer ids are `room_id * VIEWER_ID_STRIDE + index`, unique across rooms.
pub const VIEWER_ID_STRIDE: u64 = 1_000_000;

/// A viewer's behaviour class. Legitimate classes should never be rejected
/// by the guard; every event of an abusive class is abuse.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// The basic loadgen's mixed viewer (no `--scenario`): chats, taps likes
    /// and leaves leads at the room rates. Legitimate.
    #[default]
    Viewer,
    /// Presence only: joins, watches, leaves. Legitimate.
    Lurker,
    /// Chats at an ordinary pace. Legitimate.
    Chatter,
    /// Taps likes in bursts of 5–15 taps/s. Legitimate.
    LikeTapper,
    /// Fills the lead form once, with a real-looking number. Legitimate.
    LeadSubmitter,
    /// Chats far above the per-viewer rate, repeats itself, floods characters.
    Flooder,
    /// Posts one long copy-pasted text in waves with many other raiders.
    Raider,
    /// Blocked terms (with evasions), links and contact details.
    Harasser,
    /// Fake leads: IoT / data-card numbers, honeypot, too-fast submits, one
    /// phone across rooms, one viewer with many leads, made-up numbers.
    FakeLeadBot,
}

impl Class {
    /// Every class, in layout order (viewer index ranges follow this order).
    pub const ALL: [Class; 9] = [
        Class::Viewer,
        Class::Chatter,
        Class::LikeTapper,
        Class::LeadSubmitter,
        Class::Flooder,
        Class::Raider,
        Class::Harasser,
        Class::FakeLeadBot,
        Class::Lurker,
    ];

    /// Number of classes (for per-class arrays).
    pub const COUNT: usize = 9;

    /// Dense index for per-class arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The class with dense index `i`.
    #[cfg(test)]
    pub fn from_index(i: usize) -> Option<Class> {
        Class::ALL.iter().copied().find(|c| c.index() == i)
    }

    /// Stable snake_case name (scenario keys, JSON, SQL, tables).
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Viewer => "viewer",
            Class::Lurker => "lurker",
            Class::Chatter => "chatter",
            Class::LikeTapper => "like_tapper",
            Class::LeadSubmitter => "lead_submitter",
            Class::Flooder => "flooder",
            Class::Raider => "raider",
            Class::Harasser => "harasser",
            Class::FakeLeadBot => "fake_lead_bot",
        }
    }

    /// Parse a name.
    pub fn from_name(s: &str) -> Option<Class> {
        Class::ALL.iter().copied().find(|c| c.as_str() == s)
    }

    /// True for the classes whose every event is abuse.
    pub fn is_abusive(self) -> bool {
        matches!(
            self,
            Class::Flooder | Class::Raider | Class::Harasser | Class::FakeLeadBot
        )
    }

    /// The abusive classes.
    pub const ABUSIVE: [Class; 4] = [
        Class::Flooder,
        Class::Raider,
        Class::Harasser,
        Class::FakeLeadBot,
    ];

    /// The event kind an abusive class is judged on (`chat` or `lead`).
    pub fn abuse_kind(self) -> Option<&'static str> {
        match self {
            Class::Flooder | Class::Raider | Class::Harasser => Some("chat"),
            Class::FakeLeadBot => Some("lead"),
            _ => None,
        }
    }

    /// The guard reasons meant for this abusive class: a legitimate event
    /// blocked for one of these is a false positive of this class's rules
    /// (the precision denominator, see the README).
    pub fn rule_family(self) -> &'static [&'static str] {
        match self {
            Class::Flooder => &["rate_limited", "slow_mode", "duplicate", "flood", "muted"],
            Class::Raider => &["spam_wave", "duplicate", "muted"],
            Class::Harasser => &["blocked_term", "link", "contact_info", "muted"],
            Class::FakeLeadBot => &[
                "phone_invalid",
                "phone_unreachable",
                "virtual_operator",
                "no_consent",
                "bot_honeypot",
                "too_fast",
                "duplicate_lead",
                "velocity_viewer",
                "velocity_ip",
                "velocity_phone",
                "fake_pattern",
                "low_score",
            ],
            _ => &[],
        }
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One class's viewer index range, the same in every room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassRange {
    /// The class.
    pub class: Class,
    /// First viewer index of the class.
    pub first: u32,
    /// Viewers of the class per room (indices `first..first + count`).
    pub count: u32,
}

impl ClassRange {
    /// The index range.
    pub fn range(&self) -> Range<u32> {
        self.first..self.first + self.count
    }
}

/// Which class each viewer index of a room has: consecutive ranges in
/// [`Class::ALL`] order, classes with no viewers left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassLayout {
    /// Viewers per room.
    pub viewers: u32,
    /// The ranges, in index order, covering `0..viewers`.
    pub ranges: Vec<ClassRange>,
}

impl ClassLayout {
    /// Lay out `counts` (viewers per class, in [`Class::ALL`] order; zero
    /// counts skipped). The counts must sum to `viewers`.
    pub fn new(viewers: u32, counts: &[(Class, u32)]) -> Self {
        let mut ranges = Vec::new();
        let mut first = 0;
        for class in Class::ALL {
            let count: u32 = counts
                .iter()
                .filter(|(c, _)| *c == class)
                .map(|(_, n)| *n)
                .sum();
            if count > 0 {
                ranges.push(ClassRange {
                    class,
                    first,
                    count,
                });
                first += count;
            }
        }
        debug_assert_eq!(first, viewers, "class counts must cover the room");
        ClassLayout { viewers, ranges }
    }

    /// Class of viewer index `i` (`Lurker` past the end, which cannot happen
    /// for indices below `viewers`).
    pub fn class_of(&self, i: u32) -> Class {
        self.ranges
            .iter()
            .find(|r| r.range().contains(&i))
            .map_or(Class::Lurker, |r| r.class)
    }

    /// Index range of `class` (empty if it has no viewers).
    pub fn range(&self, class: Class) -> Range<u32> {
        self.ranges
            .iter()
            .find(|r| r.class == class)
            .map_or(0..0, ClassRange::range)
    }

    /// Viewers of `class` per room.
    pub fn count(&self, class: Class) -> u32 {
        self.range(class).len() as u32
    }

    /// Classes present, in layout order.
    #[cfg(test)]
    pub fn classes(&self) -> impl Iterator<Item = Class> + '_ {
        self.ranges.iter().map(|r| r.class)
    }

    /// A ClickHouse expression mapping the column `viewer_id` to its class
    /// name (`'unknown'` for an index outside the layout).
    pub fn sql_class(&self) -> String {
        let mut s = String::from("multiIf(");
        for r in &self.ranges {
            s.push_str(&format!(
                "modulo(viewer_id, {VIEWER_ID_STRIDE}) < {}, '{}', ",
                r.first + r.count,
                r.class.as_str()
            ));
        }
        s.push_str("'unknown')");
        s
    }
}

/// One share of a split run (`--worker K/N`): worker `K` of `N` runs the
/// viewers whose index `i` has `i % N == K - 1`, in every room. Every class
/// range is split evenly, and the viewer ids (so the ground truth) are the
/// same as in one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Worker {
    /// This worker, `1..=count`.
    pub k: u32,
    /// Workers in the run.
    pub n: u32,
}

impl Worker {
    /// Most workers a run may be split into.
    pub const MAX: u32 = 1024;

    /// Does this worker run viewer index `slot`?
    pub fn owns(&self, slot: u32) -> bool {
        slot % self.n == self.k - 1
    }

    /// The first worker counts what belongs to no viewer (planned events
    /// that found no viewer), so a merge counts it once.
    pub fn is_first(&self) -> bool {
        self.k == 1
    }
}

impl std::str::FromStr for Worker {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "expected K/N with 1 <= K <= N <= {}, got {s:?}",
                Worker::MAX
            )
        };
        let (k, n) = s.split_once('/').ok_or_else(err)?;
        let (k, n): (u32, u32) = (
            k.trim().parse().map_err(|_| err())?,
            n.trim().parse().map_err(|_| err())?,
        );
        if k == 0 || k > n || n > Worker::MAX {
            return Err(err());
        }
        Ok(Worker { k, n })
    }
}

impl std::fmt::Display for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_covers_the_room_in_class_order() {
        let l = ClassLayout::new(
            100,
            &[
                (Class::Lurker, 60),
                (Class::Chatter, 30),
                (Class::Harasser, 10),
                (Class::Raider, 0),
            ],
        );
        assert_eq!(l.range(Class::Chatter), 0..30);
        assert_eq!(l.range(Class::Harasser), 30..40);
        assert_eq!(l.range(Class::Lurker), 40..100);
        assert_eq!(l.range(Class::Raider), 0..0);
        assert_eq!(l.class_of(0), Class::Chatter);
        assert_eq!(l.class_of(35), Class::Harasser);
        assert_eq!(l.class_of(99), Class::Lurker);
        assert_eq!(
            l.classes().collect::<Vec<_>>(),
            [Class::Chatter, Class::Harasser, Class::Lurker]
        );
        assert_eq!(
            l.sql_class(),
            "multiIf(modulo(viewer_id, 1000000) < 30, 'chatter', \
             modulo(viewer_id, 1000000) < 40, 'harasser', \
             modulo(viewer_id, 1000000) < 100, 'lurker', 'unknown')"
        );
    }

    #[test]
    fn names_round_trip_and_indices_are_dense() {
        let mut seen = [false; Class::COUNT];
        for c in Class::ALL {
            assert_eq!(Class::from_name(c.as_str()), Some(c));
            assert_eq!(Class::from_index(c.index()), Some(c));
            assert!(!seen[c.index()]);
            seen[c.index()] = true;
            assert_eq!(c.is_abusive(), Class::ABUSIVE.contains(&c));
            assert_eq!(c.is_abusive(), c.abuse_kind().is_some());
            assert_eq!(c.is_abusive(), !c.rule_family().is_empty());
        }
        // Every reason in a rule family is a real guard reason.
        for c in Class::ABUSIVE {
            for r in c.rule_family() {
                assert!(roomgate::wire::Reason::from_name(r).is_some(), "{r}");
            }
        }
    }

    #[test]
    fn workers_split_every_class_evenly_and_parse_strictly() {
        let ws: Vec<Worker> = ["1/3", "2/3", "3/3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(ws[1], Worker { k: 2, n: 3 });
        assert_eq!(ws[2].to_string(), "3/3");
        for slot in 0..1000 {
            assert_eq!(ws.iter().filter(|w| w.owns(slot)).count(), 1, "{slot}");
        }
        // A class range of 10 viewers: 4, 3, 3.
        let counts: Vec<usize> = ws
            .iter()
            .map(|w| (30..40).filter(|s| w.owns(*s)).count())
            .collect();
        assert_eq!(counts, [4, 3, 3]);
        assert!(ws[0].is_first() && !ws[1].is_first());
        for bad in ["0/2", "3/2", "1", "a/b", "1/0", "1/2000", ""] {
            assert!(bad.parse::<Worker>().is_err(), "{bad}");
        }
    }
}
