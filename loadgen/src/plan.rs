//! A room's plan: every event of every class, with its intended send time,
//! its viewer and its content.
//!
//! Pure and deterministic for a seed: no clocks, no sockets. Times are
//! offsets from the start of the run. The only input from the outside is
//! [`Presence`] (who is connected right now): an event meant for a random
//! viewer of a class first draws from the class's whole index range with
//! its own seeded stream, so once everyone is connected the viewer of every
//! event is fixed by the seed too; during the join ramp or while a viewer
//! is away (churn) the draw falls back to a random connected viewer.
//!
//! Arrivals are open-loop Poisson per class and generator (a superposition
//! of per-viewer Poisson processes: the room rate spread over the class's
//! viewers). Episodes (a flood, a raid wave, a tapping burst, a bot's lead
//! spree) draw their viewer once and then target it; their later events wait
//! in a time-ordered heap.

use std::{
    cmp::{Ordering, Reverse},
    collections::{BinaryHeap, HashSet},
    ops::Range,
    sync::Arc,
    time::Duration,
};

use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use roomgate::wire::Lead;

use crate::{
    content::{self, Content, Harassment, Tactic},
    scenario::Scenario,
    schedule::{ramp_offset, stream_seed, Kind, LikePlan, Poisson},
    truth::{Class, ClassLayout},
};

/// What a viewer is asked to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A chat message.
    Chat(String),
    /// A lead form (`client_lead_id` assigned by the viewer).
    Lead(Box<Lead>),
    /// One `Like{count}` frame.
    Like(u32),
}

impl Action {
    /// The kind of event.
    pub fn kind(&self) -> Kind {
        match self {
            Action::Chat(_) => Kind::Chat,
            Action::Lead(_) => Kind::Lead,
            Action::Like(_) => Kind::Like,
        }
    }
}

/// One planned event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Intended send time, from the start of the run.
    pub at: Duration,
    /// Viewer index in the room.
    pub slot: u32,
    /// The viewer's class: the event's ground truth.
    pub class: Class,
    /// What to send.
    pub action: Action,
    /// Send it again with the same client id this long after the first send.
    pub resend: Option<Duration>,
    /// A lead only: withdraw it this long after it is acked `accepted`
    /// (`[withdrawals]`).
    pub withdraw: Option<Duration>,
}

/// The outcome of planning one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Send it.
    Send(Planned),
    /// No connected viewer of the class could take it (join ramp, churn,
    /// everyone busy).
    NoViewer {
        /// Kind of the event.
        kind: Kind,
        /// Class it was meant for.
        class: Class,
    },
}

/// Who is connected, as the planner needs to know it.
pub trait Presence {
    /// Is viewer `slot` connected for an event meant for time `at`?
    fn is_present(&self, slot: u32, at: Duration) -> bool;
    /// A random connected viewer in `range` (one class's range) for which
    /// `ok` holds, after a bounded number of tries; `None` if none found.
    fn random_present(
        &self,
        range: Range<u32>,
        at: Duration,
        rng: &mut StdRng,
        ok: &dyn Fn(u32) -> bool,
    ) -> Option<u32>;
}

/// Everyone connected (tests).
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Everyone;

#[cfg(test)]
impl Presence for Everyone {
    fn is_present(&self, _slot: u32, _at: Duration) -> bool {
        true
    }

    fn random_present(
        &self,
        range: Range<u32>,
        _at: Duration,
        rng: &mut StdRng,
        ok: &dyn Fn(u32) -> bool,
    ) -> Option<u32> {
        draw(range, rng, ok)
    }
}

/// Up to 64 random draws from `range`; the first for which `ok` holds.
fn draw(range: Range<u32>, rng: &mut StdRng, ok: &dyn Fn(u32) -> bool) -> Option<u32> {
    (0..64)
        .map(|_| rng.gen_range(range.clone()))
        .find(|s| ok(*s))
}

/// Draw a viewer of `range`: a few draws over the whole range (the seed
/// decides once everyone is connected), then any connected one.
fn pick(
    rng: &mut StdRng,
    range: Range<u32>,
    at: Duration,
    presence: &dyn Presence,
    ok: &dyn Fn(u32) -> bool,
) -> Option<u32> {
    if range.is_empty() {
        return None;
    }
    for _ in 0..8 {
        let s = rng.gen_range(range.clone());
        if presence.is_present(s, at) && ok(s) {
            return Some(s);
        }
    }
    presence.random_present(range, at, rng, ok)
}

/// With probability `share`, a resend delay of 50–500 ms.
fn resend_after<R: Rng>(rng: &mut R, share: f64) -> Option<Duration> {
    (share > 0.0 && rng.gen_bool(share.min(1.0)))
        .then(|| Duration::from_millis(rng.gen_range(50..=500)))
}

