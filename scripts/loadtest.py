#!/usr/bin/env python3
"""`make loadtest SCENARIO=...`: run a loadgen scenario against a local
release engine and ClickHouse, verify it, write an HTML report.

Steps: start the dev ClickHouse (scripts/clickhouse.py up, port
CLICKHOUSE_HTTP_PORT, default 8123; left running if it already was), start
the release engine with loadgen/engine-loadtest.toml on a fresh database,
run `roomgate-loadgen --scenario SCENARIO --verify --report-html ...`, stop
the engine (SIGTERM: it drains and flushes), stop ClickHouse if this script
started it. Exits with the loadgen's status: 0 when verify passed, 3 when a
check failed, 1 on errors.

Output in build/loadtest/<scenario>/: summary.json, summary.leads.jsonl,
report.html, engine.log.

Environment:
  LOADGEN_ARGS          extra loadgen flags, e.g. "--viewers 2000 --duration 30"
  CLICKHOUSE_HTTP_PORT  ClickHouse HTTP port (default 8123)
  KEEP_RUNNING=1        leave ClickHouse running even if this script started it
"""

import argparse
import os
import re
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEV_ENV, die, fresh_dir, log_tail, start, stop, wait_http  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def step(msg):
    print(f"\n==> {msg}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default=os.path.join("loadgen", "scenarios", "steady-10k.toml"))
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    p.add_argument("--listen", default="127.0.0.1:24433", help="engine QUIC address")
    p.add_argument("--admin", default="127.0.0.1:29464", help="engine admin address")
    p.add_argument("--engine-cpus", metavar="LIST",
                   help="run the engine on these CPUs only (taskset list, e.g. 0): on a small machine, "
                        "so that the loadgen (--loadgen-cpus) can offer more than the engine sustains")
    p.add_argument("--loadgen-cpus", metavar="LIST", help="run the loadgen on these CPUs only (e.g. 1)")
    args = p.parse_args()

    scenario = os.path.abspath(args.scenario)
    if not os.path.exists(scenario):
        die(f"loadtest: scenario {args.scenario} not found")
    name = re.sub(r"[^A-Za-z0-9_]", "_", os.path.splitext(os.path.basename(scenario))[0])
    work = os.path.join(ROOT, "build", "loadtest", name)
    os.makedirs(work, exist_ok=True)
    port = os.environ.get("CLICKHOUSE_HTTP_PORT", "8123")
    url = f"http://127.0.0.1:{port}"
    db = f"loadtest_{name}_{int(time.time() * 1000)}"
    ch = [sys.executable, os.path.join(ROOT, "scripts", "clickhouse.py")]

    step(f"ClickHouse on {url}")
    was_running = subprocess.run(ch + ["status"], capture_output=True).returncode == 0
    if subprocess.run(ch + ["up"], stdout=subprocess.DEVNULL).returncode != 0:
        die("loadtest: could not start ClickHouse (is the port taken? set CLICKHOUSE_HTTP_PORT)")

    summary = os.path.join(work, "summary.json")
    report = os.path.join(work, "report.html")
    engine_log = os.path.join(work, "engine.log")
    for f in (summary, report):
        if os.path.exists(f):
            os.remove(f)

    step(f"engine (release): QUIC {args.listen}, database {db}")
    def pinned(cpus):
        return ["taskset", "-c", cpus] if cpus else []

    engine = start(pinned(args.engine_cpus) + [
        os.path.join(args.bin_dir, "roomgate"),
        "--listen", args.listen, "--admin", args.admin,
        "--clickhouse-url", url, "--database", db,
        "--dev-cert", os.path.join(work, "cert"),
        # A fresh database per run, so a fresh log too: a log's rows belong
        # to the database it was written for.
        "--data-dir", fresh_dir(os.path.join(work, "data")),
        "--config", os.path.join(ROOT, "loadgen", "engine-loadtest.toml"),
    ], engine_log)
    rc = 1
    try:
        wait_http(f"http://{args.admin}/livez", proc=engine)
        cmd = pinned(args.loadgen_cpus) + [
            os.path.join(args.bin_dir, "roomgate-loadgen"),
            "--server", args.listen, "--cert", os.path.join(work, "cert", "cert.pem"),
            "--scenario", scenario,
            "--summary-json", summary, "--report-html", report,
            "--verify", "--clickhouse-url", url, "--database", db,
        ] + shlex.split(os.environ.get("LOADGEN_ARGS", ""))
        step("loadgen: " + " ".join(shlex.quote(c) for c in cmd))
        env = dict(os.environ)
        env.update(DEV_ENV)
        rc = subprocess.run(cmd, env=env).returncode
    finally:
        step("stopping the engine (SIGTERM: drain queues, flush batches)")
        erc = stop(engine)
        print(f"engine exited with {erc}; log: {engine_log}")
        if erc != 0:
            print(log_tail(engine_log), file=sys.stderr)
        if not was_running and os.environ.get("KEEP_RUNNING") != "1":
            subprocess.run(ch + ["down"], stdout=subprocess.DEVNULL)
            print("ClickHouse stopped (KEEP_RUNNING=1 keeps it up)")
    if rc == 0 and erc != 0:
        rc = 1

    step("results")
    print(f"  summary:  {summary}")
    print(f"  report:   {report}")
    print(f"  database: {db} on {url}")
    verdict = {0: "verify PASSED", 3: "verify FAILED"}.get(rc, f"error (exit {rc})")
    print(f"loadtest: {verdict}")
    sys.exit(rc)


if __name__ == "__main__":
    main()
