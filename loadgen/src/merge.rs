//! `roomgate-loadgen merge`: the summaries of a split run's workers
//! (`--worker K/N`) into the summary one process would have written.
//!
//! Each worker's summary carries its whole [`Stats`] (counters, latency
//! histograms as value/count pairs, timeline samples). They are added up
//! with [`Stats::absorb`] and summarized by the same code as a single run,
//! so percentiles come from the merged histograms, never from averaged
//! percentiles. Lead records are read from each worker's leads file and
//! joined; the ground truth is the workers' (they must agree on it).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, ensure, Context, Result};
use tokio::time::Instant;

use crate::{
    report::{self, Summary},
    stats::{LeadRecord, Stats},
    verify,
};

/// One worker's summary as read from disk.
struct Part {
    path: PathBuf,
    summary: Summary,
}

fn read(path: &Path) -> Result<Part> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let summary: Summary = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a loadgen summary", path.display()))?;
    ensure!(
        summary.worker.is_some(),
        "{}: not a worker's summary (run the loadgen with --worker K/N)",
        path.display()
    );
    Ok(Part {
        path: path.to_owned(),
        summary,
    })
}

/// Check that the parts are workers 1..=N of one run, in any order.
fn check(parts: &[Part]) -> Result<()> {
    let first = &parts[0];
    let n = first.summary.worker.as_ref().map_or(0, |w| w.worker.n);
    let mut seen = vec![None::<&Path>; n as usize];
    for p in parts {
        let w = p.summary.worker.as_ref().map(|w| w.worker);
        let Some(w) = w.filter(|w| w.n == n) else {
            bail!(
                "{}: a worker of a different split than {} (N = {n})",
                p.path.display(),
                first.path.display()
            );
        };
        if let Some(other) = seen[(w.k - 1) as usize].replace(&p.path) {
            bail!(
                "worker {w} twice: {} and {}",
                other.display(),
                p.path.display()
            );
        }
        let same = |a: &Summary, b: &Summary| {
            a.config.get("scenario") == b.config.get("scenario")
                && a.ground_truth
                    .as_ref()
                    .map(|g| (&g.room_ids, g.seed, &g.classes))
                    == b.ground_truth
                        .as_ref()
                        .map(|g| (&g.room_ids, g.seed, &g.classes))
        };
        ensure!(
            same(&first.summary, &p.summary),
            "{} and {}: not the same run (scenario, seed, rooms or classes differ)",
            first.path.display(),
            p.path.display()
        );
    }
    let missing: Vec<String> = seen
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_none())
        .map(|(k, _)| format!("{}/{n}", k + 1))
        .collect();
    ensure!(
        missing.is_empty(),
        "missing workers: {} (every worker's summary is needed)",
        missing.join(", ")
    );
    Ok(())
}

/// Merge the summaries at `paths` (workers 1/N … N/N of one run).
pub fn merge(paths: &[PathBuf]) -> Result<Summary> {
    ensure!(!paths.is_empty(), "no summaries to merge");
    let parts = paths.iter().map(|p| read(p)).collect::<Result<Vec<_>>>()?;
    check(&parts)?;
    let stats = Stats::default();
    let mut leads: Vec<LeadRecord> = Vec::new();
    for p in &parts {
        let share = p.summary.worker.as_ref().context("checked above")?;
        let s: Stats = serde_json::from_value(share.stats.clone())
            .with_context(|| format!("{}: the worker's stats do not parse", p.path.display()))?;
        stats.absorb(s);
        leads.extend(verify::load_leads(&p.summary, &p.path)?);
    }
    leads.sort_by_key(|l| (l.room_id, l.viewer_id, l.client_lead_id));
    let first = &parts[0].summary;
    let bucket = first.timeline.as_ref().map_or(1.0, |t| t.bucket_s);
    stats.start_timeline(Instant::now(), Duration::from_secs_f64(bucket.max(0.1)));
    let max = |f: fn(&Summary) -> f64| parts.iter().map(|p| f(&p.summary)).fold(0.0, f64::max);
    let mut config = first.config.clone();
    if let Some(c) = config.as_object_mut() {
        c.remove("worker");
        c.remove("summary_json");
        c.remove("report_html");
    }
    let mut summary = report::summarize(
        &stats,
        config,
        first.likes.taps_per_frame,
        Duration::from_secs_f64(max(|s| s.duration_s)),
        Duration::from_secs_f64(max(|s| s.wall_s)),
    );
    summary.server_settings = parts.iter().find_map(|p| p.summary.server_settings.clone());
    let mut gt = first
        .ground_truth
        .clone()
        .context("the workers' summaries have no ground truth")?;
    let counts: Vec<_> = gt
        .classes
        .iter()
        .map(|r| (r.class, u64::from(r.count) * gt.room_ids.len() as u64))
        .collect();
    report::add_details(&mut summary, &stats, &counts);
    for p in &parts {
        if let Some(g) = &p.summary.ground_truth {
            gt.client_ids = [
                gt.client_ids[0].min(g.client_ids[0]),
                gt.client_ids[1].max(g.client_ids[1]),
            ];
            gt.started_unix_ms = gt.started_unix_ms.min(g.started_unix_ms);
            gt.ended_unix_ms = gt.ended_unix_ms.max(g.ended_unix_ms);
        }
    }
    gt.leads = leads.len();
    gt.leads_file = None;
    gt.lead_records = leads;
    summary.ground_truth = Some(gt);
    summary.merged_workers = parts.len() as u32;
    Ok(summary)
}
