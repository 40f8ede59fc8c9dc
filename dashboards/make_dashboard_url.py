#!/usr/bin/env python3
"""Print a link to ClickHouse's built-in /dashboard page, preloaded with the
roomgate charts: the "-- chart:" blocks of every dashboards/*.sql file
(room_funnel.sql, rooms_merchants.sql, lead_audit.sql, in that order).

How the page loads state (checked against ClickHouse 26.9's /dashboard): it
reads the URL fragment and decodes it with

    JSON.parse(LZString.decompressFromEncodedURIComponent(hash) || atob(hash))

into {host, user, queries: [{title, query}], params}. Writing the fragment
with lz-string's compressToEncodedURIComponent (ported below) is what the
page itself does when it saves its state. The page then POSTs each query to
`host` with `param_<name>=<value>` for every parameter it finds in the queries
({rounding:UInt32}, {seconds:UInt32}, {from:String}, {to:String}, {room:UInt64},
{merchant:String}).
The password is never part of the link; type it into the page.

Standard library only:

    python3 dashboards/make_dashboard_url.py
    python3 dashboards/make_dashboard_url.py --clickhouse https://ch.example.com:8443 \\
        --user analyst --room 42 --seconds 10800
    python3 dashboards/make_dashboard_url.py --check   # also run every chart query once
"""

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SQL_FILE = os.path.join(HERE, "room_funnel.sql")
# The order the files' blocks come in (links, Grafana panels, tests); any
# other dashboards/*.sql file follows, by name.
FILE_ORDER = ("room_funnel.sql", "rooms_merchants.sql", "lead_audit.sql")

_URI_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-$"


def lz_compress_to_encoded_uri_component(text):
    """lz-string 1.x `compressToEncodedURIComponent`, as the page's lz-string.js.

    Works on UTF-16 code units, like JavaScript strings.
    """
    units = []
    data = text.encode("utf-16-le")
    for i in range(0, len(data), 2):
        units.append(chr(data[i] | (data[i + 1] << 8)))
    bits_per_char = 6
    out = []
    dictionary = {}
    to_create = set()
    w = ""
    enlarge_in = 2
    dict_size = 3
    num_bits = 2
    val = 0
    pos = 0

    def write_bits(value, count):
        nonlocal val, pos
        for _ in range(count):
            val = (val << 1) | (value & 1)
            if pos == bits_per_char - 1:
                pos = 0
                out.append(_URI_SAFE[val])
                val = 0
            else:
                pos += 1
            value >>= 1

    def emit(w):
        nonlocal enlarge_in, num_bits
        if w in to_create:
            code = ord(w[0])
            if code < 256:
                write_bits(0, num_bits)
                write_bits(code, 8)
            else:
                write_bits(1, num_bits)
                write_bits(code, 16)
            enlarge_in -= 1
            if enlarge_in == 0:
                enlarge_in = 2 ** num_bits
                num_bits += 1
            to_create.discard(w)
        else:
            write_bits(dictionary[w], num_bits)
        enlarge_in -= 1
        if enlarge_in == 0:
            enlarge_in = 2 ** num_bits
            num_bits += 1

    for c in units:
        if c not in dictionary:
            dictionary[c] = dict_size
            dict_size += 1
            to_create.add(c)
        wc = w + c
        if wc in dictionary:
            w = wc
        else:
            emit(w)
            dictionary[wc] = dict_size
            dict_size += 1
            w = c
    if w != "":
        emit(w)
    write_bits(2, num_bits)
    while True:
        val <<= 1
        if pos == bits_per_char - 1:
            out.append(_URI_SAFE[val])
            break
        pos += 1
    return "".join(out)


def sql_files(directory=HERE):
    """Every dashboards/*.sql file, FILE_ORDER first, then the rest by name."""
    names = sorted(n for n in os.listdir(directory) if n.endswith(".sql"))
    ordered = [n for n in FILE_ORDER if n in names] + [n for n in names if n not in FILE_ORDER]
    return [os.path.join(directory, n) for n in ordered]


