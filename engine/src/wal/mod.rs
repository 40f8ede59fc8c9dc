//! The write-ahead log: where a decision becomes a promise.
//!
//! Shard workers hand each round's decided rows and the acks that wait on
//! them to the log thread ([`LogHandle::submit`]). The log thread appends
//! them as CRC-checked records and makes them durable by **group commit**:
//! it takes everything submitted while the previous `fdatasync` ran, writes
//! it, syncs once, and only then releases the acks. An ack therefore
//! promises that its record is on disk.
//!
//! The ClickHouse writers read the log ([`Reader`]), not the workers'
//! memory. Before an insert is sent its LSN range is itself logged
//! ([`Entry::Batch`], durable), and its deduplication token is derived
//! from that range and the log's id, so after a crash the same insert is
//! re-sent with the same token; when it commits, [`Entry::Done`] is logged.
//! Segments whose rows are all committed are deleted.
//!
//! # Layout
//! - [`codec`]: record framing, CRC and entry encoding (sans-IO).
//! - [`recovery`]: what a restart must redo, from the entries (sans-IO).
//! - [`store`]: segment files, appends, fsync, deletion, readers.
//! - this module: the log thread and its handle.

pub mod codec;
pub mod recovery;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use tokio::sync::{oneshot, watch};

pub use codec::{Entry, Outcome, Row};
pub use recovery::{BatchMark, Recovery, SeenId, TableRecovery};
pub use store::{Log, OpenStats, Reader};

use crate::event::Replier;
use crate::metrics::Metrics;
use crate::table::Table;
use crate::wire::{CloseCode, ServerFrame};

/// A frame to send to a viewer once the records submitted with it (and
/// everything before them) are durable.
#[derive(Debug)]
pub struct Ack {
    /// The viewer's connection.
    pub to: Arc<dyn Replier>,
    /// The frame.
    pub frame: ServerFrame,
}

/// One worker round: rows to log and the acks that wait for them.
#[derive(Debug, Default)]
pub struct Submit {
    /// Decided rows.
    pub rows: Vec<Row>,
    /// Acks released once the rows are durable.
    pub acks: Vec<Ack>,
    /// Connections closed after the acks (a close that must not overtake
    /// the ack explaining it: `abusive`, `session_replaced`).
    pub closes: Vec<(Arc<dyn Replier>, CloseCode)>,
}

impl Submit {
    /// Nothing to log, ack or close.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.acks.is_empty() && self.closes.is_empty()
    }
}

/// The log refused or lost a request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogError {
    /// The log thread has stopped.
    #[error("log stopped")]
    Stopped,
}

#[allow(clippy::large_enum_variant)]
enum Mark {
    /// Append; reply with its LSN once durable.
    Entry(Entry, Option<oneshot::Sender<u64>>),
    /// Reply once everything submitted before it is durable and acked.
    Barrier(oneshot::Sender<()>),
}

/// Settings for [`start`].
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Directory of the log (`<storage.dir>/wal`).
    pub dir: PathBuf,
    /// Roll to a new segment at this size, bytes.
    pub segment_bytes: u64,
    /// Disk budget, bytes: above it no new rows are taken (overflow policy
    /// applies) until committed segments are deleted.
    pub max_bytes: u64,
    /// Most bytes written per group commit.
    pub max_group_bytes: usize,
    /// Shortest time between the starts of two group commits: records that
    /// arrive meanwhile join the next fsync. Bounds the fsync rate (and its
    /// CPU) under load at the price of at most this much added ack latency.
    pub group_commit: Duration,
    /// Write zeros ahead of the log's write position, so a group's fsync
    /// does not also write the file's size ([`store::ZERO_AHEAD`]).
    pub preallocate: bool,
}

struct Shared {
    id: String,
    segments: store::Segments,
    durable_tx: watch::Sender<u64>,
    full: AtomicBool,
    /// Shutdown: take every remaining round even over the disk budget (a
    /// bounded amount: what the shard queues hold), so shutdown never waits
    /// on ClickHouse.
    closing: AtomicBool,
    /// Per table: every row below this LSN is committed or set aside.
    safe: [AtomicU64; Table::COUNT],
}

/// A handle to the log thread (cheap to clone).
#[derive(Clone)]
pub struct LogHandle {
    shared: Arc<Shared>,
    rows: Sender<Submit>,
    marks: Sender<Mark>,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("id", &self.shared.id)
            .finish()
    }
}

