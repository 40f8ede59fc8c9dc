#!/usr/bin/env python3
"""Chaos: a lead-heavy load while the engine is killed (SIGKILL), stopped
(SIGTERM) and restarted, and ClickHouse is stopped and started; then verify
what was stored against what the viewers were told.

  python3 scripts/chaos.py            # make chaos: 3 x kill -9, SIGTERM, ClickHouse down 60 s
  python3 scripts/chaos.py --quick    # make test: 2 x kill -9, SIGTERM, ClickHouse down 15 s

Checks (roomgate-loadgen verify, scenario loadgen/scenarios/chaos.toml):
every acked lead stored exactly once with its acked verdict; no lead and no
chat message stored twice; accepted chat stored = accepted acks; like taps
stored + rate limited <= sent, within the documented loss; nothing unacked
at the end (viewers reconnect and resend). Exit 0 only if all pass and every
SIGTERM'd engine exited 0.
"""

import argparse
import os
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
        wait_http(f"http://{self.admin}/healthz", proc=self.proc, timeout=120)

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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the short version run by make test")
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "debug"))
    p.add_argument("--clickhouse-port", type=int, default=int(os.environ.get("CHAOS_CLICKHOUSE_PORT", "18125")))
    p.add_argument("--listen", default="127.0.0.1:14533")
    p.add_argument("--admin", default="127.0.0.1:19564")
    args = p.parse_args()

    if args.quick:
        duration, kills, outage = 50, [8, 16], (24, 15)
        sigterm_at = 42
    else:
        duration, kills, outage = 180, [15, 35, 55], (95, 60)
        sigterm_at = 75

    work = os.path.join(ROOT, "build", "chaos" + ("-quick" if args.quick else ""))
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
        "--scenario", os.path.join(ROOT, "loadgen", "scenarios", "chaos.toml"),
        "--server", args.listen, "--cert", os.path.join(work, "cert", "cert.pem"),
        "--duration", str(duration),
        # Notice a killed engine within seconds, and keep trying for a while.
        "--idle-timeout", "3", "--keep-alive", "1", "--drain-timeout", "90",
        "--summary-json", summary,
    ]
    print("chaos: " + " ".join(lg_cmd), flush=True)
    lg_log = open(os.path.join(work, "loadgen.log"), "w")
    lg = subprocess.Popen(lg_cmd, stdout=lg_log, stderr=subprocess.STDOUT, env=env)

    sigterm_results = []
    plan = sorted([(t, "kill") for t in kills] + [(sigterm_at, "term"), (outage[0], "ch_down")])
    ch_up_at = outage[0] + outage[1]
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
                clickhouse("down", port, ch_data)
                note(f"ClickHouse stopped for {outage[1]} s")
                while time.time() - t_start < ch_up_at:
                    time.sleep(0.2)
                clickhouse("up", port, ch_data)
                note("ClickHouse started")
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
    print(f"chaos: ok ({engine.starts} engine starts, database {db})")


if __name__ == "__main__":
    main()
