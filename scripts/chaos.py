#!/usr/bin/env python3
"""Chaos: a lead-heavy load while the engine is killed (SIGKILL), stopped
(SIGTERM) and restarted, and ClickHouse is stopped and started; then verify
what was stored against what the viewers were told.

  python3 scripts/chaos.py            # make chaos: 3 x kill -9, SIGTERM, ClickHouse down 60 s
  python3 scripts/chaos.py --quick    # make test: 2 x kill -9, SIGTERM, ClickHouse down 15 s
  python3 scripts/chaos.py --outage 60 --bin-dir target/release
                                      # make outage: only a 60 s ClickHouse outage; prints
                                      # lead ack p99 and drain time / outage time

Checks (roomgate-loadgen verify, scenario loadgen/scenarios/chaos.toml):
every acked lead stored exactly once with its acked verdict; no lead and no
chat message stored twice; accepted chat stored = accepted acks; like taps
stored + rate limited <= sent, within the documented loss; nothing unacked
at the end (viewers reconnect and resend). Exit 0 only if all pass and every
SIGTERM'd engine exited 0.
"""

import argparse
import json
import os
import urllib.request
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEV_ENV, die, fresh_dir, log_tail, wait_http  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def clickhouse(cmd, port, data):
    env = dict(os.environ, CLICKHOUSE_HTTP_PORT=str(port), CLICKHOUSE_DATA=data)
    env.pop("CLICKHOUSE_TCP_PORT", None)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "clickhouse.py"), cmd],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        die(f"chaos: clickhouse {cmd} on {port} failed: {r.stdout}{r.stderr}")


class Engine:
    def __init__(self, args, work, db, url):
        self.cmd = [
            os.path.join(args.bin_dir, "roomgate"),
            "--listen", args.listen, "--admin", args.admin,
            "--clickhouse-url", url, "--database", db,
            "--dev-cert", os.path.join(work, "cert"),
            "--data-dir", fresh_dir(os.path.join(work, "data")),
            "--config", os.path.join(ROOT, "loadgen", "engine-loadtest.toml"),
        ]
        self.log_path = os.path.join(work, "engine.log")
        open(self.log_path, "w").close()
        self.admin = args.admin
        self.proc = None
        self.starts = 0

    def start(self):
        log = open(self.log_path, "a")
        log.write(f"\n===== chaos: engine start #{self.starts + 1} =====\n")
        log.flush()
        env = dict(os.environ)
        env.update(DEV_ENV)
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.starts += 1
        wait_http(f"http://{self.admin}/livez", proc=self.proc, timeout=120)

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def sigterm(self, timeout=40.0):
        t0 = time.time()
        self.proc.terminate()
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9, time.time() - t0
        return rc, time.time() - t0


