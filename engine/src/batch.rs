//! The batching policy for one table, sans-IO.
//!
//! Rows accumulate until the batch reaches `max_rows` or `max_bytes`, or its
//! oldest row is `max_age_ms` old; then it is *sealed* and handed to the sink.
//! Time is passed in, so sealing is tested without sleeping.

use serde::Deserialize;

/// Sealing thresholds (`[batch]` and `[batch.<table>]` in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchPolicy {
    /// Seal at this many rows. Default 50,000 (ClickHouse likes 10k–100k).
    pub max_rows: usize,
    /// Seal at this many (estimated) bytes. Default 16 MiB.
    pub max_bytes: usize,
    /// Seal when the oldest row is this old, ms. Default 1,000 (about one
    /// insert per second per table).
    pub max_age_ms: u64,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy {
            max_rows: 50_000,
            max_bytes: 16 << 20,
            max_age_ms: 1_000,
        }
    }
}

/// A sealed batch.
#[derive(Debug, PartialEq, Eq)]
pub struct Sealed<R> {
    /// Sequence number within this batcher (0, 1, …): part of the batch's
    /// deduplication token.
    pub seq: u64,
    /// The rows.
    pub rows: Vec<R>,
    /// Estimated bytes.
    pub bytes: usize,
}

/// Accumulates rows for one table.
#[derive(Debug)]
pub struct Batcher<R> {
    policy: BatchPolicy,
    rows: Vec<R>,
    bytes: usize,
    opened_at_ms: Option<i64>,
    next_seq: u64,
}

impl<R> Batcher<R> {
    /// An empty batcher.
    pub fn new(policy: BatchPolicy) -> Self {
        Batcher {
            policy,
            rows: Vec::new(),
            bytes: 0,
            opened_at_ms: None,
            next_seq: 0,
        }
    }

    /// Add a row of estimated size `bytes`; returns the batch if this row
    /// sealed it.
    pub fn push(&mut self, row: R, bytes: usize, now_ms: i64) -> Option<Sealed<R>> {
        self.opened_at_ms.get_or_insert(now_ms);
        self.rows.push(row);
        self.bytes += bytes;
        if self.rows.len() >= self.policy.max_rows || self.bytes >= self.policy.max_bytes {
            return self.seal();
        }
        None
    }

    /// Seal the batch if it is old enough.
    pub fn poll(&mut self, now_ms: i64) -> Option<Sealed<R>> {
        match self.deadline() {
            Some(d) if now_ms >= d => self.seal(),
            _ => None,
        }
    }

    /// When the open batch must be sealed (Unix ms), `None` if empty.
    pub fn deadline(&self) -> Option<i64> {
        self.opened_at_ms
            .map(|t| t.saturating_add(self.policy.max_age_ms as i64))
    }

    /// Seal whatever is open (shutdown).
    pub fn flush(&mut self) -> Option<Sealed<R>> {
        self.seal()
    }

    /// Rows in the open batch.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no batch is open.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn seal(&mut self) -> Option<Sealed<R>> {
        if self.rows.is_empty() {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.opened_at_ms = None;
        let bytes = std::mem::take(&mut self.bytes);
        Some(Sealed {
            seq,
            rows: std::mem::take(&mut self.rows),
            bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BatchPolicy {
        BatchPolicy {
            max_rows: 3,
            max_bytes: 100,
            max_age_ms: 1_000,
        }
    }

    #[test]
    fn seals_by_rows() {
        let mut b = Batcher::new(policy());
        assert!(b.push(1, 1, 0).is_none());
        assert!(b.push(2, 1, 0).is_none());
        let s = b.push(3, 1, 0).unwrap();
        assert_eq!((s.seq, s.rows), (0, vec![1, 2, 3]));
        assert!(b.is_empty() && b.deadline().is_none());
    }

    #[test]
    fn seals_by_bytes() {
        let mut b = Batcher::new(policy());
        assert!(b.push(1, 60, 0).is_none());
        assert_eq!(b.push(2, 60, 0).unwrap().bytes, 120);
    }

    #[test]
    fn seals_by_age_from_first_row() {
        let mut b = Batcher::new(policy());
        b.push(1, 1, 500);
        b.push(2, 1, 1_400);
        assert!(b.poll(1_499).is_none());
        let s = b.poll(1_500).unwrap();
        assert_eq!(s.rows, vec![1, 2]);
        b.push(3, 1, 2_000);
        assert_eq!(b.deadline(), Some(3_000));
        assert_eq!(b.flush().unwrap().seq, 1);
        assert!(b.flush().is_none());
    }
}
