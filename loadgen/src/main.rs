//! `roomgate-loadgen`: simulated live-stream rooms against a roomgate engine.
//!
//! # Layout
//! - [`cli`]: flags, validated into a typed config.
//! - [`schedule`]: open-loop Poisson arrivals and the join ramp (pure).
//! - [`content`]: realistic chat lines and lead forms (pure).
//! - [`room`]: a room's connected viewers and the driver feeding them events.
//! - [`viewer`]: one viewer's QUIC session (writer, reader, drain, bye).
//! - [`endpoint`]: TLS and QUIC client configuration, UDP endpoints.
//! - [`stats`]: counters and latency histograms.
//! - [`report`]: status line, summary JSON and text table.
//! - [`run`]: wires a run together and shuts it down in order.

mod cli;
mod content;
mod endpoint;
mod report;
mod room;
mod run;
mod schedule;
mod stats;
mod viewer;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomgate-loadgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exit code 0 once the run started, whatever the server did; errors are
/// reserved for runs that cannot start (config, secret, certificate, sockets).
async fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = cli::Args::parse();
    let cfg = cli::Config::from_args(args, std::env::var(cli::SECRET_ENV).ok())?;
    let json_path = cfg.summary_json.clone();
    let summary = run::run(cfg).await?;
    print!("{}", report::text(&summary));
    for w in report::warnings(&summary) {
        tracing::warn!("{w}");
    }
    if let Some(path) = json_path {
        let json = serde_json::to_string_pretty(&summary).context("serialize summary")?;
        std::fs::write(&path, json + "\n")
            .with_context(|| format!("--summary-json {}: cannot write", path.display()))?;
    }
    Ok(())
}
