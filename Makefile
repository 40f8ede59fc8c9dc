# roomgate — every target CI runs is here; `make help` lists them.
#
#   make demo    build, start a local ClickHouse + engine + a 10,000-viewer room
#   make test    everything CI checks (.ci/run calls it)

SHELL := /bin/bash
CARGO ?= cargo
# The integration tests and the end-to-end test use their own ClickHouse
# ports so they never touch a demo or development server on 8123.
TEST_CLICKHOUSE_PORT ?= 18123
export ROOMGATE_TEST_CLICKHOUSE_PORT := $(TEST_CLICKHOUSE_PORT)

# Property tests run from a fixed seed, so `make test` is deterministic: a
# failure reproduces on every run and machine. Explore new cases with
# `make unit PROPTEST_RNG_SEED=$$RANDOM` (and add what fails as a unit test).
PROPTEST_RNG_SEED ?= 20261203
export PROPTEST_RNG_SEED

include scripts/clickhouse.mk

.DEFAULT_GOAL := help
.PHONY: help build build-release demo test fmt-check lint unit it cluster-test grants-test delivery-test webhook-test dashboards-test cluster-bench e2e bench bench-check clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## debug build of the workspace (engine, loadgen, benches)
	$(CARGO) build --workspace --all-targets --locked

build-release: ## release build of roomgate and roomgate-loadgen
	$(CARGO) build --release --locked -p roomgate -p roomgate-loadgen

demo: build-release venv ## start ClickHouse + engine, run a 10,000-viewer room for ~60 s, print what happened (KEEP_RUNNING=1 keeps it up)
	@python3 scripts/demo.py

test: venv fmt-check lint unit it cluster-test grants-test delivery-test webhook-test dashboards-test loadgen-it bench-check e2e chaos-quick failover-quick fuzz-quick ## everything CI checks
	@echo "make test: all checks passed"

fmt-check: ## rustfmt, check only
	$(CARGO) fmt --all -- --check

lint: ## clippy on every target, warnings are errors
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit: ## unit and property tests (no network)
	$(CARGO) test --workspace --lib --bins --locked

it: venv ## integration tests: real QUIC + real ClickHouse (started on TEST_CLICKHOUSE_PORT)
	@CLICKHOUSE_HTTP_PORT=$(TEST_CLICKHOUSE_PORT) CLICKHOUSE_DATA=$(CURDIR)/build/clickhouse/test-data-$(TEST_CLICKHOUSE_PORT) python3 scripts/clickhouse.py up >/dev/null
	$(CARGO) test -p roomgate --test it --locked

cluster-test: venv ## the engine against a local sharded cluster (make cluster-up): exact counts through Distributed, rows on their shards, a shard down 15 s under load; stops the cluster after
	@python3 scripts/clickhouse.py cluster-up >/dev/null
	$(CARGO) test -p roomgate --test cluster --locked; rc=$$?; python3 scripts/clickhouse.py cluster-down >/dev/null; exit $$rc

# Its own ClickHouse: users are read at start, so the test restarts it with
# the users.xml it generates (`roomgate grants`).
GRANTS_CLICKHOUSE_PORT ?= 18160
grants-test: venv ## who sees what: ClickHouse (port GRANTS_CLICKHOUSE_PORT) with `roomgate grants` users; analyst and merchants log in; stops it after
	ROOMGATE_GRANTS_CLICKHOUSE_PORT=$(GRANTS_CLICKHOUSE_PORT) $(CARGO) test -p roomgate --test grants --locked; rc=$$?; CLICKHOUSE_HTTP_PORT=$(GRANTS_CLICKHOUSE_PORT) python3 scripts/clickhouse.py down >/dev/null; exit $$rc

# Its own ClickHouse too, stopped after.
DELIVERY_CLICKHOUSE_PORT ?= 18162
delivery-test: venv ## lead delivery, pull: engine + merchant API (HTTPS) + ClickHouse (port DELIVERY_CLICKHOUSE_PORT): pages, cursor, suspect flag, isolation, 400/401/503, audit rows; stops it after
	ROOMGATE_DELIVERY_CLICKHOUSE_PORT=$(DELIVERY_CLICKHOUSE_PORT) $(CARGO) test -p roomgate --test delivery --locked; rc=$$?; CLICKHOUSE_HTTP_PORT=$(DELIVERY_CLICKHOUSE_PORT) python3 scripts/clickhouse.py down >/dev/null; exit $$rc

# Its own ClickHouse too, stopped after.
WEBHOOK_CLICKHOUSE_PORT ?= 18164
webhook-test: venv ## lead delivery, push: engine + signed webhooks to a local receiver that fails, times out and recovers + ClickHouse (port WEBHOOK_CLICKHOUSE_PORT): retries, backlog, admin retry, audit, restart; stops it after
	ROOMGATE_WEBHOOK_CLICKHOUSE_PORT=$(WEBHOOK_CLICKHOUSE_PORT) $(CARGO) test -p roomgate --test webhook --locked; rc=$$?; CLICKHOUSE_HTTP_PORT=$(WEBHOOK_CLICKHOUSE_PORT) python3 scripts/clickhouse.py down >/dev/null; exit $$rc

# Its own ClickHouse too; the script stops it (and the engine) after.
DASHBOARDS_CLICKHOUSE_PORT ?= 18166
dashboards-test: venv ## every dashboards/*.sql query and chart against a real loadgen run (debug engine + ClickHouse on DASHBOARDS_CLICKHOUSE_PORT): sane rates, views = joins, leads = the loadgen's; Grafana JSON = make_grafana.py's, every panel a tested query (~25 s)
	$(CARGO) build --locked -p roomgate -p roomgate-loadgen
	python3 scripts/dashboards_test.py --clickhouse-port $(DASHBOARDS_CLICKHOUSE_PORT) --bin-dir target/debug

