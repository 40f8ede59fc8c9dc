#!/usr/bin/env python3
"""`make perf`: roomgate measured against peers doing the same job, in one run.

Every figure is a ratio against a baseline measured in the same run, from
the median of REPS (default 3) repetitions; absolute figures are context.

  front door  the engine (guard on, log on, ClickHouse writer replaced by a
              counting null sink: clickhouse.null_sink) vs roomgate-peer, a
              bare quinn server speaking the same protocol with no guard,
              queue or storage. Same offered load from the loadgen; server
              CPU µs per frame from /proc, ratio peer ÷ engine. Then a
              ladder of offered loads: the highest frames/s each sustains
              with chat and lead ack p99 ≤ 50 ms and nothing dropped.
  sink        rows/s of the engine's writers (log → ClickHouse) vs the
              clickhouse crate's Inserter with the same rows
              (roomgate-sink-bench, real local ClickHouse).
  loadgen     the loadgen's own CPU µs per frame at the front-door load
              against the peer: one process vs two workers (--worker
              1/2, 2/2, merged), ratio one ÷ two.
  guard       the criterion group keyed_rate_limit: roomgate's limiter vs
              governor's keyed limiter (median of criterion's estimate).
  memory      RSS per idle viewer (10,000 connected, no traffic, sampled
              while all stay connected) and per active viewer (a room-wide
              like storm), from /proc: the engine (real ClickHouse sink) and
              the peer (what quinn alone keeps per connection), ratio
              peer ÷ engine, and engine − peer (what roomgate adds).
  pacing      (not in the default set: `--only pacing`) the front-door
              load against the engine with like pacing on (its default)
              and off, alternating: CPU per second, ack p99 and like frames
              received, ratio paced ÷ unpaced; the pace over time and the
              notices sent, from /metrics every 0.1 s. What pacing costs
              and does at a load the engine sustains (docs/TUNING.md).
  profile     (not in the default set: `--only profile`; needs `perf`,
              Debian's linux-perf) `perf record` of the engine and of the
              peer over the front-door load's steady window, split into
              what the engine does that the peer does not: the guard, the
              rest of the shard workers, the log thread, switching threads,
              QUIC and the sessions; µs per frame each, and the guard's
              share of the gap.
  endpoints   (not in the default set: `--only endpoints`) the peer and
              the engine each with 1 QUIC endpoint and with one per core
              (SO_REUSEPORT), alternating: what several endpoints give a
              bare quinn server and what they give the engine, and the
              ratio with both at 1 and both at one per core.
  ab          (not in the default set: `--only ab --variant LABEL=FILE`,
              repeatable) engine configurations against each other at the
              front-door load: the peer, the engine as configured and each
              variant (its TOML appended to the engine's) in turn, medians
              of CPU per frame, peer ÷ each, and per thread group CPU and
              context switches. How docs/TUNING.md's A/Bs are made.

Writes build/perf/perf.json and prints a table. `--quick` runs one short
repetition of each (a smoke test of the harness, not figures to quote).
"""

import argparse
import datetime
import glob
import re
import shutil
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import DEV_ENV, die, fresh_dir, log_tail, start, stop, wait_http  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "build", "perf")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# The front-door load: 20 rooms of 250 viewers (5,000 connections); per
# room 100 chat/s (0.4 per viewer: inside the per-viewer chat limit), 1
# lead/s, LIKES taps/s as single-tap frames (≤ 2,000 per room).
ROOMS, VIEWERS_PER_ROOM, CHAT, LEAD = 20, 250, 100.0, 1.0
RAMP, LOAD_SECS = 5.0, 20.0
# The CPU window: after the ramp has settled, before the load ends.
WINDOW = (RAMP + 3.0, LOAD_SECS - 1.0)
CPU_LIKES = 500.0  # per room: ~12,000 frames/s in all
LADDER_LIKES = [250.0, 500.0, 1000.0, 1500.0, 2000.0]
P99_LIMIT_MS = 50.0


