#!/usr/bin/env python3
"""Write dashboards/grafana/roomgate.json: the roomgate dashboards for Grafana
with the ClickHouse data source plugin (grafana-clickhouse-datasource, v4),
generated from the same SQL blocks as the /dashboard charts.

Standard library only:

    python3 dashboards/make_grafana.py                 # (re)write the committed file
    python3 dashboards/make_grafana.py --check         # exit 1 if it is out of date
    python3 dashboards/make_grafana.py --database rg2 --out /tmp/rg2.json

Which blocks become panels (parsed by make_dashboard_url.load_blocks, the
one parser for every dashboards/*.sql file):

- every "-- chart:" block: a time-series panel;
- every "-- query:" block that takes a query parameter ({name:Type}): a
  table panel. Query blocks without parameters look back over a fixed
  period (room_funnel.sql part 1, lead_audit.sql): they stay in /play and
  clickhouse-client, where that is stated.

Files come in the order of FILES below, one collapsible row each.

A panel's SQL is its block's SQL with every ClickHouse query parameter
replaced by its Grafana text (PARAMETERS, a plain text substitution and
nothing else; a parameter not in the table is an error):

    {from:String}      toString($__fromTime)        the time picker's start
    {to:String}        toString($__toTime)          the time picker's end
    {seconds:UInt32}   toUInt32(dateDiff('second', $__fromTime, $__toTime))
    {rounding:UInt32}  toUInt32(${rounding})        the "bucket (s)" variable
    {room:UInt64}      toUInt64(${room})            the "room" variable, All = 0
    {merchant:String}  ${merchant:sqlstring}        the "merchant" variable, All = ''

$__fromTime / $__toTime are the plugin's macros (toDateTime(<unix s>)).
The room and merchant variables' "All" options have custom all values (0
and ''), which Grafana substitutes as they are; a chosen merchant is
quoted by the :sqlstring format. So the blocks' own conventions (0 = all
rooms, '' = all merchants, an empty {from:String} never happens) hold.
scripts/dashboards_test.py inverts this table on every panel, finds its
block, and runs the panel's SQL expanded as Grafana would against a real
run (same rows as the block with the equivalent parameters).

Time series: a chart's first column `t` is Unix seconds (what /dashboard
wants). Each time-series panel turns it into Grafana's time field with
transformations: t * 1000 -> `time` (calculateField), `time` to a time
field (convertFieldType), `t` hidden (organize), and long frames
(t, label, value) split into one series per label (prepareTimeSeries,
format "many", "Multi-frame time series" in Grafana's editor). Every query
is sent as a table (format 1). Requires Grafana 10 or later.
"""

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_dashboard_url  # noqa: E402

OUT = os.path.join(HERE, "grafana", "roomgate.json")
PLUGIN = "grafana-clickhouse-datasource"
DS = {"type": PLUGIN, "uid": "${datasource}"}

# File -> row title, in dashboard order.
FILES = [
    ("rooms_merchants.sql", "Rooms and merchants"),
    ("room_funnel.sql", "Room funnel"),
    ("lead_audit.sql", "Lead delivery"),
]

# ClickHouse query parameter -> Grafana text (see the module docstring).
PARAMETERS = [
    ("{from:String}", "toString($__fromTime)"),
    ("{to:String}", "toString($__toTime)"),
    ("{seconds:UInt32}", "toUInt32(dateDiff('second', $__fromTime, $__toTime))"),
    ("{rounding:UInt32}", "toUInt32(${rounding})"),
    ("{room:UInt64}", "toUInt64(${room})"),
    ("{merchant:String}", "${merchant:sqlstring}"),
]
PARAM_RE = re.compile(r"(?<!\$)\{[A-Za-z_][A-Za-z0-9_]*:[A-Za-z0-9_()]+\}")


def to_grafana(sql):
    """A block's SQL as the panel's rawSql."""
    out = sql
    for param, text in PARAMETERS:
        out = out.replace(param, text)
    left = PARAM_RE.findall(out)
    if left:
        raise ValueError("no Grafana mapping for parameter(s) %s" % ", ".join(sorted(set(left))))
    return out


def title_to_grafana(title):
    """`{rounding}` in a chart's title names the bucket: Grafana's ${rounding}."""
    return title.replace("{rounding}", "${rounding}")


def target(sql):
    return {
        "refId": "A",
        "datasource": DS,
        "editorType": "sql",
        "queryType": "table",
        "format": 1,
        "rawSql": to_grafana(sql),
    }


def chart_transformations():
    return [
        {"id": "calculateField",
         "options": {"mode": "binary", "alias": "time", "replaceFields": False,
                     "binary": {"left": "t", "operator": "*", "right": "1000"}}},
        {"id": "convertFieldType",
         "options": {"fields": {}, "conversions": [{"targetField": "time", "destinationType": "time"}]}},
        {"id": "organize", "options": {"excludeByName": {"t": True}}},
        {"id": "prepareTimeSeries", "options": {"format": "many"}},
    ]


