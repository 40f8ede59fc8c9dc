//! The delivery state of one page of leads (sans-IO): which lead to send
//! now, what an attempt's outcome means, when a lead goes to the backlog.
//!
//! Each lead is a job. [`Outbox::due`] hands out up to `limit` jobs whose
//! time has come, in page order, and marks them in flight; the caller
//! audits them, sends them, and reports each outcome to
//! [`Outbox::record`]: delivered (2xx), or failed, which schedules the
//! next attempt by the [`Backoff`] or, after `max_attempts` attempts of
//! this outbox, gives the job up to the backlog. The page is settled when
//! every job is delivered or given up: only then may the cursor pass it.
//! A wave whose audit could not be written is handed back with
//! [`Outbox::release`] (no attempt counted: nothing was sent). A lead
//! found withdrawn or erased just before a wave is [`Outbox::cancel`]led:
//! never sent again, not given up to the backlog.

use std::time::Duration;

use super::backoff::Backoff;

/// What one POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A 2xx answer.
    Delivered,
    /// Anything else: a non-2xx status, a timeout, a connection error.
    Failed {
        /// Short, no personal data: `http 500`, `timeout after 3000 ms`.
        error: String,
        /// The receiver's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
}

/// What [`Outbox::record`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Delivered: done with it.
    Delivered,
    /// Failed; the next attempt at this time (ms).
    RetryAt(i64),
    /// Failed `max_attempts` times here: to the backlog.
    GiveUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight,
    Delivered,
    GivenUp,
    Cancelled,
}

/// One lead's delivery.
#[derive(Debug, Clone)]
pub struct Job<T> {
    /// What is being delivered.
    pub item: T,
    /// Attempts before this outbox (a backlog entry's count).
    pub prior_attempts: u32,
    /// Attempts made by this outbox.
    pub tries: u32,
    /// The last failure.
    pub last_error: Option<String>,
    next_at_ms: i64,
    state: State,
}

impl<T> Job<T> {
    /// The attempt number of the next (or current) send, counting the
    /// prior ones: what `Roomgate-Attempt` says.
    pub fn attempt(&self) -> u32 {
        self.prior_attempts
            .saturating_add(self.tries)
            .saturating_add(1)
    }

    /// Every attempt so far.
    pub fn attempts(&self) -> u32 {
        self.prior_attempts.saturating_add(self.tries)
    }

    /// Delivered by this outbox.
    pub fn delivered(&self) -> bool {
        self.state == State::Delivered
    }

    /// Given up by this outbox (for the backlog).
    pub fn given_up(&self) -> bool {
        self.state == State::GivenUp
    }

    /// Cancelled: withdrawn or erased, not to be sent.
    pub fn cancelled(&self) -> bool {
        self.state == State::Cancelled
    }
}

/// The jobs of one page.
#[derive(Debug, Clone)]
pub struct Outbox<T> {
    jobs: Vec<Job<T>>,
    max_attempts: u32,
    backoff: Backoff,
}

impl<T> Outbox<T> {
    /// Jobs for `items` (each with its prior attempts), all due at `now_ms`.
    pub fn new(
        items: impl IntoIterator<Item = (T, u32)>,
        now_ms: i64,
        max_attempts: u32,
        backoff: Backoff,
    ) -> Self {
        let jobs = items
            .into_iter()
            .map(|(item, prior_attempts)| Job {
                item,
                prior_attempts,
                tries: 0,
                last_error: None,
                next_at_ms: now_ms,
                state: State::Waiting,
            })
            .collect();
        Outbox {
            jobs,
            max_attempts: max_attempts.max(1),
            backoff,
        }
    }

    /// The jobs.
    pub fn jobs(&self) -> &[Job<T>] {
        &self.jobs
    }

    /// Job `i`.
    pub fn job(&self, i: usize) -> Option<&Job<T>> {
        self.jobs.get(i)
    }

