//! Like pacing: when the front door is overloaded, like senders are asked
//! to add up their taps and send one `Like` frame per interval.
//!
//! A like frame is cheap to count but not to receive: the packet is
//! decrypted, its stream reassembled and its frame decoded before the gate
//! sees that it only adds taps, and a flood of single-tap frames (a like
//! storm) is most of what an overloaded engine spends its io threads on.
//! Shedding it after that work saves little; asking the senders to send
//! fewer frames saves it all, and loses no tap (the count travels in the
//! next frame). So while the io runtime is overloaded, every session that
//! sends a like is told `Notice { like_pace, value: ms }`, and told a
//! shorter pace, then `0`, as the overload passes.
//!
//! The signals, sampled every [`TICK`]: how busy the io runtime's workers
//! were (the share of the tick they were not parked), and how late the
//! tick itself ran (a task woken now, such as a lead's frame or a
//! handshake, waits behind the same queue). [`Pacer`] is the decision,
//! without I/O: a ladder of paces (`like_pace_ms`, half, a quarter, off)
//! climbed to the top when an overload starts and stepped down one rung
//! per calm, but only when the rung below is predicted to stay calm too:
//! the workers' busy share scaled by the like frames the rung below would
//! bring (at most twice as many per halving; with no pace, one per tap at
//! worst, and the taps per second are known). So a storm that goes on
//! keeps its pace, and one that ends is let go. A step down that brings
//! the overload back anyway climbs one rung, with a longer calm.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::GateCtx;
use crate::event::Kind;

/// How often the io runtime is sampled.
pub const TICK: Duration = Duration::from_millis(10);

/// A rung of the ladder is kept while the runtime stays calm this long
/// before the next one down. Each relapse (overload within [`RELAPSE`] of
/// stepping down) doubles it, up to [`MAX_CALM`]: unpaced, a like storm
/// comes back at once, so an overload that outlasts the calm would
/// otherwise be probed every few seconds, with a spike of lateness each
/// time.
pub const CALM: Duration = Duration::from_secs(5);
/// The longest calm.
pub const MAX_CALM: Duration = Duration::from_secs(60);
/// An overload this soon after a step down is a relapse.
pub const RELAPSE: Duration = Duration::from_secs(30);
/// While the overload lasts on a rung, the next rung up after this long
/// (the clients need a moment to follow a notice).
pub const CLIMB_AFTER: Duration = Duration::from_millis(500);
/// Overloaded samples in a row before a rung is climbed.
pub const SUSTAINED: u32 = 3;
/// Rungs below the top: `like_pace_ms` / 2^k for k in 1..=this, then off.
const LOWER_RUNGS: u32 = 2;

/// One sample of the io runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// How late the tick ran.
    pub late: Duration,
    /// Share of the time since the previous sample the workers were busy
    /// (not parked), per mille, averaged over the workers; may exceed 1,000
    /// when the runtime publishes a burst of busy time late.
    pub busy_permille: u32,
    /// Like frames received during the tick.
    pub like_frames: u64,
    /// Like taps received during the tick.
    pub like_taps: u64,
    /// Client frames of every kind received during the tick.
    pub frames: u64,
}

/// The like pace, from the io runtime's load.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// Smoothed lateness (µs) above which the runtime is overloaded.
    over_late_us: u64,
    /// Smoothed busy share (per mille) above which it is overloaded.
    over_busy: u32,
    /// The top pace, ms.
    pace_ms: u32,
    /// The first calm; the calm now.
    base_calm: Duration,
    calm: Duration,
    /// Rung: 0 = off, `LOWER_RUNGS + 1` = the top pace.
    rung: u32,
    /// When the rung last changed, and whether that was a step down.
    changed: Option<(Instant, bool)>,
    /// Since when the runtime has been calm on this rung.
    calm_since: Option<Instant>,
    /// Lateness (µs) and busy share (per mille), exponentially smoothed: a
    /// quarter of each new sample.
    late_us: u64,
    busy: u32,
    /// Slow averages (1/32 of each sample, about a third of a second):
    /// busy share (per mille), like frames and taps per tick.
    slow_busy: f64,
    frames: f64,
    taps: f64,
    /// All client frames per tick (slow average).
    all_frames: f64,
    /// Taps per second per viewer the prediction counts at most.
    taps_per_sec_cap: u32,
    /// Overloaded samples in a row: a rung is climbed only after
    /// [`SUSTAINED`] (one stalled tick is not an overload).
    over_ticks: u32,
}