def panel(pid, fname, kind, title, sql, grid):
    p = {
        "id": pid,
        "title": title_to_grafana(title),
        "description": "dashboards/%s: \"-- %s: %s\" (definitions: dashboards/README.md)" % (fname, kind, title),
        "datasource": DS,
        "gridPos": grid,
        "targets": [target(sql)],
    }
    if kind == "chart":
        p["type"] = "timeseries"
        p["transformations"] = chart_transformations()
        p["fieldConfig"] = {"defaults": {"custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                                                    "spanNulls": False, "showPoints": "auto"}},
                            "overrides": []}
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "none"}}
    else:
        p["type"] = "table"
        p["fieldConfig"] = {"defaults": {"custom": {"align": "auto", "filterable": True}}, "overrides": []}
        p["options"] = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    return p


def variables(database):
    merchants_sql = ("SELECT DISTINCT merchant_id FROM %s.room_merchants FINAL "
                     "WHERE merchant_id != '' ORDER BY merchant_id" % database)
    rooms_sql = ("SELECT DISTINCT room_id FROM %s.room_minute "
                 "WHERE minute >= toStartOfMinute($__fromTime) AND minute <= $__toTime "
                 "AND (${merchant:sqlstring} = '' OR room_id IN "
                 "(SELECT room_id FROM %s.room_merchants FINAL WHERE merchant_id = ${merchant:sqlstring})) "
                 "ORDER BY room_id" % (database, database))
    all_current = {"selected": True, "text": "All", "value": "$__all"}
    return [
        {"name": "datasource", "label": "ClickHouse", "type": "datasource", "query": PLUGIN,
         "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [], "includeAll": False, "multi": False},
        {"name": "merchant", "label": "merchant", "type": "query", "datasource": DS,
         "query": merchants_sql, "definition": merchants_sql, "refresh": 2, "sort": 1,
         "includeAll": True, "allValue": "''", "multi": False, "current": all_current, "options": [],
         "hide": 0, "regex": ""},
        {"name": "room", "label": "room", "type": "query", "datasource": DS,
         "query": rooms_sql, "definition": rooms_sql, "refresh": 2, "sort": 3,
         "includeAll": True, "allValue": "0", "multi": False, "current": all_current, "options": [],
         "hide": 0, "regex": ""},
        {"name": "rounding", "label": "bucket (s)", "type": "custom", "query": "60,300,900,3600",
         "current": {"selected": True, "text": "60", "value": "60"},
         "options": [{"selected": v == "60", "text": v, "value": v} for v in ("60", "300", "900", "3600")],
         "includeAll": False, "multi": False, "hide": 0},
    ]


def blocks_in_order():
    """(file, row title, [(kind, title, sql)]) for the files of FILES that
    exist, then any other dashboards/*.sql, with the blocks that become
    panels."""
    by_file = {}
    for fname, kind, title, sql in make_dashboard_url.all_blocks(HERE):
        if kind == "chart" or PARAM_RE.search(sql):
            by_file.setdefault(fname, []).append((kind, title, sql))
    known = [f for f, _ in FILES]
    order = [(f, t) for f, t in FILES] + [(f, f) for f in sorted(by_file) if f not in known]
    return [(f, t, by_file[f]) for f, t in order if f in by_file]


def dashboard(database="roomgate"):
    panels, pid, y = [], 1, 0
    for fname, row_title, blocks in blocks_in_order():
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        pid += 1
        y += 1
        x = 0
        # Tables full width, charts two per line.
        for kind, title, sql in sorted(blocks, key=lambda b: b[0] != "query"):
            sql = sql.replace("roomgate.", database + ".")
            if kind == "query":
                if x:
                    y, x = y + 8, 0
                grid = {"h": 9, "w": 24, "x": 0, "y": y}
                y += 9
            else:
                grid = {"h": 8, "w": 12, "x": x, "y": y}
                x += 12
                if x == 24:
                    y, x = y + 8, 0
            panels.append(panel(pid, fname, kind, title, sql, grid))
            pid += 1
        if x:
            y, x = y + 8, 0
    return {
        "__inputs": [],
        "__requires": [{"type": "datasource", "id": PLUGIN, "name": "ClickHouse", "version": "4.0.0"},
                       {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"}],
        "uid": "roomgate-rooms",
        "title": "roomgate: rooms and merchants",
        "description": "Generated by dashboards/make_grafana.py from dashboards/*.sql; do not edit by hand.",
        "tags": ["roomgate"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 38,
        "version": 1,
        "refresh": "",
        "time": {"from": "now-24h", "to": "now"},
        "timepicker": {},
        "templating": {"list": variables(database)},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


def render(database="roomgate"):
    return json.dumps(dashboard(database), indent=2, ensure_ascii=False) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--database", default="roomgate",
                    help="database holding the roomgate tables (default %(default)s)")
    ap.add_argument("--out", default=OUT, help="output file (default dashboards/grafana/roomgate.json)")
    ap.add_argument("--check", action="store_true", help="exit 1 if --out differs from what would be written")
    a = ap.parse_args()
    if not re.fullmatch(r"[A-Za-z0-9_]+", a.database):
        ap.error("--database must be [A-Za-z0-9_]+")
    text = render(a.database)
    if a.check:
        try:
            with open(a.out, encoding="utf-8") as f:
                same = f.read() == text
        except OSError:
            same = False
        print("%s: %s" % (a.out, "up to date" if same else "OUT OF DATE (run python3 dashboards/make_grafana.py)"))
        sys.exit(0 if same else 1)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(text)
    print("wrote %s (%d panels)" % (a.out, sum(1 for p in dashboard(a.database)["panels"] if p["type"] != "row")))


if __name__ == "__main__":
    main()