/// Uniform in `[lo, hi]`.
fn uniform<R: Rng>(rng: &mut R, v: [f64; 2]) -> f64 {
    if v[1] > v[0] {
        rng.gen_range(v[0]..=v[1])
    } else {
        v[0]
    }
}

fn weighted<R: Rng>(rng: &mut R, w: &[f64]) -> usize {
    let total: f64 = w.iter().sum();
    let mut x = rng.gen::<f64>() * total;
    for (i, v) in w.iter().enumerate() {
        if x < *v {
            return i;
        }
        x -= v;
    }
    w.iter().rposition(|v| *v > 0.0).unwrap_or(0)
}

/// The generators with a Poisson arrival process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gen {
    ViewerChat,
    ViewerLike,
    ViewerLead,
    Chat,
    Burst,
    Submit,
    Flood,
    Wave,
    Harass,
    Bot,
}

#[derive(Debug)]
enum Pending {
    /// The next arrival of process `i`.
    Arrival(usize),
    /// Like storm `i` begins.
    Storm(usize),
    /// A raid wave begins.
    Wave,
    /// A targeted event.
    Send { slot: u32, action: Action },
    /// A tapping viewer's next `Like` frame.
    Tap {
        slot: u32,
        rate: f64,
        until: Duration,
        carry: f64,
    },
}

#[derive(Debug)]
struct Timed {
    at: Duration,
    seq: u64,
    what: Pending,
}

impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Seed streams (schedules of generators use `GEN_STREAM + i`).
const CONTENT_STREAM: u64 = 100;
const PICK_STREAM: u64 = 101;
const SHARED_STREAM: u64 = 102;
/// Withdrawal draws have their own stream: a scenario without
/// `[withdrawals]` draws nothing from it, so its plan is unchanged.
const WITHDRAW_STREAM: u64 = 103;
const GEN_STREAM: u64 = 200;
const CHURN_STREAM: u64 = 1 << 32;
/// A tapping viewer rests this long before its next burst, so two bursts
/// never overlap into more than the engine's per-viewer tap cap.
const TAP_REST: Duration = Duration::from_secs(1);

/// One room's plan. See the module docs.
#[derive(Debug)]
pub struct RoomPlan {
    sc: Arc<Scenario>,
    layout: Arc<ClassLayout>,
    content: Arc<Content>,
    end: Duration,
    flush: Duration,
    heap: BinaryHeap<Reverse<Timed>>,
    seq: u64,
    procs: Vec<(Gen, Poisson)>,
    rng: StdRng,
    pick: StdRng,
    withdraw: StdRng,
    tag: u64,
    viewer_likes: LikePlan,
    tap_until: Vec<Duration>,
    abuse_until: Vec<Duration>,
    leads_sent: Vec<u16>,
    phones: HashSet<String>,
    shared: Vec<String>,
    waves: u32,
}