/// Submissions buffered before workers block.
const SUBMIT_DEPTH: usize = 256;

/// Open the log in `settings.dir`, replaying it into a [`Recovery`], and
/// start the log thread.
pub fn start(
    settings: LogSettings,
    metrics: Arc<Metrics>,
) -> std::io::Result<(LogHandle, Recovery, OpenStats, std::thread::JoinHandle<()>)> {
    let mut recovery = Recovery::default();
    let (log, stats) = Log::open(
        &settings.dir,
        settings.segment_bytes,
        settings.preallocate,
        |lsn, e| recovery.observe(lsn, e),
    )?;
    let recovery = recovery.finish();
    let (durable_tx, _) = watch::channel(log.durable_lsn());
    let shared = Arc::new(Shared {
        id: log.id().to_owned(),
        segments: log.segments(),
        durable_tx,
        full: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        safe: std::array::from_fn(|_| AtomicU64::new(0)),
    });
    let (rows_tx, rows_rx) = crossbeam_channel::bounded(SUBMIT_DEPTH);
    let (marks_tx, marks_rx) = crossbeam_channel::unbounded();
    let mut thread = LogThread {
        log,
        shared: shared.clone(),
        rows: Some(rows_rx),
        marks: Some(marks_rx),
        settings,
        metrics,
        acks: Vec::new(),
        closes: Vec::new(),
        waiters: Vec::new(),
        barriers: Vec::new(),
        last_sweep: Instant::now(),
        last_sync: None,
        dense: false,
    };
    let handle = std::thread::Builder::new()
        .name("roomgate-log".into())
        .spawn(move || thread.run())?;
    Ok((
        LogHandle {
            shared,
            rows: rows_tx,
            marks: marks_tx,
        },
        recovery,
        stats,
        handle,
    ))
}

impl LogHandle {
    /// The log's id (part of every dedup token).
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Hand a round to the log, waiting while the log is behind (this is
    /// the backpressure that reaches the shard queues). If the log thread
    /// has stopped, the acks are never sent.
    pub fn submit(&self, s: Submit) {
        if s.is_empty() {
            return;
        }
        if self.rows.send(s).is_err() {
            tracing::error!("log stopped; a round's acks are withheld");
        }
    }

    /// Hand a round to the log if it can take it now.
    pub fn try_submit(&self, s: Submit) -> Result<(), Submit> {
        self.rows.try_send(s).map_err(|e| e.into_inner())
    }

    /// Append a marker and wait until it is durable; returns its LSN.
    pub async fn mark(&self, e: Entry) -> Result<u64, LogError> {
        let (tx, rx) = oneshot::channel();
        self.marks
            .send(Mark::Entry(e, Some(tx)))
            .map_err(|_| LogError::Stopped)?;
        rx.await.map_err(|_| LogError::Stopped)
    }

    /// Append a marker without waiting (it is durable with the next group).
    pub fn mark_later(&self, e: Entry) {
        let _ = self.marks.send(Mark::Entry(e, None));
    }

    /// Wait until every round submitted before this call is durable and its
    /// acks were handed to the connections.
    pub async fn barrier(&self) -> Result<(), LogError> {
        let (tx, rx) = oneshot::channel();
        self.marks
            .send(Mark::Barrier(tx))
            .map_err(|_| LogError::Stopped)?;
        rx.await.map_err(|_| LogError::Stopped)
    }

    /// The last durable LSN, as a watch.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.shared.durable_tx.subscribe()
    }

    /// A reader from `lsn`.
    pub fn reader(&self, lsn: u64) -> Reader {
        Reader::new(self.shared.segments.clone(), lsn)
    }

    /// Shutdown has begun: from now on the log takes every round even over
    /// its disk budget, so the shards can finish without ClickHouse.
    pub fn closing(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
    }

    /// True while the log is over its disk budget.
    pub fn is_full(&self) -> bool {
        self.shared.full.load(Ordering::Relaxed)
    }

    /// Tell the log that every `table` row below `lsn` is done with, so
    /// segments holding only such rows can be deleted.
    pub fn set_safe(&self, table: Table, lsn: u64) {
        self.shared.safe[table.index()].store(lsn, Ordering::Relaxed);
    }
}