def cores():
    """What the engine's 0 = "one per core" settles on here (its own count
    also honours a cgroup CPU quota; none on the build machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def step(msg):
    print(f"\n==> {msg}", flush=True)


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 (1-based) of the whole line.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def threads(pid):
    """Per thread group (the thread name without its number: roomgate-io,
    roomgate-shard-, tokio-rt-worker, ...): [CPU s, voluntary switches,
    involuntary switches], summed over the group's threads."""
    out = {}
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            with open(task + "/comm") as f:
                name = f.read().strip().rstrip("0123456789")
            with open(task + "/stat") as f:
                st = f.read().rsplit(")", 1)[1].split()
            with open(task + "/status") as f:
                status = f.read()
        except OSError:
            continue  # the thread ended
        sw = {k: int(v) for k, v in (line.split(":") for line in status.splitlines()
                                      if line.endswith(tuple("0123456789")) and "ctxt_switches" in line)}
        g = out.setdefault(name, [0.0, 0, 0])
        g[0] += (int(st[11]) + int(st[12])) / CLK_TCK
        g[1] += sw.get("voluntary_ctxt_switches", 0)
        g[2] += sw.get("nonvoluntary_ctxt_switches", 0)
    return out


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Server:
    """The engine (null sink or real ClickHouse) or the bare peer."""

    def __init__(self, kind, bins, name, clickhouse=None, endpoints=None, pace=False, extra_toml=""):
        self.kind = kind
        self.dir = os.path.join(WORK, name)
        os.makedirs(self.dir, exist_ok=True)
        self.listen = "127.0.0.1:24533"
        self.admin = "127.0.0.1:29564"
        self.cert = os.path.join(self.dir, "cert")
        self.log = os.path.join(self.dir, "server.log")
        if kind == "peer":
            cmd = [os.path.join(bins, "roomgate-peer"), "--listen", self.listen, "--cert-dir", self.cert]
            if endpoints is not None:
                cmd += ["--endpoints", str(endpoints)]
        else:
            cfg = os.path.join(self.dir, "engine.toml")
            with open(os.path.join(ROOT, "loadgen", "engine-loadtest.toml")) as f:
                text = f.read()
            # The bare peer does not pace likes: neither does the engine
            # here, so both receive the same frames (docs/TUNING.md); the
            # pacing part turns it back on (the engine's default).
            if "[server]\n" not in text:
                die("perf: engine-loadtest.toml has no [server] table")
            if not pace:
                text = text.replace("[server]\n", "[server]\nlike_pace_ms = 0\n", 1)
            text += "\n# make perf: the rooms' chat cap lifted (the load is legitimate)\n"
            for room in range(1, ROOMS + 1):
                text += f"[[rooms]]\nid = {room}\nchat_per_sec = 1000000\n"
            if clickhouse is None:
                text += "\n[clickhouse]\nnull_sink = true\n"
            if extra_toml:
                text += "\n# perf.py --variant\n" + extra_toml + "\n"
            with open(cfg, "w") as f:
                f.write(text)
            cmd = [
                os.path.join(bins, "roomgate"), "--config", cfg,
                "--listen", self.listen, "--admin", self.admin,
                "--dev-cert", self.cert, "--data-dir", fresh_dir(os.path.join(self.dir, "data")),
                "--log", "warn",
            ]
            if endpoints is not None:
                cmd += ["--endpoints", str(endpoints)]
            if clickhouse is not None:
                url, db = clickhouse
                cmd += ["--clickhouse-url", url, "--database", db]
        self.proc = start(cmd, self.log)
        if kind == "peer":
            deadline = time.time() + 30
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    die(f"perf: roomgate-peer exited:\n{log_tail(self.log)}")
                if "listening" in (log_tail(self.log, 5)):
                    break
                time.sleep(0.1)
            else:
                die("perf: roomgate-peer did not start")
        else:
            wait_http(f"http://{self.admin}/livez", proc=self.proc)

    def close(self):
        rc = stop(self.proc, timeout=60)
        if rc != 0:
            print(log_tail(self.log), file=sys.stderr)
            die(f"perf: {self.kind} exited with {rc}; log {self.log}")


def loadgen(bins, server, out, extra, samplers=()):
    """Run the loadgen against `server`; return (summary, {name: samples})."""
    cmd = [
        os.path.join(bins, "roomgate-loadgen"),
        "--server", server.listen, "--cert", os.path.join(server.cert, "cert.pem"),
        "--resend-share", "0", "--drain-timeout", "5", "--summary-json", out,
    ] + extra
    env = dict(os.environ)
    env.update(DEV_ENV)
    log = open(out + ".log", "w")
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    samples = {}
    threads = []
    for name, at, fn in samplers:
        def run(name=name, at=at, fn=fn):
            if at is None:  # sample every 100 ms while the loadgen runs
                vals = []
                while proc.poll() is None:
                    vals.append(fn())
                    time.sleep(0.1)
                samples[name] = vals
            else:
                delay = t0 + at - time.time()
                if delay > 0:
                    time.sleep(delay)
                samples[name] = (time.time() - t0, fn())
        th = threading.Thread(target=run, daemon=True)
        th.start()
        threads.append(th)
    rc = proc.wait()
    for th in threads:
        th.join()
    if rc != 0:
        die(f"perf: loadgen exited with {rc}:\n{log_tail(out + '.log')}")
    with open(out) as f:
        return json.load(f), samples


def frames_between(summary, a, b):
    """Client frames (chat, like, lead first sends) offered in (a, b]."""
    tl = summary.get("timeline") or {}
    w = tl.get("bucket_s", 1.0)
    n = 0.0
    for p in tl.get("points", []):
        if a < p["t"] <= b:
            n += (p["chat_per_s"] + p["like_frames_per_s"] + p["lead_per_s"]) * w
    return n


def load_args(likes, secs=LOAD_SECS):
    return [
        "--rooms", str(ROOMS), "--viewers", str(VIEWERS_PER_ROOM),
        "--duration", str(secs), "--ramp", str(RAMP),
        "--chat-rate", str(CHAT), "--lead-rate", str(LEAD), "--like-rate", str(likes),
    ]


def steady_p99_ms(summary, a=WINDOW[0], b=None):
    """The worst per-second chat/lead ack p99 of the steady window (the join
    ramp's handshakes are not what the figure is about)."""
    b = b if b is not None else summary.get("duration_s", LOAD_SECS) - 1.0
    worst = 0
    for p in (summary.get("timeline") or {}).get("points", []):
        if a < p["t"] <= b:
            for k in ("chat", "lead"):
                if p.get(k):
                    worst = max(worst, p[k]["p99"])
    return worst / 1000.0


def healthy(summary):
    """Sustained: ack p99 within the limit in the steady window, nothing
    dropped or unacked, no failed connection."""
    p99 = steady_p99_ms(summary)
    dropped = sum(summary.get("dropped_local", {}).values())
    unacked = summary["unacked"]["chat"] + summary["unacked"]["lead"]
    failed = summary["connections"]["failed"]
    return p99 <= P99_LIMIT_MS and dropped == 0 and unacked == 0 and failed == 0, p99


