//! Rate limiting primitives, sans-IO: a GCRA limiter and a sliding-window
//! counter. Time is passed in (Unix ms); state is a plain integer or a small
//! queue owned by the caller, so limiters cost nothing when idle and are
//! forgotten when their state equals a fresh one.

use std::collections::VecDeque;

/// Generic cell rate algorithm: `count` events per `period_ms`, up to
/// `burst` at once. Over any window of `w` ms it admits at most
/// `burst + w * count / period_ms` events, and it always admits events
/// spaced at least `period_ms / count` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval, µs.
    t_us: i64,
    /// Tolerance, µs: `(burst - 1) * t_us`.
    tau_us: i64,
}

/// The state of one GCRA key: its theoretical arrival time (µs). A fresh
/// key is `0`; a key whose TAT is in the past can be forgotten.
pub type Tat = i64;

impl Gcra {
    /// `count` events per `period_ms`, burst `burst` (≥ 1).
    pub fn new(count: u32, period_ms: u64, burst: u32) -> Self {
        let count = i64::from(count.max(1));
        let t_us = ((period_ms as i64).saturating_mul(1000) / count).max(1);
        Gcra {
            t_us,
            tau_us: t_us.saturating_mul(i64::from(burst.max(1)) - 1),
        }
    }

    /// Admit one event at `now_ms`: `Ok(())`, or `Err(retry_after_ms)`.
    pub fn check(&self, tat: &mut Tat, now_ms: i64) -> Result<(), u32> {
        let now = now_ms.saturating_mul(1000);
        let t = (*tat).max(now);
        if t - now > self.tau_us {
            let wait_us = t - now - self.tau_us;
            return Err(((wait_us + 999) / 1000).min(i64::from(u32::MAX)) as u32);
        }
        *tat = t + self.t_us;
        Ok(())
    }

    /// Admit up to `n` events at `now_ms`; returns how many were admitted.
    /// Admitting nothing leaves the state as it was (as `n` failed checks
    /// would), so `n = 0` is a no-op.
    pub fn admit_n(&self, tat: &mut Tat, now_ms: i64, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let now = now_ms.saturating_mul(1000);
        let t = (*tat).max(now);
        let room = now + self.tau_us - t;
        if room < 0 {
            return 0;
        }
        let k = ((room / self.t_us) + 1).min(i64::from(n)) as u32;
        *tat = t + i64::from(k) * self.t_us;
        k
    }

    /// True when a key with this state is indistinguishable from a fresh one.
    pub fn idle(&self, tat: Tat, now_ms: i64) -> bool {
        tat <= now_ms.saturating_mul(1000)
    }
}

/// Counts events in a sliding window (e.g. leads per hour), keeping at most
/// `cap` timestamps: enough to answer "more than `cap - 1` in the window?".
#[derive(Debug, Clone, Default)]
pub struct SlidingCount {
    hits: VecDeque<i64>,
}

impl SlidingCount {
    /// Drop hits older than `window_ms`, record one at `now_ms`, return how
    /// many hits there were in the window *before* this one (capped).
    pub fn hit(&mut self, now_ms: i64, window_ms: i64, cap: usize) -> usize {
        self.expire(now_ms, window_ms);
        let before = self.hits.len();
        self.hits.push_back(now_ms);
        while self.hits.len() > cap.max(1) {
            self.hits.pop_front();
        }
        before
    }

    /// Drop hits older than `window_ms`.
    pub fn expire(&mut self, now_ms: i64, window_ms: i64) {
        while self.hits.front().is_some_and(|t| now_ms - t >= window_ms) {
            self.hits.pop_front();
        }
    }

