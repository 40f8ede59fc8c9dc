#!/usr/bin/env python3
"""`make demo`: a local ClickHouse, the engine and a 10,000-viewer room; at
the end the room's merchant pulls its leads through the merchant API
(decrypted) and the audit rows the pull left are shown.

Environment:
  DEMO_VIEWERS   viewers in the room (default 10000)
  DEMO_DURATION  seconds of load (default 60)
  KEEP_RUNNING=1 leave the engine and ClickHouse running afterwards
  CLICKHOUSE_HTTP_PORT  ClickHouse HTTP port (default 8123)
"""

import json
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEV_ENV, ch_query, die, log_tail, start, stop, wait_http  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
WORK = os.path.join(ROOT, "build", "demo")
LISTEN = "127.0.0.1:4433"
ADMIN = "127.0.0.1:9464"
MERCHANT_API = "127.0.0.1:9480"
MERCHANT = "demo_shop"


def engine_config(env):
    """The load-test settings, room 1 owned by the demo merchant, and the
    merchant API (plain HTTP on loopback: development only) with a fresh
    key. Returns (config path, the key)."""
    out = subprocess.run([os.path.join(BIN, "roomgate"), "merchant-key", "--merchant", MERCHANT,
                          "--key-id", "demo"], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        die(f"demo: roomgate merchant-key failed: {out.stderr}")
    lines = [line for line in out.stdout.splitlines() if line and not line.startswith("#")]
    if len(lines) != 2:
        die(f"demo: unexpected roomgate merchant-key output: {out.stdout}")
    key, entry = lines
    with open(os.path.join(ROOT, "loadgen", "engine-loadtest.toml")) as f:
        text = f.read()
    text += (f"\n# make demo: room 1 belongs to the merchant {MERCHANT}, who pulls its leads\n"
             f"[[rooms]]\nid = 1\nmerchant = \"{MERCHANT}\"\n\n"
             f"[merchant_api]\nlisten = \"{MERCHANT_API}\"\ninsecure_http = true\n"
             f"settle_ms = 2000\nkeys = [\n  {entry},\n]\n")
    path = os.path.join(WORK, "engine.toml")
    with open(path, "w") as f:
        f.write(text)
    return path, key


def pull_leads(key, limit=3):
    """One page of the merchant's leads, as its CRM would fetch them."""
    req = urllib.request.Request(f"http://{MERCHANT_API}/v1/leads?limit={limit}",
                                 headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


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
    config, key = engine_config(env)
    step(f"engine: QUIC on {LISTEN}, admin on http://{ADMIN}/metrics, merchant API on http://{MERCHANT_API}")
    engine_log = os.path.join(WORK, "engine.log")
    engine = start([os.path.join(BIN, "roomgate"), "--listen", LISTEN, "--admin", ADMIN,
                    "--clickhouse-url", url, "--dev-cert", os.path.join(WORK, "cert"),
                    "--data-dir", os.path.join(WORK, "data"),
                    "--config", config], engine_log)
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
        step(f"the merchant {MERCHANT} pulls its leads (GET http://{MERCHANT_API}/v1/leads, decrypted)")
        # Leads are delivered once settled (settle_ms) and in ClickHouse.
        page = {"leads": []}
        for _ in range(20):
            page = pull_leads(key)
            if page["leads"]:
                break
            time.sleep(1)
        for lead in page["leads"]:
            print(f"  room {lead['room_id']} viewer {lead['viewer_id']} lead {lead['client_lead_id']}: "
                  f"{lead.get('name')} {lead.get('phone')} wechat {lead.get('wechat')} "
                  f"(verdict {lead['verdict']}, consent {lead.get('consent')})")
        print(f"  next_cursor {page.get('next_cursor')}, has_more {page.get('has_more')}"
              " — the CRM stores the cursor and asks again with it (docs/LEADS.md)")
        if not page["leads"]:
            print(log_tail(engine_log), file=sys.stderr)
            die("demo: the merchant API delivered no lead")
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

    print("the audit rows that pull left (roomgate.lead_audit: who, when, which lead, which key):")
    print(ch_query(url, f"""
        SELECT ts, merchant_id, actor AS key_id, action, room_id, viewer_id, client_lead_id
        FROM roomgate.lead_audit WHERE merchant_id = '{MERCHANT}' AND ts >= {since}
        ORDER BY ts DESC, client_lead_id LIMIT 3 FORMAT PrettyCompactMonoBlock"""))

    step("where to look")
    print(f"  SQL console:        {url}/play")
    print(f"  ClickHouse charts:  {url}/dashboard")
    print(f"  loadgen summary:    {os.path.join(WORK, 'summary.json')}")
    print(f"  engine log:         {engine_log}")
    print("  lead delivery:      docs/LEADS.md (the merchant API), docs/ACCESS.md (who sees what)")
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
