//! `roomgate`: the engine binary (thin: flags → config → [`roomgate::engine`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use roomgate::config::Config;
use roomgate::route::NodeSet;

// `--features system-alloc` leaves the system allocator in place for heap
// profilers (docs/TUNING.md).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Interaction and lead-ingestion engine for live-stream rooms.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file (see docs/CONFIG.md). Flags override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// UDP address for QUIC [config: server.listen, default 127.0.0.1:4433].
    #[arg(long, global = true)]
    listen: Option<SocketAddr>,
    /// Admin HTTP address (/metrics) [config: server.admin, default 127.0.0.1:9464].
    #[arg(long, global = true)]
    admin: Option<SocketAddr>,
    /// ClickHouse HTTP(S) URL [config: clickhouse.url, default http://127.0.0.1:8123].
    #[arg(long, global = true)]
    clickhouse_url: Option<String>,
    /// ClickHouse user [config: clickhouse.user].
    #[arg(long, global = true, env = "ROOMGATE_CLICKHOUSE_USER")]
    clickhouse_user: Option<String>,
    /// ClickHouse password [config: clickhouse.password].
    #[arg(
        long,
        global = true,
        env = "ROOMGATE_CLICKHOUSE_PASSWORD",
        hide_env_values = true
    )]
    clickhouse_password: Option<String>,
    /// ClickHouse database [config: clickhouse.database, default roomgate].
    #[arg(long, global = true)]
    database: Option<String>,
    /// Generate a self-signed certificate and write cert.pem into DIR (development).
    #[arg(long, global = true, value_name = "DIR")]
    dev_cert: Option<PathBuf>,
    /// PEM certificate chain [config: server.cert].
    #[arg(long, global = true)]
    cert: Option<PathBuf>,
    /// PEM private key [config: server.key].
    #[arg(long, global = true)]
    key: Option<PathBuf>,
    /// Data directory: the write-ahead log and set-aside batches
    /// [config: storage.dir, default roomgate-data].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Number of shards; 0 = cores [config: shards.count].
    #[arg(long, global = true)]
    shards: Option<usize>,
    /// QUIC endpoints on the listen address (SO_REUSEPORT, steered by
    /// connection ID); 0 = cores
    /// [config: server.endpoints].
    #[arg(long, global = true)]
    endpoints: Option<usize>,
    /// Worker threads of the io runtime; 0 = cores [config:
    /// server.io_threads].
    #[arg(long, global = true)]
    io_threads: Option<usize>,
    /// This node's id in the node list [config: routing.node_id].
    #[arg(long, global = true)]
    node_id: Option<String>,
    /// Engine nodes rooms are spread over, `id=addr,id=addr,...` (the id
    /// is hashed; the address is where viewers connect; docs/ROUTING.md)
    /// [config: routing.nodes].
    #[arg(long, global = true, value_name = "ID=ADDR,...")]
    nodes: Option<NodeSet>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, global = true, env = "ROOMGATE_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the engine (default).
    Run,
    /// Apply pending schema migrations and exit.
    Migrate,
    /// Set-aside batches (rows ClickHouse rejected as bad data).
    DeadLetter {
        #[command(subcommand)]
        op: DeadLetterOp,
    },
    /// Print a signed viewer ticket (for testing and load tests).
    Ticket {
        /// Room id.
        #[arg(long)]
        room: u64,
        /// Viewer id.
        #[arg(long)]
        viewer: u64,
        /// Validity, seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Print who sees what in ClickHouse: roles, users, column grants and
    /// row policies (docs/ACCESS.md), for `clickhouse.database` and layout.
    Grants {
        /// `sql` for a production server, `users-xml` for the local one.
        #[arg(long, value_enum)]
        format: GrantsFormat,
        /// Passwords, one `user = password` (or `user = sha256:<hex>`)
        /// per line; `ROOMGATE_GRANTS_PASSWORD_<USER>` variables override it.
        #[arg(long, env = "ROOMGATE_GRANTS_PASSWORDS", value_name = "FILE")]
        passwords: Option<PathBuf>,
        /// A merchant to create a user for, besides the `[[rooms]]`
        /// merchants (repeat for several).
        #[arg(long = "merchant", value_name = "ID")]
        merchants: Vec<String>,
    },
    /// Make a merchant API key: prints the key (shown once: give it to the
    /// merchant) and the `[merchant_api] keys` entry with its hash.
    MerchantKey {
        /// The merchant it pulls for.
        #[arg(long)]
        merchant: String,
        /// The key's id (1-32 of A-Z a-z 0-9 _ -); default a random one.
        #[arg(long)]
        key_id: Option<String>,
    },
    /// Print the engine node that owns each room (docs/ROUTING.md).
    Route {
        /// Room id (repeat for several rooms).
        #[arg(long = "room", value_name = "ROOM", required = true)]
        rooms: Vec<u64>,
        /// Print a JSON array: each room's owner and fallback order.
        #[arg(long)]
        json: bool,
    },
}

