//! One room: the set of its connected viewers and the driver that turns the
//! room's arrival schedule into commands for uniformly random viewers.
//!
//! The driver is open-loop: it never waits for a viewer. An event whose
//! viewer's queue is full is dropped and counted as `dropped_local`.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use roomgate::wire::Lead;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};

use crate::{
    content,
    schedule::{stream_seed, Kind, LikePlan, RoomSchedule},
    stats::Stats,
};

/// What the room driver asks a viewer to send.
#[derive(Debug)]
pub enum Command {
    /// Send a chat message.
    Chat {
        /// Message text.
        text: String,
        /// When the message was meant to be sent.
        intended: Instant,
        /// Send it again with the same id this long after the first send.
        resend: Option<Duration>,
    },
    /// Send a lead (its `client_lead_id` is assigned by the viewer).
    Lead {
        /// The form.
        lead: Box<Lead>,
        /// When the lead was meant to be sent.
        intended: Instant,
        /// Send it again with the same id this long after the first send.
        resend: Option<Duration>,
    },
    /// Send one `Like` frame.
    Like {
        /// Taps in the frame.
        count: u32,
    },
}

impl Command {
    /// The kind of event.
    pub fn kind(&self) -> Kind {
        match self {
            Command::Chat { .. } => Kind::Chat,
            Command::Lead { .. } => Kind::Lead,
            Command::Like { .. } => Kind::Like,
        }
    }
}

/// Connected viewers of one room: a dense vector for O(1) uniform picks and
/// O(1) removal (swap-remove with a slot → position index).
#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    closed: bool,
    dense: Vec<(u32, mpsc::Sender<Command>)>,
    pos: Vec<u32>,
}

const ABSENT: u32 = u32::MAX;

/// Outcome of handing an event to a random viewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// Queued for a viewer.
    Queued,
    /// The room has no connected viewer.
    NoViewer,
    /// The chosen viewer's queue was full.
    Full,
    /// The chosen viewer is going away.
    Closed,
}

