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

CLICKHOUSE_HTTP_PORT ?= 8123
CLICKHOUSE_DATA ?= $(CURDIR)/build/clickhouse/data
export CLICKHOUSE_HTTP_PORT
export CLICKHOUSE_DATA
ifneq ($(strip $(CLICKHOUSE_TCP_PORT)),)
export CLICKHOUSE_TCP_PORT
endif

CLICKHOUSE_MK_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
CLICKHOUSE_PY := python3 $(CLICKHOUSE_MK_DIR)/clickhouse.py

.PHONY: venv clickhouse-up clickhouse-down clickhouse-status

venv: ## create build/venv with chdb-core (embedded ClickHouse); fast no-op when done
	@$(CLICKHOUSE_MK_DIR)/ensure-venv.sh

clickhouse-up: venv ## start a local ClickHouse (port CLICKHOUSE_HTTP_PORT=8123, data CLICKHOUSE_DATA) and wait until ready
	@$(CLICKHOUSE_PY) up

clickhouse-down: ## stop the local ClickHouse started by clickhouse-up on CLICKHOUSE_HTTP_PORT (no-op if none)
	@$(CLICKHOUSE_PY) down

clickhouse-status: ## show the local ClickHouse server(s) started by clickhouse-up
	@$(CLICKHOUSE_PY) status