def backlog(admin):
    """roomgate_log_backlog_records from the engine's /metrics (None if down)."""
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("roomgate_log_backlog_records "):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def measure_drain(admin, note, baseline, limit=600.0):
    """After ClickHouse returns: seconds until the log's backlog is back to
    its level before the outage."""
    t0 = time.time()
    peak = 0
    while time.time() - t0 < limit:
        b = backlog(admin)
        if b is not None:
            peak = max(peak, b)
            if b <= baseline:
                took = time.time() - t0
                note(f"backlog drained in {took:.1f} s (peak {peak} records)")
                return {"seconds": took, "peak": peak}
        time.sleep(0.25)
    note("backlog did not drain")
    return {"seconds": None, "peak": peak}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the short version run by make test")
    p.add_argument("--outage", type=float, default=0,
                   help="only stop ClickHouse for this many seconds (no kills); measure the drain")
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "debug"))
    p.add_argument("--scenario", default=os.path.join(ROOT, "loadgen", "scenarios", "chaos.toml"),
                   help="loadgen scenario (default loadgen/scenarios/chaos.toml)")
    p.add_argument("--clickhouse-port", type=int, default=int(os.environ.get("CHAOS_CLICKHOUSE_PORT", "18125")))
    p.add_argument("--listen", default="127.0.0.1:14533")
    p.add_argument("--admin", default="127.0.0.1:19564")
    args = p.parse_args()

    if args.outage:
        # Load before, during and after the outage; the drain competes with
        # new rows, as it would in production.
        duration, kills, outage = int(20 + 3 * args.outage), [], (20, args.outage)
        sigterm_at = None
    elif args.quick:
        duration, kills, outage = 50, [8, 16], (24, 15)
        sigterm_at = 42
    else:
        duration, kills, outage = 180, [15, 35, 55], (95, 60)
        sigterm_at = 75

    work = os.path.join(ROOT, "build", "outage" if args.outage else "chaos" + ("-quick" if args.quick else ""))
    os.makedirs(work, exist_ok=True)
    port = args.clickhouse_port
    ch_data = os.path.join(ROOT, "build", "clickhouse", f"chaos-data-{port}")
    url = f"http://127.0.0.1:{port}"
    db = f"chaos_{int(time.time() * 1000)}"
    summary = os.path.join(work, "summary.json")
    for f in (summary,):
        if os.path.exists(f):
            os.remove(f)

    clickhouse("up", port, ch_data)
    engine = Engine(args, work, db, url)
    events = []

    def note(msg):
        events.append((time.time(), msg))
        print(f"chaos [{time.time() - t_start:6.1f}s] {msg}", flush=True)

    t_start = time.time()
    engine.start()
    note("engine started")
    env = dict(os.environ)
    env.update(DEV_ENV)
    lg_cmd = [
        os.path.join(args.bin_dir, "roomgate-loadgen"),
        "--scenario", args.scenario,
        "--server", args.listen, "--cert", os.path.join(work, "cert", "cert.pem"),
        "--duration", str(duration),
        "--drain-timeout", "90", "--summary-json", summary,
    ]
    if kills:
        # Notice a killed engine within seconds.
        lg_cmd += ["--idle-timeout", "3", "--keep-alive", "1"]
    print("chaos: " + " ".join(lg_cmd), flush=True)
    lg_log = open(os.path.join(work, "loadgen.log"), "w")
    lg = subprocess.Popen(lg_cmd, stdout=lg_log, stderr=subprocess.STDOUT, env=env)

    sigterm_results = []
    plan = sorted([(t, "kill") for t in kills] + [(outage[0], "ch_down")]
                  + ([(sigterm_at, "term")] if sigterm_at is not None else []))
    drain = {}
    failures = []
    try:
        for at, what in plan:
            while time.time() - t_start < at:
                if lg.poll() is not None:
                    break
                time.sleep(0.1)
            if what == "kill":
                engine.kill9()
                note("engine killed (SIGKILL)")
                time.sleep(1)
                engine.start()
                note("engine restarted")
            elif what == "term":
                rc, took = engine.sigterm()
                sigterm_results.append((rc, took))
                note(f"engine stopped by SIGTERM: exit {rc} after {took:.1f} s")
                if rc != 0:
                    failures.append(f"SIGTERM exit {rc}")
                engine.start()
                note("engine restarted")
            elif what == "ch_down":
                if args.outage:
                    # The backlog under steady load is never 0 (batches are
                    # open up to [batch] max_age_ms): "drained" means back
                    # to the level seen before the outage.
                    samples = []
                    for _ in range(16):
                        b = backlog(args.admin)
                        if b is not None:
                            samples.append(b)
                        time.sleep(0.25)
                    drain["baseline"] = max(samples or [0])
                    note(f"backlog before the outage: up to {drain['baseline']} records")
                clickhouse("down", port, ch_data)
                down_at = time.time()
                note(f"ClickHouse stopped for {outage[1]} s")
                while time.time() - down_at < outage[1]:
                    time.sleep(0.2)
                clickhouse("up", port, ch_data)
                note("ClickHouse started")
                if args.outage:
                    drain.update(measure_drain(args.admin, note, drain["baseline"]))
        rc = lg.wait(timeout=duration + 300)
        note(f"loadgen finished: exit {rc}")
        if rc != 0:
            failures.append(f"loadgen exit {rc}")
        rc, took = engine.sigterm(timeout=60)
        note(f"final SIGTERM: exit {rc} after {took:.1f} s")
        if rc != 0:
            failures.append(f"final SIGTERM exit {rc}")
        # Whatever the final flush left in the log goes in on a last start.
        engine.start()
        rc, took = engine.sigterm(timeout=60)
        note(f"last start + SIGTERM (drains the log): exit {rc}")
        if rc != 0:
            failures.append(f"last SIGTERM exit {rc}")
    finally:
        if lg.poll() is None:
            lg.kill()
        if engine.proc and engine.proc.poll() is None:
            engine.proc.kill()

    print(open(os.path.join(work, "loadgen.log")).read()[-6000:])
    v = subprocess.run([
        os.path.join(args.bin_dir, "roomgate-loadgen"), "verify",
        "--summary-json", summary, "--clickhouse-url", url, "--database", db,
    ], env=env)
    clickhouse("down", port, ch_data)
    if v.returncode != 0:
        failures.append(f"verify exit {v.returncode}")
    if failures:
        die("chaos: FAILED: " + "; ".join(failures) + f"\nengine log: {engine.log_path}\n" + log_tail(engine.log_path))
    if args.outage:
        with open(summary) as f:
            lat = json.load(f)["latency_us"]
        took = drain.get("seconds")
        ratio = f"{took / args.outage:.2f}" if took is not None else "n/a"
        print(f"outage: ClickHouse down {args.outage:.0f} s; backlog peak {drain.get('peak', 0)} records; "
              f"drained in {took if took is None else round(took, 1)} s after it returned "
              f"(drain / outage = {ratio}); whole run: lead ack p50 {lat['lead']['p50'] / 1000:.2f} ms "
              f"p99 {lat['lead']['p99'] / 1000:.2f} ms ({lat['lead']['count']} leads), "
              f"chat ack p99 {lat['chat']['p99'] / 1000:.2f} ms")
    print(f"chaos: ok ({engine.starts} engine starts, database {db})")


if __name__ == "__main__":
    main()
