//! One merchant's webhook stream: the loop around the sans-IO parts.
//!
//! ```text
//! wait for the schema
//! loop:
//!   not the merchant's sender node → drop the page, idle
//!   cursor not loaded → read it (max position in webhook_cursors)
//!   backlog due → sweep it (one attempt per waiting lead, least
//!                 recently tried first)
//!   no page → read the next one (leads_sql after the cursor; ciphertexts)
//!   page → the due leads (a wave; every retry round is one):
//!          withdrawn or erased since? (lead_withdrawals) → cancelled;
//!          the others: audit them (lead_audit 'webhook'), decrypt, POST;
//!          the 2xx ones: lead_audit 'webhook_delivered'
//!   page settled → backlog rows for the given-up leads, then the cursor
//! ```
//!
//! Nothing leaves unaudited: a wave whose withdrawal check or audit insert
//! fails is not sent, and a lead is decrypted only after its audit row is
//! written (for each attempt, from the ciphertexts read). The cursor
//! passes a page only once each of its leads was delivered, cancelled or
//! stored in the backlog; a crash before that re-sends the page (same
//! idempotency keys).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::http::{Request, Sender};
use super::outbox::{sweep_wave, Attempt, Next, Outbox};
use super::settings::Target;
use super::{sign, store};
use crate::delivery::cursor::Position;
use crate::delivery::query::{self, LeadRow, Page};
use crate::metrics::{Metrics, WebhookResult};
use crate::pii::PiiKeys;
use crate::route::Routing;

/// After a failed audit or store write, wait this long.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// What every merchant's runner shares.
pub(super) struct Ctx {
    pub client: clickhouse::Client,
    pub pii: Arc<PiiKeys>,
    pub sender: Sender,
    pub metrics: Arc<Metrics>,
    pub routing: Arc<Routing>,
    pub settle_ms: i64,
    pub interval: Duration,
    pub batch: u32,
    pub concurrency: usize,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub backlog_every: Duration,
    pub backlog_batch: u32,
    pub query_timeout: Duration,
}

impl Ctx {
    /// `f` within the query timeout, errors as text.
    pub async fn within<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, clickhouse::error::Error>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.query_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{what}: clickhouse: {e}")),
            Err(_) => Err(format!(
                "{what}: clickhouse did not answer within {} ms",
                self.query_timeout.as_millis()
            )),
        }
    }
}

/// The node that sends `merchant`'s webhooks: `None` without a node list
/// (this node sends for every merchant). The same rendezvous hashing as
/// rooms, keyed by `fnv1a64(merchant id)` (docs/LEADS.md, "Which node
/// sends").
pub fn sender_node(routing: &Routing, merchant: &str) -> Option<String> {
    routing
        .nodes()
        .map(|n| n.owner(crate::route::node_key(merchant)).id.clone())
}

/// Whether this node sends `merchant`'s webhooks.
pub fn sends_here(routing: &Routing, merchant: &str) -> bool {
    sender_node(routing, merchant).is_none_or(|id| id == routing.self_id())
}

/// One backlog pass, as the admin API shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    /// When it ran, Unix ms.
    pub at_ms: i64,
    /// Waiting entries read.
    pub entries: usize,
    /// Leads sent.
    pub attempted: usize,
    /// Leads delivered (now `delivered`).
    pub delivered: usize,
    /// Leads that failed again (still `waiting`).
    pub failed: usize,
    /// Entries no longer deliverable: withdrawn, erased (found so when read
    /// or just before their wave) or their room moved (now `cancelled`).
    pub cancelled: usize,
    /// Entries not tried: the sweep stopped at a wave without success.
    pub not_attempted: usize,
    /// Waiting entries left (`null` when they could not be counted).
    pub waiting: Option<u64>,
    /// Why the pass stopped early, if it did.
    pub error: Option<String>,
    /// False when another node sends this merchant's webhooks.
    pub ran_here: bool,
}

