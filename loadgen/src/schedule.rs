//! Open-loop arrival processes: when each event is *meant* to be sent.
//!
//! Pure and deterministic for a seed: no clocks, no sockets. Times are offsets
//! from the start of the run. The room driver turns these offsets into
//! intended send instants; latency is measured from them, so a stalled server
//! (or a stalled loadgen) shows up in the histograms instead of silently
//! slowing the offered load (coordinated omission).

use std::time::Duration;

use rand::{rngs::StdRng, Rng, SeedableRng};

/// The kinds of events a simulated viewer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A chat message (acked).
    Chat = 0,
    /// A `Like` frame of one or more taps (not acked).
    Like = 1,
    /// A lead form submission (acked once durable).
    Lead = 2,
    /// A viewer withdrawing one of its accepted leads (acked once durable).
    /// Never planned by the room driver: a viewer sends it itself, a
    /// planned delay after its lead was acked `accepted`.
    Withdraw = 3,
}

impl Kind {
    /// Every kind, in index order.
    pub const ALL: [Kind; 4] = [Kind::Chat, Kind::Like, Kind::Lead, Kind::Withdraw];

    /// Dense index for per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A Poisson arrival process: exponentially distributed inter-arrival times
/// with mean `1 / rate`, from a seeded RNG.
#[derive(Debug, Clone)]
pub struct Poisson {
    rng: StdRng,
    rate: f64,
    t: f64,
}

impl Poisson {
    /// A process with `rate` arrivals per second (0 = never) seeded with `seed`.
    pub fn new(rate: f64, seed: u64) -> Self {
        Poisson {
            rng: StdRng::seed_from_u64(seed),
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                0.0
            },
            t: 0.0,
        }
    }

    /// Offset of the next arrival from the start, or `None` if the rate is 0.
    pub fn next_arrival(&mut self) -> Option<Duration> {
        if self.rate == 0.0 {
            return None;
        }
        // `gen::<f64>()` is in [0, 1), so `1 - u` is in (0, 1] and ln is finite.
        let u: f64 = self.rng.gen();
        self.t += -(1.0 - u).ln() / self.rate;
        Some(Duration::from_secs_f64(self.t))
    }
}

/// Derive an independent seed for one stream (a room's chat arrivals, its
/// content, …) from the run seed, so streams do not share random numbers and
/// adding a room does not change the others' schedules. SplitMix64 finaliser.
pub fn stream_seed(seed: u64, room_id: u64, stream: u64) -> u64 {
    let mut z = seed
        ^ room_id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED69);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Above this many like frames per second per room, taps are batched into
/// `Like{count: k}` frames instead of one frame per tap. A real app coalesces
/// taps too, and it keeps the loadgen's CPU (shared with the engine) for the
/// events that matter.
pub const LIKE_FRAMES_PER_SEC_MAX: f64 = 2000.0;

/// The server's limit on taps in one `Like` frame.
pub const LIKE_COUNT_MAX: u32 = 1000;

/// How a room's like tap rate is turned into frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LikePlan {
    /// Poisson rate of `Like` frames per second.
    pub frame_rate: f64,
    /// Taps carried by each frame.
    pub taps_per_frame: u32,
}

impl LikePlan {
    /// Up to [`LIKE_FRAMES_PER_SEC_MAX`] taps/s, one frame per tap; above, the
    /// smallest `k` (at most [`LIKE_COUNT_MAX`]) that keeps frames/s under the
    /// cap, at `taps_per_sec / k` frames/s. Taps/s is preserved exactly.
    pub fn new(taps_per_sec: f64) -> Self {
        if !(taps_per_sec.is_finite() && taps_per_sec > 0.0) {
            return LikePlan {
                frame_rate: 0.0,
                taps_per_frame: 1,
            };
        }
        let k = (taps_per_sec / LIKE_FRAMES_PER_SEC_MAX)
            .ceil()
            .clamp(1.0, f64::from(LIKE_COUNT_MAX)) as u32;
        LikePlan {
            frame_rate: taps_per_sec / f64::from(k),
            taps_per_frame: k,
        }
    }
}

/// When viewer `i` of `n` starts connecting: a linear ramp over `ramp`.
pub fn ramp_offset(i: u64, n: u64, ramp: Duration) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    let nanos = ramp.as_nanos() * u128::from(i) / u128::from(n);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(p: &mut Poisson, n: usize) -> Vec<Duration> {
        (0..n).map(|_| p.next_arrival().unwrap()).collect()
    }

    #[test]
    fn poisson_is_deterministic_for_a_seed_and_differs_across_seeds() {
        let a = take(&mut Poisson::new(50.0, 7), 1000);
        let b = take(&mut Poisson::new(50.0, 7), 1000);
        let c = take(&mut Poisson::new(50.0, 8), 1000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.windows(2).all(|w| w[0] <= w[1]), "arrivals are ordered");
    }

    #[test]
    fn poisson_has_the_right_mean_rate_and_exponential_spread() {
        for rate in [2.0, 50.0, 1000.0] {
            let n = 200_000;
            let ts = take(&mut Poisson::new(rate, 42), n);
            let total = ts[n - 1].as_secs_f64();
            let measured = n as f64 / total;
            assert!(
                (measured / rate - 1.0).abs() < 0.01,
                "rate {rate}: measured {measured}"
            );
            // Exponential gaps: standard deviation == mean (a fixed-interval
            // or uniform schedule would fail this).
            let mut prev = 0.0;
            let gaps: Vec<f64> = ts
                .iter()
                .map(|t| {
                    let t = t.as_secs_f64();
                    let g = t - prev;
                    prev = t;
                    g
                })
                .collect();
            let mean = gaps.iter().sum::<f64>() / n as f64;
            let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n as f64;
            let cv = var.sqrt() / mean;
            assert!((cv - 1.0).abs() < 0.02, "rate {rate}: cv {cv}");
        }
    }

    #[test]
    fn zero_rate_never_arrives() {
        assert_eq!(Poisson::new(0.0, 1).next_arrival(), None);
        assert_eq!(Poisson::new(f64::NAN, 1).next_arrival(), None);
    }

    #[test]
    fn like_plan_batches_only_above_the_frame_cap_and_keeps_taps_per_second() {
        assert_eq!(
            LikePlan::new(1000.0),
            LikePlan {
                frame_rate: 1000.0,
                taps_per_frame: 1
            }
        );
        assert_eq!(LikePlan::new(2000.0).taps_per_frame, 1);
        let p = LikePlan::new(100_000.0);
        assert_eq!(p.taps_per_frame, 50);
        assert!(p.frame_rate <= LIKE_FRAMES_PER_SEC_MAX);
        assert!((p.frame_rate * f64::from(p.taps_per_frame) - 100_000.0).abs() < 1e-6);
        let huge = LikePlan::new(1e9);
        assert_eq!(huge.taps_per_frame, LIKE_COUNT_MAX);
        assert_eq!(LikePlan::new(0.0).frame_rate, 0.0);
    }

    #[test]
    fn ramp_is_linear_from_zero() {
        let r = Duration::from_secs(10);
        assert_eq!(ramp_offset(0, 100, r), Duration::ZERO);
        assert_eq!(ramp_offset(50, 100, r), Duration::from_secs(5));
        assert!(ramp_offset(99, 100, r) < r);
        assert_eq!(ramp_offset(5, 10, Duration::ZERO), Duration::ZERO);
    }
}
