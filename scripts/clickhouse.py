#!/usr/bin/env python3
"""Run a real local ClickHouse server for roomgate development and tests.

No Docker, no internet: the server is ClickHouse 26.9 embedded in the PyPI
package chdb-core (clickhouse-local serving HTTP and native TCP), installed in
build/venv by scripts/ensure-venv.sh.  See /work/shared/CLICKHOUSE.md.

Subcommands:
  serve   run the server in the foreground (needs the venv python: `up` uses it)
  up      start `serve` detached, wait until /ping answers, print the URLs
  down    stop the server started by `up` (SIGTERM, then SIGKILL after 15 s)
  status  show whether the server(s) started by `up` are running
  cluster-up    start a local sharded cluster: CLUSTER_SHARDS servers, each
                with the same <remote_servers> (idempotent: starts the nodes
                that are not running, e.g. one a test stopped)
  cluster-down  stop the nodes of that cluster
  cluster-status  show its nodes and what each says about the cluster
  cluster-urls  print the HTTP URLs of its nodes, comma-separated, in shard order

Environment:
  CLICKHOUSE_HTTP_PORT  HTTP port (default 8123)
  CLICKHOUSE_TCP_PORT   native TCP port (default HTTP port + 877: 8123 -> 9000,
                        18123 -> 19000)
  CLICKHOUSE_DATA       data directory, persists across restarts
                        (default <repo>/build/clickhouse/data)
  CLICKHOUSE_CLUSTER    (optional) a cluster name: the server's config.xml
                        gets <remote_servers> with this cluster, one shard per
                        entry of CLICKHOUSE_CLUSTER_NODES, and
                        <background_distributed_schedule_pool_size>
  CLICKHOUSE_CLUSTER_NODES  host:tcp_port of every shard, in shard order,
                        comma-separated (e.g. 127.0.0.1:19007,127.0.0.1:19008)
  CLICKHOUSE_USERS_XML  (optional) a users.xml (e.g. from `roomgate grants
                        --format users-xml`): the server authenticates from it
                        (<user_directories><users_xml>), so its users, roles,
                        column grants and row policies apply. A `default`
                        user (no password, loopback only, access_management)
                        is added unless the file defines one. Read at start:
                        a changed file needs `down` then `up`. Unset: the
                        built-in `default` user only, as before.

Cluster (cluster-up / cluster-down / cluster-status):
  CLUSTER_SHARDS        number of shards, one server each (default 2)
  CLUSTER_HTTP_BASE     HTTP port of shard 1 (default 18130); shard i listens
                        on CLUSTER_HTTP_BASE + i - 1, its native TCP port on
                        that + 877, its data in build/clickhouse/cluster-<port>
  CLUSTER_NAME          cluster name in <remote_servers> (default roomgate)

Files (one set per HTTP port, so several servers can run at once):
  build/clickhouse/run-<port>/config.xml    listener config (cwd of the server)
  build/clickhouse/run-<port>/users.xml     CLICKHOUSE_USERS_XML as served
  build/clickhouse/clickhouse-<port>.pid    pid of the `serve` process
  build/clickhouse/clickhouse-<port>.json   its ports, data dir and log path
  build/clickhouse/clickhouse-<port>.log    its output
  build/clickhouse/cluster-<base>.json      a cluster's name and nodes (cluster-up)

Exit codes: 0 ok; 1 failure; 2 port or data directory already in use /
bad configuration; 3 (status) not running.
"""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE_DIR = os.path.join(ROOT, "build", "clickhouse")
VENV_PYTHON = os.path.join(ROOT, "build", "venv", "bin", "python")

# Marker in the never-ending query that keeps the server alive, so that it can
# be found (system.processes) and cancelled for a clean shutdown.
# `up` also puts a random token in it (env CLICKHOUSE_INSTANCE_TOKEN) to tell
# the server it started from whatever else might answer on the port.
KEEPALIVE_MARKER = "roomgate-clickhouse-keepalive"