def load_blocks(path=SQL_FILE):
    """The "-- query:" and "-- chart:" blocks of one file, in order, as
    (kind, title, sql). A block starts at a line `-- query: <title>` or
    `-- chart: <title>`; comment lines right after it are its description;
    it ends at the first line ending with ';' (dropped)."""
    blocks = []
    cur = None
    for line in open(path, encoding="utf-8"):
        m = re.match(r"--\s*(query|chart):\s*(.+?)\s*$", line)
        if m:
            cur = [m.group(1), m.group(2), []]
            continue
        if cur is None:
            continue
        stripped = line.strip()
        if stripped.startswith("--") and not cur[2]:
            continue  # description comments between the title and the SQL
        cur[2].append(line.rstrip("\n"))
        if stripped.endswith(";"):
            sql = "\n".join(cur[2]).strip().rstrip(";").strip()
            blocks.append((cur[0], cur[1], sql))
            cur = None
    return blocks


def all_blocks(directory=HERE):
    """The blocks of every dashboards/*.sql file (sql_files order) as
    (file name, kind, title, sql)."""
    return [(os.path.basename(path), kind, title, sql)
            for path in sql_files(directory)
            for kind, title, sql in load_blocks(path)]


def charts(database="roomgate"):
    return [
        {"title": title, "query": sql.replace("roomgate.", database + ".")}
        for _, kind, title, sql in all_blocks()
        if kind == "chart"
    ]


def dashboard_url(host, user, queries, params):
    state = {"host": host, "user": user, "queries": queries, "params": params}
    return host.rstrip("/") + "/dashboard#" + lz_compress_to_encoded_uri_component(
        json.dumps(state, separators=(",", ":"), ensure_ascii=False))


def check(host, user, password, queries, params):
    """Run each chart query once the way the page does; return the failures."""
    failures = []
    for q in queries:
        args = {"default_format": "JSONColumnsWithMetadata"}
        args.update({"param_" + k: v for k, v in params.items()})
        if user:
            args["user"] = user
        if password:
            args["password"] = password
        req = urllib.request.Request(host.rstrip("/") + "/?" + urllib.parse.urlencode(args),
                                     data=q["query"].encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                reply = json.loads(r.read())
            cols = len(reply["meta"])
            print(f"ok    {q['title']}: {reply['rows']} rows, {cols} columns")
            if cols < 2:
                failures.append((q["title"], "fewer than two columns"))
        except urllib.error.HTTPError as e:
            failures.append((q["title"], e.read().decode(errors="replace").strip()))
            print(f"FAIL  {q['title']}: {failures[-1][1]}")
        except OSError as e:
            failures.append((q["title"], str(e)))
            print(f"FAIL  {q['title']}: {e}")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clickhouse", default="http://127.0.0.1:8123",
                    help="ClickHouse HTTP(S) URL the page runs the queries against "
                         "(default %(default)s)")
    ap.add_argument("--user", default="default", help="ClickHouse user (default %(default)s)")
    ap.add_argument("--database", default="roomgate",
                    help="database holding the roomgate tables (default %(default)s)")
    ap.add_argument("--room", type=int, default=0, help="room id; 0 = all rooms (default 0)")
    ap.add_argument("--merchant", default="",
                    help="merchant id: only its rooms, in the charts that take one; "
                         "'' = all (default)")
    ap.add_argument("--seconds", type=int, default=86400,
                    help="look-back window, s (default %(default)s)")
    ap.add_argument("--rounding", type=int, default=60,
                    help="bucket size, s; a multiple of 60 (default %(default)s)")
    ap.add_argument("--check", action="store_true",
                    help="run every chart query once against --clickhouse "
                         "(password from CLICKHOUSE_PASSWORD) and exit non-zero on an error")
    a = ap.parse_args()
    if not re.fullmatch(r"[A-Za-z0-9_]+", a.database):
        ap.error("--database must be [A-Za-z0-9_]+")
    queries = charts(a.database)
    params = {"rounding": str(a.rounding), "seconds": str(a.seconds), "from": "", "to": "",
              "room": str(a.room), "merchant": a.merchant}
    if a.check:
        failures = check(a.clickhouse, a.user, os.environ.get("CLICKHOUSE_PASSWORD", ""),
                         queries, params)
        if failures:
            sys.exit(1)
    print(dashboard_url(a.clickhouse, a.user, queries, params))


if __name__ == "__main__":
    main()
