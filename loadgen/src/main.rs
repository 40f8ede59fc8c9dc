//! `roomgate-loadgen`: simulated live-stream rooms against a roomgate engine.
//!
//! # Layout
//! - [`cli`]: flags over a scenario, validated into a typed config.
//! - [`scenario`]: the scenario file: classes, join, churn, storms, tolerances.
//! - [`truth`]: behaviour classes and their viewer index ranges (ground truth).
//! - [`plan`]: a room's events — when, from whom, what (pure, seeded).
//! - [`schedule`]: Poisson processes, seed streams, like batching (pure).
//! - [`content`]: chat lines, lead forms and abuse, checked with the
//!   engine's own detectors (pure).
//! - [`room`]: a room's connected viewers and the driver feeding them.
//! - [`viewer`]: one viewer's QUIC session(s) (writer, reader, drain, bye, churn).
//! - [`endpoint`]: TLS and QUIC client configuration, UDP endpoints.
//! - [`servers`]: one server or several routed engine nodes; redirects.
//! - [`stats`]: counters, latency histograms, timeline samples, lead records.
//! - [`report`]: status line, summary JSON and text table.
//! - [`html`]: the self-contained HTML report.
//! - [`verify`]: the run against ClickHouse: stored, missing, precision, recall.
//! - [`merge`]: a split run's worker summaries (`--worker K/N`) into one.
//! - [`run`]: wires a run together and shuts it down in order.

mod cli;
mod content;
mod endpoint;
mod html;
mod merge;
mod plan;
mod report;
mod room;
mod run;
mod scenario;
mod schedule;
mod servers;
mod stats;
mod truth;
mod verify;
mod viewer;

use std::{io::Write as _, path::Path, process::ExitCode};

use anyhow::{Context, Result};
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code when fewer than `--min-connected` of the viewers ever connected.
const TOO_FEW_CONNECTED: u8 = 4;
/// Exit code when `verify` (or `--verify`) finds a failed check.
const VERIFY_FAILED: u8 = 3;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("roomgate-loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit code 0 once the run started, whatever the server did (with
/// `--verify`: 0 when verify passed, 3 when a check failed); 1 for runs
/// that cannot start (config, secret, certificate, sockets) or cannot be
/// verified (ClickHouse unreachable, bad summary).
async fn run() -> Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = cli::Cli::parse();
    match cli.command {
        Some(cli::Command::Verify(v)) => return verify_cmd(v).await,
        Some(cli::Command::Merge(m)) => return merge_cmd(m).await,
        None => {}
    }
    let cfg = cli::Config::from_args(cli.run, std::env::var(cli::SECRET_ENV).ok())?;
    let json_path = cfg.summary_json.clone();
    let html_path = cfg.report_html.clone();
    let target = cfg.verify.clone();
    let min_connected = cfg.min_connected;
    let summary = run::run(cfg).await?;
    let mut code = ExitCode::SUCCESS;
    let c = &summary.connections;
    if (c.viewers_connected as f64) < min_connected * c.viewers as f64 || c.viewers_connected == 0 {
        tracing::error!(
            connected = c.viewers_connected,
            viewers = c.viewers,
            min_share = min_connected,
            "too few viewers connected: the run did not load the server"
        );
        code = ExitCode::from(TOO_FEW_CONNECTED);
    }
    let verified = finish(summary, target, None, json_path, html_path).await?;
    Ok(if verified {
        code
    } else {
        ExitCode::from(VERIFY_FAILED)
    })
}

/// Print a finished (or merged) run, verify it if asked (with the recorded
/// tolerances, overridden by `tol`), write its summary and report. Returns
/// `false` when verify failed.
async fn finish(
    mut summary: report::Summary,
    target: Option<(verify::Target, verify::Settle)>,
    tol: Option<&cli::TolArgs>,
    json_path: Option<std::path::PathBuf>,
    html_path: Option<std::path::PathBuf>,
) -> Result<bool> {
    print!("{}", report::text(&summary));
    for w in report::warnings(&summary) {
        tracing::warn!("{w}");
    }
    let mut passed = true;
    if let Some((target, settle)) = target {
        let gt = summary
            .ground_truth
            .as_ref()
            .context("the run has no ground truth")?;
        let records = gt.lead_records.clone();
        let mut tolerances = gt.tolerances.clone();
        if let Some(t) = tol {
            t.apply(&mut tolerances)?;
        }
        let r = verify::verify(&target, &summary, &records, &tolerances, settle)
            .await
            .context("verify")?;
        println!();
        print!("{}", verify::text(&r));
        passed = r.passed;
        summary.verify = Some(r);
    }
    if let Some(path) = json_path {
        write_summary(&mut summary, &path)?;
    }
    if let Some(path) = html_path {
        write_file(&path, &html::page(&summary))?;
        eprintln!("report: {}", path.display());
    }
    Ok(passed)
}

async fn merge_cmd(m: cli::MergeArgs) -> Result<ExitCode> {
    let target = if m.verify {
        Some(m.clickhouse.target()?)
    } else {
        None
    };
    let summary = merge::merge(&m.summaries)?;
    eprintln!(
        "merged {} workers: {} lead records",
        summary.merged_workers,
        summary.ground_truth.as_ref().map_or(0, |g| g.leads)
    );
    let passed = finish(
        summary,
        target,
        Some(&m.tolerances),
        m.summary_json,
        m.report_html,
    )
    .await?;
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(VERIFY_FAILED)
    })
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the directory", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("{}: cannot write", path.display()))
}

/// Write the summary and, next to it, the lead records (one JSON line each).
fn write_summary(summary: &mut report::Summary, path: &Path) -> Result<()> {
    if let Some(gt) = summary.ground_truth.as_mut() {
        let leads_path = verify::leads_path(path);
        let mut buf = Vec::new();
        for l in &gt.lead_records {
            serde_json::to_writer(&mut buf, l).context("serialize a lead record")?;
            buf.push(b'\n');
        }
        if let Some(dir) = leads_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create the directory", dir.display()))?;
        }
        std::fs::File::create(&leads_path)
            .and_then(|mut f| f.write_all(&buf))
            .with_context(|| format!("{}: cannot write", leads_path.display()))?;
        gt.leads_file = leads_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
    }
    let json = serde_json::to_string_pretty(summary).context("serialize summary")?;
    write_file(path, &(json + "\n")).with_context(|| format!("--summary-json {}", path.display()))
}

async fn verify_cmd(v: cli::VerifyArgs) -> Result<ExitCode> {
    let (target, settle) = v.clickhouse.target()?;
    let text = std::fs::read_to_string(&v.summary_json)
        .with_context(|| format!("--summary-json {}: cannot read", v.summary_json.display()))?;
    let mut summary: report::Summary = serde_json::from_str(&text)
        .with_context(|| format!("--summary-json {}: not a summary", v.summary_json.display()))?;
    let records = verify::load_leads(&summary, &v.summary_json)?;
    let mut tolerances = summary
        .ground_truth
        .as_ref()
        .map(|g| g.tolerances.clone())
        .unwrap_or_default();
    v.tolerances.apply(&mut tolerances)?;
    let r = verify::verify(&target, &summary, &records, &tolerances, settle).await?;
    print!("{}", verify::text(&r));
    let code = if r.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(VERIFY_FAILED)
    };
    if let Some(path) = v.report_html {
        summary.verify = Some(r);
        write_file(&path, &html::page(&summary))?;
        eprintln!("report: {}", path.display());
    }
    Ok(code)
}