/// Output of `roomgate grants`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum GrantsFormat {
    /// SQL for a production server (CREATE ROLE / USER, GRANT, CREATE ROW POLICY).
    Sql,
    /// users.xml for the local chdb server (CLICKHOUSE_USERS_XML).
    UsersXml,
}

#[derive(Subcommand, Debug)]
enum DeadLetterOp {
    /// List set-aside batches in `<storage.dir>/dead-letter`.
    List,
    /// Re-insert every set-aside batch (same token, so a batch that got in
    /// is never doubled) and delete the ones that commit.
    Replay,
}

fn config(cli: &Cli) -> Result<Config> {
    let mut cfg = match &cli.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(v) = cli.listen {
        cfg.server.listen = v;
    }
    if let Some(v) = cli.admin {
        cfg.server.admin = v;
    }
    if let Some(v) = &cli.clickhouse_url {
        cfg.clickhouse.url = v.clone();
    }
    if let Some(v) = &cli.clickhouse_user {
        cfg.clickhouse.user = v.clone();
    }
    if let Some(v) = &cli.clickhouse_password {
        cfg.clickhouse.password = roomgate::config::Secret::new(v.clone());
    }
    if let Some(v) = &cli.database {
        cfg.clickhouse.database = v.clone();
    }
    if let Some(v) = &cli.dev_cert {
        cfg.server.dev_cert_dir = Some(v.clone());
    }
    if let Some(v) = &cli.cert {
        cfg.server.cert = Some(v.clone());
    }
    if let Some(v) = &cli.key {
        cfg.server.key = Some(v.clone());
    }
    if let Some(v) = &cli.data_dir {
        cfg.storage.dir = v.clone();
    }
    if let Some(v) = cli.shards {
        cfg.shards.count = v;
    }
    if let Some(v) = cli.endpoints {
        cfg.server.endpoints = v;
    }
    if let Some(v) = cli.io_threads {
        cfg.server.io_threads = v;
    }
    if let Some(v) = &cli.node_id {
        cfg.routing.node_id = v.clone();
    }
    if let Some(v) = &cli.nodes {
        cfg.routing.nodes = v.nodes().iter().map(Into::into).collect();
    }
    let secret = |k: &str| env(k).map(roomgate::config::Secret::new);
    if let Some(v) = secret("ROOMGATE_TICKET_SECRET") {
        cfg.tickets.secret = Some(v);
    }
    if let Some(v) = env("ROOMGATE_TICKET_KEY_ID") {
        cfg.tickets.key_id = v;
    }
    if let Some(v) = secret("ROOMGATE_TICKET_PREVIOUS_SECRET") {
        cfg.tickets.previous_secret = Some(v);
    }
    if let Some(v) = env("ROOMGATE_TICKET_PREVIOUS_KEY_ID") {
        cfg.tickets.previous_key_id = Some(v);
    }
    if let Some(v) = secret("ROOMGATE_ADMIN_TOKEN") {
        cfg.server.admin_token = Some(v);
    }
    if let Some(v) = secret("ROOMGATE_PII_HMAC_KEY") {
        cfg.pii.hmac_key = Some(v);
    }
    if let Some(v) = secret("ROOMGATE_PII_ENC_KEY") {
        cfg.pii.enc_key = Some(v);
    }
    if let Some(v) = env("ROOMGATE_PII_KEY_ID") {
        cfg.pii.key_id = v;
    }
    if let Some(v) = secret("ROOMGATE_MERCHANT_API_CLICKHOUSE_PASSWORD") {
        if let Some(m) = cfg.merchant_api.as_mut() {
            m.clickhouse_password = Some(v);
        }
    }
    if let Some(v) = secret("ROOMGATE_WEBHOOKS_CLICKHOUSE_PASSWORD") {
        if let Some(w) = cfg.webhooks.as_mut() {
            w.clickhouse_password = Some(v);
        }
    }
    Ok(cfg)
}

