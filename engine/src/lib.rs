//! roomgate: interaction and lead ingestion for live-stream rooms.
//!
//! Viewers' apps speak QUIC to the gate; events flow one way through sharded
//! lock-free queues into per-shard workers, where the guard decides on each
//! one, and from there into batchers that write ClickHouse.
//!
//! # Layout
//!
//! Sans-IO core (no sockets, no clocks, no threads; tested deterministically):
//! - [`wire`]: frame types, length-prefixed rkyv codec with validation,
//!   tickets, reason and close codes. Shared with the loadgen.
//! - [`guard`]: every accept / reject decision and its bounded state.
//! - [`batch`]: the sealing policy for one table (rows / bytes / age).
//! - [`event`]: the event handed from the gate to a shard.
//! - [`pii`]: phone normalisation for storage, HMAC, masking, AEAD encryption.
//! - [`table`]: the tables the engine writes, as one enum.
//! - [`route`]: which engine node owns a room (rendezvous hashing).
//! - [`access`]: who sees what in ClickHouse: roles, column grants and
//!   row policies as SQL and as users.xml (`roomgate grants`).
//! - [`wal::codec`], [`wal::recovery`]: log records and what a restart
//!   redoes.
//! - [`shard::core`]: a shard's decisions: `handle(now, envelope)` /
//!   `poll_output()` (rows + acks for the log, frames, hops, counters).
//!
//! I/O layer:
//! - [`gate`]: the quinn server, TLS, tickets, per-connection read loop.
//! - [`shard`]: N bounded queues and one worker thread per shard, driving
//!   its [`shard::core::ShardCore`].
//! - [`wal`]: the write-ahead log: group commit (the ack's durability
//!   point), segments, readers, deletion of committed segments.
//! - [`sink`]: ClickHouse rows, migrations (one server, or a sharded
//!   cluster's layout written from the same files) and the per-table
//!   writers, which read the log.
//! - [`admin`]: the loopback HTTP admin port (`/metrics`, `/livez`, `/readyz`).
//! - [`delivery`]: the merchant API (lead delivery, pull: decrypted
//!   leads after an opaque cursor, each delivery audited in `lead_audit`).
//! - [`merchants`]: the room → merchant mapping in ClickHouse (admin API,
//!   `[[rooms]] merchant`).
//! - [`facts`]: with several nodes, reads every node's lead facts from
//!   ClickHouse for the cross-room lead rules and hands them to the shards.
//! - [`metrics`]: every counter, in one place.
//! - [`config`]: the TOML configuration, validated once.
//! - [`engine`]: wires the pieces together and shuts them down in order.

pub mod access;
pub mod admin;
pub mod batch;
pub mod config;
pub mod delivery;
pub mod engine;
pub mod erase;
pub mod event;
pub mod facts;
pub mod gate;
pub mod guard;
pub mod merchants;
pub mod metrics;
pub mod pii;
pub mod route;
pub mod shard;
pub mod sink;
pub mod table;
pub mod wal;
pub mod wire;

/// Current wall-clock time as Unix milliseconds (the I/O layer's clock).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