/// A merchant's state as the admin API shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// This node sends this merchant's webhooks now.
    pub sending_here: bool,
    /// Leads of the current page not yet delivered or given up.
    pub in_flight: usize,
    /// The last 2xx, Unix ms.
    pub last_success_ms: Option<i64>,
    /// The last failed attempt, Unix ms.
    pub last_failure_ms: Option<i64>,
    /// Its error (a status code or transport error).
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u64,
    /// Leads delivered by this node since it started (pages and backlog).
    pub delivered: u64,
    /// Leads this node put in the backlog since it started.
    pub backlogged: u64,
    /// Leads of pages not sent (again) because they were withdrawn or
    /// erased meanwhile, since this node started.
    pub cancelled: u64,
    /// The last ClickHouse error of the sender (audit, cursor, backlog).
    pub last_store_error: Option<String>,
    /// The last backlog pass on this node.
    pub last_sweep: Option<SweepReport>,
}

/// A merchant's runner's shared half (the admin API's view and door).
pub(super) struct Shared {
    pub target: Target,
    pub status: Mutex<Status>,
    pub retry: mpsc::Sender<oneshot::Sender<SweepReport>>,
}

impl Shared {
    pub fn status(&self) -> Status {
        match self.status.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        match self.status.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

/// A lead to send, as read (ciphertexts: decrypted for each attempt,
/// after its audit row): from a page, or a backlog entry's.
#[derive(Debug, Clone)]
struct Pending {
    row: LeadRow,
    entry: Option<store::BacklogRow>,
}

impl Pending {
    fn key(&self) -> store::Key {
        (
            self.row.room_id,
            self.row.viewer_id,
            self.row.client_lead_id,
        )
    }
}

struct PageState {
    outbox: Outbox<Pending>,
    last: Position,
    full: bool,
    commit_at: Option<Instant>,
}

/// One merchant's loop.
pub(super) struct Runner {
    pub shared: Arc<Shared>,
    pub ctx: Arc<Ctx>,
    pub retry_rx: mpsc::Receiver<oneshot::Sender<SweepReport>>,
    page: Option<PageState>,
    cursor: Option<Position>,
    cursor_stamp: i64,
    cursor_loaded: bool,
    next_poll: Instant,
    next_sweep: Instant,
    waiting: u64,
}

fn since(ms: i64, now_ms: i64) -> Instant {
    Instant::now() + Duration::from_millis(u64::try_from(ms.saturating_sub(now_ms)).unwrap_or(0))
}

#[derive(Debug, Default)]
struct WaveResult {
    /// Leads answered 2xx.
    delivered: usize,
    /// Leads sent (audited, then POSTed).
    sent: usize,
    /// Leads found withdrawn or erased: cancelled, not sent.
    cancelled: usize,
    /// False when the wave was handed back unsent (its withdrawal check
    /// or audit insert failed).
    audited: bool,
}

impl Runner {
    pub fn new(
        shared: Arc<Shared>,
        ctx: Arc<Ctx>,
        retry_rx: mpsc::Receiver<oneshot::Sender<SweepReport>>,
    ) -> Self {
        let now = Instant::now();
        Runner {
            shared,
            ctx,
            retry_rx,
            page: None,
            cursor: None,
            cursor_stamp: 0,
            cursor_loaded: false,
            next_poll: now,
            // The first pass soon after start: what waited across a
            // restart is retried without waiting a whole period.
            next_sweep: now,
            waiting: 0,
        }
    }

    fn merchant(&self) -> &str {
        self.shared.target.merchant.as_str()
    }

    /// Run until `shutdown` flips; starts once `schema` is true.
    pub async fn run(
        mut self,
        mut schema: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        tokio::select! {
            r = schema.wait_for(|v| *v) => if r.is_err() { return },
            _ = shutdown.wait_for(|v| *v) => return,
        }
        tracing::info!(merchant = self.merchant(), url = %self.shared.target.display_url(), "webhooks: started");
        loop {
            let wake = self.wake();
            // The select only picks; the work runs after it (a watch
            // guard must not live across an await).
            let retry = tokio::select! {
                r = shutdown.wait_for(|v| *v) => {
                    let _ = r.map(|_| ());
                    break;
                }
                cmd = self.retry_rx.recv() => cmd,
                _ = tokio::time::sleep_until(wake) => None,
            };
            match retry {
                Some(reply) => {
                    let report = if sends_here(&self.ctx.routing, self.merchant()) {
                        self.sweep().await
                    } else {
                        SweepReport {
                            at_ms: crate::now_ms(),
                            ..SweepReport::default()
                        }
                    };
                    let _ = reply.send(report);
                }
                None => self.step().await,
            }
        }
        // A page whose leads are all delivered or given up: move the
        // cursor past it now, or the next start sends it again.
        if self.page.as_ref().is_some_and(|p| p.outbox.settled()) {
            self.commit().await;
        }
        self.set_waiting(0);
        self.ctx.metrics.webhooks.in_flight.fetch_sub(
            self.in_flight() as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn in_flight(&self) -> usize {
        self.page.as_ref().map_or(0, |p| p.outbox.pending())
    }

    fn set_in_flight(&self, before: usize) {
        let now = self.in_flight();
        self.ctx.metrics.webhooks.in_flight.fetch_add(
            now as i64 - before as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.shared.update(|s| s.in_flight = now);
    }

    fn set_waiting(&mut self, n: u64) {
        let g = &self.ctx.metrics.webhooks.backlog_waiting;
        g.fetch_add(
            n as i64 - self.waiting as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.waiting = n;
    }

    /// When the loop has something to do next.
    fn wake(&self) -> Instant {
        let page = match &self.page {
            None => self.next_poll,
            Some(p) if p.outbox.settled() => p.commit_at.unwrap_or_else(Instant::now),
            Some(p) => p
                .outbox
                .next_wake()
                .map_or_else(Instant::now, |ms| since(ms, crate::now_ms())),
        };
        page.min(self.next_sweep)
    }

    fn store_error(&self, e: String) {
        self.ctx
            .metrics
            .webhooks
            .store_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(merchant = self.merchant(), error = %e, "webhooks: ClickHouse call failed; retrying");
        self.shared.update(|s| s.last_store_error = Some(e));
    }

    async fn step(&mut self) {
        if !sends_here(&self.ctx.routing, self.merchant()) {
            if self.shared.status().sending_here {
                tracing::info!(
                    merchant = self.merchant(),
                    sender = ?sender_node(&self.ctx.routing, self.merchant()),
                    "webhooks: another node sends this merchant's leads now"
                );
            }
            let before = self.in_flight();
            self.page = None;
            self.cursor_loaded = false;
            self.set_in_flight(before);
            self.set_waiting(0);
            self.shared.update(|s| s.sending_here = false);
            self.next_poll = Instant::now() + self.ctx.interval;
            self.next_sweep = self.next_poll;
            return;
        }
        self.shared.update(|s| s.sending_here = true);
        if !self.cursor_loaded {
            let sql = store::CURSOR_SQL;
            let merchant = self.merchant().to_owned();
            let c = &self.ctx;
            match c
                .within(
                    "cursor",
                    c.client
                        .query(sql)
                        .bind(merchant)
                        .fetch_optional::<store::CursorRow>(),
                )
                .await
            {
                Ok(row) => {
                    self.cursor = row.map(|r| r.position());
                    self.cursor_stamp = row.map_or(0, |r| r.updated_ms);
                    self.cursor_loaded = true;
                    tracing::info!(merchant = self.merchant(), cursor = ?self.cursor, "webhooks: sending from the stored cursor");
                }
                Err(e) => {
                    self.store_error(e);
                    self.next_poll = Instant::now() + self.ctx.interval;
                    return;
                }
            }
        }
        if Instant::now() >= self.next_sweep {
            self.sweep().await;
            self.next_sweep = Instant::now() + self.ctx.backlog_every;
        }
        if self.page.is_some() {
            self.advance().await;
        } else if Instant::now() >= self.next_poll {
            self.fetch().await;
        }
    }

    /// The merchant's rooms now.
    async fn rooms(&self) -> Result<Vec<u64>, String> {
        let c = &self.ctx;
        c.within(
            "merchant rooms",
            c.client
                .query(query::ROOMS_SQL)
                .bind(self.merchant())
                .fetch_all::<u64>(),
        )
        .await
    }

    async fn fetch(&mut self) {
        self.next_poll = Instant::now() + self.ctx.interval;
        let rooms = match self.rooms().await {
            Ok(r) if r.is_empty() => return,
            Ok(r) => r,
            Err(e) => return self.store_error(e),
        };
        let now = crate::now_ms();
        let page = Page {
            rooms,
            after: self.cursor,
            upto_ms: now.saturating_sub(self.ctx.settle_ms),
            include_suspect: self.shared.target.include_suspect,
            limit: self.ctx.batch,
        };
        let sql = query::leads_sql(&page);
        let c = &self.ctx;
        let rows = match c
            .within("leads", c.client.query(&sql).fetch_all::<LeadRow>())
            .await
        {
            Ok(r) => r,
            Err(e) => return self.store_error(e),
        };
        let Some(last) = rows.last().map(LeadRow::position) else {
            return;
        };
        let full = rows.len() >= self.ctx.batch as usize;
        let n = rows.len();
        let items = rows
            .into_iter()
            .map(|row| (Pending { row, entry: None }, 0));
        let outbox = Outbox::new(items, now, self.ctx.max_attempts, self.ctx.backoff);
        tracing::debug!(merchant = self.merchant(), leads = n, "webhooks: page read");
        self.page = Some(PageState {
            outbox,
            last,
            full,
            commit_at: None,
        });
        self.set_in_flight(0);
    }

    async fn advance(&mut self) {
        let Some(page) = self.page.as_mut() else {
            return;
        };
        if page.outbox.settled() {
            return self.commit().await;
        }
        let before = page.outbox.pending();
        let wave = page.outbox.due(crate::now_ms(), self.ctx.concurrency);
        if wave.is_empty() {
            return;
        }
        send_wave(&self.ctx, &self.shared, &mut page.outbox, &wave, false).await;
        self.set_in_flight(before);
    }

    /// The page is settled: its given-up leads into the backlog, then the
    /// cursor past it.
    async fn commit(&mut self) {
        let Some(page) = self.page.as_mut() else {
            return;
        };
        let now = crate::now_ms();
        let merchant = self.shared.target.merchant.as_str();
        let rows: Vec<store::BacklogRow> = page
            .outbox
            .jobs()
            .iter()
            .filter(|j| j.given_up())
            .map(|j| {
                store::BacklogRow::waiting(
                    merchant,
                    &j.item.row.position(),
                    j.attempts(),
                    j.last_error.as_deref().unwrap_or(""),
                    now,
                )
            })
            .collect();
        let c = &self.ctx;
        if let Some(sql) = store::backlog_insert(&rows) {
            if let Err(e) = c.within("backlog", c.client.query(&sql).execute()).await {
                page.commit_at = Some(Instant::now() + STORE_RETRY);
                return self.store_error(e);
            }
        }
        let stamp = now.max(self.cursor_stamp.saturating_add(1));
        let sql = store::cursor_insert(merchant, &page.last, stamp);
        if let Err(e) = c.within("cursor", c.client.query(&sql).execute()).await {
            page.commit_at = Some(Instant::now() + STORE_RETRY);
            return self.store_error(e);
        }
        let (last, full) = (page.last, page.full);
        self.cursor = Some(last);
        self.cursor_stamp = stamp;
        self.page = None;
        self.next_poll = if full {
            Instant::now()
        } else {
            Instant::now() + self.ctx.interval
        };
        if !rows.is_empty() {
            let n = rows.len() as u64;
            c.metrics
                .webhooks
                .leads_backlogged
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            self.shared.update(|s| s.backlogged += n);
            self.set_waiting(self.waiting + n);
            tracing::warn!(
                merchant = self.merchant(),
                leads = n,
                "webhooks: leads failed every attempt; waiting in the backlog"
            );
        }
    }

    /// One pass over the waiting backlog, least recently tried first:
    /// each entry's lead read again (through `leads_sql`, so a withdrawn
    /// or erased lead is not sent; and checked again before its wave), one
    /// attempt each, a probe first, stopping at a wave without success.
    /// Each attempt writes the entry again (a later `updated_at`), so a
    /// lead the receiver always refuses does not stay the probe.
    async fn sweep(&mut self) -> SweepReport {
        let now = crate::now_ms();
        let mut report = SweepReport {
            at_ms: now,
            ran_here: true,
            ..SweepReport::default()
        };
        let r = self.sweep_into(&mut report).await;
        if let Err(e) = r {
            report.error = Some(e.clone());
            self.store_error(e);
        }
        let c = &self.ctx;
        let merchant = self.merchant().to_owned();
        let waiting = c
            .within(
                "backlog count",
                c.client
                    .query(store::BACKLOG_WAITING_SQL)
                    .bind(&merchant)
                    .fetch_one::<u64>(),
            )
            .await;
        if let Ok(n) = waiting {
            report.waiting = Some(n);
            self.set_waiting(n);
        }
        if report.entries > 0 {
            tracing::info!(
                merchant = self.merchant(),
                entries = report.entries,
                delivered = report.delivered,
                failed = report.failed,
                cancelled = report.cancelled,
                waiting = ?report.waiting,
                "webhooks: backlog pass"
            );
        }
        self.shared.update(|s| s.last_sweep = Some(report.clone()));
        report
    }

    async fn sweep_into(&mut self, report: &mut SweepReport) -> Result<(), String> {
        let c = self.ctx.clone();
        let merchant = self.merchant().to_owned();
        let sql = store::backlog_sql(
            Some(&merchant),
            Some(store::State::Waiting),
            store::Order::LeastRecentlyTried,
            c.backlog_batch,
        );
        let mut entries = c
            .within(
                "backlog",
                c.client.query(&sql).fetch_all::<store::BacklogRow>(),
            )
            .await?;
        store::sort_least_recently_tried(&mut entries);
        report.entries = entries.len();
        if entries.is_empty() {
            return Ok(());
        }
        let rooms = self.rooms().await?;
        let now = crate::now_ms();
        let mut rows = Vec::new();
        let mut items = Vec::new();
        let mut failure = None;
        for e in entries {
            if !rooms.contains(&e.room_id) {
                rows.push(e.next(
                    store::State::Cancelled,
                    e.attempts,
                    Some("its room is no longer this merchant's"),
                    now,
                ));
                continue;
            }
            let page = Page {
                rooms: vec![e.room_id],
                after: Some(store::just_before(&e.position())),
                upto_ms: e.lead_at_ms,
                include_suspect: self.shared.target.include_suspect,
                limit: 1,
            };
            let sql = query::leads_sql(&page);
            match c
                .within("backlog lead", c.client.query(&sql).fetch_all::<LeadRow>())
                .await
            {
                Ok(found) => match found.first() {
                    Some(r) if r.position() == e.position() => {
                        let attempts = e.attempts;
                        items.push((
                            Pending {
                                row: r.clone(),
                                entry: Some(e),
                            },
                            attempts,
                        ));
                    }
                    _ => rows.push(e.next(
                        store::State::Cancelled,
                        e.attempts,
                        Some("no longer deliverable: withdrawn, erased or without consent"),
                        now,
                    )),
                },
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        report.cancelled = rows.len();
        let mut outbox = Outbox::new(items, now, 1, c.backoff);
        let (mut waves, mut last_delivered) = (0, 0);
        while let Some(n) = sweep_wave(waves, last_delivered, c.concurrency) {
            let wave = outbox.due(crate::now_ms(), n);
            if wave.is_empty() {
                break;
            }
            let r = send_wave(&c, &self.shared, &mut outbox, &wave, true).await;
            if !r.audited {
                break;
            }
            if r.sent == 0 {
                // Every lead of the wave was withdrawn or erased: the
                // receiver was not tried; the next wave is the same size.
                continue;
            }
            waves += 1;
            last_delivered = r.delivered;
        }
        report.not_attempted = outbox.abandon_waiting();
        let now = crate::now_ms();
        for j in outbox.jobs() {
            let Some(entry) = &j.item.entry else { continue };
            if j.delivered() {
                report.delivered += 1;
                rows.push(entry.next(store::State::Delivered, j.attempts(), None, now));
            } else if j.cancelled() {
                report.cancelled += 1;
                rows.push(entry.next(
                    store::State::Cancelled,
                    j.attempts(),
                    Some("withdrawn or erased"),
                    now,
                ));
            } else if j.tries > 0 {
                report.failed += 1;
                rows.push(entry.next(
                    store::State::Waiting,
                    j.attempts(),
                    j.last_error.as_deref(),
                    now,
                ));
            }
        }
        report.attempted = report.delivered + report.failed;
        let m = &c.metrics.webhooks;
        m.backlog_delivered.fetch_add(
            report.delivered as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        m.backlog_cancelled.fetch_add(
            report.cancelled as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Some(sql) = store::backlog_insert(&rows) {
            // On failure the entries stay waiting: the delivered ones are
            // sent again by the next pass, with the same key.
            c.within("backlog", c.client.query(&sql).execute()).await?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// One wave: the jobs of `wave` checked against `lead_withdrawals` (the
/// withdrawn and erased ones cancelled), the others audited, decrypted
/// and POSTed concurrently, each outcome recorded, the 2xx ones audited
/// as delivered. A wave whose check or audit fails is handed back unsent.
async fn send_wave(
    ctx: &Ctx,
    shared: &Shared,
    outbox: &mut Outbox<Pending>,
    wave: &[usize],
    backlog: bool,
) -> WaveResult {
    use std::sync::atomic::Ordering::Relaxed;
    let t = &shared.target;
    let merchant = t.merchant.as_str();
    let now = crate::now_ms();
    let retry = now.saturating_add(STORE_RETRY.as_millis() as i64);

    // Withdrawn or erased since the page (or the backlog entry) was read:
    // checked before every wave, so before every retry round.
    let keys: Vec<store::Key> = wave
        .iter()
        .filter_map(|&i| outbox.job(i))
        .map(|j| j.item.key())
        .collect();
    let withdrawn: std::collections::HashSet<store::Key> = match store::withdrawn_sql(&keys) {
        None => return WaveResult::default(),
        Some(sql) => match ctx
            .within(
                "withdrawals",
                ctx.client.query(&sql).fetch_all::<store::KeyRow>(),
            )
            .await
        {
            Ok(rows) => rows.iter().map(store::KeyRow::key).collect(),
            Err(e) => {
                ctx.metrics.webhooks.store_errors.fetch_add(1, Relaxed);
                tracing::warn!(merchant, error = %e, leads = wave.len(), "webhooks: withdrawals not checked; nothing sent");
                shared.update(|s| s.last_store_error = Some(e));
                outbox.release(wave, retry);
                return WaveResult::default();
            }
        },
    };
    let mut out = WaveResult {
        audited: true,
        ..WaveResult::default()
    };
    let mut send = Vec::with_capacity(wave.len());
    for &i in wave {
        let cancelled = outbox
            .job(i)
            .is_some_and(|j| withdrawn.contains(&j.item.key()))
            && outbox.cancel(i);
        if cancelled {
            out.cancelled += 1;
        } else {
            send.push(i);
        }
    }
    if out.cancelled > 0 {
        let n = out.cancelled as u64;
        if !backlog {
            ctx.metrics.webhooks.leads_cancelled.fetch_add(n, Relaxed);
            shared.update(|s| s.cancelled += n);
        }
        tracing::info!(
            merchant,
            leads = n,
            backlog,
            "webhooks: withdrawn or erased leads cancelled, not sent"
        );
    }
    if send.is_empty() {
        return out;
    }

    let sends: Vec<(store::Key, String)> = send
        .iter()
        .filter_map(|&i| outbox.job(i))
        .map(|j| {
            let detail = store::audit_detail(&j.item.row.verdict, j.attempt(), backlog, false);
            (j.item.key(), detail)
        })
        .collect();
    let actor = t.actor();
    let sql = store::audit_sql(now, merchant, &actor, store::AUDIT_SENT, &sends);
    if let Err(e) = ctx.within("audit", ctx.client.query(&sql).execute()).await {
        ctx.metrics.webhooks.audit_failures.fetch_add(1, Relaxed);
        tracing::warn!(merchant, error = %e, leads = send.len(), "webhooks: audit not written; nothing sent");
        shared.update(|s| s.last_store_error = Some(e));
        outbox.release(&send, retry);
        out.audited = false;
        return out;
    }

    // Audited: decrypt (each attempt, from the ciphertexts) and send.
    let secrets: Vec<&[u8]> = t.secrets.iter().map(|s| s.expose().as_bytes()).collect();
    let ts = now.div_euclid(1_000);
    let mut set = tokio::task::JoinSet::new();
    let mut ids = std::collections::HashMap::new();
    let mut undecryptable = std::collections::HashSet::new();
    for &i in &send {
        let Some(j) = outbox.job(i) else { continue };
        let lead = query::decrypt(&j.item.row, &ctx.pii);
        if !lead.decrypted {
            undecryptable.insert(i);
        }
        let body = Bytes::from(sign::body(merchant, &lead));
        let req = Request {
            url: t.url.clone(),
            signature: sign::signature(&secrets, ts, &body),
            body,
            timestamp: ts,
            idempotency_key: sign::idempotency_key(
                j.item.row.room_id,
                j.item.row.viewer_id,
                j.item.row.client_lead_id,
            ),
            attempt: j.attempt(),
        };
        let sender = ctx.sender.clone();
        let h = set.spawn(async move { sender.post(req).await });
        ids.insert(h.id(), i);
        out.sent += 1;
    }
    let mut delivered_rows = Vec::new();
    while let Some(r) = set.join_next_with_id().await {
        let (i, attempt) = match r {
            Ok((id, a)) => (ids.get(&id).copied(), a),
            Err(e) => (
                ids.get(&e.id()).copied(),
                Attempt::Failed {
                    error: "internal: the request task failed".into(),
                    retry_after: None,
                },
            ),
        };
        let Some(i) = i else { continue };
        let result = match &attempt {
            Attempt::Delivered => WebhookResult::Delivered,
            Attempt::Failed { error, .. } if error.starts_with("http ") => WebhookResult::HttpError,
            Attempt::Failed { error, .. } if error.starts_with("timeout") => WebhookResult::Timeout,
            Attempt::Failed { .. } => WebhookResult::Transport,
        };
        ctx.metrics.webhooks.attempt(result);
        let at = crate::now_ms();
        match &attempt {
            Attempt::Delivered => {
                out.delivered += 1;
                if let Some(j) = outbox.job(i) {
                    let detail = store::audit_detail(
                        &j.item.row.verdict,
                        j.attempt(),
                        backlog,
                        undecryptable.contains(&i),
                    );
                    delivered_rows.push((j.item.key(), detail));
                }
                if !backlog {
                    ctx.metrics.webhooks.leads_delivered.fetch_add(1, Relaxed);
                }
                shared.update(|s| {
                    s.last_success_ms = Some(at);
                    s.consecutive_failures = 0;
                    s.delivered += 1;
                });
            }
            Attempt::Failed { error, .. } => {
                tracing::debug!(merchant, error = %error, "webhooks: attempt failed");
                shared.update(|s| {
                    s.last_failure_ms = Some(at);
                    s.last_error = Some(error.clone());
                    s.consecutive_failures += 1;
                });
            }
        }
        if let Some(Next::GiveUp) = outbox.record(i, attempt, at, rand::random()) {
            tracing::debug!(merchant, "webhooks: lead given up for now");
        }
    }

    // The deliveries (what the dashboards count), one insert per wave. Not
    // retried: the leads are delivered either way (the pre-send rows
    // stand); a failure is logged and counted.
    if !delivered_rows.is_empty() {
        let sql = store::audit_sql(
            crate::now_ms(),
            merchant,
            &actor,
            store::AUDIT_DELIVERED,
            &delivered_rows,
        );
        if let Err(e) = ctx
            .within("delivered audit", ctx.client.query(&sql).execute())
            .await
        {
            ctx.metrics.webhooks.store_errors.fetch_add(1, Relaxed);
            tracing::warn!(merchant, error = %e, leads = delivered_rows.len(), "webhooks: delivered rows not written to lead_audit (the leads were delivered)");
            shared.update(|s| s.last_store_error = Some(e));
        }
    }
    out
}