impl Registry {
    /// An empty registry for viewer slots `0..viewers`.
    pub fn new(viewers: u32) -> Self {
        Registry {
            inner: Mutex::new(Inner {
                closed: false,
                dense: Vec::with_capacity(viewers as usize),
                pos: vec![ABSENT; viewers as usize],
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add a connected viewer. `false` once the load has stopped: the sender
    /// is dropped, so the viewer's queue reports closed and it drains.
    pub fn join(&self, slot: u32, tx: mpsc::Sender<Command>) -> bool {
        let mut g = self.lock();
        let Some(p) = g.pos.get(slot as usize).copied() else {
            return false;
        };
        if g.closed || p != ABSENT {
            return false;
        }
        let at = g.dense.len() as u32;
        g.pos[slot as usize] = at;
        g.dense.push((slot, tx));
        true
    }

    /// Remove a viewer (no-op if absent).
    pub fn leave(&self, slot: u32) {
        let mut g = self.lock();
        let Some(p) = g.pos.get(slot as usize).copied() else {
            return;
        };
        if p == ABSENT {
            return;
        }
        g.pos[slot as usize] = ABSENT;
        g.dense.swap_remove(p as usize);
        if let Some(&(moved, _)) = g.dense.get(p as usize) {
            g.pos[moved as usize] = p;
        }
    }

    /// Stop the load: drop every sender so viewers drain and say `Bye`.
    pub fn close(&self) {
        let mut g = self.lock();
        g.closed = true;
        g.dense.clear();
        g.pos.iter_mut().for_each(|p| *p = ABSENT);
    }

    /// Connected viewers.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().dense.len()
    }

    /// Hand each command to a uniformly random connected viewer, holding the
    /// lock once for the whole batch. Returns one outcome per command.
    fn dispatch<R: Rng>(&self, rng: &mut R, cmds: Vec<Command>, out: &mut Vec<(Kind, Dispatch)>) {
        let g = self.lock();
        for cmd in cmds {
            let kind = cmd.kind();
            let outcome = if g.dense.is_empty() {
                Dispatch::NoViewer
            } else {
                let (_, tx) = &g.dense[rng.gen_range(0..g.dense.len())];
                match tx.try_send(cmd) {
                    Ok(()) => Dispatch::Queued,
                    Err(mpsc::error::TrySendError::Full(_)) => Dispatch::Full,
                    Err(mpsc::error::TrySendError::Closed(_)) => Dispatch::Closed,
                }
            };
            out.push((kind, outcome));
        }
    }
}

/// Parameters of one room's driver.
#[derive(Debug, Clone)]
pub struct RoomLoad {
    /// Room id (seeds its streams).
    pub room_id: u64,
    /// Run seed.
    pub seed: u64,
    /// Chat messages per second.
    pub chat_rate: f64,
    /// How like taps become frames.
    pub likes: LikePlan,
    /// Leads per second.
    pub lead_rate: f64,
    /// Share of chats/leads resent with the same id.
    pub resend_share: f64,
    /// Load stops this long after `t0`.
    pub duration: Duration,
}

/// Seed stream for content and resend decisions (schedules use 0..3): with
/// its own stream, what is sent is the same for a seed however the
/// connections happen to come up.
const CONTENT_STREAM: u64 = 100;
/// Seed stream for picking the viewer of each event.
const PICK_STREAM: u64 = 101;

/// With probability `share`, a resend delay of 50–500 ms.
fn resend_after<R: Rng>(rng: &mut R, share: f64) -> Option<Duration> {
    (share > 0.0 && rng.gen_bool(share)).then(|| Duration::from_millis(rng.gen_range(50..=500)))
}

/// Drive one room from `t0` until `duration` has passed or `stop` fires, then
/// close the registry so its viewers drain.
pub async fn drive(
    load: RoomLoad,
    registry: Arc<Registry>,
    stats: Arc<Stats>,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let rates = [load.chat_rate, load.likes.frame_rate, load.lead_rate];
    let mut schedule = RoomSchedule::new(rates, load.seed, load.room_id, load.duration);
    let mut rng = StdRng::seed_from_u64(stream_seed(load.seed, load.room_id, CONTENT_STREAM));
    let mut pick = StdRng::seed_from_u64(stream_seed(load.seed, load.room_id, PICK_STREAM));
    let mut seq = 0u64;
    let mut batch = Vec::new();
    let mut outcomes = Vec::new();
    while let Some(next) = schedule.next_at() {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep_until(t0 + next) => {}
        }
        // Everything due by now, each with its own intended time: if this
        // task was late, the lateness shows up as latency, not as lost load.
        let upto = t0.elapsed();
        while let Some((kind, at)) = schedule.pop_due(upto) {
            let intended = t0 + at;
            let cmd = match kind {
                Kind::Chat => {
                    let resend = resend_after(&mut rng, load.resend_share);
                    seq += 1;
                    Command::Chat {
                        text: content::chat_text(&mut rng, seq),
                        intended,
                        resend,
                    }
                }
                Kind::Lead => {
                    let resend = resend_after(&mut rng, load.resend_share);
                    Command::Lead {
                        lead: Box::new(content::lead(&mut rng)),
                        intended,
                        resend,
                    }
                }
                Kind::Like => Command::Like {
                    count: load.likes.taps_per_frame,
                },
            };
            batch.push(cmd);
        }
        registry.dispatch(&mut pick, std::mem::take(&mut batch), &mut outcomes);
        for (kind, outcome) in outcomes.drain(..) {
            match outcome {
                Dispatch::Queued => {}
                Dispatch::NoViewer => stats.no_viewer.add(kind, 1),
                Dispatch::Full => stats.dropped_local.add(kind, 1),
                Dispatch::Closed => stats.disconnected.add(kind, 1),
            }
        }
    }
    registry.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_picks_only_joined_viewers_and_closes() {
        let r = Registry::new(4);
        let mut rxs = Vec::new();
        for slot in [0, 2, 3] {
            let (tx, rx) = mpsc::channel(8);
            assert!(r.join(slot, tx));
            rxs.push((slot, rx));
        }
        r.leave(0);
        r.leave(0);
        assert_eq!(r.len(), 2);
        let mut rng = StdRng::seed_from_u64(1);
        let cmds = (0..6).map(|_| Command::Like { count: 1 }).collect();
        let mut out = Vec::new();
        r.dispatch(&mut rng, cmds, &mut out);
        assert!(out.iter().all(|(_, d)| *d == Dispatch::Queued));
        let got: usize = rxs
            .iter_mut()
            .map(|(slot, rx)| {
                let mut n = 0;
                while rx.try_recv().is_ok() {
                    n += 1;
                }
                assert!(*slot != 0 || n == 0, "a viewer that left gets nothing");
                n
            })
            .sum();
        assert_eq!(got, 6);
        r.close();
        let (tx, _rx) = mpsc::channel(1);
        assert!(!r.join(1, tx), "no joins after the load stopped");
        out.clear();
        r.dispatch(&mut rng, vec![Command::Like { count: 1 }], &mut out);
        assert_eq!(out[0].1, Dispatch::NoViewer);
    }

    #[test]
    fn full_queue_is_reported() {
        let r = Registry::new(1);
        let (tx, _rx) = mpsc::channel(1);
        assert!(r.join(0, tx));
        let mut rng = StdRng::seed_from_u64(1);
        let mut out = Vec::new();
        let cmds = (0..2).map(|_| Command::Like { count: 1 }).collect();
        r.dispatch(&mut rng, cmds, &mut out);
        assert_eq!(out[1].1, Dispatch::Full);
    }
}
