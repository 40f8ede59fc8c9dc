#!/usr/bin/env python3
"""Dashboards test (`make dashboards-test`): every dashboard query against the
rows of a real loadgen run, checked for sane results; the Grafana JSON
checked against the SQL.

1. Starts ClickHouse (port 18166, scripts/clickhouse.py), a debug engine on a
   fresh database with rooms mapped to merchants (`[[rooms]] merchant`: 801,
   802 -> m1, 803 -> m2, 804 none) and the merchant API (plain HTTP, two
   keys), and runs a small fixed-seed loadgen scenario (4 rooms x 40
   viewers, chatters, like tappers, lead submitters, a harasser and a
   fake-lead bot per room, churn so views > unique viewers).
2. Delivers leads for real: m1 pulls all its accepted leads, m2 one page of
   2 (GET /v1/leads: lead_audit rows). Stops the engine (SIGTERM: flushes).
3. Withdrawals: the scenario's viewers withdraw a share of their accepted
   leads over the protocol (`[withdrawals]`, `Withdraw` frames); the
   leads the loadgen saw acked as withdrawn are the expected ones.
4. Runs EVERY "-- query:" / "-- chart:" block of every dashboards/*.sql with
   its parameters filled (all rooms; one room; one merchant; an absolute
   period), and checks: no error; columns named *rate within [0, 1]; chart
   blocks start with an integer `t`; and for rooms_merchants.sql: views =
   join rows = the loadgen's connections, unique viewers <= views and =
   the viewers it connected, leads / valid leads = the loadgen's acked
   leads per room, delivered = the leads pulled, withdrawn = the leads
   withdrawn, abuse = its breakdown by reason, per merchant = sum of its
   rooms, likers > 0 (like_viewers), interacting >= each part.
5. Grafana: dashboards/grafana/roomgate.json equals what
   dashboards/make_grafana.py generates now; every panel's SQL maps back
   (the documented mapping, inverted here independently) to one tested
   block; every panel's SQL and every variable's query, expanded as Grafana
   and the plugin would, runs and gives the same rows as the block with the
   equivalent ClickHouse parameters.

Always stops the engine and ClickHouse (unless --keep). Deterministic: fixed
seed, a fresh database and engine data directory per run.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "dashboards"))
from common import DEV_ENV, fresh_dir, log_tail, start, stop, wait_http  # noqa: E402
import make_dashboard_url  # noqa: E402
import make_grafana  # noqa: E402

WORK = os.path.join(ROOT, "build", "dashboards-test")
ROOM_BASE = 801
ROOMS = 4
VIEWERS = 40
MERCHANT_OF = {801: "m1", 802: "m1", 803: "m2"}  # 804: no merchant
KEYS = {"m1": ("m1-dash", "dashboards-test-secret-m1"), "m2": ("m2-dash", "dashboards-test-secret-m2")}

SCENARIO = """\
# dashboards-test: small rooms, every dashboard figure non-trivial.
description = "dashboards-test: 4 rooms x 40 viewers, churn, likes, leads, a little abuse"
seed = 11
rooms = {rooms}
viewers = {viewers}
duration = {duration}
room_base = {room_base}
resend_share = 0.05
drain_timeout = 10

[join]
ramp = 3

[churn]
share = 0.25
away = [1, 3]

[classes.chatter]
share = 0.3
chat_rate = 3

[classes.like_tapper]
share = 0.3
like_rate = 40

[classes.lead_submitter]
share = 0.3
lead_rate = 1.2
fill_secs = [8, 30]

[classes.harasser]
share = 0.025
chat_rate = 0.5

[classes.fake_lead_bot]
share = 0.025
lead_rate = 0.4