impl Pacer {
    /// Pace at up to `pace_ms` while the smoothed lateness is above
    /// `over_late` or the smoothed busy share above `over_busy_permille`;
    /// `calm` is the first calm. A zero `pace_ms` never paces; a zero
    /// threshold is not watched.
    pub fn new(over_late: Duration, over_busy_permille: u32, pace_ms: u32, calm: Duration) -> Self {
        Self {
            over_late_us: u64::try_from(over_late.as_micros()).unwrap_or(u64::MAX),
            over_busy: over_busy_permille,
            pace_ms,
            base_calm: calm,
            calm,
            rung: 0,
            changed: None,
            calm_since: None,
            late_us: 0,
            busy: 0,
            slow_busy: 0.0,
            frames: 0.0,
            taps: 0.0,
            all_frames: 0.0,
            taps_per_sec_cap: u32::MAX,
            over_ticks: 0,
        }
    }

    /// Whether this pacer can ever pace.
    pub fn enabled(&self) -> bool {
        self.pace_ms > 0 && (self.over_late_us > 0 || self.over_busy > 0)
    }

    /// How long the runtime must stay calm now before the next step down.
    pub fn calm(&self) -> Duration {
        self.calm
    }

    /// The smoothed lateness, µs.
    pub fn lateness_us(&self) -> u64 {
        self.late_us
    }

    /// The smoothed busy share, per mille.
    pub fn busy_permille(&self) -> u32 {
        self.busy
    }

    /// The pace asked for now, ms (0 = none).
    pub fn pace_ms(&self) -> u32 {
        match self.rung {
            0 => 0,
            r => (self.pace_ms >> (LOWER_RUNGS + 1 - r)).max(1),
        }
    }

    fn overloaded(&self) -> bool {
        (self.over_late_us > 0 && self.late_us > self.over_late_us)
            || (self.over_busy > 0 && self.busy > self.over_busy)
    }

    /// Calm: well within both thresholds (half the lateness, three
    /// quarters of the busy share).
    fn calm_now(&self) -> bool {
        (self.over_late_us == 0 || self.late_us <= self.over_late_us / 2)
            && (self.over_busy == 0 || self.busy <= self.over_busy * 3 / 4)
    }

    /// The busy share (per mille) the rung below is predicted to bring:
    /// today's, with the like frames' share of it scaled by how many more
    /// like frames that rung brings (at most twice per halving; with no
    /// pace, at worst one per tap, counting no more taps per frame than
    /// the per-viewer like cap lets through in one pace: a client's huge
    /// counts do not hold the pace).
    pub fn predicted_below(&self) -> f64 {
        let likes = self.frames.max(1e-9);
        let all = self.all_frames.max(likes);
        let below = if self.rung <= 1 {
            let per_frame =
                (f64::from(self.taps_per_sec_cap) * f64::from(self.pace_ms()) / 1000.0).max(1.0);
            self.taps.min(likes * per_frame)
        } else {
            (likes * 2.0).min(self.taps)
        };
        let share = likes / all;
        self.slow_busy * (1.0 - share + share * below.max(likes) / likes)
    }

    /// Count at most `per_viewer_per_sec` taps per second of pace in a
    /// like frame when predicting (the guard's per-viewer like cap).
    pub fn cap_taps(mut self, per_viewer_per_sec: u32) -> Self {
        self.taps_per_sec_cap = per_viewer_per_sec.max(1);
        self
    }

    /// One sample at `now`: the pace to ask for now, ms (0 = none).
    pub fn observe(&mut self, s: Sample, now: Instant) -> u32 {
        let late_us = u64::try_from(s.late.as_micros()).unwrap_or(u64::MAX);
        self.late_us = self.late_us - self.late_us / 4 + late_us / 4;
        // Up to 4x per sample: the runtime publishes busy time in bursts,
        // and a sample that catches up must not be cut off at 100 %.
        let busy = s.busy_permille.min(4000);
        self.busy = (self.busy - self.busy / 4 + busy / 4).min(4000);
        let slow = |avg: &mut f64, x: f64| *avg += (x - *avg) / 32.0;
        slow(&mut self.slow_busy, f64::from(busy));
        slow(&mut self.frames, s.like_frames as f64);
        slow(&mut self.taps, s.like_taps as f64);
        slow(&mut self.all_frames, s.frames as f64);
        self.over_ticks = if self.overloaded() {
            self.over_ticks.saturating_add(1)
        } else {
            0
        };
        if !self.enabled() {
            return 0;
        }
        let top = LOWER_RUNGS + 1;
        let since_change = self
            .changed
            .map(|(t, down)| (now.saturating_duration_since(t), down));
        if self.overloaded() {
            self.calm_since = None;
            if self.over_ticks < SUSTAINED {
                return self.pace_ms();
            }
            match since_change {
                // A step down brought the overload back: back up one rung,
                // and stay there longer.
                Some((d, true)) if d < RELAPSE => {
                    self.calm = self
                        .calm
                        .saturating_mul(2)
                        .min(MAX_CALM.max(self.base_calm));
                    self.set_rung((self.rung + 1).min(top), now, false);
                }
                // A fresh overload: straight to the top.
                _ if self.rung == 0 => {
                    self.calm = self.base_calm;
                    self.set_rung(top, now, false);
                }
                // Still overloaded on this rung after the clients had
                // time to follow: one rung up.
                Some((d, _)) if d >= CLIMB_AFTER && self.rung < top => {
                    self.set_rung(self.rung + 1, now, false);
                }
                _ => {}
            }
        } else if self.rung > 0 && self.calm_now() {
            let since = *self.calm_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.calm && self.below_stays_calm() {
                self.set_rung(self.rung - 1, now, true);
            }
        } else {
            self.calm_since = None;
        }
        self.pace_ms()
    }

