#!/usr/bin/env python3
"""Run every cargo-fuzz target for a fixed time; fail on any crash.

    python3 scripts/fuzz.py --secs 30            # what `make test` runs
    python3 scripts/fuzz.py --secs 120 --only phone

Each target reads the committed seeds in fuzz/seeds/<target>/ and grows its
working corpus in build/fuzz/corpus/<target>/ (kept between runs, not
committed). A crash leaves its input in fuzz/artifacts/<target>/ and the
run exits 1. The summary (executions, corpus size, crashes per target) is
printed and written to build/fuzz/report.json.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ = os.path.join(ROOT, "fuzz")
TARGETS = ["decode_client", "ticket", "config", "phone", "wal_scan"]
# libFuzzer's default input cap is 4 KiB; a frame may be 16 KiB.
MAX_LEN = {"decode_client": 20_000, "wal_scan": 20_000}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--secs", type=int, default=30, help="seconds per target (default 30)")
    ap.add_argument("--only", action="append", choices=TARGETS, help="run only this target (repeatable)")
    ap.add_argument("--toolchain", default="nightly")
    args = ap.parse_args()
    targets = args.only or TARGETS
    cargo = ["cargo", f"+{args.toolchain}", "fuzz"]

    print("fuzz: building the targets (release, address sanitizer)", flush=True)
    subprocess.run(cargo + ["build", "-O"], cwd=FUZZ, check=True)

    report = {"secs_per_target": args.secs, "targets": {}}
    failed = []
    for t in targets:
        corpus = os.path.join(ROOT, "build", "fuzz", "corpus", t)
        os.makedirs(corpus, exist_ok=True)
        seeds = os.path.join(FUZZ, "seeds", t)
        cmd = cargo + ["run", "-O", t, corpus, seeds, "--",
                       f"-max_total_time={args.secs}", "-print_final_stats=1",
                       f"-max_len={MAX_LEN.get(t, 4096)}", "-rss_limit_mb=2048",
                       "-timeout=10"]
        started = time.time()
        p = subprocess.run(cmd, cwd=FUZZ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out = p.stdout
        execs = _stat(out, "stat::number_of_executed_units")
        crashed = p.returncode != 0
        entry = {
            "executions": execs,
            "execs_per_sec": round(execs / max(time.time() - started, 1e-9)),
            "corpus_files": len(os.listdir(corpus)),
            "crashes": 1 if crashed else 0,
            "peak_rss_mb": _stat(out, "stat::peak_rss_mb"),
        }
        report["targets"][t] = entry
        print(f"fuzz {t:14} {execs:>12,} executions  corpus {entry['corpus_files']:>5}  "
              f"rss {entry['peak_rss_mb']} MB  {'CRASH' if crashed else 'ok'}", flush=True)
        if crashed:
            failed.append(t)
            # The part of libFuzzer's output that says what and where.
            tail = out[-6000:]
            sys.stdout.write(tail)
    report["total_executions"] = sum(e["executions"] for e in report["targets"].values())
    report["crashes"] = len(failed)
    os.makedirs(os.path.join(ROOT, "build", "fuzz"), exist_ok=True)
    with open(os.path.join(ROOT, "build", "fuzz", "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(f"fuzz: {report['total_executions']:,} executions in total, {len(failed)} crashed "
          f"(build/fuzz/report.json)")
    if failed:
        print(f"fuzz: crashing inputs are in fuzz/artifacts/{{{','.join(failed)}}}/; "
              f"reproduce with: cd fuzz && cargo +nightly fuzz run -O <target> <artifact>")
        sys.exit(1)


def _stat(out, name):
    m = re.findall(rf"{re.escape(name)}:\s*(\d+)", out)
    return int(m[-1]) if m else 0


if __name__ == "__main__":
    main()