struct LogThread {
    log: Log,
    shared: Arc<Shared>,
    rows: Option<Receiver<Submit>>,
    marks: Option<Receiver<Mark>>,
    settings: LogSettings,
    metrics: Arc<Metrics>,
    acks: Vec<Ack>,
    closes: Vec<(Arc<dyn Replier>, CloseCode)>,
    waiters: Vec<(oneshot::Sender<u64>, u64)>,
    barriers: Vec<oneshot::Sender<()>>,
    last_sweep: Instant,
    /// When the last group commit started.
    last_sync: Option<Instant>,
    /// The last two commits that wrote were close: pace the next one.
    dense: bool,
}

impl LogThread {
    fn run(&mut self) {
        tracing::debug!(dir = %self.settings.dir.display(), "log thread started");
        while self.rows.is_some() || self.marks.is_some() {
            self.wait();
            self.gather();
            self.linger();
            self.commit();
            if self.last_sweep.elapsed() >= Duration::from_millis(200) {
                self.sweep();
            }
        }
        self.commit();
        self.sweep();
        tracing::debug!("log thread stopped");
    }

    /// Block until there is something to do (or a sweep is due).
    fn wait(&mut self) {
        if self.paced() {
            return;
        }
        let take_rows = !self.refusing_rows();
        let mut sel = crossbeam_channel::Select::new();
        let rows_i = match (&self.rows, take_rows) {
            (Some(r), true) => Some(sel.recv(r)),
            _ => None,
        };
        let marks_i = self.marks.as_ref().map(|m| sel.recv(m));
        let Ok(op) = sel.select_timeout(Duration::from_millis(100)) else {
            return;
        };
        let i = op.index();
        if Some(i) == rows_i {
            match op.recv(self.rows.as_ref().expect("selected")) {
                Ok(s) => self.take(s),
                Err(_) => self.rows = None,
            }
        } else if Some(i) == marks_i {
            match op.recv(self.marks.as_ref().expect("selected")) {
                Ok(m) => self.mark(m),
                Err(_) => self.marks = None,
            }
        }
    }

    /// While groups follow each other closely (the last two commits were
    /// at most two intervals apart), rounds keep coming: sleep out the
    /// group-commit interval after a commit and take what arrived, instead
    /// of being woken by the first round and then sleeping out the interval
    /// (a context switch less per group). At sparse load it waits as
    /// before, so a lone record costs one wake-up. True when it slept:
    /// the caller commits what was taken (acks without rows too) and
    /// checks whether the channels closed.
    fn paced(&mut self) -> bool {
        if !std::mem::take(&mut self.dense) || self.settings.group_commit.is_zero() {
            return false;
        }
        let Some(last) = self.last_sync else {
            return false;
        };
        let since = last.elapsed();
        if since < self.settings.group_commit {
            std::thread::sleep(self.settings.group_commit - since);
        }
        self.gather();
        true
    }

    /// Before a group commit that would follow the last one too closely,
    /// wait out the rest of `group_commit` and take what arrived meanwhile.
    fn linger(&mut self) {
        if self.log.buffered() == 0 || self.settings.group_commit.is_zero() {
            return;
        }
        if let Some(last) = self.last_sync {
            let since = last.elapsed();
            if since < self.settings.group_commit {
                std::thread::sleep(self.settings.group_commit - since);
                self.gather();
            }
        }
    }

    /// Take everything already waiting, up to the group size.
    fn gather(&mut self) {
        loop {
            let mut any = false;
            if let Some(m) = &self.marks {
                match m.try_recv() {
                    Ok(mark) => {
                        self.mark(mark);
                        any = true;
                    }
                    Err(TryRecvError::Disconnected) => self.marks = None,
                    Err(TryRecvError::Empty) => {}
                }
            }
            let room = self.log.buffered() < self.settings.max_group_bytes;
            if room && !self.refusing_rows() {
                if let Some(r) = &self.rows {
                    match r.try_recv() {
                        Ok(s) => {
                            self.take(s);
                            any = true;
                        }
                        Err(TryRecvError::Disconnected) => self.rows = None,
                        Err(TryRecvError::Empty) => {}
                    }
                }
            }
            if !any {
                return;
            }
        }
    }

    /// Over the disk budget (and not shutting down): leave rounds waiting.
    fn refusing_rows(&self) -> bool {
        self.shared.full.load(Ordering::Relaxed) && !self.shared.closing.load(Ordering::SeqCst)
    }