def cpu_per_frame(bins, kind, name, rep, label, endpoints=None, per_thread=None, extra_toml=""):
    """One run at the CPU load: server CPU µs per frame in the steady window.
    With `per_thread` (a dict), also each thread group's CPU µs and context
    switches per frame in the window, appended to per_thread[group].
    `extra_toml` is appended to the engine's configuration."""
    srv = Server(kind, bins, name, endpoints=endpoints, extra_toml=extra_toml)
    pid = srv.proc.pid
    snap = lambda: (cpu_secs(pid), threads(pid))  # noqa: E731
    try:
        summary, s = loadgen(bins, srv, os.path.join(srv.dir, f"cpu-{rep}.json"), load_args(CPU_LIKES),
                             [("a", WINDOW[0], snap), ("b", WINDOW[1], snap)])
    finally:
        srv.close()
    (ta, (ca, tha)), (tb, (cb, thb)) = s["a"], s["b"]
    frames = max(frames_between(summary, ta, tb), 1.0)
    us = (cb - ca) * 1e6 / frames
    ok, p99 = healthy(summary)
    print(f"  {label}: {frames / (tb - ta):,.0f} frames/s, {cb - ca:.2f} CPU-s in {tb - ta:.1f} s "
          f"= {us:.1f} µs/frame; ack p99 {p99:.1f} ms{'' if ok else ' (NOT healthy)'}")
    if per_thread is not None:
        for group, (cpu, vol, invol) in thb.items():
            a = tha.get(group, [0.0, 0, 0])
            per_thread.setdefault(group, []).append({
                "cpu_us_per_frame": (cpu - a[0]) * 1e6 / frames,
                "switches_per_1k_frames": ((vol - a[1]) + (invol - a[2])) * 1000 / frames,
                "involuntary_per_1k_frames": (invol - a[2]) * 1000 / frames,
            })
    return us


def thread_medians(groups):
    """Per thread group, the median of each figure over the runs
    (`cpu_per_frame`'s `per_thread`)."""
    return {group: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
            for group, runs in groups.items()}


def front_door(bins, reps, quick):
    out = {"offered": {"rooms": ROOMS, "viewers_per_room": VIEWERS_PER_ROOM, "chat_per_room_s": CHAT,
                       "lead_per_room_s": LEAD, "like_taps_per_room_s": CPU_LIKES,
                       "window_s": list(WINDOW)}}
    per = {"engine": [], "peer": []}
    threads_of = {"engine": {}, "peer": {}}
    for rep in range(reps):
        for kind in ("peer", "engine"):
            step(f"front door, rep {rep + 1}/{reps}: {kind}")
            per[kind].append(cpu_per_frame(bins, kind, f"front-{kind}", rep, kind,
                                           per_thread=threads_of[kind]))
    # The engine with one QUIC endpoint instead of its default one per core
    # (SO_REUSEPORT, steered by connection ID), same load: what several
    # endpoints change. (`--only endpoints` asks the peer the same.)
    many = cores()
    with_one = []
    # (On one core the default is one endpoint: nothing to compare.)
    for rep in range(reps if many > 1 else 0):
        step(f"front door, rep {rep + 1}/{reps}: engine with 1 endpoint")
        with_one.append(cpu_per_frame(bins, "engine", "front-engine-ep1", rep, "engine, 1 endpoint",
                                      endpoints=1))
    med = {k: statistics.median(v) for k, v in per.items()}
    out["cpu_us_per_frame"] = {k: {"runs": v, "median": med[k]} for k, v in per.items()}
    if with_one:
        out["cpu_us_per_frame"]["engine_one_endpoint"] = {"runs": with_one, "median": statistics.median(with_one)}
    out["engine_endpoints"] = many
    out["ratio_peer_over_engine"] = med["peer"] / med["engine"]
    # Each repetition runs the peer and then the engine back to back: the
    # ratio within a pair shows how much of the spread is the VM's drift
    # between repetitions (BENCHMARKS.md quotes both).
    pairs = [p / e for p, e in zip(per["peer"], per["engine"])]
    out["pair_ratios"] = {"runs": pairs, "median": statistics.median(pairs)}
    # Where each server's CPU and wake-ups go, per thread group (medians of
    # the runs): the split docs/TUNING.md reads ("Where a frame's CPU goes").
    out["threads"] = {kind: thread_medians(groups) for kind, groups in threads_of.items()}

    ladder = LADDER_LIKES[:2] if quick else LADDER_LIKES
    sustained = {}
    for kind in ("peer", "engine"):
        best = None
        steps = []
        for likes in ladder:
            offered = ROOMS * (CHAT + LEAD + likes)
            step(f"front door ladder: {kind} at {offered:,.0f} frames/s offered")
            srv = Server(kind, bins, f"front-{kind}")
            try:
                summary, _ = loadgen(bins, srv, os.path.join(srv.dir, f"ladder-{int(likes)}.json"),
                                     load_args(likes, secs=15.0))
            finally:
                srv.close()
            ok, p99 = healthy(summary)
            steps.append({"offered_frames_per_s": offered, "ack_p99_ms": p99, "ok": ok,
                          "dropped_local": sum(summary.get("dropped_local", {}).values()),
                          "failed_connections": summary["connections"]["failed"]})
            print(f"  ack p99 {p99:.1f} ms: {'sustained' if ok else 'NOT sustained'}")
            if not ok:
                break
            best = offered
        sustained[kind] = {"max_sustained_frames_per_s": best, "steps": steps}
    out["ladder"] = sustained
    return out


