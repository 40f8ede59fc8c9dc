# Local ClickHouse for development and tests (no Docker): ClickHouse 26.9
# embedded in the PyPI package chdb-core, run by scripts/clickhouse.py.
# Included by the main Makefile:  include scripts/clickhouse.mk
#
#   make clickhouse-up                          # http://127.0.0.1:8123 (+ /play, /dashboard)
#   make clickhouse-up CLICKHOUSE_HTTP_PORT=18123 CLICKHOUSE_DATA=/tmp/ch-test
#   make clickhouse-down [CLICKHOUSE_HTTP_PORT=...]
#
# CLICKHOUSE_TCP_PORT (native protocol) defaults to CLICKHOUSE_HTTP_PORT + 877
# (8123 -> 9000); set it to override.
#
# With users, roles, column grants and row policies (docs/ACCESS.md):
#
#   target/debug/roomgate --config roomgate.toml grants --format users-xml --passwords pw > build/users.xml
#   make clickhouse-up CLICKHOUSE_USERS_XML=build/users.xml     # `default` stays, with access management
#
# A sharded cluster (one server per shard, every one with the same
# <remote_servers> entry CLUSTER_NAME): shard i on HTTP port
# CLUSTER_HTTP_BASE + i - 1, native TCP on that + 877, data in
# build/clickhouse/cluster-<port>.
#
#   make cluster-up                             # 2 shards: http://127.0.0.1:18130, :18131
#   make cluster-up CLUSTER_SHARDS=3
#   make cluster-down

CLICKHOUSE_HTTP_PORT ?= 8123
CLICKHOUSE_DATA ?= $(CURDIR)/build/clickhouse/data
export CLICKHOUSE_HTTP_PORT
export CLICKHOUSE_DATA
ifneq ($(strip $(CLICKHOUSE_TCP_PORT)),)
export CLICKHOUSE_TCP_PORT
endif
ifneq ($(strip $(CLICKHOUSE_USERS_XML)),)
export CLICKHOUSE_USERS_XML
endif

CLUSTER_SHARDS ?= 2
CLUSTER_HTTP_BASE ?= 18130
CLUSTER_NAME ?= roomgate
export CLUSTER_SHARDS
export CLUSTER_HTTP_BASE
export CLUSTER_NAME

CLICKHOUSE_MK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
CLICKHOUSE_PY := python3 $(CLICKHOUSE_MK_DIR)/clickhouse.py

.PHONY: venv clickhouse-up clickhouse-down clickhouse-status cluster-up cluster-down cluster-status

venv: ## create build/venv with chdb-core (embedded ClickHouse); fast no-op when done
	@$(CLICKHOUSE_MK_DIR)/ensure-venv.sh

clickhouse-up: venv ## start a local ClickHouse (port CLICKHOUSE_HTTP_PORT=8123, data CLICKHOUSE_DATA) and wait until ready
	@$(CLICKHOUSE_PY) up

clickhouse-down: ## stop the local ClickHouse started by clickhouse-up on CLICKHOUSE_HTTP_PORT (no-op if none)
	@$(CLICKHOUSE_PY) down

clickhouse-status: ## show the local ClickHouse server(s) started by clickhouse-up
	@$(CLICKHOUSE_PY) status

cluster-up: venv ## start a local sharded ClickHouse cluster: CLUSTER_SHARDS (2) servers from HTTP port CLUSTER_HTTP_BASE (18130), cluster CLUSTER_NAME (roomgate)
	@$(CLICKHOUSE_PY) cluster-up

cluster-down: ## stop the servers of the cluster started by cluster-up
	@$(CLICKHOUSE_PY) cluster-down

cluster-status: ## show the cluster's servers and what each sees of the cluster
	@$(CLICKHOUSE_PY) cluster-status