    /// The rung below is predicted to keep the workers within half the
    /// busy threshold (always, when the busy share is not watched). Half:
    /// the busy share grows faster than the frames near saturation (more
    /// packets per frame, the clients' own work on the same cores), measured
    /// in `make overload` (BENCHMARKS.md): a step off the 250 ms pace was
    /// predicted at 592 ‰ and brought 916 ‰.
    fn below_stays_calm(&self) -> bool {
        self.over_busy == 0 || self.predicted_below() <= f64::from(self.over_busy / 2)
    }

    fn set_rung(&mut self, rung: u32, now: Instant, down: bool) {
        self.rung = rung;
        self.changed = Some((now, down));
        self.calm_since = None;
    }
}

/// Sample the io runtime every [`TICK`] and publish the pace
/// (`GateCtx::like_pace_ms`), the lateness and the busy share (gauges)
/// until shutdown.
pub async fn run(ctx: Arc<GateCtx>, mut pacer: Pacer) {
    let mut shutdown = ctx.shutdown.clone();
    let mut tick = tokio::time::interval(TICK);
    // A late tick is measured, not made up for by a burst of ticks.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let rt = tokio::runtime::Handle::current().metrics();
    let busy_now = || {
        (0..rt.num_workers())
            .map(|w| rt.worker_total_busy_duration(w))
            .sum::<Duration>()
    };
    let workers = u32::try_from(rt.num_workers().max(1)).unwrap_or(u32::MAX);
    let likes = || {
        let m = &ctx.metrics;
        let all = [Kind::Chat, Kind::Like, Kind::Lead].map(|k| m.frame_count(k));
        (all[1], m.like_taps.load(Relaxed), all.iter().sum::<u64>())
    };
    let (mut busy_before, mut at_before) = (busy_now(), Instant::now());
    let mut likes_before = likes();
    loop {
        let due = tokio::select! {
            due = tick.tick() => due,
            _ = shutdown.changed() => break,
        };
        let now = Instant::now();
        let busy = busy_now();
        let span = now
            .saturating_duration_since(at_before)
            .max(Duration::from_micros(1));
        let share = busy.saturating_sub(busy_before).as_secs_f64()
            / span.as_secs_f64()
            / f64::from(workers);
        (busy_before, at_before) = (busy, now);
        let (frames, taps, all) = likes();
        let sample = Sample {
            late: now.saturating_duration_since(due),
            busy_permille: (share * 1000.0).clamp(0.0, 4000.0) as u32,
            like_frames: frames.saturating_sub(likes_before.0),
            like_taps: taps.saturating_sub(likes_before.1),
            frames: all.saturating_sub(likes_before.2),
        };
        likes_before = (frames, taps, all);
        let pace = pacer.observe(sample, now);
        let m = &ctx.metrics;
        m.io_lateness_us.store(
            i64::try_from(pacer.lateness_us()).unwrap_or(i64::MAX),
            Relaxed,
        );
        m.io_busy_permille
            .store(i64::from(pacer.busy_permille().min(1000)), Relaxed);
        if ctx.like_pace_ms.load(Relaxed) != pace {
            ctx.like_pace_ms.store(pace, Relaxed);
            m.like_pace_ms.store(i64::from(pace), Relaxed);
            tracing::info!(
                pace_ms = pace,
                lateness_us = pacer.lateness_us(),
                busy_permille = pacer.busy_permille(),
                calm_s = pacer.calm().as_secs(),
                "like pace changed"
            );
        }
    }
    ctx.like_pace_ms.store(0, Relaxed);
    ctx.metrics.like_pace_ms.store(0, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LATE: Duration = Duration::from_millis(5);
    const BUSY: u32 = 900;

    fn pacer() -> Pacer {
        Pacer::new(LATE, BUSY, 1000, CALM)
    }

    /// Feed `ticks` samples from `*at` (ms after `t0`) on; the paces.
    fn run(p: &mut Pacer, t0: Instant, at: &mut u64, ticks: u64, s: Sample) -> Vec<u32> {
        (0..ticks)
            .map(|_| {
                *at += 10;
                p.observe(s, t0 + Duration::from_millis(*at))
            })
            .collect()
    }

    fn late(ms: u64) -> Sample {
        Sample {
            late: Duration::from_millis(ms),
            ..Sample::default()
        }
    }

    fn busy(permille: u32, like_frames: u64, like_taps: u64) -> Sample {
        Sample {
            busy_permille: permille,
            like_frames,
            like_taps,
            frames: like_frames,
            ..Sample::default()
        }
    }

    /// The paces in the order they were first asked for.
    fn steps(paces: &[u32]) -> Vec<u32> {
        let mut v: Vec<u32> = Vec::new();
        for &p in paces {
            if v.last() != Some(&p) {
                v.push(p);
            }
        }
        v
    }

    #[test]
    fn an_overload_paces_at_the_top_and_a_calm_steps_down_rung_by_rung() {
        let (t0, mut at) = (Instant::now(), 0);
        let mut p = pacer();
        // On time: no pacing; one late tick alone is smoothed away.
        assert!(run(&mut p, t0, &mut at, 50, late(1))
            .iter()
            .all(|&x| x == 0));
        assert_eq!(run(&mut p, t0, &mut at, 1, late(12)), [0]);
        // Late tick after tick: the top pace within a few ticks.
        let got = run(&mut p, t0, &mut at, 10, late(30));
        let first = got.iter().position(|&x| x > 0).unwrap();
        assert!(first <= 3, "paced after {first} late ticks");
        assert_eq!(got[first..], vec![1000; got.len() - first][..]);
        // On time and no likes: one rung down per calm, then off.
        let ticks = CALM.as_millis() as u64 / 10;
        let got = run(&mut p, t0, &mut at, 4 * ticks, late(0));
        assert_eq!(steps(&got), [1000, 500, 250, 0]);
        let rung_ticks = |pace| got.iter().filter(|&&x| x == pace).count() as u64;
        for pace in [500, 250] {
            assert!(
                (ticks..ticks + 3).contains(&rung_ticks(pace)),
                "{pace} ms held {} ticks",
                rung_ticks(pace)
            );
        }
    }

    #[test]
    fn a_storm_that_goes_on_keeps_its_pace_and_one_that_ends_is_let_go() {
        let (t0, mut at) = (Instant::now(), 0);
        let mut p = pacer();
        // Busy workers: paced.
        assert_eq!(
            run(&mut p, t0, &mut at, 20, busy(950, 400, 400)).last(),
            Some(&1000)
        );
        // Paced, the workers are calm, but the taps (4 per frame at 250 ms)
        // would bring 4x the frames without a pace: it stays at 250 ms.
        let calm = busy(200, 100, 400);
        let got = run(&mut p, t0, &mut at, 6000, calm);
        assert_eq!(
            steps(&got),
            [1000, 500, 250],
            "predicted {}",
            p.predicted_below()
        );
        // The storm ends (a tap per frame): the pace is let go.
        let got = run(&mut p, t0, &mut at, 1000, busy(150, 100, 100));
        assert_eq!(steps(&got), [250, 0]);
    }

    #[test]
    fn huge_like_counts_and_other_work_do_not_hold_the_pace() {
        let (t0, mut at) = (Instant::now(), 0);
        // One client sends 1,000 taps per frame at the 250 ms pace: with
        // the per-viewer cap (20/s) a frame counts as 5 taps at most.
        let mut p = pacer().cap_taps(20);
        run(&mut p, t0, &mut at, 20, busy(950, 0, 0));
        let got = run(&mut p, t0, &mut at, 2000, busy(60, 4, 4000));
        assert_eq!(
            steps(&got),
            [1000, 500, 250, 0],
            "predicted {}",
            p.predicted_below()
        );
        // Chat is most of the work: only the likes' share is scaled.
        let mut p = pacer();
        run(&mut p, t0, &mut at, 20, busy(950, 0, 0));
        let mostly_chat = Sample {
            busy_permille: 400,
            like_frames: 10,
            like_taps: 20,
            frames: 100,
            ..Sample::default()
        };
        let got = run(&mut p, t0, &mut at, 2000, mostly_chat);
        assert_eq!(
            steps(&got),
            [1000, 500, 250, 0],
            "predicted {}",
            p.predicted_below()
        );
    }

    #[test]
    fn a_step_down_that_brings_the_overload_back_climbs_one_rung_and_waits_longer() {
        let (t0, mut at) = (Instant::now(), 0);
        let mut p = pacer();
        run(&mut p, t0, &mut at, 20, busy(950, 0, 0));
        // Calm with no likes: down to off after three calms.
        let got = run(&mut p, t0, &mut at, 1600, busy(100, 0, 0));
        assert_eq!(*got.last().unwrap(), 0);
        let mut want_calm = CALM;
        for _ in 0..6 {
            // Overloaded again at once: one rung up, the calm doubled.
            let got = run(&mut p, t0, &mut at, 20, busy(950, 0, 0));
            assert_eq!(steps(&got), [0, 250]);
            want_calm = (want_calm * 2).min(MAX_CALM);
            assert_eq!(p.calm(), want_calm);
            let ticks = want_calm.as_millis() as u64 / 10 + 20;
            let got = run(&mut p, t0, &mut at, ticks, busy(100, 0, 0));
            assert_eq!(steps(&got), [250, 0]);
        }
        assert_eq!(p.calm(), MAX_CALM);
        // Still overloaded on a rung after CLIMB_AFTER: the next one up.
        let got = run(&mut p, t0, &mut at, 200, busy(950, 0, 0));
        assert_eq!(steps(&got), [0, 250, 500, 1000]);
        // After RELAPSE of calm off the ladder, an overload starts afresh.
        run(
            &mut p,
            t0,
            &mut at,
            (3 * MAX_CALM + RELAPSE).as_millis() as u64 / 10 + 100,
            busy(0, 0, 0),
        );
        assert_eq!(p.pace_ms(), 0);
        run(&mut p, t0, &mut at, 20, busy(950, 0, 0));
        assert_eq!((p.pace_ms(), p.calm()), (1000, CALM));
    }

    #[test]
    fn no_pace_or_no_signal_never_paces() {
        let t0 = Instant::now();
        for mut p in [
            Pacer::new(LATE, BUSY, 0, CALM),
            Pacer::new(Duration::ZERO, 0, 1000, CALM),
        ] {
            let mut at = 0;
            let s = Sample {
                late: Duration::from_secs(1),
                busy_permille: 1000,
                like_frames: 10,
                like_taps: 10,
                frames: 10,
            };
            assert!(run(&mut p, t0, &mut at, 100, s).iter().all(|&x| x == 0));
            assert!(
                p.lateness_us() > 0 && p.busy_permille() > 0,
                "still measured"
            );
        }
        // Only the busy share watched: lateness alone does not pace.
        let mut p = Pacer::new(Duration::ZERO, BUSY, 1000, CALM);
        assert!(run(&mut p, t0, &mut 0, 100, late(1000))
            .iter()
            .all(|&x| x == 0));
    }

    proptest! {
        /// Whatever the load: the pace is a rung of the ladder; it starts
        /// only while overloaded, rises only while overloaded, and falls
        /// one rung at a time after at least CALM of calm.
        #[test]
        fn the_pace_follows_the_load(
            // Stretches of steady load, a few ticks to 20 s each.
            stretches in proptest::collection::vec(
                (1usize..2000, 0u64..20, 0u32..1000, 0u64..50, 1u64..4),
                1..40,
            ),
        ) {
            let t0 = Instant::now();
            let mut p = pacer();
            let mut was = 0;
            let mut changed_at = 0;
            let load = stretches
                .iter()
                .flat_map(|&(n, late, busy, frames, per)| std::iter::repeat_n((late, busy, frames, per), n));
            for (i, (late_ms, busy, frames, taps_per)) in load.enumerate() {
                let at = i as u64 * 10;
                let s = Sample {
                    late: Duration::from_millis(late_ms),
                    busy_permille: busy,
                    like_frames: frames,
                    like_taps: frames * taps_per,
                    frames: frames * 2,
                };
                let now = p.observe(s, t0 + Duration::from_millis(at));
                prop_assert!([0, 250, 500, 1000].contains(&now));
                let over = p.lateness_us() > 5_000 || p.busy_permille() > BUSY;
                if now > was {
                    prop_assert!(over, "rose to {} without an overload", now);
                }
                if now < was {
                    prop_assert!(!over);
                    prop_assert_eq!(now, if was == 250 { 0 } else { was / 2 });
                    prop_assert!(at - changed_at >= CALM.as_millis() as u64);
                }
                if now != was {
                    changed_at = at;
                }
                was = now;
            }
        }
    }
}