[withdrawals]
share = 0.3
after = [1, 2]
"""


def log(msg):
    print("dashboards-test: " + msg, flush=True)


class Failures:
    def __init__(self):
        self.items = []
        self.passed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.items.append(what)
            print("  FAIL " + what, flush=True)
        return ok

    def eq(self, got, want, what):
        return self.check(got == want, f"{what}: got {got!r}, want {want!r}")


# ---------------------------------------------------------------- ClickHouse


class CH:
    def __init__(self, url, database):
        self.url = url.rstrip("/")
        self.db = database

    def run(self, sql, params=None, fmt="JSONCompact"):
        args = {"default_format": fmt}
        for k, v in (params or {}).items():
            args["param_" + k] = str(v)
        req = urllib.request.Request(self.url + "/?" + urllib.parse.urlencode(args),
                                     data=sql.encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                body = r.read().decode()
        except urllib.error.HTTPError as e:
            raise RuntimeError(e.read().decode(errors="replace").strip()) from None
        return json.loads(body) if fmt.startswith("JSON") else body

    def rows(self, sql, params=None):
        """[{column: value}] (JSON numbers for UInt64 too)."""
        return self.run(sql, params, fmt="JSON")["data"]

    def scalar(self, sql):
        body = self.run(sql.replace("{db}", self.db), fmt="TabSeparated").strip()
        return int(body or 0)

    def block_sql(self, sql):
        return sql.replace("roomgate.", self.db + ".")


def ch_settings():
    # JSON output: 64-bit integers as numbers, so they compare as ints.
    return "SETTINGS output_format_json_quote_64bit_integers = 0"


# ---------------------------------------------------------------- the run


def engine_config(path, api_port):
    with open(os.path.join(ROOT, "loadgen", "engine-loadtest.toml")) as f:
        base = f.read()
    keys = ",\n".join(
        f'  {{ merchant = "{m}", key_id = "{kid}", sha256 = "{hashlib.sha256(f"{kid}.{sec}".encode()).hexdigest()}" }}'
        for m, (kid, sec) in KEYS.items())
    extra = f"""

