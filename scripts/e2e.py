#!/usr/bin/env python3
"""End-to-end check: real ClickHouse + engine + loadgen over QUIC.

Starts the engine against a fresh database, runs the loadgen with >= 1,000
viewers, stops the engine with SIGTERM (it drains and flushes, exit 0), then
checks ClickHouse against the loadgen's summary:
  - every accepted chat message and lead is stored exactly once,
  - like taps sent == taps stored,
  - no other rows (moderation rows == busy rejects, one join + one leave
    per connected viewer).
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ch_scalar, die, fresh_dir, log_tail, start, stop, wait_http, DEV_ENV  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clickhouse-url", default="http://127.0.0.1:18123")
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "debug"))
    p.add_argument("--viewers", type=int, default=1000)
    p.add_argument("--rooms", type=int, default=2)
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--listen", default="127.0.0.1:14433")
    p.add_argument("--admin", default="127.0.0.1:19464")
    args = p.parse_args()

    work = os.path.join(ROOT, "build", "e2e")
    os.makedirs(work, exist_ok=True)
    db = f"e2e_{int(time.time() * 1000)}"
    summary_path = os.path.join(work, "summary.json")
    engine_log = os.path.join(work, "engine.log")
    if os.path.exists(summary_path):
        os.remove(summary_path)

    engine = start([
        os.path.join(args.bin_dir, "roomgate"),
        "--listen", args.listen, "--admin", args.admin,
        "--clickhouse-url", args.clickhouse_url, "--database", db,
        "--dev-cert", os.path.join(work, "cert"),
        # A fresh database per run, so a fresh log too: a log's rows belong
        # to the database it was written for.
        "--data-dir", fresh_dir(os.path.join(work, "data")),
        "--config", os.path.join(ROOT, "loadgen", "engine-loadtest.toml"),
    ], engine_log)
    try:
        wait_http(f"http://{args.admin}/livez", proc=engine)
        per_room = max(1, args.viewers // args.rooms)
        cmd = [
            os.path.join(args.bin_dir, "roomgate-loadgen"),
            "--server", args.listen, "--cert", os.path.join(work, "cert", "cert.pem"),
            "--rooms", str(args.rooms), "--viewers", str(per_room),
            "--duration", str(args.duration), "--ramp", "5",
            "--chat-rate", "40", "--like-rate", "500", "--lead-rate", "3",
            "--resend-share", "0.05", "--summary-json", summary_path,
        ]
        env = dict(os.environ)
        env.update(DEV_ENV)
        print("e2e: " + " ".join(cmd), flush=True)
        lg = subprocess.run(cmd, env=env)
        if lg.returncode != 0:
            die(f"e2e: loadgen failed with {lg.returncode}\n{log_tail(engine_log)}")
    finally:
        rc = stop(engine)
    if rc != 0:
        die(f"e2e: engine exited with {rc} after SIGTERM\n{log_tail(engine_log)}")

    with open(summary_path) as f:
        s = json.load(f)
    url = args.clickhouse_url

    def q(sql):
        return ch_scalar(url, sql.replace("{db}", db))

    acked = s["acked"]
    chat, lead = acked["chat"], acked["lead"]
    lead_first = sum(lead.get(k, 0) for k in ("accepted", "suspect", "rejected", "duplicate"))
    connected = s["connections"]["connected"]
    checks = [
        ("viewers connected", connected, per_room * args.rooms),
        ("chat acks missing", s["unacked"]["chat"], 0),
        ("lead acks missing", s["unacked"]["lead"], 0),
        ("chat rows == accepted chat", q("SELECT count() FROM {db}.chat_messages"), chat["accepted"]),
        ("distinct chat rows == accepted chat",
         q("SELECT uniqExact(viewer_id, client_msg_id) FROM {db}.chat_messages"), chat["accepted"]),
        ("chat reject rows == rejected chat",
         q("SELECT sum(count) FROM {db}.moderation_events WHERE kind = 'chat' AND NOT dry_run"), chat["rejected"]),
        # Rejected leads over a viewer's hourly cap are counted in
        # moderation_events (kind 'lead') instead of a leads row.
        ("lead rows + capped rejects == leads decided (every verdict)",
         q("SELECT count() FROM {db}.leads")
         + q("SELECT sum(count) FROM {db}.moderation_events WHERE kind = 'lead'"), lead_first),
        ("distinct lead rows == lead rows",
         q("SELECT uniqExact(viewer_id, client_lead_id) FROM {db}.leads"),
         q("SELECT count() FROM {db}.leads")),
        ("accepted lead rows == accepted leads",
         q("SELECT countIf(verdict = 'accepted') FROM {db}.leads"), lead["accepted"]),
        # Taps over a viewer's cap (20/s) are rate limited, recorded per
        # viewer and second as "<over> of <count> taps over the cap".
        ("like taps stored + rate limited == taps sent",
         q("SELECT sum(taps) FROM {db}.like_ticks")
         + q("SELECT sum(toUInt64OrZero(extract(detail, '^(\\d+) of'))) FROM {db}.moderation_events "
             "WHERE kind = 'like' AND NOT dry_run"),
         s["sent"]["like"]),
        ("join rows == connected viewers", q("SELECT countIf(event = 'join') FROM {db}.sessions"), connected),
        ("leave rows == connected viewers", q("SELECT countIf(event = 'leave') FROM {db}.sessions"), connected),
        # The loadgen's viewers are all legitimate: no content rule may reject
        # them. Only the rate rules may: the room cap (`busy`), and a
        # viewer's own rate, which the basic mix can exceed during the join
        # ramp, when the room's whole chat rate lands on the first viewers.
        ("chat rejected by content rules",
         chat["rejected"] - sum(chat.get("reasons", {}).get(r, 0) for r in ("busy", "rate_limited")), 0),
        # Same for leads: a viewer's own lead velocity can trip during the
        # ramp; phone, form and duplicate rules must not.
        ("leads refused by phone/form/duplicate rules",
         lead_first - lead["accepted"] - lead.get("reasons", {}).get("velocity_viewer", 0), 0),
    ]
    failed = 0
    print(f"\ne2e: database {db} on {url}")
    print(f"{'check':42} {'got':>10} {'want':>10}")
    for name, got, want in checks:
        ok = got == want
        failed += not ok
        print(f"{name:42} {got:>10} {want:>10}  {'ok' if ok else 'MISMATCH'}")
    print(f"sent: {s['sent']}, resent: {s.get('resent')}")
    if failed:
        die(f"e2e: {failed} check(s) failed; engine log: {engine_log}")
    if chat["accepted"] == 0 or lead["accepted"] == 0 or s["sent"]["like"] == 0:
        die("e2e: the run produced no traffic; nothing was checked")
    print("e2e: ok")


if __name__ == "__main__":
    main()
