"""Helpers shared by scripts/e2e.py and scripts/demo.py (stdlib only)."""

import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

# Development-only key material: the demo and tests are not production.
DEV_ENV = {
    "ROOMGATE_TICKET_SECRET": "roomgate-dev-ticket-secret-not-for-production",
    "ROOMGATE_PII_HMAC_KEY": "5a" * 32,
    "ROOMGATE_PII_ENC_KEY": "c3" * 32,
}


def ch_query(url, sql):
    """Run one query against ClickHouse over HTTP; return the text body."""
    req = urllib.request.Request(url + "/?" + urllib.parse.urlencode({"query": sql}))
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


def ch_scalar(url, sql):
    return int(ch_query(url, sql).strip() or 0)


def wait_http(url, timeout=60.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f}s")


def fresh_dir(path):
    """Remove `path` if it exists and return it (an engine data dir per run)."""
    import shutil
    shutil.rmtree(path, ignore_errors=True)
    return path


def start(cmd, log_path, env=None):
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    log = open(log_path, "w")
    full_env = dict(os.environ)
    full_env.update(DEV_ENV)
    full_env.update(env or {})
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)


def stop(proc, timeout=90.0):
    """SIGTERM and wait: the engine drains and flushes, then exits 0."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -9


def log_tail(path, n=30):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def die(msg):
    print(msg, file=sys.stderr)
    raise SystemExit(1)