    /// Up to `limit` waiting jobs due at `now_ms`, in page order, now in
    /// flight.
    pub fn due(&mut self, now_ms: i64, limit: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, j) in self.jobs.iter_mut().enumerate() {
            if out.len() >= limit {
                break;
            }
            if j.state == State::Waiting && j.next_at_ms <= now_ms {
                j.state = State::InFlight;
                out.push(i);
            }
        }
        out
    }

    /// Hand in-flight jobs back unsent, due again at `at_ms` (their audit
    /// failed). No attempt is counted.
    pub fn release(&mut self, jobs: &[usize], at_ms: i64) {
        for &i in jobs {
            if let Some(j) = self.jobs.get_mut(i) {
                if j.state == State::InFlight {
                    j.state = State::Waiting;
                    j.next_at_ms = at_ms;
                }
            }
        }
    }

    /// Cancel in-flight job `i` unsent (its lead was withdrawn or erased):
    /// settled, no attempt counted, not for the backlog. False when it
    /// was not in flight.
    pub fn cancel(&mut self, i: usize) -> bool {
        match self.jobs.get_mut(i) {
            Some(j) if j.state == State::InFlight => {
                j.state = State::Cancelled;
                true
            }
            _ => false,
        }
    }

    /// Record the outcome of in-flight job `i` at `now_ms`; `jitter` is any
    /// random number. `None` when `i` was not in flight.
    pub fn record(&mut self, i: usize, outcome: Attempt, now_ms: i64, jitter: u64) -> Option<Next> {
        let j = self.jobs.get_mut(i)?;
        if j.state != State::InFlight {
            return None;
        }
        j.tries = j.tries.saturating_add(1);
        match outcome {
            Attempt::Delivered => {
                j.state = State::Delivered;
                Some(Next::Delivered)
            }
            Attempt::Failed { error, retry_after } => {
                j.last_error = Some(error);
                if j.tries >= self.max_attempts {
                    j.state = State::GivenUp;
                    return Some(Next::GiveUp);
                }
                let wait = self.backoff.delay(j.tries, jitter, retry_after);
                let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                j.next_at_ms = now_ms.saturating_add(wait_ms);
                j.state = State::Waiting;
                Some(Next::RetryAt(j.next_at_ms))
            }
        }
    }

    /// Give up every job still waiting (a backlog sweep that stops early:
    /// they stay in the backlog as they were). Returns how many.
    pub fn abandon_waiting(&mut self) -> usize {
        let mut n = 0;
        for j in &mut self.jobs {
            if j.state == State::Waiting {
                j.state = State::GivenUp;
                n += 1;
            }
        }
        n
    }

    /// When the next waiting job is due; `None` when none waits.
    pub fn next_wake(&self) -> Option<i64> {
        self.jobs
            .iter()
            .filter(|j| j.state == State::Waiting)
            .map(|j| j.next_at_ms)
            .min()
    }

    /// Every job delivered, given up or cancelled.
    pub fn settled(&self) -> bool {
        self.jobs.iter().all(|j| {
            matches!(
                j.state,
                State::Delivered | State::GivenUp | State::Cancelled
            )
        })
    }

    /// Jobs waiting or in flight.
    pub fn pending(&self) -> usize {
        self.jobs
            .iter()
            .filter(|j| matches!(j.state, State::Waiting | State::InFlight))
            .count()
    }
}