def loadgen_run(bins, workers, rep):
    """The front-door load against the peer from `workers` loadgen
    processes (`--worker K/N`, merged): loadgen CPU µs per frame, summed
    over the processes, in the CPU window."""
    srv = Server("peer", bins, "loadgen-cost")
    cert = os.path.join(srv.cert, "cert.pem")
    env = dict(os.environ)
    env.update(DEV_ENV)
    procs, outs = [], []
    try:
        t0 = time.time()
        for k in range(1, workers + 1):
            out = os.path.join(srv.dir, f"w{workers}-{rep}-{k}.json")
            cmd = [os.path.join(bins, "roomgate-loadgen"), "--server", srv.listen, "--cert", cert,
                   "--resend-share", "0", "--drain-timeout", "5", "--summary-json", out] + load_args(CPU_LIKES)
            if workers > 1:
                cmd += ["--worker", f"{k}/{workers}"]
            procs.append(subprocess.Popen(cmd, stdout=open(out + ".log", "w"), stderr=subprocess.STDOUT, env=env))
            outs.append(out)
        cpu = []
        for at in WINDOW:
            time.sleep(max(0.0, t0 + at - time.time()))
            cpu.append((time.time() - t0, sum(cpu_secs(p.pid) for p in procs)))
        for p, out in zip(procs, outs):
            if p.wait() != 0:
                die(f"perf: loadgen exited with {p.returncode}:\n{log_tail(out + '.log')}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        srv.close()
    path = outs[0]
    if workers > 1:
        path = os.path.join(srv.dir, f"w{workers}-{rep}-merged.json")
        rc = subprocess.run([os.path.join(bins, "roomgate-loadgen"), "merge", *outs, "--summary-json", path],
                            stdout=subprocess.DEVNULL).returncode
        if rc != 0:
            die(f"perf: roomgate-loadgen merge exited with {rc}")
    with open(path) as f:
        summary = json.load(f)
    (ta, ca), (tb, cb) = cpu
    frames = frames_between(summary, ta, tb)
    us = (cb - ca) * 1e6 / max(frames, 1.0)
    ok, p99 = healthy(summary)
    print(f"  {workers} loadgen process(es): {frames / (tb - ta):,.0f} frames/s, {cb - ca:.2f} CPU-s "
          f"= {us:.1f} µs/frame; ack p99 {p99:.1f} ms{'' if ok else ' (NOT healthy)'}")
    return us


def loadgen_cost(bins, reps):
    """What the loadgen itself spends per frame, one process vs two workers
    (the price of planning every room in each worker)."""
    runs = {1: [], 2: []}
    for rep in range(reps):
        for workers in (1, 2):
            step(f"loadgen cost, rep {rep + 1}/{reps}: {workers} process(es) against the peer")
            runs[workers].append(loadgen_run(bins, workers, rep))
    med = {w: statistics.median(v) for w, v in runs.items()}
    return {"cpu_us_per_frame": {"one_process": {"runs": runs[1], "median": med[1]},
                                 "two_workers": {"runs": runs[2], "median": med[2]}},
            "ratio_one_over_two": med[1] / med[2]}


def sink(bins, reps, quick):
    port = os.environ.get("PERF_CLICKHOUSE_PORT", "18127")
    url = f"http://127.0.0.1:{port}"
    step(f"sink: engine writers vs Inserter, ClickHouse on {url}")
    json_path = os.path.join(WORK, "sink.json")
    rows = "200000" if quick else "1000000"
    rc = subprocess.run([os.path.join(bins, "roomgate-sink-bench"), "--clickhouse-url", url,
                         "--rows", rows, "--reps", str(reps), "--json", json_path]).returncode
    if rc != 0:
        die(f"perf: roomgate-sink-bench exited with {rc}")
    with open(json_path) as f:
        return json.load(f)


def guard(quick):
    step("guard: keyed_rate_limit (criterion), roomgate vs governor")
    secs = "1" if quick else "3"
    cmd = ["cargo", "bench", "--locked", "-p", "roomgate-benches", "--bench", "guard", "--",
           "keyed_rate_limit", "--warm-up-time", "1", "--measurement-time", secs]
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        die("perf: the guard bench failed")
    base = os.path.join(ROOT, "target", "criterion", "keyed_rate_limit")
    res = {}
    for name in sorted(os.listdir(base)):
        for param in sorted(os.listdir(os.path.join(base, name))):
            est = os.path.join(base, name, param, "new", "estimates.json")
            if os.path.exists(est):
                with open(est) as f:
                    res[f"{name}/{param}"] = json.load(f)["median"]["point_estimate"]
    ours = [v for k, v in res.items() if "governor" not in k]
    peer = [v for k, v in res.items() if "governor" in k]
    out = {"median_ns": res}
    if ours and peer:
        out["ratio_governor_over_roomgate"] = min(peer) / min(ours)
    return out


def memory_run(kind, bins, rep, viewers, clickhouse_url):
    """One server: RSS per idle viewer, then per like-storming viewer."""
    ch = None
    if kind == "engine":
        db = f"perf_mem_{int(time.time() * 1000)}"
        ch = (clickhouse_url, db)
    step(f"memory, rep {rep + 1}: {kind}, {viewers:,} idle viewers, then a like storm")
    srv = Server(kind, bins, f"memory-{kind}", clickhouse=ch)
    pid = srv.proc.pid
    try:
        time.sleep(1.0)
        # The server at rest, before any viewer: both figures are
        # measured from here.
        base = rss_bytes(pid)
        summary, s = loadgen(bins, srv, os.path.join(srv.dir, f"idle-{rep}.json"), [
            "--rooms", "1", "--viewers", str(viewers), "--duration", "16", "--ramp", "8",
            "--chat-rate", "0", "--like-rate", "0", "--lead-rate", "0",
        ], [("rss", 14.0, lambda: rss_bytes(pid))])
        # The viewers connected when RSS was sampled (the loadgen's
        # timeline), not the ones that ever connected: a figure taken after
        # viewers left would be the residue of their sessions.
        # (A second of margin: the timeline's clock starts with the loadgen,
        # a little after this script's.)
        at = s["rss"][0] - 1.0
        points = [p for p in (summary.get("timeline") or {}).get("points", []) if p["t"] <= at]
        connected = points[-1]["viewers"] if points else 0
        if connected < 0.99 * viewers:
            die(f"perf: only {connected:,} of {viewers:,} viewers were connected when RSS was sampled")
        idle = (s["rss"][1] - base) / max(connected, 1)
        print(f"  {kind}: RSS {base / 2**20:.1f} → {s['rss'][1] / 2**20:.1f} MiB with {connected:,} viewers: "
              f"{idle / 1024:.2f} KiB per idle viewer")
        summary, s = loadgen(bins, srv, os.path.join(srv.dir, f"storm-{rep}.json"), [
            "--scenario", os.path.join(ROOT, "loadgen", "scenarios", "perf-like-storm.toml"),
            "--viewers", str(viewers), "--room-base", "101",
        ], [("rss", None, lambda: rss_bytes(pid))])
        peak = max(s["rss"])
        connected = summary["connections"]["viewers_connected"]
        active = (peak - base) / max(connected, 1)
        print(f"  {kind}: peak RSS {peak / 2**20:.1f} MiB with {connected:,} active viewers: "
              f"{active / 1024:.1f} KiB per active viewer")
    finally:
        srv.close()
    return idle, active


def memory(bins, reps, quick, clickhouse_url):
    """Engine (real ClickHouse sink) and the bare peer, same loads."""
    viewers = 2000 if quick else 10000
    runs = {"engine": {"idle": [], "active": []}, "peer": {"idle": [], "active": []}}
    for rep in range(reps):
        for kind in ("peer", "engine"):
            idle, active = memory_run(kind, bins, rep, viewers, clickhouse_url)
            runs[kind]["idle"].append(idle)
            runs[kind]["active"].append(active)
    out = {"viewers": viewers,
           "note": "(RSS with the viewers - RSS at rest) / connected viewers; active = peak during the storm"}
    for kind, r in runs.items():
        out[kind] = {
            "idle_bytes_per_viewer": {"runs": r["idle"], "median": statistics.median(r["idle"])},
            "active_bytes_per_viewer": {"runs": r["active"], "median": statistics.median(r["active"])},
        }
    for key in ("idle_bytes_per_viewer", "active_bytes_per_viewer"):
        out[key.replace("_bytes", "_overhead_bytes")] = (
            out["engine"][key]["median"] - out["peer"][key]["median"])
    # Kept at the top level too (the targets are about the engine).
    out["idle_bytes_per_viewer"] = out["engine"]["idle_bytes_per_viewer"]
    out["active_bytes_per_viewer"] = out["engine"]["active_bytes_per_viewer"]
    return out


def metric_values(admin, names):
    """The values of the series `names` (with their labels, as written) on
    the engine's /metrics."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=2) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in names:
            out[parts[0]] = float(parts[1])
    return out


PACE_METRICS = ("roomgate_like_pace_ms", "roomgate_like_pace_notices_total", "roomgate_io_busy_permille")
LIKE_FRAMES = 'roomgate_frames_total{kind="like"}'


def pacing_run(bins, rep, paced):
    """One engine at the front-door load, pacing on or off: CPU per second
    and like frames received in the steady window, ack p99, and (paced) the
    pace over time and the notices sent."""
    label = "paced" if paced else "unpaced"
    srv = Server("engine", bins, f"pacing-{label}", pace=paced)
    pid = srv.proc.pid
    t0 = time.time()
    seen = []  # (s since start, {metric: value}) every 0.1 s

    def sample():
        try:
            seen.append((time.time() - t0, metric_values(srv.admin, PACE_METRICS)))
        except OSError:
            pass
        return 0
    snap = lambda: (cpu_secs(pid), metric_values(srv.admin, (LIKE_FRAMES,)))  # noqa: E731
    try:
        summary, s = loadgen(bins, srv, os.path.join(srv.dir, f"pacing-{rep}.json"), load_args(CPU_LIKES),
                             [("a", WINDOW[0], snap), ("b", WINDOW[1], snap), ("metrics", None, sample)])
    finally:
        srv.close()
    (ta, (ca, la)), (tb, (cb, lb)) = s["a"], s["b"]
    ok, p99 = healthy(summary)
    likes = (lb.get(LIKE_FRAMES, 0) - la.get(LIKE_FRAMES, 0)) / (tb - ta)
    run = {"cpu_s_per_s": (cb - ca) / (tb - ta), "ack_p99_ms": p99, "healthy": ok,
           "like_frames_per_s": likes, "viewers": summary["connections"]["viewers_connected"]}
    if paced:
        # The pace's changes over the run (s since the engine started, ms).
        changes, last = [], None
        for t, m in seen:
            pace = m.get("roomgate_like_pace_ms")
            if pace is not None and pace != last:
                changes.append([round(t, 1), pace])
                last = pace
        run["pace_changes"] = changes
        run["notices"] = max((m.get("roomgate_like_pace_notices_total", 0) for _, m in seen), default=0)
        run["busy_permille_max_in_window"] = max(
            (m.get("roomgate_io_busy_permille", 0) for t, m in seen if ta <= t <= tb), default=0)
    print(f"  {label}: {run['cpu_s_per_s']:.3f} CPU-s per s, {likes:,.0f} like frames/s received, "
          f"ack p99 {p99:.1f} ms{'' if ok else ' (NOT healthy)'}"
          + (f"; pace {run['pace_changes']}, {run['notices']:,.0f} notices" if paced else ""))
    return run


def pacing(bins, reps):
    runs = {"unpaced": [], "paced": []}
    for rep in range(reps):
        order = (False, True) if rep % 2 == 0 else (True, False)
        for paced in order:
            step(f"pacing, rep {rep + 1}/{reps}: like pacing {'on' if paced else 'off'}")
            runs["paced" if paced else "unpaced"].append(pacing_run(bins, rep, paced))
    out = {"offered": {"rooms": ROOMS, "viewers_per_room": VIEWERS_PER_ROOM, "like_taps_per_room_s": CPU_LIKES,
                       "window_s": list(WINDOW)}, "runs": runs}
    for kind, rs in runs.items():
        out[kind] = {key: statistics.median(r[key] for r in rs)
                     for key in ("cpu_s_per_s", "ack_p99_ms", "like_frames_per_s")}
    out["notices_per_viewer"] = statistics.median(r["notices"] / max(r["viewers"], 1) for r in runs["paced"])
    out["ratio_paced_over_unpaced_cpu"] = out["paced"]["cpu_s_per_s"] / out["unpaced"]["cpu_s_per_s"]
    return out


# Kernel symbols where a cpu-clock sample lands when interrupts come back on
# after a context switch or a wake-up: the cost of handing work between
# threads, whichever thread pays it.
# (`_raw_spin_unlock_irqrestore`, where wake-ups also land, is left to its
# thread's part: device interrupts land there too.)
SCHED_SYMBOLS = {"finish_task_switch.isra.0", "finish_task_switch", "__schedule", "schedule",
                 "try_to_wake_up"}
PROFILE_HZ = 2999
PROFILE_PARTS = (
    ("guard", "the guard's own functions (roomgate::guard, its term matcher; what they inline or call counts as shard)"),
    ("shard", "shard workers besides the guard: queues, rows, acks handed to the log"),
    ("log", "log thread: encoding, writes, fsyncs (I/O exits of the VM included)"),
    ("sched", "switching threads in (kernel scheduler, every thread)"),
    ("gate", "the server's own code on the io threads: sessions, frames, acks (roomgate::, roomgate_peer::)"),
    ("io", "the rest of the io threads: QUIC, TLS, tokio, UDP, allocator, kernel"),
)


def profile_part(comm, sym):
    if "roomgate::guard::" in sym or "aho_corasick::" in sym:
        return "guard"
    if sym in SCHED_SYMBOLS:
        return "sched"
    if comm.startswith("roomgate-shard"):
        return "shard"
    if comm.startswith("roomgate-log"):
        return "log"
    if sym.startswith(("roomgate::", "roomgate_peer::", "<roomgate::", "<roomgate_peer::")):
        return "gate"
    return "io"


def profile_run(bins, kind):
    """`perf record` of one server over the steady window: µs per frame
    per part, and the top symbols."""
    srv = Server(kind, bins, f"profile-{kind}")
    data = os.path.join(srv.dir, "perf.data")
    secs = WINDOW[1] - WINDOW[0]

    def record():
        # cpu-clock: a fixed period of 1/PROFILE_HZ s of CPU per sample,
        # which the µs figures below rely on (`cycles`, where the machine
        # has counters, has an adaptive period).
        c0 = cpu_secs(srv.proc.pid)
        r = subprocess.run(["perf", "record", "-e", "cpu-clock", "-F", str(PROFILE_HZ), "-o", data,
                            "-p", str(srv.proc.pid), "--", "sleep", str(secs)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return r.returncode, r.stderr[-2000:], cpu_secs(srv.proc.pid) - c0
    try:
        summary, s = loadgen(bins, srv, os.path.join(srv.dir, "profile.json"), load_args(CPU_LIKES),
                             [("perf", WINDOW[0], record)])
    finally:
        srv.close()
    # (The sampler notes the time it calls `record`: the window's start.)
    start, (rc, err, cpu) = s["perf"]
    if rc != 0:
        die(f"perf: `perf record` failed ({rc}; as root, or lower kernel.perf_event_paranoid):\n{err}")
    frames = max(frames_between(summary, start, start + secs), 1.0)
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "comm,sym", "--stdio",
                          "-g", "none", "-F", "sample,comm,sym"], capture_output=True, text=True).stdout
    parts = {name: 0.0 for name, _ in PROFILE_PARTS}
    symbols = {}
    line_re = re.compile(r"^\s*(\d+)\s+(\S+)\s+\[.\]\s+(.*?)\s*$")
    for line in out.splitlines():
        m = line_re.match(line)
        if not m:
            continue
        us = int(m.group(1)) * 1e6 / PROFILE_HZ / frames
        comm, sym = m.group(2), m.group(3)
        parts[profile_part(comm, sym)] += us
        symbols[sym] = symbols.get(sym, 0.0) + us
    top = sorted(symbols.items(), key=lambda kv: -kv[1])[:15]
    total = sum(parts.values())
    if total == 0:
        die(f"perf: no samples in {data}")
    # The same window's CPU from /proc: the samples should add up to about
    # it (perf's own overhead and a throttled rate show here).
    proc = cpu * 1e6 / frames
    print(f"  {kind}: {total:.1f} µs per frame sampled ({proc:.1f} from /proc); "
          + ", ".join(f"{k} {v:.2f}" for k, v in parts.items()))
    return {"us_per_frame": parts, "total": total, "proc_us_per_frame": proc,
            "top_symbols": [[k, v] for k, v in top]}


def profile(bins):
    if shutil.which("perf") is None:
        print("  perf is not installed (apt install linux-perf): skipped")
        return {"skipped": "perf not installed"}
    out = {"hz": PROFILE_HZ, "window_s": list(WINDOW), "parts": dict(PROFILE_PARTS)}
    for kind in ("peer", "engine"):
        step(f"profile: perf record of the {kind} at the front-door load")
        out[kind] = profile_run(bins, kind)
    gap = out["engine"]["total"] - out["peer"]["total"]
    out["gap_us_per_frame"] = gap
    out["excess"] = {k: out["engine"]["us_per_frame"][k] - out["peer"]["us_per_frame"][k] for k, _ in PROFILE_PARTS}
    out["guard_share_of_gap"] = out["excess"]["guard"] / gap if gap > 0 else None
    return out


def ab(bins, reps, variants):
    """Engine configurations against each other and the peer at the
    front-door load: each repetition runs the peer, the engine as
    configured and every variant in turn (alternating, so drift hits all),
    then medians of CPU per frame and per thread group."""
    runs = [("peer", "peer", "")] + [("engine", "engine", "")] + [("engine", label, extra) for label, extra in variants]
    us = {label: [] for _, label, _ in runs}
    threads_of = {label: {} for _, label, _ in runs}
    for rep in range(reps):
        for kind, label, extra in runs:
            step(f"A/B, rep {rep + 1}/{reps}: {label}")
            us[label].append(cpu_per_frame(bins, kind, f"ab-{label}", rep, label,
                                           per_thread=threads_of[label], extra_toml=extra))
    out = {}
    peer = statistics.median(us["peer"])
    for _, label, extra in runs:
        med = statistics.median(us[label])
        out[label] = {"config": extra, "runs": us[label], "median": med, "ratio_peer_over": peer / med,
                      "threads": thread_medians(threads_of[label])}
        print(f"  {label}: median {med:.1f} µs per frame (peer ÷ it {peer / med:.2f}); runs "
              + " / ".join(f"{x:.1f}" for x in us[label]))
        for g, t in sorted(out[label]["threads"].items()):
            if t["cpu_us_per_frame"] >= 0.05:
                print(f"      {g:18s} {t['cpu_us_per_frame']:5.2f} µs  {t['switches_per_1k_frames']:4.0f} switches per 1,000 frames")
    return out


def endpoints_part(bins, reps):
    """1 endpoint against one per core, for the peer and for the engine, at
    the front-door load, alternating: does the engine gain from several
    endpoints what a bare quinn server would, or more?"""
    many = max(2, cores())  # on one core: 2, else the two runs would be the same
    runs = [("peer", 1), ("peer", many), ("engine", 1), ("engine", many)]
    us = {r: [] for r in runs}
    for rep in range(reps):
        for kind, n in runs:
            step(f"endpoints, rep {rep + 1}/{reps}: {kind} with {n}")
            us[(kind, n)].append(cpu_per_frame(bins, kind, f"eps-{kind}-{n}", rep, f"{kind}, {n} endpoints",
                                               endpoints=n))
    med = {r: statistics.median(v) for r, v in us.items()}
    out = {"endpoints": many}
    for kind in ("peer", "engine"):
        out[kind] = {"one": {"runs": us[(kind, 1)], "median": med[(kind, 1)]},
                     "many": {"runs": us[(kind, many)], "median": med[(kind, many)]},
                     "many_over_one": med[(kind, many)] / med[(kind, 1)]}
        print(f"  {kind}: 1 endpoint {med[(kind, 1)]:.1f}, {many} endpoints {med[(kind, many)]:.1f} µs per frame "
              f"({many} ÷ 1: {out[kind]['many_over_one']:.2f})")
    for n in (1, many):
        out[f"ratio_peer_over_engine_{n}"] = med[("peer", n)] / med[("engine", n)]
        print(f"  peer ÷ engine, both with {n}: {out[f'ratio_peer_over_engine_{n}']:.2f}")
    return out


def variant(spec):
    """`LABEL=FILE`: a TOML file appended to the engine's configuration."""
    label, sep, path = spec.partition("=")
    if not sep or not label or label in ("peer", "engine"):
        raise argparse.ArgumentTypeError("expected LABEL=FILE.toml (LABEL not peer or engine)")
    try:
        with open(path) as f:
            return label, f.read()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{path}: {e}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="one short repetition of each part (harness smoke test)")
    p.add_argument("--only", default="front,loadgen,sink,guard,memory", help="comma-separated parts to run")
    p.add_argument("--variant", type=variant, action="append", default=[], metavar="LABEL=FILE.toml",
                   help="for the ab part: an engine configuration appended to the default one (repeatable)")
    args = p.parse_args()
    if "ab" in args.only.split(",") and not args.variant:
        p.error("the ab part needs at least one --variant LABEL=FILE.toml")
    reps = 1 if args.quick else max(args.reps, 1)
    parts = set(args.only.split(","))
    os.makedirs(WORK, exist_ok=True)
    started = time.time()

    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "kernel": platform.release(),
                    "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                                 if line.startswith("model name")), "unknown")},
        "reps": reps, "quick": args.quick,
    }
    port = os.environ.get("PERF_CLICKHOUSE_PORT", "18127")
    ch_url = f"http://127.0.0.1:{port}"
    ch = [sys.executable, os.path.join(ROOT, "scripts", "clickhouse.py")]
    ch_env = dict(os.environ, CLICKHOUSE_HTTP_PORT=port,
                  CLICKHOUSE_DATA=os.path.join(ROOT, "build", "clickhouse", f"perf-{port}"))
    needs_ch = bool(parts & {"sink", "memory"})
    if needs_ch and subprocess.run(ch + ["up"], env=ch_env, stdout=subprocess.DEVNULL).returncode != 0:
        die(f"perf: could not start ClickHouse on port {port} (PERF_CLICKHOUSE_PORT)")
    try:
        if "front" in parts:
            result["front_door"] = front_door(args.bin_dir, reps, args.quick)
        if "loadgen" in parts:
            result["loadgen"] = loadgen_cost(args.bin_dir, reps)
        if "sink" in parts:
            result["sink"] = sink(args.bin_dir, reps, args.quick)
        if "guard" in parts:
            result["guard"] = guard(args.quick)
        if "memory" in parts:
            result["memory"] = memory(args.bin_dir, reps, args.quick, ch_url)
        if "pacing" in parts:
            result["pacing"] = pacing(args.bin_dir, reps)
        if "profile" in parts:
            result["profile"] = profile(args.bin_dir)
        if "ab" in parts:
            result["ab"] = ab(args.bin_dir, reps, args.variant)
        if "endpoints" in parts:
            result["endpoints"] = endpoints_part(args.bin_dir, reps)
    finally:
        if needs_ch:
            subprocess.run(ch + ["down"], env=ch_env, stdout=subprocess.DEVNULL)
    result["wall_s"] = round(time.time() - started, 1)
    path = os.path.join(WORK, "perf.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(table(result))
    print(f"\nperf: {path} ({result['wall_s']:.0f} s)")


def table(r):
    rows = []
    fd = r.get("front_door")
    if fd:
        c = fd["cpu_us_per_frame"]
        rows.append(("front door: CPU µs per frame", f"{c['engine']['median']:.1f}",
                     f"{c['peer']['median']:.1f}", f"{fd['ratio_peer_over_engine']:.2f}", "≥ 0.85"))
        pr = fd.get("pair_ratios")
        if pr:
            rows.append(("  each repetition's pair: median (range)", "", "",
                         f"{pr['median']:.2f} ({min(pr['runs']):.2f}–{max(pr['runs']):.2f})", ""))
        if "engine_one_endpoint" in c:
            e1 = c["engine_one_endpoint"]["median"]
            rows.append((f"  same, 1 endpoint instead of {fd['engine_endpoints']}", f"{e1:.1f}",
                         f"{c['peer']['median']:.1f}", f"{c['peer']['median'] / e1:.2f}", ""))
        lad = fd["ladder"]
        e, pe = lad["engine"]["max_sustained_frames_per_s"], lad["peer"]["max_sustained_frames_per_s"]
        rows.append(("front door: max frames/s, ack p99 ≤ 50 ms", f"{e or 0:,.0f}", f"{pe or 0:,.0f}",
                     f"{(e or 0) / pe:.2f}" if pe else "-", ""))
    lg = r.get("loadgen")
    if lg:
        c = lg["cpu_us_per_frame"]
        rows.append(("loadgen: CPU µs per frame, 2 workers vs 1", f"{c['two_workers']['median']:.1f}",
                     f"{c['one_process']['median']:.1f}", f"{lg['ratio_one_over_two']:.2f}", ""))
    sk = r.get("sink")
    if sk:
        rows.append(("sink: rows/s into ClickHouse", f"{sk['median_engine']:,.0f}", f"{sk['median_peer']:,.0f}",
                     f"{sk['ratio']:.2f}", "≥ 0.9"))
    g = r.get("guard")
    if g and "ratio_governor_over_roomgate" in g:
        rows.append(("guard: keyed limiter ns/op (governor ÷ ours)", "", "",
                     f"{g['ratio_governor_over_roomgate']:.2f}", ""))
    m = r.get("memory")
    if m:
        for key, name, target in (("idle_bytes_per_viewer", "memory: KiB per idle viewer", "≤ 4"),
                                  ("active_bytes_per_viewer", "memory: KiB per active viewer (storm)", "≤ 16")):
            e, pe = m["engine"][key]["median"], m["peer"][key]["median"]
            rows.append((name, f"{e / 1024:.1f}", f"{pe / 1024:.1f}", f"{pe / e:.2f}" if e > 0 else "-", target))
            # The peer is quinn alone: the difference is what roomgate adds.
            rows.append(("  engine − peer: what roomgate adds", f"{(e - pe) / 1024:.1f}", "", "", ""))
    pc = r.get("pacing")
    if pc:
        rows.append(("pacing: engine CPU-s per s, paced vs not", f"{pc['paced']['cpu_s_per_s']:.3f}",
                     f"{pc['unpaced']['cpu_s_per_s']:.3f}", f"{pc['ratio_paced_over_unpaced_cpu']:.2f}", ""))
        rows.append(("  ack p99 ms, paced vs not", f"{pc['paced']['ack_p99_ms']:.1f}",
                     f"{pc['unpaced']['ack_p99_ms']:.1f}", "", ""))
        rows.append(("  like frames/s received, paced vs not", f"{pc['paced']['like_frames_per_s']:,.0f}",
                     f"{pc['unpaced']['like_frames_per_s']:,.0f}", "", ""))
        rows.append(("  notices per viewer (paced)", f"{pc['notices_per_viewer']:.1f}", "", "", ""))
    w = [44, 12, 12, 8, 8]
    head = ("figure", "roomgate", "peer", "ratio", "target")
    out = ["", "  ".join(h.ljust(n) for h, n in zip(head, w))]
    for row in rows:
        out.append("  ".join(str(v).ljust(n) for v, n in zip(row, w)))
    pf = r.get("profile")
    if pf and "gap_us_per_frame" in pf:
        out += ["", f"profile (perf record at {pf['hz']} Hz, steady window): µs per frame, engine − peer = "
                    f"{pf['gap_us_per_frame']:.1f}; the guard is {100 * (pf['guard_share_of_gap'] or 0):.0f} % of it"]
        for key, what in PROFILE_PARTS:
            e, p = pf["engine"]["us_per_frame"][key], pf["peer"]["us_per_frame"][key]
            out.append(f"  {e:6.2f} engine {p:6.2f} peer {e - p:+6.2f}  {what}")
    if fd and fd.get("threads"):
        out += ["", "front door per thread group (medians): CPU µs per frame, context switches per 1,000 "
                    "frames (involuntary)"]
        for kind in ("engine", "peer"):
            for group, t in sorted(fd["threads"][kind].items(), key=lambda x: -x[1]["cpu_us_per_frame"]):
                if t["cpu_us_per_frame"] < 0.05 and t["switches_per_1k_frames"] < 1:
                    continue
                out.append(f"  {kind:6}  {group:22} {t['cpu_us_per_frame']:6.1f} µs  "
                           f"{t['switches_per_1k_frames']:7.0f} ({t['involuntary_per_1k_frames']:.0f})")
    return "\n".join(out)


if __name__ == "__main__":
    main()
