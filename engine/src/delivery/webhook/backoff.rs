//! The retry schedule (sans-IO): exponential with equal jitter, capped,
//! stretched to a receiver's `Retry-After`.
//!
//! After attempt `n` (1-based) failed, the next waits
//! `cap(n) / 2 + jitter % (cap(n) / 2 + 1)`, where
//! `cap(n) = min(max, initial * 2^(n-1))`: between half the cap and the
//! cap, so retries of many leads spread out, and never less than half of
//! what the exponential asks. A `Retry-After` longer than that wins, up to
//! `max`.

use std::time::Duration;

/// The schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The cap of the first retry's delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The cap of the delay after attempt `attempt` (1-based; 0 counts as 1).
    pub fn cap(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(63);
        let initial = self.initial.as_millis().min(u128::from(u64::MAX)) as u64;
        let ms = initial.checked_shl(shift).filter(|v| v >> shift == initial);
        match ms {
            Some(ms) => Duration::from_millis(ms).min(self.max),
            None => self.max,
        }
    }

    /// The wait after attempt `attempt` failed; `jitter` is any random
    /// number; `retry_after` the receiver's `Retry-After`, if any.
    pub fn delay(&self, attempt: u32, jitter: u64, retry_after: Option<Duration>) -> Duration {
        let cap = self.cap(attempt).as_millis() as u64;
        let half = cap / 2;
        let d = Duration::from_millis(half + jitter % (cap - half + 1));
        match retry_after {
            Some(r) if r > d => r.min(self.max.max(d)),
            _ => d,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const B: Backoff = Backoff {
        initial: Duration::from_millis(1_000),
        max: Duration::from_millis(60_000),
    };

    #[test]
    fn caps_double_up_to_the_max() {
        let caps: Vec<u64> = (1..=8).map(|n| B.cap(n).as_millis() as u64).collect();
        assert_eq!(
            caps,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
        assert_eq!(B.cap(0), B.cap(1));
        assert_eq!(B.cap(u32::MAX), B.max);
        assert_eq!(B.delay(1, 0, None), Duration::from_millis(500));
        assert_eq!(B.delay(1, 500, None), Duration::from_millis(1_000));
        // Retry-After stretches the wait, never past the max.
        let ra = Some(Duration::from_secs(30));
        assert_eq!(B.delay(1, 0, ra), Duration::from_secs(30));
        assert_eq!(B.delay(1, 0, Some(Duration::from_secs(3_600))), B.max);
        assert_eq!(
            B.delay(8, 0, Some(Duration::from_secs(1))),
            Duration::from_secs(30)
        );
    }

    proptest! {
        #[test]
        fn delays_stay_between_half_the_cap_and_the_max(
            initial in 0u64..100_000,
            extra in 0u64..10_000_000,
            attempt in 0u32..200,
            jitter in any::<u64>(),
            retry_after in proptest::option::of(0u64..100_000_000),
        ) {
            let b = Backoff {
                initial: Duration::from_millis(initial),
                max: Duration::from_millis(initial + extra),
            };
            let cap = b.cap(attempt);
            prop_assert!(cap <= b.max);
            // Caps never shrink as attempts grow.
            prop_assert!(b.cap(attempt.saturating_add(1)) >= cap);
            let d = b.delay(attempt, jitter, retry_after.map(Duration::from_millis));
            prop_assert!(d <= b.max);
            prop_assert!(d.as_millis() >= cap.as_millis() / 2);
            if let Some(r) = retry_after {
                prop_assert!(d >= Duration::from_millis(r).min(b.max));
            } else {
                prop_assert!(d <= cap);
            }
        }
    }
}