/// How a backlog sweep sends: one lead first (a probe: a receiver still
/// down costs one timeout, not a wave of them), then waves of
/// `concurrency`; it stops after a wave in which nothing was delivered.
/// The size of the next wave, or `None` to stop.
pub fn sweep_wave(
    waves_done: usize,
    last_wave_delivered: usize,
    concurrency: usize,
) -> Option<usize> {
    match waves_done {
        0 => Some(1),
        _ if last_wave_delivered == 0 => None,
        _ => Some(concurrency.max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(1_000),
    };

    fn fail() -> Attempt {
        Attempt::Failed {
            error: "http 500".into(),
            retry_after: None,
        }
    }

    #[test]
    fn leads_retry_with_backoff_then_go_to_the_backlog() {
        let mut o = Outbox::new([("a", 0), ("b", 0), ("c", 0)], 0, 3, B);
        assert_eq!(o.due(0, 2), [0, 1], "in order, at most the limit");
        assert_eq!(o.due(0, 2), [2]);
        assert_eq!(o.due(0, 2), Vec::<usize>::new(), "all in flight");
        assert_eq!(
            o.record(0, Attempt::Delivered, 10, 0),
            Some(Next::Delivered)
        );
        assert_eq!(
            o.record(0, Attempt::Delivered, 10, 0),
            None,
            "not in flight"
        );
        // b fails: retried after 50–100 ms.
        assert_eq!(o.record(1, fail(), 10, 0), Some(Next::RetryAt(60)));
        assert_eq!(
            o.record(2, Attempt::Delivered, 10, 0),
            Some(Next::Delivered)
        );
        assert!(!o.settled());
        assert_eq!(o.next_wake(), Some(60));
        assert!(o.due(59, 8).is_empty(), "not yet");
        assert_eq!(o.due(60, 8), [1]);
        assert_eq!(o.job(1).unwrap().attempt(), 2);
        assert_eq!(o.record(1, fail(), 60, 0), Some(Next::RetryAt(160)));
        assert_eq!(o.due(160, 8), [1]);
        assert_eq!(o.record(1, fail(), 160, 0), Some(Next::GiveUp));
        assert!(o.settled());
        assert_eq!(o.next_wake(), None);
        let b = o.job(1).unwrap();
        assert!(b.given_up() && !b.delivered());
        assert_eq!(
            (b.attempts(), b.last_error.as_deref()),
            (3, Some("http 500"))
        );
        assert!(o.job(0).unwrap().delivered());
    }

    #[test]
    fn an_unaudited_wave_is_not_an_attempt() {
        let mut o = Outbox::new([("a", 4)], 0, 2, B);
        let wave = o.due(0, 8);
        o.release(&wave, 1_000);
        assert_eq!(o.job(0).unwrap().attempt(), 5, "prior attempts count on");
        assert!(o.due(999, 8).is_empty());
        assert_eq!(o.due(1_000, 8), [0]);
        assert_eq!(o.pending(), 1);
        // Retry-After stretches the wait.
        let ra = Attempt::Failed {
            error: "http 429".into(),
            retry_after: Some(Duration::from_millis(700)),
        };
        assert_eq!(o.record(0, ra, 1_000, 0), Some(Next::RetryAt(1_700)));
        assert_eq!(o.abandon_waiting(), 1);
        assert!(o.settled());
    }

    #[test]
    fn a_cancelled_job_is_settled_unsent_and_not_given_up() {
        let mut o = Outbox::new([("a", 0), ("b", 2)], 0, 3, B);
        assert!(!o.cancel(0), "not in flight");
        assert_eq!(o.due(0, 8), [0, 1]);
        assert_eq!(o.record(0, fail(), 0, 0), Some(Next::RetryAt(50)));
        // A retry round: b is found withdrawn before it is sent.
        assert!(o.cancel(1));
        assert!(!o.cancel(1), "once");
        assert_eq!(o.record(1, Attempt::Delivered, 0, 0), None, "not sent");
        let b = o.job(1).unwrap();
        assert!(b.cancelled() && !b.given_up() && !b.delivered());
        assert_eq!(b.attempts(), 2, "no attempt counted");
        assert_eq!(o.pending(), 1);
        assert_eq!(o.due(50, 8), [0]);
        assert!(o.cancel(0));
        assert!(o.settled());
        assert_eq!(o.next_wake(), None);
        assert_eq!(o.abandon_waiting(), 0);
        assert!(o.jobs().iter().all(|j| j.cancelled()));
    }

    #[test]
    fn a_sweep_probes_then_stops_at_a_wave_without_success() {
        assert_eq!(sweep_wave(0, 0, 4), Some(1));
        assert_eq!(sweep_wave(1, 0, 4), None, "the probe failed");
        assert_eq!(sweep_wave(1, 1, 4), Some(4));
        assert_eq!(sweep_wave(5, 2, 4), Some(4));
        assert_eq!(sweep_wave(6, 0, 0), None);
        assert_eq!(sweep_wave(2, 1, 0), Some(1));
    }
}
