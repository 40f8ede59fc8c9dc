//! One room: its connected viewers and the driver that turns the room's
//! [`RoomPlan`] into commands for them.
//!
//! The driver is open-loop: it never waits for a viewer. An event whose
//! viewer's queue is full is dropped and counted as `dropped_local`.

use std::{
    ops::Range,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use rand::{rngs::StdRng, Rng};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use crate::{
    plan::{Action, Due, PlannedPresence, Presence, RoomPlan},
    schedule::Kind,
    stats::Stats,
    truth::{Class, ClassLayout, Worker},
};

/// What the room driver asks a viewer to send.
#[derive(Debug)]
pub struct Command {
    /// What to send.
    pub action: Action,
    /// When it was meant to be sent.
    pub intended: Instant,
    /// Its class (ground truth; the viewer's class).
    pub class: Class,
    /// Send it again with the same id this long after the first send.
    pub resend: Option<Duration>,
    /// A lead: withdraw it this long after its `accepted` ack.
    pub withdraw: Option<Duration>,
}

impl Command {
    /// The kind of event.
    pub fn kind(&self) -> Kind {
        self.action.kind()
    }
}

/// Connected viewers of one room: a sender per viewer index, and per class
/// a dense vector of the connected indices for O(1) random picks and O(1)
/// removal (swap-remove with an index → position map).
#[derive(Debug)]
pub struct Registry {
    layout: Arc<ClassLayout>,
    /// In a split run: this worker, and the presence every worker plans
    /// with (see [`PlannedPresence`]).
    split: Option<(Worker, PlannedPresence)>,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    closed: bool,
    slots: Vec<Option<mpsc::Sender<Command>>>,
    dense: Vec<Vec<u32>>,
    pos: Vec<u32>,
}

/// Outcome of handing an event to a viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Queued for the viewer.
    Queued,
    /// The viewer is not connected (or the class has no free viewer).
    NoViewer,
    /// The viewer's queue was full.
    Full,
    /// The viewer is going away.
    Closed,
}

/// The registry under its lock, as the planner sees it.
struct Locked<'a> {
    layout: &'a ClassLayout,
    g: MutexGuard<'a, Inner>,
}

impl Presence for Locked<'_> {
    fn is_present(&self, slot: u32, _at: Duration) -> bool {
        self.g.slots.get(slot as usize).is_some_and(Option::is_some)
    }

    fn random_present(
        &self,
        range: Range<u32>,
        _at: Duration,
        rng: &mut StdRng,
        ok: &dyn Fn(u32) -> bool,
    ) -> Option<u32> {
        let class = self.layout.class_of(range.start);
        let dense = &self.g.dense[class.index()];
        if dense.is_empty() {
            return None;
        }
        (0..16)
            .map(|_| dense[rng.gen_range(0..dense.len())])
            .find(|s| ok(*s))
    }
}

const ABSENT: u32 = u32::MAX;