async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).context("--log")?)
        .with_writer(std::io::stderr)
        .init();
    if let Some(Cmd::MerchantKey { merchant, key_id }) = &cli.cmd {
        return merchant_key(merchant, key_id.as_deref());
    }
    let cfg = config(&cli)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.server.io_worker_threads())
        .enable_all()
        .thread_name("roomgate-io")
        .build()
        .context("tokio runtime")?;
    match cli.cmd.unwrap_or(Cmd::Run) {
        Cmd::Run => {
            let cfg = cfg.validate()?;
            rt.block_on(roomgate::engine::run(cfg, stop_signal()))
        }
        Cmd::Migrate => {
            if !cfg
                .clickhouse
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                anyhow::bail!("clickhouse.database must be [A-Za-z0-9_]+");
            }
            let applied = rt.block_on(roomgate::engine::migrate(&cfg))?;
            println!(
                "migrations applied: {applied:?} (database {})",
                cfg.clickhouse.database
            );
            Ok(())
        }
        Cmd::DeadLetter { op } => rt.block_on(dead_letter(&cfg, op)),
        Cmd::Ticket { room, viewer, ttl } => {
            let keys = cfg.tickets.keys()?;
            if ttl > keys.max_ttl_secs() {
                anyhow::bail!(
                    "--ttl {ttl} is over tickets.max_ttl_secs ({}): the engine would refuse it",
                    keys.max_ttl_secs()
                );
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let t = keys.sign(&roomgate::wire::ticket::Claims {
                room_id: room,
                viewer_id: viewer,
                expires_at: now + ttl,
                device_id: String::new(),
            });
            println!("{t}");
            Ok(())
        }
        Cmd::Route { rooms, json } => route(&cfg, &rooms, json),
        Cmd::MerchantKey { merchant, key_id } => merchant_key(&merchant, key_id.as_deref()),
        Cmd::Grants {
            format,
            passwords,
            merchants,
        } => grants(&cfg, format, passwords.as_deref(), &merchants),
    }
}

/// `roomgate merchant-key`: a new API key and its config entry.
fn merchant_key(merchant: &str, key_id: Option<&str>) -> Result<()> {
    use roomgate::delivery::keys;
    let m = roomgate::merchants::MerchantId::parse(merchant).context("--merchant")?;
    let id = match key_id {
        Some(id) => id.to_owned(),
        None => format!("{m}-{}", hex::encode(rand::random::<[u8; 4]>())),
    };
    anyhow::ensure!(
        keys::valid_key_id(&id),
        "--key-id {id:?}: 1-{} characters of A-Z, a-z, 0-9, '_' and '-'",
        keys::MAX_KEY_ID
    );
    let (key, sha) = keys::generate(&id);
    eprintln!("# the key for merchant {m} (shown once; send it as `Authorization: Bearer <key>`):");
    println!("{key}");
    eprintln!("# add to [merchant_api] keys in the engine's config:");
    println!("{{ merchant = \"{m}\", key_id = \"{id}\", sha256 = \"{sha}\" }}");
    Ok(())
}

/// `roomgate grants`: the access plan for `cfg`'s database and layout,
/// printed as SQL or users.xml. Passwords are only ever printed hashed.
fn grants(
    cfg: &Config,
    format: GrantsFormat,
    passwords: Option<&std::path::Path>,
    extra: &[String],
) -> Result<()> {
    use roomgate::access;
    use roomgate::merchants::MerchantId;
    let mut ids: Vec<MerchantId> = cfg.room_merchants()?.into_iter().map(|(_, m)| m).collect();
    for m in extra {
        ids.push(MerchantId::parse(m).context("--merchant")?);
    }
    let mut hashes = match passwords {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read passwords file {}", path.display()))?;
            access::parse_passwords(&text).with_context(|| path.display().to_string())?
        }
        None => Default::default(),
    };
    let mut users: Vec<String> = ["writer", "migrator", "analyst"]
        .iter()
        .map(|u| u.to_string())
        .collect();
    users.extend(ids.iter().map(access::merchant_user));
    for user in users {
        let var = format!(
            "ROOMGATE_GRANTS_PASSWORD_{}",
            user.to_ascii_uppercase().replace('-', "_")
        );
        if let Some(v) = std::env::var(&var).ok().filter(|v| !v.is_empty()) {
            let hash = access::password_value(&v).map_err(|e| anyhow::anyhow!("{var}: {e}"))?;
            hashes.insert(user, hash);
        }
    }
    let layout = roomgate::sink::layout(&cfg.clickhouse);
    let plan = access::plan(&access::Spec {
        database: &cfg.clickhouse.database,
        layout: &layout,
        merchants: &ids,
        passwords: &hashes,
    })?;
    match format {
        GrantsFormat::Sql => print!("{}", access::sql(&plan)),
        GrantsFormat::UsersXml => print!("{}", access::users_xml(&plan)),
    }
    Ok(())
}

