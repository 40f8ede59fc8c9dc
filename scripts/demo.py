#!/usr/bin/env python3
"""`make demo`: a local ClickHouse, the engine and a 10,000-viewer room.

Environment:
  DEMO_VIEWERS   viewers in the room (default 10000)
  DEMO_DURATION  seconds of load (default 60)
  KEEP_RUNNING=1 leave the engine and ClickHouse running afterwards
  CLICKHOUSE_HTTP_PORT  ClickHouse HTTP port (default 8123)
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEV_ENV, ch_query, die, log_tail, start, stop, wait_http  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
WORK = os.path.join(ROOT, "build", "demo")
LISTEN = "127.0.0.1:4433"
ADMIN = "127.0.0.1:9464"


def step(msg):
    print(f"\n==> {msg}", flush=True)


def main():
    port = os.environ.get("CLICKHOUSE_HTTP_PORT", "8123")
    url = f"http://127.0.0.1:{port}"
    viewers = os.environ.get("DEMO_VIEWERS", "10000")
    duration = os.environ.get("DEMO_DURATION", "60")
    keep = os.environ.get("KEEP_RUNNING") == "1"
    os.makedirs(WORK, exist_ok=True)
    ch = [sys.executable, os.path.join(ROOT, "scripts", "clickhouse.py")]

    step(f"ClickHouse 26.9 (chdb-core) on {url}")
    was_running = subprocess.run(ch + ["status"], capture_output=True).returncode == 0
    if subprocess.run(ch + ["up"]).returncode != 0:
        die("demo: could not start ClickHouse (is the port taken? set CLICKHOUSE_HTTP_PORT)")

    env = dict(os.environ)
    env.update(DEV_ENV)
    step("schema migrations (roomgate migrate)")
    if subprocess.run([os.path.join(BIN, "roomgate"), "--clickhouse-url", url, "migrate"], env=env).returncode != 0:
        die("demo: migrations failed")

    started = time.time()
    step(f"engine: QUIC on {LISTEN}, admin on http://{ADMIN}/metrics")
    engine_log = os.path.join(WORK, "engine.log")
    engine = start([os.path.join(BIN, "roomgate"), "--listen", LISTEN, "--admin", ADMIN,
                    "--clickhouse-url", url, "--dev-cert", os.path.join(WORK, "cert"),
                    "--data-dir", os.path.join(WORK, "data"),
                    "--config", os.path.join(ROOT, "loadgen", "engine-loadtest.toml")], engine_log)
    try:
        wait_http(f"http://{ADMIN}/livez", proc=engine)
        step(f"loadgen: 1 room x {viewers} viewers for {duration}s")
        summary = os.path.join(WORK, "summary.json")
        lg = subprocess.run([
            os.path.join(BIN, "roomgate-loadgen"), "--server", LISTEN,
            "--cert", os.path.join(WORK, "cert", "cert.pem"),
            "--rooms", "1", "--viewers", viewers, "--duration", duration, "--ramp", "15",
            # Below the room-wide chat cap (40 msg/s), so a healthy room
            # shows no `busy`; raise it to watch the cap at work.
            "--chat-rate", os.environ.get("DEMO_CHAT_RATE", "30"),
            "--summary-json", summary,
        ], env=env)
        if lg.returncode != 0:
            print(log_tail(engine_log), file=sys.stderr)
            die(f"demo: loadgen failed ({lg.returncode})")
    except BaseException:
        stop(engine)
        raise

    if not keep:
        step("stopping the engine (SIGTERM: drain queues, flush batches)")
        rc = stop(engine)
        print(f"engine exited with {rc}; log: {engine_log}")
        if rc != 0:
            print(log_tail(engine_log), file=sys.stderr)

    since = int(started) - 1
    step("what this run wrote to ClickHouse (database roomgate; earlier runs stay there too)")
    print(ch_query(url, f"""
        SELECT 'chat_messages' AS table, count() AS rows FROM roomgate.chat_messages WHERE ts >= {since}
        UNION ALL SELECT 'like_ticks (rows)', count() FROM roomgate.like_ticks WHERE ts >= {since}
        UNION ALL SELECT 'like taps (sum)', sum(taps) FROM roomgate.like_ticks WHERE ts >= {since}
        UNION ALL SELECT 'leads', count() FROM roomgate.leads WHERE ts >= {since}
        UNION ALL SELECT 'sessions', count() FROM roomgate.sessions WHERE ts >= {since}
        UNION ALL SELECT 'moderation_events', count() FROM roomgate.moderation_events WHERE ts >= {since}
        FORMAT PrettyCompactMonoBlock"""))
    print("room funnel per minute (roomgate.room_minute):")
    print(ch_query(url, f"""
        SELECT room_id, minute, sum(joins) AS joins, sum(chat_messages) AS chat,
               sum(like_taps) AS likes, sum(leads) AS leads, sum(rejects) AS rejects
        FROM roomgate.room_minute WHERE minute >= toStartOfMinute(toDateTime({since}))
        GROUP BY room_id, minute ORDER BY room_id, minute DESC LIMIT 5
        FORMAT PrettyCompactMonoBlock"""))
    print("a few leads, as analysts see them (no PII in clear):")
    print(ch_query(url, """
        SELECT room_id, ts, viewer_id, verdict, phone_masked, left(phone_hmac, 12) AS phone_hmac
        FROM roomgate.leads ORDER BY ts DESC LIMIT 3 FORMAT PrettyCompactMonoBlock"""))

    step("where to look")
    print(f"  SQL console:        {url}/play")
    print(f"  ClickHouse charts:  {url}/dashboard")
    print(f"  loadgen summary:    {os.path.join(WORK, 'summary.json')}")
    print(f"  engine log:         {engine_log}")
    if keep:
        print(f"  engine metrics:     http://{ADMIN}/metrics  (engine pid {engine.pid}; stop: kill {engine.pid})")
        print("  ClickHouse stays up: make clickhouse-down")
    elif not was_running:
        subprocess.run(ch + ["down"])
        print("  ClickHouse stopped (KEEP_RUNNING=1 keeps everything up; data persists in build/clickhouse/data)")
    else:
        print("  ClickHouse was already running and is left running.")


if __name__ == "__main__":
    main()