impl RoomPlan {
    /// The plan of room `room_id` for scenario `sc` (already validated).
    pub fn new(
        sc: Arc<Scenario>,
        layout: Arc<ClassLayout>,
        content: Arc<Content>,
        room_id: u64,
    ) -> Self {
        let seed = sc.seed;
        let end = Duration::from_secs_f64(sc.duration);
        let c = &sc.classes;
        let viewer_likes = LikePlan::new(c.viewer.as_ref().map_or(0.0, |v| v.like_rate));
        let mean_burst_taps = c.like_tapper.as_ref().map_or(1.0, |t| {
            ((t.burst_taps_per_sec[0] + t.burst_taps_per_sec[1]) / 2.0
                * (t.burst_secs[0] + t.burst_secs[1])
                / 2.0)
                .max(1e-9)
        });
        let rates = [
            (
                Gen::ViewerChat,
                c.viewer.as_ref().map_or(0.0, |v| v.chat_rate),
            ),
            (Gen::ViewerLike, viewer_likes.frame_rate),
            (
                Gen::ViewerLead,
                c.viewer.as_ref().map_or(0.0, |v| v.lead_rate),
            ),
            (Gen::Chat, c.chatter.as_ref().map_or(0.0, |v| v.chat_rate)),
            (
                Gen::Burst,
                c.like_tapper
                    .as_ref()
                    .map_or(0.0, |t| t.like_rate / mean_burst_taps),
            ),
            (
                Gen::Submit,
                c.lead_submitter.as_ref().map_or(0.0, |v| v.lead_rate),
            ),
            (Gen::Flood, c.flooder.as_ref().map_or(0.0, |v| v.flood_rate)),
            (Gen::Wave, c.raider.as_ref().map_or(0.0, |v| v.wave_rate)),
            (
                Gen::Harass,
                c.harasser.as_ref().map_or(0.0, |v| v.chat_rate),
            ),
            (
                Gen::Bot,
                c.fake_lead_bot.as_ref().map_or(0.0, |v| v.lead_rate),
            ),
        ];
        let procs: Vec<(Gen, Poisson)> = rates
            .iter()
            .enumerate()
            .map(|(i, (g, r))| {
                (
                    *g,
                    Poisson::new(*r, stream_seed(seed, room_id, GEN_STREAM + i as u64)),
                )
            })
            .collect();
        // The same phones in every room: seeded by the run seed only.
        let shared = c.fake_lead_bot.as_ref().map_or_else(Vec::new, |b| {
            content::shared_phones(
                &mut StdRng::seed_from_u64(stream_seed(seed, 0, SHARED_STREAM)),
                b.shared_phones,
            )
        });
        let n = sc.viewers as usize;
        let mut plan = RoomPlan {
            end,
            flush: Duration::from_millis(sc.likes.flush_ms.max(1)),
            heap: BinaryHeap::new(),
            seq: 0,
            procs,
            rng: StdRng::seed_from_u64(stream_seed(seed, room_id, CONTENT_STREAM)),
            pick: StdRng::seed_from_u64(stream_seed(seed, room_id, PICK_STREAM)),
            withdraw: StdRng::seed_from_u64(stream_seed(seed, room_id, WITHDRAW_STREAM)),
            tag: 0,
            viewer_likes,
            tap_until: vec![Duration::ZERO; n],
            abuse_until: vec![Duration::ZERO; n],
            leads_sent: vec![0; n],
            phones: HashSet::new(),
            shared,
            waves: 0,
            layout,
            content,
            sc: sc.clone(),
        };
        for i in 0..plan.procs.len() {
            plan.arm(i);
        }
        for (i, s) in sc.like_storms.iter().enumerate() {
            plan.push(Duration::from_secs_f64(s.at), Pending::Storm(i));
        }
        if let Some(r) = &sc.classes.raider {
            for w in &r.waves {
                plan.push(Duration::from_secs_f64(*w), Pending::Wave);
            }
        }
        plan
    }

    fn push(&mut self, at: Duration, what: Pending) {
        if at < self.end {
            self.seq += 1;
            self.heap.push(Reverse(Timed {
                at,
                seq: self.seq,
                what,
            }));
        }
    }

    /// Schedule the next arrival of process `i`.
    fn arm(&mut self, i: usize) {
        if let Some(at) = self.procs[i].1.next_arrival() {
            self.push(at, Pending::Arrival(i));
        }
    }

    /// Offset of the earliest pending event; `None` when the plan is over.
    pub fn next_at(&self) -> Option<Duration> {
        self.heap.peek().map(|t| t.0.at)
    }

    /// Plan every event due at or before `upto` into `out`, in time order.
    pub fn pop_due(&mut self, upto: Duration, presence: &dyn Presence, out: &mut Vec<Due>) {
        while self.heap.peek().is_some_and(|t| t.0.at <= upto) {
            let Some(Reverse(t)) = self.heap.pop() else {
                break;
            };
            self.handle(t, presence, out);
        }
    }

    fn send(&mut self, out: &mut Vec<Due>, at: Duration, slot: u32, action: Action) {
        let resend = match action {
            Action::Like(_) => None,
            _ => resend_after(&mut self.rng, self.sc.resend_share),
        };
        let class = self.layout.class_of(slot);
        let w = &self.sc.withdrawals;
        let withdraw = (matches!(action, Action::Lead(_))
            && !class.is_abusive()
            && w.share > 0.0
            && self.withdraw.gen_bool(w.share.min(1.0)))
        .then(|| Duration::from_secs_f64(uniform(&mut self.withdraw, w.after)));
        out.push(Due::Send(Planned {
            at,
            slot,
            class,
            action,
            resend,
            withdraw,
        }));
    }

    fn legit_lead(&mut self, fill_secs: [f64; 2]) -> Action {
        let phone = content::mobile(&mut self.rng, &mut self.phones);
        let fill = content::fill_ms(&mut self.rng, fill_secs);
        Action::Lead(Box::new(content::legit_lead(&mut self.rng, phone, fill)))
    }

    fn legit_chat(&mut self) -> Action {
        Action::Chat(self.content.legit_chat(&mut self.rng, &mut self.tag))
    }

    fn handle(&mut self, t: Timed, presence: &dyn Presence, out: &mut Vec<Due>) {
        let at = t.at;
        match t.what {
            Pending::Send { slot, action } => self.send(out, at, slot, action),
            Pending::Tap {
                slot,
                rate,
                until,
                carry,
            } => {
                let taps = rate * self.flush.as_secs_f64() + carry;
                let count = taps.floor();
                if count >= 1.0 {
                    self.send(out, at, slot, Action::Like(count as u32));
                }
                let next = at + self.flush;
                if next < until {
                    self.push(
                        next,
                        Pending::Tap {
                            slot,
                            rate,
                            until,
                            carry: taps - count,
                        },
                    );
                }
            }
            Pending::Storm(i) => self.storm(i, at, presence),
            Pending::Wave => self.wave(at, presence, out),
            Pending::Arrival(i) => {
                self.arm(i);
                self.arrival(self.procs[i].0, at, presence, out);
            }
        }
    }