def keepalive_sql(token):
    return (
        "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
        "SELECT /* %s %s */ sleepEachRow(1) FROM numbers(1e12) "
        "SETTINGS max_block_size=1, max_execution_time=0 FORMAT Null" % (KEEPALIVE_MARKER, token)
    )

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def log(msg):
    print("clickhouse: " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- settings


class Config:
    def __init__(self, env=None):
        self.env = os.environ if env is None else env
        self.http_port = self._port("CLICKHOUSE_HTTP_PORT", 8123)
        self.tcp_port = self._port("CLICKHOUSE_TCP_PORT", self.http_port + 877)
        if self.tcp_port == self.http_port:
            fail(2, "CLICKHOUSE_TCP_PORT must differ from CLICKHOUSE_HTTP_PORT (%d)" % self.http_port)
        data = self.env.get("CLICKHOUSE_DATA") or os.path.join(STATE_DIR, "data")
        self.data = os.path.abspath(data)
        self.cluster = self.env.get("CLICKHOUSE_CLUSTER", "").strip()
        nodes = self.env.get("CLICKHOUSE_CLUSTER_NODES", "").strip()
        self.cluster_nodes = [n.strip() for n in nodes.split(",") if n.strip()]
        if self.cluster:
            if not all(c.isalnum() or c in "_-" for c in self.cluster):
                fail(2, "CLICKHOUSE_CLUSTER=%r: use letters, digits, '_' and '-'" % self.cluster)
            if not self.cluster_nodes:
                fail(2, "CLICKHOUSE_CLUSTER needs CLICKHOUSE_CLUSTER_NODES (host:tcp_port,...)")
            for n in self.cluster_nodes:
                host, _, port = n.rpartition(":")
                if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                    fail(2, "CLICKHOUSE_CLUSTER_NODES: %r is not host:tcp_port" % n)
        users = self.env.get("CLICKHOUSE_USERS_XML", "").strip()
        self.users_xml = os.path.abspath(users) if users else ""
        p = self.http_port
        self.run_dir = os.path.join(STATE_DIR, "run-%d" % p)
        self.pid_file = os.path.join(STATE_DIR, "clickhouse-%d.pid" % p)
        self.state_file = os.path.join(STATE_DIR, "clickhouse-%d.json" % p)
        self.log_file = os.path.join(STATE_DIR, "clickhouse-%d.log" % p)
        self.url = "http://127.0.0.1:%d" % p

    def _port(self, name, default):
        raw = self.env.get(name, "").strip()
        if not raw:
            value = default
        else:
            try:
                value = int(raw)
            except ValueError:
                fail(2, "%s=%r is not a port number" % (name, raw))
        if not 1 <= value <= 65535:
            fail(2, "%s=%d is out of range 1..65535" % (name, value))
        return value


def fail(code, msg):
    log(msg)
    sys.exit(code)


# ---------------------------------------------------------------- helpers


def port_free(port):
    """True if 127.0.0.1:port can be bound (as the server will bind it)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # The server sets SO_REUSEADDR too, so TIME_WAIT leftovers of a server
        # that just stopped do not count as "in use"; a listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EACCES):
            return False
        raise
    finally:
        s.close()


def data_dir_locked(data):
    """True if another ClickHouse holds the lock on DATA/status."""
    import fcntl

    status = os.path.join(data, "status")
    if not os.path.exists(status):
        return False
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def http(url, sql=None, timeout=2.0):
    data = sql.encode() if sql is not None else None
    with urllib.request.urlopen(url, data=data, timeout=timeout) as r:
        return r.read().decode(errors="replace")


def ping(port, timeout=1.0):
    try:
        return http("http://127.0.0.1:%d/ping" % port, timeout=timeout).strip() == "Ok."
    except (OSError, urllib.error.URLError):
        return False


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def is_our_server(pid):
    """True if pid is alive and is a `clickhouse.py serve` process."""
    if pid is None:
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False  # zombie: exited, not yet reaped
    except (OSError, IndexError):
        pass
    return any(a.endswith(b"clickhouse.py") for a in argv) and b"serve" in argv


def read_state(cfg):
    try:
        with open(cfg.state_file) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def remove_files(cfg):
    for path in (cfg.pid_file, cfg.state_file):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def log_tail(path, lines=25):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


def print_urls(cfg, tcp_port, data):
    print("ClickHouse is up (pid file %s)" % os.path.relpath(cfg.pid_file, ROOT))
    print("  HTTP       %s/" % cfg.url)
    print("  SQL UI     %s/play" % cfg.url)
    print("  Dashboard  %s/dashboard" % cfg.url)
    print("  native TCP 127.0.0.1:%d" % tcp_port)
    print("  data       %s" % data)
    print("  log        %s" % cfg.log_file)


# ---------------------------------------------------------------- serve


def remote_servers_xml(cfg):
    """The <remote_servers> block of a cluster node ('' without a cluster).

    One shard per node, one replica each. The schedule pool size is what
    makes background (asynchronous) Distributed sends work in chdb at all
    (CLICKHOUSE.md); the engine inserts in the foreground, but analysts'
    ad-hoc inserts would otherwise sit in system.distribution_queue.
    """
    if not cfg.cluster:
        return ""
    shards = "".join(
        "      <shard><replica><host>%s</host><port>%s</port></replica></shard>\n"
        % tuple(n.rsplit(":", 1))
        for n in cfg.cluster_nodes
    )
    return (
        "  <remote_servers>\n"
        "    <%s>\n%s    </%s>\n"
        "  </remote_servers>\n"
        "  <background_distributed_schedule_pool_size>4</background_distributed_schedule_pool_size>\n"
        % (cfg.cluster, shards, cfg.cluster)
    )


DEFAULT_USER_XML = """<default>
  <password></password>
  <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
  <profile>default</profile>
  <quota>default</quota>
  <access_management>1</access_management>
  <named_collection_control>1</named_collection_control>
</default>"""


def users_xml_with_default(path):
    """The users.xml at path, with what the launcher itself needs.

    The launcher, the engine's migrations and the tests talk to the server
    as `default` (no password, loopback only, access management); it is
    added unless the file defines a `default` user. A profile and a quota
    named `default` are added when missing, since users refer to them.
    """
    import xml.etree.ElementTree as ET

    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError) as e:
        fail(2, "CLICKHOUSE_USERS_XML=%s: %s" % (path, e))
    root = tree.getroot()
    if root.tag != "clickhouse":
        fail(2, "CLICKHOUSE_USERS_XML=%s: the root element must be <clickhouse>" % path)

    def section(tag):
        el = root.find(tag)
        if el is None:
            el = ET.SubElement(root, tag)
        return el

    users = section("users")
    if users.find("default") is None:
        users.insert(0, ET.fromstring(DEFAULT_USER_XML))
    for tag in ("profiles", "quotas"):
        el = section(tag)
        if el.find("default") is None:
            el.insert(0, ET.Element("default"))
    return ET.tostring(root, encoding="unicode") + "\n"


def file_digest(path):
    """sha256 of a file's bytes ('' when there is no file)."""
    import hashlib

    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return ""


def cmd_serve(cfg):
    for port, var in ((cfg.http_port, "CLICKHOUSE_HTTP_PORT"), (cfg.tcp_port, "CLICKHOUSE_TCP_PORT")):
        if not port_free(port):
            fail(2, "port %d is already in use (set %s to another port)" % (port, var))
    os.makedirs(cfg.data, exist_ok=True)
    if data_dir_locked(cfg.data):
        fail(2, "data directory %s is already used by another ClickHouse server "
                "(stop it, or set CLICKHOUSE_DATA to another directory)" % cfg.data)

    os.makedirs(cfg.run_dir, exist_ok=True)
    users = ""
    if cfg.users_xml:
        with open(os.path.join(cfg.run_dir, "users.xml"), "w") as f:
            f.write(users_xml_with_default(cfg.users_xml))
        users = ("  <user_directories><users_xml><path>users.xml</path></users_xml>"
                 "</user_directories>\n")
    with open(os.path.join(cfg.run_dir, "config.xml"), "w") as f:
        f.write(
            "<clickhouse>\n"
            "  <listen_host>127.0.0.1</listen_host>\n"
            "  <http_port>%d</http_port>\n"
            "  <tcp_port>%d</tcp_port>\n"
            "%s%s"
            "</clickhouse>\n" % (cfg.http_port, cfg.tcp_port, remote_servers_xml(cfg), users)
        )

    try:
        import chdb._chdb as chdb  # must be imported before chdir: it changes cwd
    except ImportError as e:
        fail(1, "cannot import chdb (%s); run scripts/ensure-venv.sh and use %s" % (e, VENV_PYTHON))
    os.chdir(cfg.run_dir)  # clickhouse-local reads ./config.xml for the ports

    token = "".join(c for c in os.environ.get("CLICKHOUSE_INSTANCE_TOKEN", "") if c.isalnum())
    stopping = threading.Event()
    result = {}

    def run():
        try:
            chdb.query(keepalive_sql(token), "TabSeparated", path=cfg.data)
        except BaseException as e:  # noqa: BLE001 - reported below
            result["error"] = e

    # clickhouse-local runs in a thread (chdb releases the GIL) so that the
    # main thread can handle SIGTERM/SIGINT: it cancels the keep-alive query,
    # after which clickhouse-local shuts down cleanly (closes listeners,
    # flushes what it buffers).
    def on_signal(signum, _frame):
        if stopping.is_set():  # second signal: give up on a clean stop
            os._exit(128 + signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log("starting ClickHouse (HTTP %d, TCP %d, data %s, pid %d)"
        % (cfg.http_port, cfg.tcp_port, cfg.data, os.getpid()))
    server = threading.Thread(target=run, name="clickhouse", daemon=True)
    server.start()

    ready = False
    while not stopping.wait(0.1):
        if not server.is_alive():
            # The keep-alive query never ends on its own: clickhouse-local
            # returned at once, e.g. a port or the data dir was taken (it has
            # printed the reason to stderr above).
            msg = result.get("error") or "see the error above"
            fail(2, "ClickHouse failed to start or stopped unexpectedly (%s)" % msg)
        if not ready and ping(cfg.http_port, timeout=0.5):
            ready = True
            log("ready: %s/ (play: /play, dashboard: /dashboard), native TCP 127.0.0.1:%d"
                % (cfg.url, cfg.tcp_port))

    log("stopping")
    if server.is_alive():
        try:
            http(cfg.url + "/",
                 "KILL QUERY WHERE query LIKE '%%%s %s%%' AND query NOT LIKE '%%KILL QUERY%%' ASYNC"
                 % (KEEPALIVE_MARKER, token), timeout=5)
        except (OSError, urllib.error.URLError) as e:
            log("could not cancel the keep-alive query (%s); exiting hard" % e)
            os._exit(1)
        server.join(STOP_TIMEOUT - 3)
        if server.is_alive():
            log("ClickHouse did not stop in time; exiting hard")
            os._exit(1)
    log("stopped (a QUERY_WAS_CANCELLED line above is the keep-alive query ending: expected)")
    # Skip interpreter teardown: chdb's own atexit/static destructors are not
    # needed once clickhouse-local has shut down.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ---------------------------------------------------------------- up / down / status


def answers_as(port, token):
    """True if the server on port is the one whose keep-alive query has token."""
    try:
        out = http("http://127.0.0.1:%d/" % port,
                   "SELECT count() FROM system.processes WHERE query LIKE '%%%s %s%%' "
                   "AND query NOT LIKE '%%system.processes%%'" % (KEEPALIVE_MARKER, token),
                   timeout=1.0)
        return out.strip() not in ("", "0")
    except (OSError, urllib.error.URLError):
        return False


def running_pid(cfg):
    pid = read_pid(cfg.pid_file)
    return pid if is_our_server(pid) else None


def cmd_up(cfg, quiet=False):
    os.makedirs(STATE_DIR, exist_ok=True)
    pid = running_pid(cfg)
    if pid:
        state = read_state(cfg)
        same_data = os.path.abspath(state.get("data", "")) == cfg.data
        same_cluster = (state.get("cluster", ""), state.get("cluster_nodes", [])) == (
            cfg.cluster, cfg.cluster_nodes)
        if same_data and not same_cluster:
            fail(2, "ClickHouse on port %d (pid %d) runs with another cluster configuration "
                    "(%s %s); stop it first (`make cluster-down` or `make clickhouse-down`)"
                 % (cfg.http_port, pid, state.get("cluster") or "no cluster",
                    ",".join(state.get("cluster_nodes", []))))
        same_users = (state.get("users_xml", ""), state.get("users_xml_sha256", "")) == (
            cfg.users_xml, file_digest(cfg.users_xml))
        if same_data and not same_users:
            fail(2, "ClickHouse on port %d (pid %d) runs with another users.xml (%s); users "
                    "are read at start: stop it first (`make clickhouse-down`)"
                 % (cfg.http_port, pid, state.get("users_xml") or "none"))
        if same_data and ping(cfg.http_port):
            if not quiet:
                print("ClickHouse is already running (pid %d)." % pid)
                print_urls(cfg, state.get("tcp_port", cfg.tcp_port), cfg.data)
            return 0
        if not same_data:
            fail(2, "port %d is already in use by our ClickHouse (pid %d, data %s), not %s "
                    "(run `make clickhouse-down` first, or set CLICKHOUSE_HTTP_PORT to another port)"
                 % (cfg.http_port, pid, state.get("data", "?"), cfg.data))
        fail(1, "ClickHouse (pid %d) is running but does not answer %s/ping; "
                "see %s or run `make clickhouse-down`" % (pid, cfg.url, cfg.log_file))
    remove_files(cfg)  # stale

    if not os.path.exists(VENV_PYTHON):
        fail(1, "%s is missing; run scripts/ensure-venv.sh (or `make venv`)" % VENV_PYTHON)

    with open(cfg.log_file, "ab") as logf:
        logf.write(("\n==== %s clickhouse.py serve (HTTP %d, TCP %d, data %s)\n"
                    % (time.strftime("%Y-%m-%d %H:%M:%S"), cfg.http_port, cfg.tcp_port, cfg.data)).encode())
        logf.flush()
        log_start = logf.tell()
        token = os.urandom(8).hex()
        env = dict(os.environ,
                   CLICKHOUSE_INSTANCE_TOKEN=token,
                   CLICKHOUSE_HTTP_PORT=str(cfg.http_port),
                   CLICKHOUSE_TCP_PORT=str(cfg.tcp_port),
                   CLICKHOUSE_DATA=cfg.data,
                   CLICKHOUSE_CLUSTER=cfg.cluster,
                   CLICKHOUSE_CLUSTER_NODES=",".join(cfg.cluster_nodes),
                   CLICKHOUSE_USERS_XML=cfg.users_xml,
                   PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [VENV_PYTHON, os.path.abspath(__file__), "serve"],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            cwd=ROOT, env=env, start_new_session=True, close_fds=True,
        )
    with open(cfg.pid_file, "w") as f:
        f.write("%d\n" % proc.pid)
    with open(cfg.state_file, "w") as f:
        json.dump({"pid": proc.pid, "http_port": cfg.http_port, "tcp_port": cfg.tcp_port,
                   "data": cfg.data, "log": cfg.log_file, "url": cfg.url,
                   "cluster": cfg.cluster, "cluster_nodes": cfg.cluster_nodes,
                   "users_xml": cfg.users_xml,
                   "users_xml_sha256": file_digest(cfg.users_xml)}, f, indent=2)
        f.write("\n")

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc is not None:
            remove_files(cfg)
            with open(cfg.log_file, "rb") as f:
                f.seek(log_start)
                out = f.read().decode(errors="replace")
            sys.stderr.write(out if out.endswith("\n") or not out else out + "\n")
            fail(rc if rc > 0 else 1,
                 "ClickHouse failed to start on port %d (exit %s); log: %s" % (cfg.http_port, rc, cfg.log_file))
        # /ping alone could be answered by some other server that holds the
        # port (serve is then about to exit 2): check it is the one we started.
        if ping(cfg.http_port, timeout=0.5) and answers_as(cfg.http_port, token):
            if not quiet:
                print_urls(cfg, cfg.tcp_port, cfg.data)
            return 0
        time.sleep(0.1)

    sys.stderr.write(log_tail(cfg.log_file))
    log("ClickHouse did not answer %s/ping within %.0f s; stopping it" % (cfg.url, START_TIMEOUT))
    stop(cfg, proc.pid)
    return 1


def stop(cfg, pid):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        remove_files(cfg)
        return True
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if not is_our_server(pid):
            break
        time.sleep(0.1)
    else:
        log("pid %d did not exit within %.0f s of SIGTERM; sending SIGKILL" % (pid, STOP_TIMEOUT))
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for _ in range(50):
            if not is_our_server(pid):
                break
            time.sleep(0.1)
    remove_files(cfg)
    return True


def all_ports():
    ports = []
    try:
        names = os.listdir(STATE_DIR)
    except OSError:
        return ports
    for name in names:
        if name.startswith("clickhouse-") and name.endswith(".pid"):
            try:
                ports.append(int(name[len("clickhouse-"):-len(".pid")]))
            except ValueError:
                pass
    return sorted(ports)


def config_for_port(port):
    saved = os.environ.get("CLICKHOUSE_HTTP_PORT")
    os.environ["CLICKHOUSE_HTTP_PORT"] = str(port)
    try:
        return Config()
    finally:
        if saved is None:
            del os.environ["CLICKHOUSE_HTTP_PORT"]
        else:
            os.environ["CLICKHOUSE_HTTP_PORT"] = saved


def cmd_down(cfg, everything=False):
    cfgs = [config_for_port(p) for p in all_ports()] if everything else [cfg]
    stopped = 0
    for c in cfgs:
        pid = running_pid(c)
        if pid is None:
            if os.path.exists(c.pid_file):
                remove_files(c)
            continue
        stop(c, pid)
        print("ClickHouse on port %d stopped (pid %d)." % (c.http_port, pid))
        stopped += 1
    if not stopped:
        print("ClickHouse is not running%s." % ("" if everything else " on port %d" % cfg.http_port))
    return 0


def cmd_status(cfg):
    ports = all_ports()
    if cfg.http_port not in ports:
        ports.append(cfg.http_port)
    rc = 3
    for port in sorted(ports):
        c = cfg if port == cfg.http_port else config_for_port(port)
        pid = running_pid(c)
        if pid is None:
            if port == cfg.http_port:
                extra = "" if port_free(port) else " (but something else listens on it)"
                print("port %d: not running%s" % (port, extra))
            continue
        state = read_state(c)
        try:
            version = http(c.url + "/", "SELECT version()").strip()
            health = "answering, ClickHouse %s" % version
            if port == cfg.http_port:
                rc = 0
        except (OSError, urllib.error.URLError) as e:
            health = "NOT answering (%s)" % e
        print("port %d: pid %d, %s; TCP %s, data %s, log %s"
              % (port, pid, health, state.get("tcp_port", "?"), state.get("data", "?"), c.log_file))
    return rc


# ---------------------------------------------------------------- cluster


class Cluster:
    """A local sharded cluster: one server per shard on consecutive ports."""

    def __init__(self, running=False):
        """The cluster CLUSTER_* describe; with running, the one cluster-up
        last started from CLUSTER_HTTP_BASE if its state file is there (so
        cluster-down stops every node it started)."""
        env = os.environ
        self.name = env.get("CLUSTER_NAME", "").strip() or "roomgate"
        self.base = int_env("CLUSTER_HTTP_BASE", 18130, 1, 65535)
        self.shards = int_env("CLUSTER_SHARDS", 2, 1, 64)
        self.state_file = os.path.join(STATE_DIR, "cluster-%d.json" % self.base)
        saved = self._saved() if running else None
        if saved:
            self.shards = int(saved.get("shards", self.shards))
            self.name = saved.get("name", self.name)
        self.nodes = []
        for i in range(self.shards):
            http_port = self.base + i
            self.nodes.append(Config({
                "CLICKHOUSE_HTTP_PORT": str(http_port),
                "CLICKHOUSE_TCP_PORT": str(http_port + 877),
                "CLICKHOUSE_DATA": os.path.join(STATE_DIR, "cluster-%d" % http_port),
                "CLICKHOUSE_CLUSTER": self.name,
                "CLICKHOUSE_CLUSTER_NODES": ",".join(
                    "127.0.0.1:%d" % (self.base + j + 877) for j in range(self.shards)),
            }))
        if self.nodes[-1].tcp_port > 65535:
            fail(2, "CLUSTER_HTTP_BASE=%d + 877 + shards is out of range" % self.base)

    def _saved(self):
        try:
            with open(self.state_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None


def int_env(name, default, lo, hi):
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        fail(2, "%s=%r is not a number" % (name, raw))
    if not lo <= value <= hi:
        fail(2, "%s=%d is out of range %d..%d" % (name, value, lo, hi))
    return value


def cluster_shards_seen(cfg, name):
    """(shards in system.clusters for name, this node's shard_num) or None."""
    try:
        out = http(cfg.url + "/",
                   "SELECT count(), toUInt32(maxIf(shard_num, is_local)) FROM system.clusters "
                   "WHERE cluster = '%s' FORMAT TSV" % name, timeout=2.0)
        shards, local = out.split()
        return int(shards), int(local)
    except (OSError, urllib.error.URLError, ValueError):
        return None


def cmd_cluster_up(cl):
    for c in cl.nodes:
        pid = running_pid(c)
        rc = cmd_up(c, quiet=True)
        if rc != 0:
            return rc
        if pid is None:
            log("shard %d of %s started on %s (TCP %d)"
                % (c.http_port - cl.base + 1, cl.name, c.url, c.tcp_port))
    with open(cl.state_file, "w") as f:
        json.dump({"name": cl.name, "shards": cl.shards, "http_base": cl.base,
                   "urls": [c.url for c in cl.nodes],
                   "tcp_ports": [c.tcp_port for c in cl.nodes],
                   "data": [c.data for c in cl.nodes]}, f, indent=2)
        f.write("\n")
    # Each node must see the whole cluster, and itself as its own shard.
    for i, c in enumerate(cl.nodes):
        seen = cluster_shards_seen(c, cl.name)
        if seen != (cl.shards, i + 1):
            fail(1, "node %s reports %s for cluster %s, expected %d shards with itself as shard %d"
                 % (c.url, seen, cl.name, cl.shards, i + 1))
    print("ClickHouse cluster %s is up: %d shards (state %s)"
          % (cl.name, cl.shards, os.path.relpath(cl.state_file, ROOT)))
    for i, c in enumerate(cl.nodes):
        print("  shard %d  %s/  native TCP 127.0.0.1:%d  data %s"
              % (i + 1, c.url, c.tcp_port, os.path.relpath(c.data, ROOT)))
    return 0


def cmd_cluster_down(cl):
    stopped = 0
    for c in cl.nodes:
        pid = running_pid(c)
        if pid is None:
            if os.path.exists(c.pid_file):
                remove_files(c)
            continue
        stop(c, pid)
        print("ClickHouse on port %d stopped (pid %d)." % (c.http_port, pid))
        stopped += 1
    try:
        os.unlink(cl.state_file)
    except FileNotFoundError:
        pass
    if not stopped:
        print("ClickHouse cluster on ports %d..%d is not running."
              % (cl.base, cl.base + cl.shards - 1))
    return 0


def cmd_cluster_status(cl):
    rc = 0
    for i, c in enumerate(cl.nodes):
        pid = running_pid(c)
        if pid is None:
            print("shard %d: port %d not running" % (i + 1, c.http_port))
            rc = 3
            continue
        seen = cluster_shards_seen(c, cl.name)
        if seen is None:
            print("shard %d: port %d pid %d, NOT answering" % (i + 1, c.http_port, pid))
            rc = 3
            continue
        print("shard %d: %s/ pid %d, sees %d shards in %s, itself as shard %d"
              % (i + 1, c.url, pid, seen[0], cl.name, seen[1]))
    return rc


def main(argv):
    cmds = ("serve", "up", "down", "status",
            "cluster-up", "cluster-down", "cluster-status", "cluster-urls")
    if len(argv) < 2 or argv[1] not in cmds or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        print("\nusage: %s {%s} [--all (down only)]" % (os.path.basename(argv[0]), "|".join(cmds)))
        return 0 if len(argv) > 1 and argv[1] in ("-h", "--help") else 1
    cmd = argv[1]
    if cmd.startswith("cluster-"):
        cl = Cluster(running=cmd in ("cluster-down", "cluster-status"))
        if cmd == "cluster-up":
            return cmd_cluster_up(cl)
        if cmd == "cluster-down":
            return cmd_cluster_down(cl)
        if cmd == "cluster-urls":
            print(",".join(c.url for c in cl.nodes))
            return 0
        return cmd_cluster_status(cl)
    cfg = Config()
    if cmd == "serve":
        return cmd_serve(cfg)
    if cmd == "up":
        return cmd_up(cfg)
    if cmd == "down":
        return cmd_down(cfg, everything="--all" in argv[2:])
    return cmd_status(cfg)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
