//! Integration tests: the engine in-process, real QUIC over loopback, a real
//! ClickHouse started through the project's own launcher
//! (`scripts/clickhouse.py`), a fresh database per test.

mod abuse;
mod client;
mod crash;
mod facts;
mod flood;
mod guard;
mod harness;
mod outage;
mod pace;
mod pii;
mod protocol;
mod routing;
// Steering is Linux's (a reuse-port BPF program).
#[cfg(target_os = "linux")]
mod steering;
mod storage;
mod tickets;