    fn arrival(&mut self, gen: Gen, at: Duration, presence: &dyn Presence, out: &mut Vec<Due>) {
        let (class, kind) = match gen {
            Gen::ViewerChat => (Class::Viewer, Kind::Chat),
            Gen::ViewerLike => (Class::Viewer, Kind::Like),
            Gen::ViewerLead => (Class::Viewer, Kind::Lead),
            Gen::Chat => (Class::Chatter, Kind::Chat),
            Gen::Burst => (Class::LikeTapper, Kind::Like),
            Gen::Submit => (Class::LeadSubmitter, Kind::Lead),
            Gen::Flood => (Class::Flooder, Kind::Chat),
            Gen::Wave => return self.wave(at, presence, out),
            Gen::Harass => (Class::Harasser, Kind::Chat),
            Gen::Bot => (Class::FakeLeadBot, Kind::Lead),
        };
        let range = self.layout.range(class);
        let per_viewer = self
            .sc
            .classes
            .lead_submitter
            .as_ref()
            .map_or(1, |l| l.leads_per_viewer.min(u32::from(u16::MAX)) as u16);
        let slot = match gen {
            Gen::Burst => pick(&mut self.pick, range, at, presence, &|s| {
                self.tap_until[s as usize] <= at
            }),
            Gen::Submit => pick(&mut self.pick, range, at, presence, &|s| {
                self.leads_sent[s as usize] < per_viewer
            }),
            Gen::Flood => pick(&mut self.pick, range, at, presence, &|s| {
                self.abuse_until[s as usize] <= at
            }),
            _ => pick(&mut self.pick, range, at, presence, &|_| true),
        };
        let Some(slot) = slot else {
            out.push(Due::NoViewer { kind, class });
            return;
        };
        match gen {
            Gen::ViewerChat | Gen::Chat => {
                let a = self.legit_chat();
                self.send(out, at, slot, a);
            }
            Gen::ViewerLike => {
                let n = self.viewer_likes.taps_per_frame;
                self.send(out, at, slot, Action::Like(n));
            }
            Gen::ViewerLead => {
                let a = self.legit_lead([8.0, 90.0]);
                self.send(out, at, slot, a);
            }
            Gen::Submit => {
                self.leads_sent[slot as usize] += 1;
                let fill = self
                    .sc
                    .classes
                    .lead_submitter
                    .as_ref()
                    .map_or([8.0, 90.0], |l| l.fill_secs);
                let a = self.legit_lead(fill);
                self.send(out, at, slot, a);
            }
            Gen::Burst => {
                let Some(t) = self.sc.classes.like_tapper.clone() else {
                    return;
                };
                let rate = uniform(&mut self.rng, t.burst_taps_per_sec);
                let until = at + Duration::from_secs_f64(uniform(&mut self.rng, t.burst_secs));
                self.tap_until[slot as usize] = until + TAP_REST;
                self.push(
                    at,
                    Pending::Tap {
                        slot,
                        rate,
                        until,
                        carry: 0.0,
                    },
                );
            }
            Gen::Flood => self.flood(slot, at),
            Gen::Harass => {
                let mix = self
                    .sc
                    .classes
                    .harasser
                    .as_ref()
                    .map_or([1.0, 1.0, 1.0], |h| h.mix);
                let kind = [Harassment::Term, Harassment::Link, Harassment::Contact]
                    [weighted(&mut self.rng, &mix)];
                let text = self.content.harass(&mut self.rng, kind);
                self.send(out, at, slot, Action::Chat(text));
            }
            Gen::Bot => self.bot(slot, at, presence, out),
            Gen::Wave => {}
        }
    }

    /// A flood: many messages from one flooder, faster than allowed.
    fn flood(&mut self, slot: u32, at: Duration) {
        let Some(f) = self.sc.classes.flooder.clone() else {
            return;
        };
        let n = self.rng.gen_range(f.messages[0]..=f.messages[1]);
        let gap = 1.0 / f.msgs_per_sec;
        let first = self.content.legit_chat(&mut self.rng, &mut self.tag);
        let mut t = at;
        for k in 0..n {
            let text = match (k, weighted(&mut self.rng, &f.mix)) {
                (0, _) | (_, 1) => first.clone(),
                (_, 0) => self.content.legit_chat(&mut self.rng, &mut self.tag),
                _ => Content::flood(&mut self.rng).to_owned(),
            };
            self.push(
                t,
                Pending::Send {
                    slot,
                    action: Action::Chat(text),
                },
            );
            t += Duration::from_secs_f64(gap * self.rng.gen_range(0.8..1.2));
        }
        self.abuse_until[slot as usize] = t;
    }