    fn take(&mut self, s: Submit) {
        for row in s.rows {
            self.log.append(&Entry::Row(row));
        }
        self.acks.extend(s.acks);
        self.closes.extend(s.closes);
    }

    fn mark(&mut self, m: Mark) {
        match m {
            Mark::Entry(e, reply) => {
                let lsn = self.log.append(&e);
                if let Some(tx) = reply {
                    self.waiters.push((tx, lsn));
                }
            }
            Mark::Barrier(tx) => self.barriers.push(tx),
        }
    }

    /// Write and fsync the group, then release its acks and waiters.
    fn commit(&mut self) {
        let bytes = self.log.buffered();
        if bytes > 0 {
            let t0 = Instant::now();
            self.dense = self
                .last_sync
                .is_some_and(|l| t0.duration_since(l) <= self.settings.group_commit * 2);
            self.last_sync = Some(t0);
            let durable = match self.log.sync() {
                Ok(l) => l,
                Err(e) => {
                    // After a failed fsync the page cache state is unknown
                    // (the kernel may have dropped the dirty pages): nothing
                    // written since the last good sync can be promised. Stop
                    // hard; a restart replays what is really on disk.
                    tracing::error!(error = %e, dir = %self.settings.dir.display(), "log write or fsync failed; aborting");
                    std::process::abort();
                }
            };
            let us = t0.elapsed().as_micros() as u64;
            let m = &self.metrics.log;
            m.fsyncs.fetch_add(1, Ordering::Relaxed);
            m.fsync_us_sum.fetch_add(us, Ordering::Relaxed);
            m.fsync_us_max.fetch_max(us, Ordering::Relaxed);
            m.bytes_written.fetch_add(bytes as u64, Ordering::Relaxed);
            m.durable_lsn.store(durable, Ordering::Relaxed);
            self.shared.durable_tx.send_replace(durable);
        }
        let n = self.acks.len() as u64;
        for ack in self.acks.drain(..) {
            ack.to.reply(ack.frame);
        }
        for (to, code) in self.closes.drain(..) {
            to.close_after_replies(code);
        }
        self.metrics.log.acks.fetch_add(n, Ordering::Relaxed);
        for (tx, lsn) in self.waiters.drain(..) {
            let _ = tx.send(lsn);
        }
        let rows_empty = self.rows.as_ref().is_none_or(|r| r.is_empty());
        if rows_empty {
            for tx in self.barriers.drain(..) {
                let _ = tx.send(());
            }
        }
        // After the acks: the zeros the next groups are written into.
        // Failing here loses nothing: every record written so far is
        // synced, preallocation stays off (warned once) and groups are
        // appended; a full disk shows in the next group's write.
        if bytes > 0 {
            if let Err(e) = self.log.zero_ahead() {
                tracing::warn!(error = %e, dir = %self.settings.dir.display(), "cannot preallocate the log ahead of its writes; appending from now on");
            }
        }
    }

    /// Delete committed segments; update the budget flag.
    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        let safe = self
            .shared
            .safe
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        let durable = self.log.durable_lsn();
        self.metrics
            .log
            .backlog_records
            .store((durable + 1).saturating_sub(safe.max(1)), Ordering::Relaxed);
        match self.log.delete_below(safe) {
            Ok(n) if n > 0 => {
                self.metrics
                    .log
                    .segments_deleted
                    .fetch_add(n as u64, Ordering::Relaxed);
                tracing::debug!(
                    segments = n,
                    below_lsn = safe,
                    "committed log segments deleted"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot delete a committed log segment"),
        }
        let bytes = self.log.bytes();
        self.metrics.log.bytes.store(bytes, Ordering::Relaxed);
        let full = bytes >= self.settings.max_bytes;
        if full != self.shared.full.swap(full, Ordering::Relaxed) {
            if full {
                self.metrics.log.full_events.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    bytes,
                    budget = self.settings.max_bytes,
                    "log over its disk budget: leads wait, chat is answered busy, likes coalesce"
                );
            } else {
                tracing::info!(bytes, "log back under its disk budget");
            }
        }
    }
}

/// Path of the log inside the storage directory.
pub fn wal_dir(storage: &Path) -> PathBuf {
    storage.join("wal")
}

/// Path of the dead-letter directory inside the storage directory.
pub fn dead_letter_dir(storage: &Path) -> PathBuf {
    storage.join("dead-letter")
}
