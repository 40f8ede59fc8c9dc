//! The ClickHouse sink: row types, migrations, one writer task per table
//! reading the write-ahead log, the dead-letter store, and the schema the
//! migrations define (tables and columns, for the access grants).
//!
//! Nothing here holds an ack: acks were released when their rows became
//! durable in the log. A ClickHouse outage delays rows (they wait in the
//! log, up to its disk budget); it never drops one.

pub mod dead_letter;
pub mod migrate;
pub mod rows;
pub mod schema;
pub mod writer;

use std::sync::Arc;

use clickhouse::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{BatchConfig, ClickHouseConfig};
use crate::metrics::Metrics;
use crate::table::Table;
use crate::wal::{LogHandle, Recovery};
pub use rows::{
    ChatRow, LeadRow, LikeRow, LikeViewerRow, ModerationRow, SessionRow, WithdrawalRow,
};
pub use writer::{StopRx, TableRow, WriterSettings};

/// Build the HTTP client from config (URL, user, password, database, LZ4).
///
/// On a cluster (`clickhouse.cluster`) it also sets
/// `distributed_foreground_insert = 1`: an insert into a `Distributed`
/// table returns only once every shard has stored its part, so a batch is
/// committed only when all of it is stored, and a shard that is down fails
/// the insert (which the writer retries with the same token) instead of
/// queueing rows on the node it was sent to.
pub fn client(cfg: &ClickHouseConfig) -> Client {
    let client = node_client(cfg, &cfg.url);
    if cfg.cluster.is_empty() {
        client
    } else {
        client.with_setting("distributed_foreground_insert", "1")
    }
}

/// A client for the server at `url`, with `cfg`'s credentials and database.
fn node_client(cfg: &ClickHouseConfig, url: &str) -> Client {
    Client::default()
        .with_url(url)
        .with_user(&cfg.user)
        .with_password(cfg.password.expose())
        .with_database(&cfg.database)
        .with_compression(clickhouse::Compression::Lz4)
}

/// The schema layout `cfg` asks for: one server, or the cluster variant.
pub fn layout(cfg: &ClickHouseConfig) -> migrate::Layout {
    if cfg.cluster.is_empty() {
        migrate::Layout::Single
    } else {
        migrate::Layout::Cluster(migrate::ClusterDdl {
            name: cfg.cluster.clone(),
            replicated: cfg.replicated,
            on_cluster: cfg.on_cluster,
        })
    }
}

/// Where the migrations go, as (URL, client): `url` alone (one server, or
/// a cluster with `on_cluster`), else every one of `cluster_urls`, in order.
pub fn ddl_targets(cfg: &ClickHouseConfig) -> Vec<(String, Client)> {
    if cfg.cluster.is_empty() || cfg.on_cluster {
        vec![(cfg.url.clone(), node_client(cfg, &cfg.url))]
    } else {
        cfg.cluster_urls
            .iter()
            .map(|url| (url.clone(), node_client(cfg, url)))
            .collect()
    }
}

/// What the writers are started with.
#[derive(Debug)]
pub struct Writers<'a> {
    /// ClickHouse.
    pub client: &'a Client,
    /// Batch policies.
    pub batch: &'a BatchConfig,
    /// Retry and pacing.
    pub settings: WriterSettings,
    /// Counters.
    pub metrics: &'a Arc<Metrics>,
    /// The log they read.
    pub log: &'a LogHandle,
    /// Where each table stands after the log was replayed.
    pub recovery: &'a Recovery,
    /// The stop signal (with the flush deadline).
    pub stop: &'a StopRx,
    /// True once the schema is current.
    pub schema: &'a watch::Receiver<bool>,
}

/// Start the writers (one per table) on the current tokio runtime; each starts by
/// re-sending what the recovery says its table has not committed.
pub fn spawn(w: Writers<'_>) -> Vec<JoinHandle<()>> {
    fn one<R: TableRow>(w: &Writers<'_>, settings: &Arc<WriterSettings>) -> JoinHandle<()> {
        let writer = writer::TableWriter::<R>::new(
            w.client.clone(),
            w.batch.policy(R::TABLE),
            settings.clone(),
            w.metrics.clone(),
            w.log.clone(),
            w.recovery.table(R::TABLE).clone(),
            w.schema.clone(),
        );
        tokio::spawn(writer.run(w.stop.clone()))
    }
    let s = Arc::new(w.settings.clone());
    let handles = vec![
        one::<ChatRow>(&w, &s),
        one::<LikeRow>(&w, &s),
        one::<LeadRow>(&w, &s),
        one::<SessionRow>(&w, &s),
        one::<ModerationRow>(&w, &s),
        one::<WithdrawalRow>(&w, &s),
        one::<LikeViewerRow>(&w, &s),
    ];
    debug_assert_eq!(handles.len(), Table::COUNT);
    handles
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Secret};

    fn validated(set: impl FnOnce(&mut ClickHouseConfig)) -> Result<Config, String> {
        let mut c = Config::default();
        c.tickets.secret = Some(Secret::new("x".repeat(32)));
        c.server.dev_cert_dir = Some("unused".into());
        c.pii.hmac_key = Some(Secret::new("ab".repeat(32)));
        c.pii.enc_key = Some(Secret::new("cd".repeat(32)));
        set(&mut c.clickhouse);
        c.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn cluster_keys_are_checked_and_choose_layout_and_ddl_targets() {
        let single = validated(|_| {}).unwrap().clickhouse;
        assert_eq!(layout(&single), migrate::Layout::Single);
        let urls: Vec<String> = ddl_targets(&single).into_iter().map(|t| t.0).collect();
        assert_eq!(urls, ["http://127.0.0.1:8123"]);

        let nodes = vec!["http://a:8123".to_owned(), "https://b:8443".to_owned()];
        let c = validated(|c| {
            c.cluster = "rg-1".into();
            c.cluster_urls = nodes.clone();
        })
        .unwrap()
        .clickhouse;
        assert_eq!(
            layout(&c),
            migrate::Layout::Cluster(migrate::ClusterDdl {
                name: "rg-1".into(),
                replicated: false,
                on_cluster: false
            })
        );
        let urls: Vec<String> = ddl_targets(&c).into_iter().map(|t| t.0).collect();
        assert_eq!(urls, nodes);
        // ON CLUSTER: once, to `url`; no node list needed.
        let c = validated(|c| {
            c.cluster = "rg".into();
            c.replicated = true;
            c.on_cluster = true;
        })
        .unwrap()
        .clickhouse;
        assert_eq!(ddl_targets(&c).len(), 1);

        for (bad, says) in [
            (
                (|c: &mut ClickHouseConfig| c.cluster = "rg'; DROP".into())
                    as fn(&mut ClickHouseConfig),
                "clickhouse.cluster must be",
            ),
            (|c| c.replicated = true, "need clickhouse.cluster"),
            (
                |c| c.cluster_urls = vec!["http://a".into()],
                "need clickhouse.cluster",
            ),
            (|c| c.cluster = "rg".into(), "cluster_urls must list"),
            (
                |c| {
                    c.cluster = "rg".into();
                    c.cluster_urls = vec!["a:8123".into()];
                },
                "http:// or https://",
            ),
        ] {
            let err = validated(bad).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }
}