    /// True when no hit is left in the window.
    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }

    /// Hits still in the window at `now_ms`, split into those at or before
    /// `at_ms` and those after it (capped as kept).
    pub fn split_at(&self, at_ms: i64, now_ms: i64, window_ms: i64) -> (usize, usize) {
        self.hits
            .iter()
            .filter(|t| now_ms - **t < window_ms)
            .fold((0, 0), |(before, after), t| {
                if *t <= at_ms {
                    (before + 1, after)
                } else {
                    (before, after + 1)
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn burst_then_steady_rate() {
        // 20 per 30 s, burst 5.
        let g = Gcra::new(20, 30_000, 5);
        let mut tat = 0;
        for _ in 0..5 {
            assert!(g.check(&mut tat, 1_000).is_ok());
        }
        let wait = g.check(&mut tat, 1_000).unwrap_err();
        assert_eq!(wait, 1_500);
        assert!(g.check(&mut tat, 1_000 + 1_499).is_err());
        assert!(g.check(&mut tat, 1_000 + 1_500).is_ok());
        assert!(!g.idle(tat, 2_500));
        assert!(g.idle(tat, 1_000_000));
    }

    #[test]
    fn admit_n_splits_a_frame() {
        // 20 taps/s, burst 20: a frame of 50 taps admits 20.
        let g = Gcra::new(20, 1_000, 20);
        let mut tat = 0;
        assert_eq!(g.admit_n(&mut tat, 10_000, 50), 20);
        assert_eq!(g.admit_n(&mut tat, 10_000, 5), 0);
        assert_eq!(g.admit_n(&mut tat, 10_500, 50), 10);
    }

    #[test]
    fn sliding_count() {
        let mut c = SlidingCount::default();
        assert_eq!(c.hit(0, 3_600_000, 8), 0);
        assert_eq!(c.hit(10, 3_600_000, 8), 1);
        assert_eq!(c.hit(3_600_000, 3_600_000, 8), 1);
        c.expire(10_000_000, 3_600_000);
        assert!(c.is_empty());
    }

    #[test]
    fn sliding_count_splits_at_a_time() {
        let mut c = SlidingCount::default();
        for t in [0, 10, 20, 30] {
            c.hit(t, 1_000, 8);
        }
        assert_eq!(c.split_at(10, 30, 1_000), (2, 2));
        assert_eq!(c.split_at(-1, 30, 1_000), (0, 4));
        // Hits out of the window count on neither side.
        assert_eq!(c.split_at(10, 1_005, 1_000), (1, 2));
    }

    proptest! {
        /// Never admits more than burst + rate × window over any window.
        #[test]
        fn never_exceeds_rate_plus_burst(
            count in 1u32..50, period in 100u64..60_000, burst in 1u32..20,
            gaps in proptest::collection::vec(0i64..400, 1..400),
            window in 1i64..120_000,
        ) {
            let g = Gcra::new(count, period, burst);
            let mut tat = 0;
            let mut now = 1_000_000i64;
            let mut admitted = Vec::new();
            for gap in gaps {
                now += gap;
                if g.check(&mut tat, now).is_ok() {
                    admitted.push(now);
                }
            }
            let t_ms = (period as f64) / f64::from(count);
            for (i, start) in admitted.iter().enumerate() {
                let n = admitted[i..].iter().take_while(|t| **t - start < window).count() as f64;
                let bound = f64::from(burst) + (window as f64) / t_ms + 1e-9;
                prop_assert!(n <= bound.ceil(), "{n} admitted in {window} ms, bound {bound}");
            }
        }

        /// Traffic within the rate is always admitted.
        #[test]
        fn admits_traffic_within_rate(
            count in 1u32..50, period in 100u64..60_000, burst in 1u32..20,
            extra in proptest::collection::vec(0i64..1000, 1..200),
        ) {
            let g = Gcra::new(count, period, burst);
            let interval = (period as i64 + i64::from(count) - 1) / i64::from(count);
            let mut tat = 0;
            let mut now = 5_000_000i64;
            for e in extra {
                now += interval + e;
                prop_assert!(g.check(&mut tat, now).is_ok());
            }
        }

        /// admit_n agrees with n single checks.
        #[test]
        fn admit_n_matches_repeated_check(n in 0u32..100, count in 1u32..50, burst in 1u32..30, pre in 0u32..40) {
            let g = Gcra::new(count, 1_000, burst);
            let (mut a, mut b) = (0, 0);
            for _ in 0..pre {
                let _ = g.check(&mut a, 7_000);
                let _ = g.check(&mut b, 7_000);
            }
            let k = g.admit_n(&mut a, 7_000, n);
            let singles = (0..n).filter(|_| g.check(&mut b, 7_000).is_ok()).count() as u32;
            prop_assert_eq!(k, singles);
            prop_assert_eq!(a, b);
        }
    }
}
