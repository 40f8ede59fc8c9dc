#!/usr/bin/env python3
"""Failover: two engine nodes share the rooms of a lead-heavy load, writing
to a two-shard ClickHouse cluster; one node is killed (SIGKILL) and its
rooms move to the other, then it comes back and takes them back; verify
that every acked lead is stored exactly once across the cluster.

  python3 scripts/failover.py            # make failover
  python3 scripts/failover.py --quick    # make test: the same, shorter

The run (loadgen/scenarios/failover.toml, `--servers node-a=…,node-b=…`):

  t=0     node-a and node-b start with the list [node-a, node-b]; the
          loadgen routes every room to its owner (rooms 1, 2: node-a;
          3, 4: node-b).
  KILL    node-a is killed with SIGKILL. Its viewers lose their sessions.
  +2 s    the orchestrator (this script) tells node-b the new list
          [node-b] (PUT /admin/routing). node-b first reads the recent
          decisions of the rooms it gains from ClickHouse, then takes them:
          the viewers, trying the next node of their room's ranking, land
          on node-b and resend what had no ack.
  BACK    node-a restarts with its data directory and the list [node-b]: it
          owns no room and only drains its log to ClickHouse.
  MOVE    both nodes get [node-a, node-b]: node-b hands rooms 1 and 2 back
          (their sessions finish their acks, then close with wrong_node
          naming node-a), node-a reads what node-b decided and takes them.
  end     both nodes stop with SIGTERM (flushing their logs); verify.

Checks (roomgate-loadgen verify): every acked lead stored exactly once with
its acked verdict across both nodes; no lead and no chat message stored
twice; accepted chat stored = accepted acks; nothing unacked at the end.
Exit 0 only if all pass and both nodes exited 0 on SIGTERM.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEV_ENV, ch_scalar, die, fresh_dir, log_tail, wait_http  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "failover-admin-token"
NODES = {"node-a": ("127.0.0.1:14541", "127.0.0.1:19581"),
         "node-b": ("127.0.0.1:14542", "127.0.0.1:19582")}


def node_list(ids):
    return ",".join(f"{i}={NODES[i][0]}" for i in ids)


CLUSTER = "roomgate"
SHARDS = 2


def cluster(cmd, base):
    """scripts/clickhouse.py cluster-up / cluster-down on ports base, base+1."""
    env = dict(os.environ, CLUSTER_HTTP_BASE=str(base), CLUSTER_SHARDS=str(SHARDS), CLUSTER_NAME=CLUSTER)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "clickhouse.py"), cmd],
                       env=env, capture_output=True, text=True)
    if r.returncode != 0:
        die(f"failover: clickhouse {cmd} (ports from {base}) failed: {r.stdout}{r.stderr}")


class Node:
    def __init__(self, node_id, args, work, db, urls):
        self.id = node_id
        self.listen, self.admin = NODES[node_id]
        self.dir = os.path.join(work, node_id)
        os.makedirs(self.dir, exist_ok=True)
        self.data = fresh_dir(os.path.join(self.dir, "data"))
        # The load-test settings, writing to the cluster (schemas/README.md).
        config = os.path.join(self.dir, "engine.toml")
        with open(os.path.join(ROOT, "loadgen", "engine-loadtest.toml")) as f:
            text = f.read()
        text += (f"\n[clickhouse]\ncluster = \"{CLUSTER}\"\n"
                 f"cluster_urls = [{', '.join(json.dumps(u) for u in urls)}]\n")
        with open(config, "w") as f:
            f.write(text)
        url = urls[0]
        self.base = [
            os.path.join(args.bin_dir, "roomgate"),
            "--listen", self.listen, "--admin", self.admin,
            "--clickhouse-url", url, "--database", db,
            # One certificate for both nodes: the loadgen trusts one file.
            "--dev-cert", os.path.join(work, "cert"),
            "--data-dir", self.data,
            "--config", config,
            "--node-id", node_id,
        ]
        self.log_path = os.path.join(self.dir, "engine.log")
        open(self.log_path, "w").close()
        self.proc = None
        self.starts = 0

    def start(self, nodes):
        log = open(self.log_path, "a")
        log.write(f"\n===== failover: {self.id} start #{self.starts + 1}, nodes {nodes} =====\n")
        log.flush()
        env = dict(os.environ, ROOMGATE_ADMIN_TOKEN=TOKEN)
        env.update(DEV_ENV)
        self.proc = subprocess.Popen(self.base + ["--nodes", node_list(nodes)],
                                     stdout=log, stderr=subprocess.STDOUT, env=env)
        self.starts += 1
        wait_http(f"http://{self.admin}/livez", proc=self.proc, timeout=120)

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def sigterm(self, timeout=60.0):
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9

    def set_nodes(self, nodes):
        body = json.dumps({"nodes": [{"id": i, "addr": NODES[i][0]} for i in nodes]}).encode()
        req = urllib.request.Request(f"http://{self.admin}/admin/routing", data=body, method="PUT",
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the short version run by make test")
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "debug"))
    p.add_argument("--clickhouse-base", type=int,
                   default=int(os.environ.get("FAILOVER_CLICKHOUSE_BASE", "18150")),
                   help="HTTP port of the first ClickHouse shard (the second: +1)")
    args = p.parse_args()
    # (kill, orchestrator, back, move back, duration)
    if args.quick:
        kill_at, back_at, move_at, duration = 10, 20, 26, 40
    else:
        kill_at, back_at, move_at, duration = 15, 35, 50, 75

    work = os.path.join(ROOT, "build", "failover" + ("-quick" if args.quick else ""))
    os.makedirs(work, exist_ok=True)
    base = args.clickhouse_base
    urls = [f"http://127.0.0.1:{base + i}" for i in range(SHARDS)]
    url = urls[0]
    db = f"failover_{int(time.time() * 1000)}"
    summary = os.path.join(work, "summary.json")
    if os.path.exists(summary):
        os.remove(summary)

    cluster("cluster-up", base)
    a = Node("node-a", args, work, db, urls)
    b = Node("node-b", args, work, db, urls)
    t_start = time.time()

    def note(msg):
        print(f"failover [{time.time() - t_start:6.1f}s] {msg}", flush=True)

    both = ["node-a", "node-b"]
    a.start(both)
    b.start(both)
    note("node-a and node-b started, nodes [node-a, node-b]")
    env = dict(os.environ)
    env.update(DEV_ENV)
    lg_cmd = [
        os.path.join(args.bin_dir, "roomgate-loadgen"),
        "--scenario", os.path.join(ROOT, "loadgen", "scenarios", "failover.toml"),
        "--servers", node_list(both), "--cert", os.path.join(work, "cert", "cert.pem"),
        "--duration", str(duration), "--drain-timeout", "60", "--summary-json", summary,
        # Notice a killed node within seconds.
        "--idle-timeout", "3", "--keep-alive", "1",
    ]
    print("failover: " + " ".join(lg_cmd), flush=True)
    lg = subprocess.Popen(lg_cmd, stdout=open(os.path.join(work, "loadgen.log"), "w"),
                          stderr=subprocess.STDOUT, env=env)
    failures = []

    def at(t):
        while time.time() - t_start < t and lg.poll() is None:
            time.sleep(0.1)

    try:
        at(kill_at)
        a.kill9()
        note("node-a killed (SIGKILL)")
        time.sleep(2)
        r = b.set_nodes(["node-b"])
        note(f"node-b: nodes [node-b]: {r.get('restored_ids')} decisions read back, "
             f"{r.get('moving_sessions')} sessions moving")
        at(back_at)
        a.start(["node-b"])
        note("node-a restarted with nodes [node-b]: drains its log, owns no room")
        at(move_at)
        r = a.set_nodes(both)
        note(f"node-a: nodes [node-a, node-b]: {r.get('restored_ids')} decisions read back")
        r = b.set_nodes(both)
        note(f"node-b: nodes [node-a, node-b]: {r.get('moving_sessions')} sessions moving to node-a")
        rc = lg.wait(timeout=duration + 300)
        note(f"loadgen finished: exit {rc}")
        if rc != 0:
            failures.append(f"loadgen exit {rc}")
        for n in (a, b):
            rc = n.sigterm()
            note(f"{n.id}: SIGTERM, exit {rc}")
            if rc != 0:
                failures.append(f"{n.id} SIGTERM exit {rc}")
    finally:
        if lg.poll() is None:
            lg.kill()
        for n in (a, b):
            if n.proc and n.proc.poll() is None:
                n.proc.kill()

    print(open(os.path.join(work, "loadgen.log")).read()[-6000:])
    v = subprocess.run([
        os.path.join(args.bin_dir, "roomgate-loadgen"), "verify",
        "--summary-json", summary, "--clickhouse-url", url, "--database", db,
    ], env=env)
    per_shard = [ch_scalar(u, f"SELECT count() FROM {db}.leads_local") for u in urls]
    cluster("cluster-down", base)
    print(f"failover: lead rows per shard: {per_shard}")
    if min(per_shard) == 0:
        failures.append(f"a shard holds no leads: {per_shard}")
    if v.returncode != 0:
        failures.append(f"verify exit {v.returncode}")
    with open(summary) as f:
        c = json.load(f)["connections"]
    print(f"failover: connections: {c['redirected']} redirects followed (wrong_node), "
          f"{c['reconnect_attempts']} reconnect attempts, {c['failed']} failed attempts")
    if c["redirected"] == 0:
        failures.append("no viewer followed a wrong_node redirect: the rooms did not move back")
    if failures:
        die("failover: FAILED: " + "; ".join(failures)
            + "".join(f"\n{n.id} log: {n.log_path}\n{log_tail(n.log_path)}" for n in (a, b)))
    print(f"failover: ok (database {db})")


if __name__ == "__main__":
    main()