impl Registry {
    /// An empty registry for a room laid out as `layout`; `split` for a
    /// worker of a split run.
    pub fn new(layout: Arc<ClassLayout>, split: Option<(Worker, PlannedPresence)>) -> Self {
        let n = layout.viewers as usize;
        Registry {
            split,
            inner: Mutex::new(Inner {
                closed: false,
                slots: vec![None; n],
                dense: vec![Vec::new(); Class::COUNT],
                pos: vec![ABSENT; n],
            }),
            layout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add a connected viewer. `false` once the load has stopped (the
    /// sender is dropped, so the viewer's queue reads closed and it leaves).
    pub fn join(&self, slot: u32, tx: mpsc::Sender<Command>) -> bool {
        let class = self.layout.class_of(slot).index();
        let mut g = self.lock();
        if g.closed || g.slots.get(slot as usize).is_none_or(Option::is_some) {
            return false;
        }
        g.slots[slot as usize] = Some(tx);
        let at = g.dense[class].len() as u32;
        g.dense[class].push(slot);
        g.pos[slot as usize] = at;
        true
    }

    /// Remove a viewer (no-op if absent).
    pub fn leave(&self, slot: u32) {
        let class = self.layout.class_of(slot).index();
        let mut g = self.lock();
        let Some(p) = g.pos.get(slot as usize).copied() else {
            return;
        };
        if p == ABSENT {
            return;
        }
        g.slots[slot as usize] = None;
        g.pos[slot as usize] = ABSENT;
        g.dense[class].swap_remove(p as usize);
        if let Some(&moved) = g.dense[class].get(p as usize) {
            g.pos[moved as usize] = p;
        }
    }

    /// Stop the load: drop every sender so viewers drain and say `Bye`.
    pub fn close(&self) {
        let mut g = self.lock();
        g.closed = true;
        g.slots.iter_mut().for_each(|s| *s = None);
        g.dense.iter_mut().for_each(Vec::clear);
        g.pos.iter_mut().for_each(|p| *p = ABSENT);
    }

    /// Connected viewers.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().dense.iter().map(Vec::len).sum()
    }

    /// Plan everything due by `upto` (with `t0` the start of the run) and
    /// hand each event to its viewer, holding the lock once for the batch.
    fn step(
        &self,
        plan: &mut RoomPlan,
        t0: Instant,
        upto: Duration,
        due: &mut Vec<Due>,
        out: &mut Vec<(Kind, Class, Dispatch)>,
    ) {
        let locked = Locked {
            layout: &self.layout,
            g: self.lock(),
        };
        let worker = self.split.as_ref().map(|s| s.0);
        let presence: &dyn Presence = match &self.split {
            Some((_, planned)) => planned,
            None => &locked,
        };
        plan.pop_due(upto, presence, due);
        for d in due.drain(..) {
            match d {
                Due::NoViewer { kind, class } => {
                    if worker.is_none_or(|w| w.is_first()) {
                        out.push((kind, class, Dispatch::NoViewer));
                    }
                }
                // Another worker's viewer: that worker sends it.
                Due::Send(p) if worker.is_some_and(|w| !w.owns(p.slot)) => {}
                Due::Send(p) => {
                    let kind = p.action.kind();
                    let outcome = match locked.g.slots.get(p.slot as usize) {
                        Some(Some(tx)) => match tx.try_send(Command {
                            action: p.action,
                            intended: t0 + p.at,
                            class: p.class,
                            resend: p.resend,
                            withdraw: p.withdraw,
                        }) {
                            Ok(()) => Dispatch::Queued,
                            Err(mpsc::error::TrySendError::Full(_)) => Dispatch::Full,
                            Err(mpsc::error::TrySendError::Closed(_)) => Dispatch::Closed,
                        },
                        _ => Dispatch::NoViewer,
                    };
                    out.push((kind, p.class, outcome));
                }
            }
        }
    }
}

/// Drive one room's plan from `t0` until `stop` fires (the end of the
/// load), then close the registry so its viewers drain.
pub async fn drive(
    mut plan: RoomPlan,
    registry: Arc<Registry>,
    stats: Arc<Stats>,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let mut due = Vec::new();
    let mut outcomes = Vec::new();
    while let Some(next) = plan.next_at() {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep_until(t0 + next) => {}
        }
        // Everything due by now, each with its own intended time: if this
        // task was late, the lateness shows up as latency, not as lost load.
        registry.step(&mut plan, t0, t0.elapsed(), &mut due, &mut outcomes);
        for (kind, class, outcome) in outcomes.drain(..) {
            let counter = match outcome {
                Dispatch::Queued => continue,
                Dispatch::NoViewer => &stats.no_viewer,
                Dispatch::Full => &stats.dropped_local,
                Dispatch::Closed => &stats.disconnected,
            };
            counter.add(kind, 1);
            stats.class_not_sent.add(class, kind, 1);
        }
    }
    // A plan with nothing left to send (or nothing at all: idle viewers)
    // keeps its viewers connected until the load's duration is over; an
    // early close would make every viewer say `Bye` right after `Welcome`.
    let _ = stop.wait_for(|s| *s).await;
    registry.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{content::Content, scenario::Scenario};

    fn setup(toml: &str) -> (Arc<Registry>, RoomPlan) {
        let sc = Arc::new(Scenario::parse(toml).unwrap());
        let layout = Arc::new(sc.layout().unwrap());
        let content = Arc::new(Content::new(&sc.blocked_terms()).unwrap());
        (
            Arc::new(Registry::new(layout.clone(), None)),
            RoomPlan::new(sc, layout, content, 1),
        )
    }

    #[test]
    fn events_go_only_to_connected_viewers_of_their_class() {
        let (r, mut plan) =
            setup("viewers = 4\nduration = 10\n[classes.chatter]\nshare = 0.5\nchat_rate = 20\n");
        let mut rxs = Vec::new();
        for slot in [0, 2, 3] {
            let (tx, rx) = mpsc::channel(1000);
            assert!(r.join(slot, tx));
            rxs.push((slot, rx));
        }
        let (tx, _) = mpsc::channel(1);
        assert!(!r.join(0, tx), "already joined");
        r.leave(2);
        r.leave(2);
        assert_eq!(r.len(), 2);
        let (mut due, mut out) = (Vec::new(), Vec::new());
        r.step(
            &mut plan,
            Instant::now(),
            Duration::from_secs(10),
            &mut due,
            &mut out,
        );
        assert!(out.len() > 100);
        assert!(out
            .iter()
            .all(|(k, c, d)| *k == Kind::Chat && *c == Class::Chatter && *d == Dispatch::Queued));
        for (slot, rx) in rxs.iter_mut() {
            let mut n = 0;
            while rx.try_recv().is_ok() {
                n += 1;
            }
            // Chatters are 0 and 1; only 0 is connected and gets everything.
            assert_eq!(n > 0, *slot == 0, "slot {slot}: {n}");
        }
        r.close();
        let (tx, _rx) = mpsc::channel(1);
        assert!(!r.join(1, tx), "no joins after the load stopped");
    }

    /// Three workers plan the same room and each sends only its viewers'
    /// events: together they send every event of the plan exactly once.
    #[test]
    fn split_workers_together_send_the_whole_plan_once() {
        let toml = "viewers = 300\nduration = 20\n[join]\nramp = 5\n\
                    [classes.chatter]\nshare = 0.5\nchat_rate = 30\n\
                    [classes.lead_submitter]\nshare = 0.2\nlead_rate = 2\n\
                    [classes.like_tapper]\nshare = 0.3\nlike_rate = 100\n";
        let sc = Arc::new(Scenario::parse(toml).unwrap());
        sc.validate().unwrap();
        let layout = Arc::new(sc.layout().unwrap());
        let content = Arc::new(Content::new(&sc.blocked_terms()).unwrap());
        let slack = Duration::from_secs(1);
        let new_plan = || RoomPlan::new(sc.clone(), layout.clone(), content.clone(), 7);
        // What one planner produces, in order: (slot, action).
        let mut whole = Vec::new();
        new_plan().pop_due(
            Duration::MAX,
            &PlannedPresence::new(&sc, 7, slack),
            &mut whole,
        );
        let planned: Vec<(u32, Action)> = whole
            .iter()
            .filter_map(|d| match d {
                Due::Send(p) => Some((p.slot, p.action.clone())),
                Due::NoViewer { .. } => None,
            })
            .collect();
        let no_viewer = whole.len() - planned.len();
        assert!(planned.len() > 500, "{}", planned.len());
        let mut got: Vec<(u32, Action)> = Vec::new();
        let mut no_viewer_counted = 0;
        for k in 1..=3 {
            let w = Worker { k, n: 3 };
            let r = Registry::new(
                layout.clone(),
                Some((w, PlannedPresence::new(&sc, 7, slack))),
            );
            let mut rxs = Vec::new();
            for slot in (0..300).filter(|s| w.owns(*s)) {
                let (tx, rx) = mpsc::channel(100_000);
                assert!(r.join(slot, tx));
                rxs.push((slot, rx));
            }
            let mut plan = new_plan();
            let (mut due, mut out) = (Vec::new(), Vec::new());
            // In uneven steps, as a late timer would.
            for upto in [3, 4, 11, 19, 25] {
                r.step(
                    &mut plan,
                    Instant::now(),
                    Duration::from_secs(upto),
                    &mut due,
                    &mut out,
                );
            }
            no_viewer_counted += out.iter().filter(|o| o.2 == Dispatch::NoViewer).count();
            assert!(out
                .iter()
                .all(|o| matches!(o.2, Dispatch::Queued | Dispatch::NoViewer)));
            for (slot, rx) in &mut rxs {
                while let Ok(c) = rx.try_recv() {
                    got.push((*slot, c.action));
                }
            }
        }
        assert_eq!(no_viewer_counted, no_viewer, "counted once, by worker 1");
        let key = |v: &(u32, Action)| format!("{} {:?}", v.0, v.1);
        let mut a: Vec<String> = planned.iter().map(key).collect();
        let mut b: Vec<String> = got.iter().map(key).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    #[test]
    fn absent_viewers_and_full_queues_are_reported() {
        let (r, mut plan) =
            setup("viewers = 2\nduration = 10\n[classes.chatter]\nshare = 1\nchat_rate = 20\n");
        let (mut due, mut out) = (Vec::new(), Vec::new());
        let t0 = Instant::now();
        r.step(&mut plan, t0, Duration::from_secs(1), &mut due, &mut out);
        assert!(!out.is_empty());
        assert!(out.iter().all(|o| o.2 == Dispatch::NoViewer));
        let (tx, _rx) = mpsc::channel(1);
        assert!(r.join(1, tx));
        out.clear();
        r.step(&mut plan, t0, Duration::from_secs(10), &mut due, &mut out);
        assert_eq!(out[0].2, Dispatch::Queued);
        assert!(out[1..].iter().all(|o| o.2 == Dispatch::Full));
    }
}