cluster-bench: venv ## rows/s into the local cluster through the Distributed table vs straight to the shards' local tables, medians of 5 (BENCHMARKS.md)
	$(CARGO) build --release --locked -p roomgate-benches --bin roomgate-cluster-bench
	@python3 scripts/clickhouse.py cluster-up >/dev/null
	@target/release/roomgate-cluster-bench --urls $$(python3 scripts/clickhouse.py cluster-urls) --cluster $(CLUSTER_NAME) --reps 5 --json build/perf/cluster.json; rc=$$?; python3 scripts/clickhouse.py cluster-down >/dev/null; exit $$rc

bench-check: ## compile the criterion benches and run each once (no timing)
	$(CARGO) test -p roomgate-benches --benches --locked

e2e: venv ## end-to-end: ClickHouse + engine + loadgen (1,000 viewers), exact counts
	$(CARGO) build --locked -p roomgate -p roomgate-loadgen
	@CLICKHOUSE_HTTP_PORT=$(TEST_CLICKHOUSE_PORT) CLICKHOUSE_DATA=$(CURDIR)/build/clickhouse/test-data-$(TEST_CLICKHOUSE_PORT) python3 scripts/clickhouse.py up >/dev/null
	python3 scripts/e2e.py --clickhouse-url http://127.0.0.1:$(TEST_CLICKHOUSE_PORT) --bin-dir target/debug

.PHONY: loadgen-it loadtest chaos chaos-quick failover failover-quick outage fuzz fuzz-quick fuzz-install perf overload

# Fuzzing: cargo-fuzz on the nightly toolchain (libFuzzer + address sanitizer).
# Targets: fuzz/fuzz_targets/*.rs; committed seeds: fuzz/seeds/<target>/.
CARGO_FUZZ_VERSION ?= 0.13.2
FUZZ_SECS ?= 120
fuzz-install: ## install cargo-fuzz (pinned) unless present
	@cargo fuzz --version 2>/dev/null | grep -q "$(CARGO_FUZZ_VERSION)" || $(CARGO) install cargo-fuzz --locked --version $(CARGO_FUZZ_VERSION)

fuzz: fuzz-install ## run every fuzz target FUZZ_SECS (120) seconds; prints executions, fails on a crash
	python3 scripts/fuzz.py --secs $(FUZZ_SECS)

fuzz-quick: fuzz-install ## every fuzz target for 30 s (in make test)
	python3 scripts/fuzz.py --secs 30

OUTAGE_SECS ?= 60
OUTAGE_SCENARIO ?= loadgen/scenarios/chaos.toml
outage: build-release venv ## release engine under load (OUTAGE_SCENARIO), ClickHouse down OUTAGE_SECS (60): lead ack p99, drain time / outage
	python3 scripts/chaos.py --outage $(OUTAGE_SECS) --scenario $(OUTAGE_SCENARIO) --bin-dir target/release

chaos: build-release venv ## lead-heavy load while the engine is killed 3x, SIGTERMed, and ClickHouse stops 60 s; verify exactly-once (~5 min)
	python3 scripts/chaos.py --bin-dir target/release

chaos-quick: venv ## the short chaos run in make test: 2x kill -9, SIGTERM, ClickHouse down 15 s (debug build)
	$(CARGO) build --locked -p roomgate -p roomgate-loadgen
	python3 scripts/chaos.py --quick --bin-dir target/debug
failover: build-release venv ## two engine nodes, one killed (kill -9) and back, rooms moving between them; verify exactly-once (~2 min)
	python3 scripts/failover.py --bin-dir target/release

failover-quick: venv ## the short failover run in make test (debug build)
	$(CARGO) build --locked -p roomgate -p roomgate-loadgen
	python3 scripts/failover.py --quick --bin-dir target/debug
SCENARIO ?= loadgen/scenarios/steady-10k.toml

loadgen-it: venv ## loadgen integration test: a small scenario end to end; verify passes, then catches a missing, a duplicated and an unexpected row
	@CLICKHOUSE_HTTP_PORT=$(TEST_CLICKHOUSE_PORT) CLICKHOUSE_DATA=$(CURDIR)/build/clickhouse/test-data-$(TEST_CLICKHOUSE_PORT) python3 scripts/clickhouse.py up >/dev/null
	$(CARGO) test -p roomgate-loadgen --test it --locked

loadtest: build-release venv ## run SCENARIO (default steady-10k) against a local release engine + ClickHouse, verify it, write build/loadtest/<name>/report.html
	@python3 scripts/loadtest.py --scenario $(SCENARIO)

overload: build-release venv ## release engine + ClickHouse under loadgen/scenarios/overload.toml (chat + single-tap likes at the 2-core machine's limit; BENCHMARKS.md, Overload); verify: lead ack p99 <= 50 ms, 0 failed connections
	python3 scripts/loadtest.py --scenario loadgen/scenarios/overload.toml

perf: venv ## roomgate vs peers in one run (front door, sink, guard, memory): ratios, medians of 3; writes build/perf/perf.json (~16 min)
	$(CARGO) build --release --locked -p roomgate -p roomgate-loadgen -p roomgate-benches --bins
	python3 scripts/perf.py

bench: ## run the criterion benches (release profile; figures in BENCHMARKS.md)
	$(CARGO) bench -p roomgate-benches --benches

clean: ## remove build outputs (cargo target/ and build/)
	$(CARGO) clean
	rm -rf build