    /// A raid wave: one long text from many raiders within `wave_secs`.
    fn wave(&mut self, at: Duration, presence: &dyn Presence, out: &mut Vec<Due>) {
        let Some(r) = self.sc.classes.raider.clone() else {
            return;
        };
        let text = Content::raid_text(self.waves);
        self.waves += 1;
        let mut slots: Vec<u32> = self.layout.range(Class::Raider).collect();
        slots.shuffle(&mut self.pick);
        let mut posted = 0;
        for slot in slots {
            if posted >= r.wave_viewers {
                break;
            }
            if !presence.is_present(slot, at) {
                continue;
            }
            posted += 1;
            let copy = Content::raid_copy(&mut self.rng, text, r.evasion_share);
            let delay = Duration::from_secs_f64(self.rng.gen::<f64>() * r.wave_secs);
            self.push(
                at + delay,
                Pending::Send {
                    slot,
                    action: Action::Chat(copy),
                },
            );
        }
        for _ in posted..r.wave_viewers.min(self.layout.count(Class::Raider)) {
            out.push(Due::NoViewer {
                kind: Kind::Chat,
                class: Class::Raider,
            });
        }
    }

    /// A like storm: a share of the legitimate viewers tap for a while.
    fn storm(&mut self, i: usize, at: Duration, presence: &dyn Presence) {
        let Some(s) = self.sc.like_storms.get(i).cloned() else {
            return;
        };
        let until = at + Duration::from_secs_f64(s.duration);
        let legit: Vec<Range<u32>> = self
            .layout
            .ranges
            .iter()
            .filter(|r| !r.class.is_abusive())
            .map(|r| r.range())
            .collect();
        for range in legit {
            for slot in range {
                // Draw for every viewer, present or not, so the draws (and
                // so everything after) do not depend on who is connected.
                let joins = self.rng.gen_bool(s.participation);
                let rate = uniform(&mut self.rng, s.taps_per_sec);
                let first = self.flush.mul_f64(self.rng.gen::<f64>());
                if !joins || !presence.is_present(slot, at) || self.tap_until[slot as usize] > at {
                    continue;
                }
                self.tap_until[slot as usize] = until + TAP_REST;
                self.push(
                    at + first,
                    Pending::Tap {
                        slot,
                        rate,
                        until,
                        carry: 0.0,
                    },
                );
            }
        }
    }

    /// A fake-lead bot's move.
    fn bot(&mut self, slot: u32, at: Duration, presence: &dyn Presence, out: &mut Vec<Due>) {
        let Some(b) = self.sc.classes.fake_lead_bot.clone() else {
            return;
        };
        let tactic = Tactic::ALL[weighted(&mut self.rng, &b.tactics.weights())];
        match tactic {
            Tactic::ManyLeads => {
                // One viewer files a spree of leads with different phones.
                let range = self.layout.range(Class::FakeLeadBot);
                let spree = pick(&mut self.pick, range, at, presence, &|s| {
                    self.abuse_until[s as usize] <= at
                })
                .unwrap_or(slot);
                let n = self.rng.gen_range(b.many_leads[0]..=b.many_leads[1]);
                let mut t = at;
                for _ in 0..n {
                    let phone = content::mobile(&mut self.rng, &mut self.phones);
                    let lead = content::bot_lead(&mut self.rng, tactic, phone);
                    self.push(
                        t,
                        Pending::Send {
                            slot: spree,
                            action: Action::Lead(Box::new(lead)),
                        },
                    );
                    t += Duration::from_secs_f64(self.rng.gen_range(2.0..10.0));
                }
                self.abuse_until[spree as usize] = t;
            }
            Tactic::SharedPhone => {
                let phone = self
                    .shared
                    .choose(&mut self.rng)
                    .cloned()
                    .unwrap_or_default();
                let lead = content::bot_lead(&mut self.rng, tactic, phone);
                self.send(out, at, slot, Action::Lead(Box::new(lead)));
            }
            _ => {
                let phone = content::mobile(&mut self.rng, &mut self.phones);
                let lead = content::bot_lead(&mut self.rng, tactic, phone);
                self.send(out, at, slot, Action::Lead(Box::new(lead)));
            }
        }
    }
}