/// `roomgate route`: one line per room, `room_id owner_id owner_addr`, or
/// with `--json` an array of `{room_id, owner: {id, addr}, ranked: [id...]}`.
/// A bad `--nodes` exits with code 2 (a usage error), a missing node list with 1.
fn route(cfg: &Config, rooms: &[u64], json: bool) -> Result<()> {
    let Some(nodes) = cfg.routing.node_set()? else {
        anyhow::bail!(
            "no node list: give --nodes id=addr,id=addr,... or [routing] nodes in --config"
        );
    };
    if !json {
        for &room in rooms {
            let owner = nodes.owner(room);
            println!("{room} {} {}", owner.id, owner.addr);
        }
        return Ok(());
    }
    /// One room in `--json` (fields in this order).
    #[derive(serde::Serialize)]
    struct Routed<'a> {
        room_id: u64,
        owner: Owner<'a>,
        ranked: Vec<&'a str>,
    }
    #[derive(serde::Serialize)]
    struct Owner<'a> {
        id: &'a str,
        addr: &'a str,
    }
    let out: Vec<Routed> = rooms
        .iter()
        .map(|&room| {
            let owner = nodes.owner(room);
            Routed {
                room_id: room,
                owner: Owner {
                    id: &owner.id,
                    addr: &owner.addr,
                },
                ranked: nodes.ranked(room).iter().map(|n| n.id.as_str()).collect(),
            }
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn dead_letter(cfg: &Config, op: DeadLetterOp) -> Result<()> {
    use roomgate::sink::{self, dead_letter, writer};
    use roomgate::wal::Row;
    let dir = roomgate::wal::dead_letter_dir(&cfg.storage.dir);
    let batches = dead_letter::list(&dir)
        .with_context(|| format!("read dead-letter dir {}", dir.display()))?;
    if batches.is_empty() {
        println!("no set-aside batches in {}", dir.display());
        return Ok(());
    }
    let client = sink::client(&cfg.clickhouse);
    let timeout = std::time::Duration::from_millis(cfg.clickhouse.insert_timeout_ms);
    let mut failed = 0;
    for b in &batches {
        if matches!(op, DeadLetterOp::List) {
            println!(
                "{}  table={} rows={}{}",
                b.token,
                b.table,
                b.rows.len(),
                if b.corrupt_bytes > 0 {
                    "  (has corrupt bytes)"
                } else {
                    ""
                }
            );
            continue;
        }
        /// The batch's rows as table `T`'s (the batch holds one table).
        fn typed<T: sink::TableRow>(rows: &[Row]) -> Vec<T> {
            rows.iter().cloned().filter_map(T::from_row).collect()
        }
        use roomgate::table::Table;
        let (rows, token) = (&b.rows, &b.token);
        let result = match b.table {
            Table::Chat => {
                writer::insert(&client, &typed::<sink::ChatRow>(rows), token, timeout).await
            }
            Table::Likes => {
                writer::insert(&client, &typed::<sink::LikeRow>(rows), token, timeout).await
            }
            Table::Leads => {
                writer::insert(&client, &typed::<sink::LeadRow>(rows), token, timeout).await
            }
            Table::Sessions => {
                writer::insert(&client, &typed::<sink::SessionRow>(rows), token, timeout).await
            }
            Table::Moderation => {
                writer::insert(&client, &typed::<sink::ModerationRow>(rows), token, timeout).await
            }
            Table::Withdrawals => {
                writer::insert(&client, &typed::<sink::WithdrawalRow>(rows), token, timeout).await
            }
            Table::LikeViewers => {
                writer::insert(&client, &typed::<sink::LikeViewerRow>(rows), token, timeout).await
            }
        };
        match result {
            Ok(()) => {
                dead_letter::remove(b)?;
                println!(
                    "replayed {} ({} rows into {})",
                    b.token,
                    b.rows.len(),
                    b.table
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("still rejected: {} ({}): {e}", b.token, b.table);
            }
        }
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} batches still rejected; they stay in {}",
            batches.len(),
            dir.display()
        );
    }
    Ok(())
}