# ---- dashboards-test additions ----
[merchant_api]
listen = "127.0.0.1:{api_port}"
insecure_http = true
settle_ms = 0
keys = [
{keys},
]
"""
    for room, merchant in sorted(MERCHANT_OF.items()):
        extra += f'\n[[rooms]]\nid = {room}\nmerchant = "{merchant}"\n'
    with open(path, "w") as f:
        f.write(base + extra)


def pull(api, merchant, limit, pages=None):
    """GET /v1/leads as `merchant` until has_more is false (or `pages` pages);
    returns the (room, viewer, client_lead_id) delivered."""
    kid, secret = KEYS[merchant]
    got, cursor, n = [], None, 0
    while True:
        q = {"limit": str(limit)}
        if cursor:
            q["cursor"] = cursor
        req = urllib.request.Request(f"http://{api}/v1/leads?" + urllib.parse.urlencode(q),
                                     headers={"Authorization": f"Bearer {kid}.{secret}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            page = json.loads(r.read())
        got += [(l["room_id"], l["viewer_id"], l["client_lead_id"]) for l in page["leads"]]
        cursor = page["next_cursor"]
        n += 1
        if not page["has_more"] or (pages is not None and n >= pages):
            return got


def run_load(args, ch, fails):
    os.makedirs(WORK, exist_ok=True)
    summary_path = os.path.join(WORK, "summary.json")
    for p in (summary_path, summary_path.replace(".json", ".leads.jsonl")):
        if os.path.exists(p):
            os.remove(p)
    scenario = os.path.join(WORK, "scenario.toml")
    with open(scenario, "w") as f:
        f.write(SCENARIO.format(rooms=ROOMS, viewers=VIEWERS, duration=args.duration, room_base=ROOM_BASE))
    config = os.path.join(WORK, "engine.toml")
    engine_config(config, args.api_port)
    engine_log = os.path.join(WORK, "engine.log")
    engine = start([
        os.path.join(args.bin_dir, "roomgate"),
        "--listen", f"127.0.0.1:{args.quic_port}", "--admin", f"127.0.0.1:{args.admin_port}",
        "--clickhouse-url", ch.url, "--database", ch.db,
        "--dev-cert", os.path.join(WORK, "cert"),
        "--data-dir", fresh_dir(os.path.join(WORK, "data")),
        "--config", config,
    ], engine_log)
    delivered = {}
    try:
        wait_http(f"http://127.0.0.1:{args.admin_port}/livez", proc=engine)
        cmd = [
            os.path.join(args.bin_dir, "roomgate-loadgen"),
            "--server", f"127.0.0.1:{args.quic_port}",
            "--cert", os.path.join(WORK, "cert", "cert.pem"),
            "--scenario", scenario, "--summary-json", summary_path,
        ]
        env = dict(os.environ)
        env.update(DEV_ENV)
        log(" ".join(cmd))
        with open(os.path.join(WORK, "loadgen.log"), "w") as out:
            lg = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        if lg.returncode != 0:
            raise SystemExit(f"dashboards-test: loadgen failed with {lg.returncode}; "
                             f"{os.path.join(WORK, 'loadgen.log')}\n{log_tail(engine_log)}")
        with open(summary_path) as f:
            summary = json.load(f)
        # Every acked lead in ClickHouse before pulling (settle_ms = 0).
        want = sum(1 for l in read_leads(summary_path) if l["verdict"] != "unacked")
        deadline = time.time() + 20
        while time.time() < deadline:
            have = ch.scalar("SELECT count() FROM {db}.leads") + ch.scalar(
                "SELECT sum(count) FROM {db}.moderation_events WHERE kind = 'lead'")
            if have >= want:
                break
            time.sleep(0.3)
        api = f"127.0.0.1:{args.api_port}"
        delivered["m1"] = pull(api, "m1", 5)
        delivered["m2"] = pull(api, "m2", 2, pages=1)
        log(f"pulled: m1 {len(delivered['m1'])} leads, m2 {len(delivered['m2'])}")
    finally:
        rc = stop(engine)
    fails.eq(rc, 0, "engine exit code after SIGTERM")
    return summary, summary_path, delivered


def read_leads(summary_path):
    path = summary_path[:-len(".json")] + ".leads.jsonl"
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def loadgen_withdrawals(summary_path):
    """The leads the loadgen's viewers withdrew and saw the withdrawal
    acked (`Withdraw` frames, `[withdrawals]` in the scenario)."""
    return sorted((r["room_id"], r["viewer_id"], r["client_lead_id"])
                  for r in read_leads(summary_path) if r.get("withdrawal") == "accepted")


# ---------------------------------------------------------------- checks


def run_block(ch, sql, params):
    reply = ch.run(ch.block_sql(sql) + "\n" + ch_settings(), params, fmt="JSON")
    return reply["meta"], reply["data"]


def generic_checks(fails, name, kind, meta, data):
    cols = [m["name"] for m in meta]
    if kind == "chart":
        fails.check(len(cols) >= 2 and cols[0] == "t", f"{name}: a chart's first column is t, then series ({cols})")
        fails.check(all(isinstance(r["t"], int) for r in data), f"{name}: t is an integer (Unix seconds)")
    for c in cols:
        if c.endswith("rate"):
            bad = [r[c] for r in data if r[c] is not None and not 0 <= float(r[c]) <= 1]
            fails.check(not bad, f"{name}: {c} outside [0, 1]: {bad[:5]}")
    for r in data:
        for c, v in r.items():
            if isinstance(v, (int, float)) and v < 0:
                fails.check(False, f"{name}: negative {c} = {v}")
                return


def by(rows, key):
    return {r[key]: r for r in rows}


def check_rooms_merchants(fails, ch, blocks, params, summary, summary_path, delivered, withdrawn_leads):
    rooms_sql = blocks["Rooms: views, viewers, watch time, interaction, leads, delivery, abuse"]
    merch_sql = blocks["Merchants: views, viewers, watch time, interaction, leads, delivery, abuse"]
    abuse_room_sql = blocks["Abuse by reason per room"]
    abuse_merch_sql = blocks["Abuse by reason per merchant"]
    withdrawals_sql = blocks["Withdrawals and erasures per merchant"]
    _, rooms = run_block(ch, rooms_sql, params)
    _, merchants = run_block(ch, merch_sql, params)
    _, abuse_rooms = run_block(ch, abuse_room_sql, params)
    _, abuse_merch = run_block(ch, abuse_merch_sql, params)
    _, wd = run_block(ch, withdrawals_sql, params)
    room_ids = list(range(ROOM_BASE, ROOM_BASE + ROOMS))
    r = by(rooms, "room_id")
    fails.eq(sorted(r), room_ids, "rooms: one row per room of the run")
    for room in room_ids:
        fails.eq(r.get(room, {}).get("merchant_id"), MERCHANT_OF.get(room, ""), f"room {room}: merchant")

    def q(sql):
        return ch.scalar(sql)

    conn = summary["connections"]
    # views = join rows = connections the loadgen made (first joins, churn
    # rejoins, reconnects).
    views = sum(x["views"] for x in rooms)
    fails.eq(views, q("SELECT countIf(event = 'join') FROM {db}.sessions"), "views = join rows in sessions")
    fails.eq(views, conn["connected"], "views = the loadgen's connections.connected")
    uniq = sum(x["unique_viewers"] for x in rooms)
    fails.eq(uniq, conn["viewers_connected"], "unique viewers = the loadgen's connections.viewers_connected")
    fails.check(views > uniq, f"churn: views ({views}) > unique viewers ({uniq})")
    leads = read_leads(summary_path)
    capped = {}
    for row in ch.rows(f"SELECT room_id, sum(count) AS n FROM {ch.db}.moderation_events "
                       f"WHERE kind = 'lead' GROUP BY room_id {ch_settings()}"):
        capped[row["room_id"]] = row["n"]
    pulled = {}
    for lst in delivered.values():
        for lead in lst:
            pulled[lead[0]] = pulled.get(lead[0], 0) + 1
    withdrawn = {}
    for lead in withdrawn_leads:
        withdrawn[lead[0]] = withdrawn.get(lead[0], 0) + 1
    for room in room_ids:
        x = r.get(room)
        if not x:
            continue
        mine = [l for l in leads if l["room_id"] == room]
        fails.eq(x["valid_leads"], sum(1 for l in mine if l["verdict"] == "accepted"),
                 f"room {room}: valid leads = the loadgen's accepted leads")
        fails.eq(x["leads"] + capped.get(room, 0), sum(1 for l in mine if l["verdict"] != "unacked"),
                 f"room {room}: leads (+ capped rejects) = the loadgen's acked leads")
        fails.eq(x["delivered"], pulled.get(room, 0), f"room {room}: delivered = leads pulled")
        fails.eq(x["withdrawn"], withdrawn.get(room, 0), f"room {room}: withdrawn = leads withdrawn")
        fails.check(x["unique_viewers"] <= x["views"], f"room {room}: unique viewers <= views")
        fails.check(x["interacting_viewers"] >= max(x["chatted"], x["liked"], x["left_lead"]),
                    f"room {room}: interacting >= chatted, liked, left a lead")
        fails.check(x["interacting_viewers"] <= x["chatted"] + x["liked"] + x["left_lead"],
                    f"room {room}: interacting <= chatted + liked + left a lead")
        fails.check(x["liked"] > 0, f"room {room}: likers > 0 (like_viewers)")
        fails.check(x["chatted"] > 0 and x["left_lead"] > 0, f"room {room}: chatters and lead viewers > 0")
        fails.check(0 < x["interaction_rate"] <= 1, f"room {room}: interaction rate in (0, 1]")
        fails.check(x["avg_watch_s"] is not None and 0 < x["avg_watch_s"] <= summary["wall_s"] + 5,
                    f"room {room}: average watch time {x['avg_watch_s']} s within the run")
        fails.eq(x["ended_sessions"], x["views"], f"room {room}: every session ended (engine stopped)")
        abuse = sum(a["events"] for a in abuse_rooms if a["room_id"] == room)
        fails.eq(x["abuse_events"], abuse, f"room {room}: abuse = sum of abuse by reason")
    # Independent figures from the event tables.
    fails.eq(sum(x["liked"] for x in rooms), q("SELECT uniqExact(room_id, viewer_id) FROM {db}.like_viewers"),
             "likers = distinct viewers in like_viewers")
    fails.eq(sum(x["chatted"] for x in rooms), q("SELECT uniqExact(room_id, viewer_id) FROM {db}.chat_messages"),
             "chatted = distinct viewers in chat_messages")
    fails.eq(sum(x["abuse_events"] for x in rooms),
             q("SELECT sum(count) FROM {db}.moderation_events WHERE NOT dry_run AND reason != 'busy'")
             + q("SELECT countIf(verdict = 'rejected') FROM {db}.leads_unique"),
             "abuse = non-busy rejects + rejected leads")
    watch = q("SELECT sum(watch_ms) FROM {db}.sessions WHERE event = 'leave'")
    leaves = q("SELECT countIf(event = 'leave') FROM {db}.sessions")
    # avg_watch_s is rounded to 0.1 s: off by at most 0.05 s per session.
    fails.check(abs(sum(x["avg_watch_s"] * x["ended_sessions"] for x in rooms) - watch / 1000) <= 0.05 * leaves + 0.01,
                "average watch time x ended sessions = total watch time")
    fails.check(any(x["abuse_events"] > 0 for x in rooms), "some abuse in the run")
    # Per merchant = sum of its rooms.
    m = by(merchants, "merchant_id")
    fails.eq(sorted(m), sorted(set(MERCHANT_OF.get(room, "") for room in room_ids)), "merchants: m1, m2 and ''")
    additive = ["views", "ended_sessions", "leads", "valid_leads", "delivered", "withdrawn", "abuse_events",
                "unique_viewers", "chatted", "liked", "left_lead", "interacting_viewers"]
    for mid, row in m.items():
        mine = [x for x in rooms if x["merchant_id"] == mid]
        fails.eq(row["rooms"], len(mine), f"merchant {mid!r}: rooms")
        for col in additive:
            # Viewer ids are per room in the loadgen (room * 1e6 + index), so
            # distinct viewers add up over rooms here too.
            fails.eq(row[col], sum(x[col] for x in mine), f"merchant {mid!r}: {col} = sum of its rooms")
        fails.check(row["interaction_rate"] is None or 0 <= row["interaction_rate"] <= 1,
                    f"merchant {mid!r}: interaction rate in [0, 1]")
    am = {}
    for a in abuse_rooms:
        am[(a["merchant_id"], a["kind"], a["reason"])] = am.get((a["merchant_id"], a["kind"], a["reason"]), 0) + a["events"]
    fails.eq({(a["merchant_id"], a["kind"], a["reason"]): a["events"] for a in abuse_merch}, am,
             "abuse by reason per merchant = sum over its rooms")
    fails.check(all(a["reason"] and a["reason"] != "busy" for a in abuse_rooms), "abuse reasons: named, not busy")
    fails.eq(sum(w["requests"] for w in wd), q("SELECT count() FROM {db}.lead_withdrawals"),
             "withdrawal requests = lead_withdrawals rows")
    # room_funnel.sql's Room summary: the same viewers and interaction.
    _, summ = run_block(ch, dict(all_blocks_of(ch, "room_funnel.sql"))["Room summary (last 24 hours)"], params)
    fails.eq({x["room_id"]: (x["viewers"], x["interacting_viewers"]) for x in summ},
             {x["room_id"]: (x["unique_viewers"], x["interacting_viewers"]) for x in rooms},
             "room_funnel.sql Room summary: viewers and interacting viewers = rooms_merchants.sql's")
    return rooms, merchants, abuse_rooms


def all_blocks_of(ch, fname):
    return [(title, sql) for f, kind, title, sql in make_dashboard_url.all_blocks() if f == fname]


def check_filters(fails, ch, blocks, params):
    """{room} and {merchant} narrow every per-room row to what they name."""
    rooms_sql = blocks["Rooms: views, viewers, watch time, interaction, leads, delivery, abuse"]
    _, all_rows = run_block(ch, rooms_sql, params)
    full = by(all_rows, "room_id")
    _, one = run_block(ch, rooms_sql, dict(params, room=802))
    fails.eq([x["room_id"] for x in one], [802], "{room:UInt64} = 802: only room 802")
    fails.eq(one[0] if one else None, full.get(802), "room 802 alone = its row among all rooms")
    _, m1 = run_block(ch, rooms_sql, dict(params, merchant="m1"))
    fails.eq(sorted(x["room_id"] for x in m1), [801, 802], "{merchant:String} = m1: rooms 801, 802")
    fails.eq(sorted(m1, key=lambda x: x["room_id"]), [full[801], full[802]], "m1's rooms = their rows among all")
    merch_sql = blocks["Merchants: views, viewers, watch time, interaction, leads, delivery, abuse"]
    _, all_m = run_block(ch, merch_sql, params)
    _, only = run_block(ch, merch_sql, dict(params, merchant="m2"))
    fails.eq(only, [x for x in all_m if x["merchant_id"] == "m2"], "merchants, {merchant} = m2: m2's row only")


def grafana_checks(fails, ch, blocks_all, window):
    path = os.path.join(ROOT, "dashboards", "grafana", "roomgate.json")
    with open(path) as f:
        committed = json.load(f)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    fails.check(text == make_grafana.render(), "dashboards/grafana/roomgate.json is what make_grafana.py "
                                               "writes now (run python3 dashboards/make_grafana.py)")
    tested = {}
    for fname, kind, title, sql in blocks_all:
        tested.setdefault(sql, (fname, kind, title))
    panels = [p for p in committed["panels"] if p.get("type") != "row"]
    for p in committed["panels"]:
        panels += [c for c in p.get("panels", [])]
    fails.check(len(panels) >= len([b for b in blocks_all if b[1] == "chart"]), "a panel per chart at least")
    frm, to = window
    for p in panels:
        ts = p.get("targets", [])
        fails.eq(len(ts), 1, f"panel {p['title']!r}: one query")
        if not ts:
            continue
        t = ts[0]
        fails.eq(t.get("datasource", {}).get("uid"), "${datasource}", f"panel {p['title']!r}: the datasource variable")
        back = unmap(t["rawSql"])
        fails.check(back in tested, f"panel {p['title']!r}: its SQL maps back to a tested block")
        if back not in tested:
            continue
        fname, kind, title = tested[back]
        fails.eq(p["title"].replace("${rounding}", "{rounding}"), title, f"panel {p['title']!r}: title = its block's")
        fails.eq(p["type"], "timeseries" if kind == "chart" else "table", f"panel {title!r}: type")
        # Expanded as Grafana and the plugin would: same rows as the block
        # with the equivalent ClickHouse parameters.
        for gvars, params in variants(frm, to):
            expanded = expand(t["rawSql"], frm, to, gvars)
            try:
                got = ch.run(ch.block_sql(expanded) + "\n" + ch_settings(), fmt="JSON")["data"]
            except RuntimeError as e:
                fails.check(False, f"panel {title!r} ({gvars}): expanded SQL fails: {e}")
                continue
            _, want = run_block(ch, back, params)
            fails.eq(got, want, f"panel {title!r} ({gvars}): same rows as the block")
    for v in committed["templating"]["list"]:
        if v["type"] == "query":
            sql = expand(v["query"] if isinstance(v["query"], str) else v["query"]["rawSql"], frm, to,
                         {"room": "0", "merchant": "''", "rounding": "60"})
            try:
                rows = ch.run(ch.block_sql(sql), fmt="JSONCompact")["data"]
                fails.check(len(rows) > 0, f"variable {v['name']}: its query gives values")
            except RuntimeError as e:
                fails.check(False, f"variable {v['name']}: query fails: {e}")


# The mapping make_grafana.py documents, written out again independently:
# ClickHouse parameter -> Grafana text.
GRAFANA_OF = {
    "{from:String}": "toString($__fromTime)",
    "{to:String}": "toString($__toTime)",
    "{seconds:UInt32}": "toUInt32(dateDiff('second', $__fromTime, $__toTime))",
    "{rounding:UInt32}": "toUInt32(${rounding})",
    "{room:UInt64}": "toUInt64(${room})",
    "{merchant:String}": "${merchant:sqlstring}",
}


def unmap(raw):
    out = raw
    for param, text in GRAFANA_OF.items():
        out = out.replace(text, param)
    return out


def variants(frm, to):
    """(Grafana variable values, the equivalent ClickHouse parameters)."""
    fmt = "%Y-%m-%d %H:%M:%S"
    base = {"from": time.strftime(fmt, time.gmtime(frm)), "to": time.strftime(fmt, time.gmtime(to)),
            "seconds": to - frm, "rounding": 60, "room": 0, "merchant": ""}
    return [
        ({"rounding": "60", "room": "0", "merchant": "''"}, base),                 # All, All
        ({"rounding": "300", "room": "802", "merchant": "'m1'"}, dict(base, rounding=300, room=802, merchant="m1")),
    ]


def expand(sql, frm, to, gvars):
    """What reaches ClickHouse from Grafana: template variables interpolated
    (custom all values as they are, :sqlstring quoted), then the plugin's
    macros ($__fromTime -> toDateTime(<unix s>), pkg/macros/macros.go)."""
    out = sql
    for name, value in gvars.items():
        out = out.replace("${%s:sqlstring}" % name, value).replace("${%s}" % name, value.strip("'"))
    out = out.replace("$__fromTime", f"toDateTime({frm})").replace("$__toTime", f"toDateTime({to})")
    return out


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clickhouse-port", type=int, default=18166)
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "debug"))
    p.add_argument("--duration", type=int, default=15)
    p.add_argument("--quic-port", type=int, default=14566)
    p.add_argument("--admin-port", type=int, default=19566)
    p.add_argument("--api-port", type=int, default=19567)
    p.add_argument("--keep", action="store_true", help="leave ClickHouse running after (development)")
    p.add_argument("--reuse", action="store_true",
                   help="no new run: check the database of the last --keep run again (development)")
    args = p.parse_args()
    t0 = time.time()
    fails = Failures()
    env = dict(os.environ, CLICKHOUSE_HTTP_PORT=str(args.clickhouse_port),
               CLICKHOUSE_DATA=os.path.join(ROOT, "build", "clickhouse", f"test-data-{args.clickhouse_port}"))
    env.pop("CLICKHOUSE_TCP_PORT", None)
    env.pop("CLICKHOUSE_USERS_XML", None)
    clickhouse = [sys.executable, os.path.join(HERE, "clickhouse.py")]
    subprocess.run(clickhouse + ["up"], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        ch = CH(f"http://127.0.0.1:{args.clickhouse_port}", f"dash_{int(time.time() * 1000)}")
        state_path = os.path.join(WORK, "state.json")
        if args.reuse:
            # Development: check again against the database of a --keep run.
            with open(state_path) as f:
                state = json.load(f)
            ch.db, started = state["database"], state["started"]
            delivered = {m: [tuple(x) for x in v] for m, v in state["delivered"].items()}
            withdrawn_leads = [tuple(x) for x in state["withdrawn"]]
            summary_path = os.path.join(WORK, "summary.json")
            with open(summary_path) as f:
                summary = json.load(f)
        else:
            started = int(time.time()) - 5
            summary, summary_path, delivered = run_load(args, ch, fails)
            withdrawn_leads = loadgen_withdrawals(summary_path)
            fails.check(len(withdrawn_leads) > 0, "the loadgen withdrew leads")
            with open(state_path, "w") as f:
                json.dump({"database": ch.db, "started": started, "delivered": delivered,
                           "withdrawn": withdrawn_leads}, f)
        ended = int(time.time()) + 60
        log(f"database {ch.db}: connections {summary['connections']['connected']}, "
            f"viewers {summary['connections']['viewers_connected']}, sent {summary['sent']}, "
            f"leads acked {summary['acked']['lead']}")
        params = {"seconds": 3600, "from": "", "to": "", "rounding": 60, "room": 0, "merchant": ""}
        blocks_all = make_dashboard_url.all_blocks()
        # Every block of every file, with four parameter sets.
        fmt = "%Y-%m-%d %H:%M:%S"
        absolute = dict(params, **{"from": time.strftime(fmt, time.gmtime(started)),
                                   "to": time.strftime(fmt, time.gmtime(ended))})
        sets = [("all", params), ("room 801", dict(params, room=801)),
                ("merchant m1", dict(params, merchant="m1")), ("absolute period", absolute)]
        for fname, kind, title, sql in blocks_all:
            for label, ps in sets:
                name = f"{fname}: {title} [{label}]"
                try:
                    meta, data = run_block(ch, sql, ps)
                except RuntimeError as e:
                    fails.check(False, f"{name}: {e}")
                    continue
                fails.check(True, name)
                generic_checks(fails, name, kind, meta, data)
                if label == "all" and fname == "rooms_merchants.sql":
                    fails.check(len(data) > 0, f"{name}: rows")
        log(f"ran {len(blocks_all)} blocks x {len(sets)} parameter sets")
        blocks = {title: sql for fname, kind, title, sql in blocks_all if fname == "rooms_merchants.sql"}
        rooms, merchants, abuse = check_rooms_merchants(fails, ch, blocks, params, summary, summary_path,
                                                        delivered, withdrawn_leads)
        check_filters(fails, ch, blocks, params)
        grafana_checks(fails, ch, blocks_all, (started, ended))
        print("\nper room, then per merchant:")
        cols = ["room_id", "merchant_id", "views", "unique_viewers", "avg_watch_s", "chatted", "liked",
                "left_lead", "interaction_rate", "leads", "valid_leads", "valid_lead_rate", "delivered",
                "withdrawn", "abuse_events"]
        print("  " + " ".join(f"{c[:12]:>12}" for c in cols))
        for x in rooms + [dict(m, room_id=f"{m['rooms']} rooms") for m in merchants]:
            print("  " + " ".join(f"{str(x.get(c, '')):>12}" for c in cols))
        print("abuse by reason: " + ", ".join(f"{a['room_id']}/{a['kind']}/{a['reason']}={a['events']}" for a in abuse))
        if not fails.items and not args.keep:
            ch.run(f"DROP DATABASE IF EXISTS {ch.db}", fmt="TabSeparated")  # kept when a check failed
    finally:
        if not args.keep:
            subprocess.run(clickhouse + ["down"], env=env, stdout=subprocess.DEVNULL)
    took = time.time() - t0
    print(f"\ndashboards-test: {fails.passed} passed, {len(fails.items)} failed ({took:.0f} s)")
    if fails.items:
        for f in fails.items:
            print("  - " + f)
        sys.exit(1)


if __name__ == "__main__":
    main()