/// When each viewer of a room starts joining, in join order: the phases
/// of `[join]`, with viewer indices spread over the classes (a stride
/// permutation) so every phase brings every class.
pub fn join_order(sc: &Scenario) -> Vec<(Duration, u32)> {
    let n = sc.viewers;
    let step = coprime_step(n);
    let mut out = Vec::with_capacity(n as usize);
    let mut p: u64 = 0;
    let phases = sc.join_phases();
    let mut assigned: u64 = 0;
    let mut cumulative = 0.0;
    for (i, ph) in phases.iter().enumerate() {
        cumulative += ph.share;
        let target = if i + 1 == phases.len() {
            u64::from(n)
        } else {
            ((cumulative * f64::from(n)).round() as u64).min(u64::from(n))
        };
        let count = target.saturating_sub(assigned);
        let start = Duration::from_secs_f64(ph.at);
        let ramp = Duration::from_secs_f64(ph.ramp);
        for k in 0..count {
            let slot = ((p * step) % u64::from(n)) as u32;
            out.push((start + ramp_offset(k, count, ramp), slot));
            p += 1;
        }
        assigned += count;
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

/// A step coprime with `n`, near `n / φ`, so `i * step mod n` visits every
/// index once and consecutive joins land in different classes.
fn coprime_step(n: u32) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let n = u64::from(n.max(1));
    let mut s = ((n as f64) * 0.618_033_988_7) as u64;
    s = s.max(1);
    while gcd(s, n) != 1 {
        s += 1;
    }
    s
}

/// Whether viewer `slot` of `room_id` leaves once and comes back: `(leave
/// at, away for)` from the start of the run, for a share of viewers given by
/// `[churn]`, leaving at a uniform time between joining (+5 s) and the end.
pub fn churn(
    sc: &Scenario,
    room_id: u64,
    slot: u32,
    joined: Duration,
) -> Option<(Duration, Duration)> {
    if sc.churn.share <= 0.0 {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(stream_seed(
        sc.seed,
        room_id,
        CHURN_STREAM + u64::from(slot),
    ));
    if !rng.gen_bool(sc.churn.share.min(1.0)) {
        return None;
    }
    let away = uniform(&mut rng, sc.churn.away);
    let earliest = joined.as_secs_f64() + 5.0;
    let latest = sc.duration - away - 5.0;
    (latest > earliest).then(|| {
        (
            Duration::from_secs_f64(rng.gen_range(earliest..latest)),
            Duration::from_secs_f64(away),
        )
    })
}

/// Who is connected *according to the plan*: a viewer from its join time
/// (plus `slack` for the handshake) until its churn leave, and again
/// `slack` after it comes back.
///
/// Workers of a split run (`--worker K/N`) plan with this instead of their
/// own connections: each worker only knows its own viewers, and the plans
/// must not depend on that, so that all workers compute the same events
/// and each sends the ones of its viewers. An event planned for a viewer
/// that is not actually connected yet is counted as `no_viewer`.
#[derive(Debug, Clone)]
pub struct PlannedPresence {
    join: Vec<Duration>,
    away: Vec<Option<(Duration, Duration)>>,
    slack: Duration,
}

impl PlannedPresence {
    /// The planned presence of room `room_id` (same join order and churn as
    /// the run's connector).
    pub fn new(sc: &Scenario, room_id: u64, slack: Duration) -> Self {
        let n = sc.viewers as usize;
        let mut join = vec![Duration::MAX; n];
        let mut away = vec![None; n];
        for (at, slot) in join_order(sc) {
            join[slot as usize] = at;
            away[slot as usize] =
                churn(sc, room_id, slot, at).map(|(leave, gone)| (leave, leave + gone));
        }
        PlannedPresence { join, away, slack }
    }
}

impl Presence for PlannedPresence {
    fn is_present(&self, slot: u32, at: Duration) -> bool {
        let s = slot as usize;
        let joined = self
            .join
            .get(s)
            .is_some_and(|j| j.saturating_add(self.slack) <= at);
        let gone = self
            .away
            .get(s)
            .copied()
            .flatten()
            .is_some_and(|(leave, back)| leave <= at && at < back.saturating_add(self.slack));
        joined && !gone
    }

    fn random_present(
        &self,
        range: Range<u32>,
        at: Duration,
        rng: &mut StdRng,
        ok: &dyn Fn(u32) -> bool,
    ) -> Option<u32> {
        draw(range, rng, &|s| self.is_present(s, at) && ok(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(toml: &str, room: u64) -> RoomPlan {
        let sc = Arc::new(Scenario::parse(toml).unwrap());
        sc.validate().unwrap();
        let layout = Arc::new(sc.layout().unwrap());
        let content = Arc::new(Content::new(&sc.blocked_terms()).unwrap());
        RoomPlan::new(sc, layout, content, room)
    }

    fn all(mut p: RoomPlan) -> Vec<Due> {
        let mut out = Vec::new();
        p.pop_due(Duration::MAX, &Everyone, &mut out);
        assert_eq!(p.next_at(), None);
        out
    }

    const MIX: &str = r#"
        viewers = 2000
        duration = 60
        [classes.chatter]
        share = 0.3
        chat_rate = 10
        [classes.like_tapper]
        share = 0.3
        like_rate = 300
        [classes.lead_submitter]
        share = 0.05
        lead_rate = 1
        [classes.flooder]
        share = 0.005
        flood_rate = 0.1
        [classes.raider]
        share = 0.02
        waves = [10, 40]
        [classes.harasser]
        share = 0.005
        chat_rate = 1
        [classes.fake_lead_bot]
        share = 0.005
        lead_rate = 0.5
        [[like_storms]]
        at = 20
        duration = 5
        participation = 0.3
    "#;

    fn sends(d: &[Due]) -> Vec<&Planned> {
        d.iter()
            .filter_map(|d| match d {
                Due::Send(p) => Some(p),
                Due::NoViewer { .. } => None,
            })
            .collect()
    }

    #[test]
    fn deterministic_for_a_seed_and_different_across_seeds_and_rooms() {
        let a = all(plan(MIX, 1));
        let b = all(plan(MIX, 1));
        assert_eq!(a, b);
        assert!(a.len() > 10_000, "{}", a.len());
        assert_ne!(a, all(plan(MIX, 2)));
        assert_ne!(a, all(plan(&format!("seed = 9\n{MIX}"), 1)));
        let times: Vec<Duration> = sends(&a).iter().map(|p| p.at).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "time order");
        assert!(times.iter().all(|t| *t < Duration::from_secs(60)));
    }

    #[test]
    fn every_event_comes_from_its_class_with_the_class_behaviour() {
        let sc = Scenario::parse(MIX).unwrap();
        let layout = sc.layout().unwrap();
        let d = all(plan(MIX, 1));
        let mut per_class = std::collections::BTreeMap::<(Class, &str), u64>::new();
        let mut taps_per_viewer_sec = std::collections::HashMap::<(u32, u64), u32>::new();
        for p in sends(&d) {
            assert_eq!(layout.class_of(p.slot), p.class);
            let kind = match &p.action {
                Action::Chat(_) => "chat",
                Action::Lead(_) => "lead",
                Action::Like(n) => {
                    *taps_per_viewer_sec
                        .entry((p.slot, p.at.as_secs()))
                        .or_default() += n;
                    "like"
                }
            };
            *per_class.entry((p.class, kind)).or_default() += 1;
            // Legitimate viewers all tap in the storm; abusers never do.
            match p.class {
                Class::Flooder | Class::Raider | Class::Harasser => assert_eq!(kind, "chat"),
                Class::FakeLeadBot => assert_eq!(kind, "lead"),
                Class::Chatter => assert!(kind != "lead"),
                Class::LeadSubmitter => assert!(kind != "chat"),
                Class::LikeTapper | Class::Lurker => assert_eq!(kind, "like"),
                Class::Viewer => {}
            }
        }
        // Legit tappers stay under the engine's 20 taps/s per viewer.
        assert!(taps_per_viewer_sec.values().all(|n| *n <= 20));
        // Chatters: 10/s for 60 s; 5 sigma.
        let chat = per_class[&(Class::Chatter, "chat")] as f64;
        assert!((chat - 600.0).abs() < 5.0 * 600f64.sqrt(), "{chat}");
        // Lurkers only tap in the storm.
        assert!(per_class.contains_key(&(Class::Lurker, "like")));
        // Two raid waves of 25 raiders (40 raiders in the class).
        assert_eq!(per_class[&(Class::Raider, "chat")], 50);
        for c in [Class::Flooder, Class::Harasser, Class::FakeLeadBot] {
            assert!(per_class.keys().any(|(k, _)| *k == c), "{c}");
        }
    }

    #[test]
    fn lead_submitters_submit_once_each_with_distinct_phones() {
        let d = all(plan(
            "viewers = 100\nduration = 100\n[classes.lead_submitter]\nshare = 0.1\nlead_rate = 1\n",
            1,
        ));
        let leads: Vec<_> = sends(&d)
            .into_iter()
            .filter_map(|p| match &p.action {
                Action::Lead(l) => Some((p.slot, l.phone.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(leads.len(), 10, "ten submitters, one lead each");
        let slots: HashSet<u32> = leads.iter().map(|l| l.0).collect();
        assert_eq!(slots.len(), 10);
        let misses = d
            .iter()
            .filter(|d| matches!(d, Due::NoViewer { .. }))
            .count();
        assert!(misses > 50, "the rest found no submitter: {misses}");
    }

    #[test]
    fn withdrawals_are_seeded_legit_only_and_leave_other_plans_unchanged() {
        const LEADS: &str = "viewers = 400\nduration = 60\n\
            [classes.lead_submitter]\nshare = 0.5\nlead_rate = 3\n\
            [classes.fake_lead_bot]\nshare = 0.05\nlead_rate = 1\n";
        let with = format!("{LEADS}[withdrawals]\nshare = 0.4\nafter = [1, 2]\n");
        let a = all(plan(&with, 3));
        assert_eq!(a, all(plan(&with, 3)), "deterministic");
        let base = all(plan(LEADS, 3));
        // The same events; only the withdraw decisions are added.
        let strip = |d: &[Due]| -> Vec<Due> {
            d.iter()
                .cloned()
                .map(|d| match d {
                    Due::Send(p) => Due::Send(Planned {
                        withdraw: None,
                        ..p
                    }),
                    d => d,
                })
                .collect()
        };
        assert_eq!(strip(&a), base);
        assert!(sends(&base).iter().all(|p| p.withdraw.is_none()));
        let legit_leads: Vec<&Planned> = sends(&a)
            .into_iter()
            .filter(|p| p.class == Class::LeadSubmitter)
            .collect();
        let withdrawn = legit_leads.iter().filter(|p| p.withdraw.is_some()).count();
        assert!(legit_leads.len() > 150, "{}", legit_leads.len());
        let expect = 0.4 * legit_leads.len() as f64;
        assert!(
            (withdrawn as f64 - expect).abs() < 5.0 * expect.sqrt(),
            "{withdrawn} of {}",
            legit_leads.len()
        );
        for p in sends(&a) {
            if let Some(d) = p.withdraw {
                assert_eq!(p.class, Class::LeadSubmitter);
                assert!((Duration::from_secs(1)..=Duration::from_secs(2)).contains(&d));
            }
        }
    }

    #[test]
    fn join_order_covers_every_viewer_once_in_phase_order() {
        let sc = Scenario::parse(
            "viewers = 1000\nduration = 60\n[[join.phases]]\nshare = 0.2\nramp = 10\n\
             [[join.phases]]\nat = 30\nshare = 0.8\nramp = 0\n",
        )
        .unwrap();
        sc.validate().unwrap();
        let order = join_order(&sc);
        assert_eq!(order.len(), 1000);
        let slots: HashSet<u32> = order.iter().map(|o| o.1).collect();
        assert_eq!(slots.len(), 1000);
        assert_eq!(
            order
                .iter()
                .filter(|o| o.0 == Duration::from_secs(30))
                .count(),
            800
        );
        assert!(order[..200].iter().all(|o| o.0 < Duration::from_secs(10)));
        // The first phase has viewers from all over the index range.
        assert!(order[..200].iter().any(|o| o.1 > 900));
        assert!(order[..200].iter().any(|o| o.1 < 100));
    }

    #[test]
    fn planned_presence_follows_the_join_order_and_churn() {
        let sc = Scenario::parse(
            "viewers = 200\nduration = 60\n[join]\nramp = 10\n[churn]\nshare = 0.5\n",
        )
        .unwrap();
        sc.validate().unwrap();
        let slack = Duration::from_secs(1);
        let p = PlannedPresence::new(&sc, 3, slack);
        let mut churned = 0;
        for (at, slot) in join_order(&sc) {
            assert!(!p.is_present(slot, at), "not before its handshake");
            let after = at + slack;
            match churn(&sc, 3, slot, at) {
                Some((leave, away)) => {
                    churned += 1;
                    assert!(p.is_present(slot, after));
                    assert!(!p.is_present(slot, leave));
                    assert!(!p.is_present(slot, leave + away));
                    assert!(p.is_present(slot, leave + away + slack));
                }
                None => assert!(p.is_present(slot, Duration::from_secs(59))),
            }
        }
        assert!(churned > 50, "{churned}");
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            p.random_present(0..200, Duration::ZERO, &mut rng, &|_| true),
            None,
            "nobody at the start"
        );
        let s = p.random_present(0..200, Duration::from_secs(12), &mut rng, &|s| s % 2 == 0);
        assert!(s.is_some_and(|s| s % 2 == 0 && p.is_present(s, Duration::from_secs(12))));
    }

    #[test]
    fn churn_is_seeded_and_within_the_run() {
        let sc = Scenario::parse("viewers = 1000\nduration = 60\n[churn]\nshare = 0.2\n").unwrap();
        let picked: Vec<_> = (0..1000)
            .filter_map(|s| churn(&sc, 1, s, Duration::from_secs(5)))
            .collect();
        assert!((150..250).contains(&picked.len()), "{}", picked.len());
        for (leave, away) in &picked {
            assert!(*leave >= Duration::from_secs(10));
            assert!(*leave + *away <= Duration::from_secs(55));
        }
        assert_eq!(
            churn(&sc, 1, 7, Duration::ZERO),
            churn(&sc, 1, 7, Duration::ZERO)
        );
    }
}
