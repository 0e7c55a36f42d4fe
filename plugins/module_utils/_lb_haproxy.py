# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: the HAProxy driver of lb_target_swap.

A small client of the HAProxy runtime API (the ``stats socket`` at level
admin, over a Unix socket path or ``host:port``), parsers of its output, and
the two ways of moving traffic:

- *map mode*: ``map_file`` + ``map_key`` -> ``backend``. The frontend picks its
  backend with ``use_backend %[...,map(MAP_FILE,default_backend)]``; the value
  is changed at runtime with ``set map`` and the map file is rewritten
  atomically (temporary file + rename, same mode and owner) so a reload keeps it.
- *servers mode*: ``backend`` + ``servers`` (state ready/drain/maint and
  weight of each server), changed with ``set server``.

Before traffic moves, the incoming side is waited on until every server is UP
(health check status from ``show stat``) and at least ``min_healthy_targets``
are. The outgoing side can be drained: the wait for its current sessions to
reach zero is bounded by ``drain_timeout`` and reports the sessions left.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time

from ansible_collections.failsafe.recovery.plugins.module_utils import _lb

STATE_CHOICES = ("ready", "drain", "maint")
# srv_admin_state bits (HAProxy src/server.h): forced/inherited/config/resolution maintenance, drain.
_ADMIN_MAINT = 0x01 | 0x02 | 0x04 | 0x20
_ADMIN_DRAIN = 0x08 | 0x10
# srv_op_state values
OP_STATES = {0: "stopped", 1: "starting", 2: "running", 3: "stopping"}


class HAProxyError(Exception):
    """A runtime API failure with structured facts."""

    def __init__(self, msg, **facts):
        super().__init__(msg)
        self.msg = msg
        self.facts = facts


# ---------------------------------------------------------------------------
# Runtime API client
# ---------------------------------------------------------------------------

class RuntimeAPI:
    """One connection per command (HAProxy's non-interactive mode closes after replying)."""

    def __init__(self, address, timeout=5.0):
        self.address = address
        self.timeout = timeout

    def _connect(self):
        if "/" in self.address or ":" not in self.address:
            if not os.path.exists(self.address):
                raise HAProxyError("HAProxy admin socket %s does not exist: check haproxy_socket and that "
                                   "HAProxy runs with 'stats socket %s level admin'" % (self.address, self.address),
                                   haproxy_socket=self.address)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target = self.address
        else:
            host, port = self.address.rsplit(":", 1)
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            target = (host.strip("[]"), int(port))
        sock.settimeout(self.timeout)
        try:
            sock.connect(target)
        except OSError as exc:
            sock.close()
            raise HAProxyError("Cannot connect to the HAProxy admin socket %s: %s" % (self.address, exc),
                               haproxy_socket=self.address) from exc
        return sock

    def command(self, cmd):
        """Send one command and return the whole reply as text."""
        sock = self._connect()
        try:
            sock.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except OSError as exc:
            raise HAProxyError("HAProxy runtime API command %r on %s failed: %s" % (cmd, self.address, exc),
                               haproxy_socket=self.address, command=cmd) from exc
        finally:
            sock.close()
        return b"".join(chunks).decode("utf-8", "replace")

    def checked(self, cmd):
        """Send a command whose success reply is empty; raise on any error text."""
        reply = self.command(cmd).strip()
        if reply:
            if "Permission denied" in reply:
                raise HAProxyError("HAProxy refused %r on %s: Permission denied. The socket must be at level admin "
                                   "('stats socket PATH level admin')" % (cmd, self.address),
                                   haproxy_socket=self.address, command=cmd, reply=reply)
            raise HAProxyError("HAProxy refused %r on %s: %s" % (cmd, self.address, reply),
                               haproxy_socket=self.address, command=cmd, reply=reply)

    def check_admin(self):
        """Fail unless the socket is at level admin (``show cli level``, HAProxy >= 2.2)."""
        reply = self.command("show cli level").strip()
        if reply in ("admin",):
            return
        if reply in ("operator", "user"):
            raise HAProxyError("HAProxy admin socket %s is at level %s; lb_target_swap needs level admin "
                               "('stats socket %s level admin')" % (self.address, reply, self.address),
                               haproxy_socket=self.address, level=reply)
        # Older HAProxy without 'show cli level': the first admin command will tell.

    def backends(self):
        return parse_backends(self.command("show backend"))

    def map_entries(self, map_file):
        reply = self.command("show map %s" % map_file)
        if reply.strip().startswith("Unknown map"):
            raise HAProxyError("Map %s is not loaded by HAProxy on %s (see 'show map'): map_file must be the path "
                               "used in the configuration" % (map_file, self.address),
                               map_file=map_file, reply=reply.strip())
        return parse_map(reply)

    def set_map(self, map_file, key, value):
        self.checked("set map %s %s %s" % (map_file, key, value))

    def servers_state(self, backend=None):
        return parse_servers_state(self.command("show servers state" + (" %s" % backend if backend else "")))

    def stat(self):
        return parse_stat(self.command("show stat"))

    def set_server_state(self, backend, server, state):
        self.checked("set server %s/%s state %s" % (backend, server, state))

    def set_server_weight(self, backend, server, weight):
        self.checked("set server %s/%s weight %d" % (backend, server, weight))


# ---------------------------------------------------------------------------
# Parsers (pure)
# ---------------------------------------------------------------------------

def parse_backends(text):
    """``show backend`` -> list of backend names."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def parse_map(text):
    """``show map FILE`` (``0xID key value`` lines) -> ordered dict key -> value."""
    entries = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 2)
        if len(parts) == 3 and parts[0].startswith("0x"):
            entries[parts[1]] = parts[2]
        elif len(parts) == 2 and parts[0].startswith("0x"):
            entries[parts[1]] = ""
    return entries


def parse_servers_state(text):
    """``show servers state`` (format 1) -> list of dicts with typed fields."""
    header = None
    rows = []
    for line in text.splitlines():
        if line.startswith("#"):
            header = line.lstrip("#").split()
            continue
        if not line.strip() or header is None:
            continue
        values = line.split()
        row = dict(zip(header, values))
        for key in ("be_id", "srv_id", "srv_op_state", "srv_admin_state", "srv_uweight", "srv_iweight",
                    "srv_check_status", "srv_check_result", "srv_check_health", "srv_check_state"):
            if key in row:
                try:
                    row[key] = int(row[key])
                except ValueError:
                    pass
        row["op_state"] = OP_STATES.get(row.get("srv_op_state"), str(row.get("srv_op_state")))
        row["admin"] = admin_state_name(row.get("srv_admin_state", 0))
        rows.append(row)
    return rows


def admin_state_name(bits):
    """srv_admin_state bitmask -> the ``state`` value of the module (ready/drain/maint)."""
    bits = bits if isinstance(bits, int) else 0
    if bits & _ADMIN_MAINT:
        return "maint"
    if bits & _ADMIN_DRAIN:
        return "drain"
    return "ready"


def parse_stat(text):
    """``show stat`` CSV -> list of dicts keyed by the CSV header."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("#"):
        return []
    header = lines[0].lstrip("# ").rstrip(",").split(",")
    rows = []
    for line in lines[1:]:
        if not line.strip():
            continue
        values = line.split(",")
        rows.append(dict(zip(header, values)))
    return rows


def server_stats(stat_rows, backend):
    """Server rows of one backend from parse_stat(): {server: {status, scur, check_status, weight}}."""
    out = {}
    for row in stat_rows:
        if row.get("pxname") != backend or row.get("svname") in ("BACKEND", "FRONTEND"):
            continue
        out[row["svname"]] = dict(
            status=row.get("status", ""),
            scur=_int(row.get("scur")),
            check_status=row.get("check_status", ""),
            check_desc=row.get("check_desc", ""),
            weight=_int(row.get("weight")),
        )
    return out


def is_up(status):
    """A server takes traffic when HAProxy reports it UP (or has no health check at all)."""
    return status == "UP" or status == "no check"


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# ---------------------------------------------------------------------------
# Map file persistence
# ---------------------------------------------------------------------------

def rewrite_map_text(text, key, value):
    """Return the map file text with ``key``'s value replaced (appended when absent); comments kept."""
    out = []
    found = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            parts = stripped.split(None, 1)
            if parts[0] == key:
                if not found:
                    out.append("%s %s" % (key, value))
                    found = True
                continue
        out.append(line)
    if not found:
        out.append("%s %s" % (key, value))
    return "\n".join(out) + "\n"


def map_file_value(text, key):
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            parts = stripped.split(None, 1)
            if parts[0] == key:
                return parts[1].strip() if len(parts) > 1 else ""
    return None


def write_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file + rename, keeping mode and owner."""
    st = os.stat(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, st.st_mode & 0o7777)
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except PermissionError:
            pass
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------
# Health wait and drain
# ---------------------------------------------------------------------------

def backend_health(api, backend, servers=None):
    """Current health of the servers of ``backend`` (or of the named ``servers``)."""
    stats = server_stats(api.stat(), backend)
    states = {r["srv_name"]: r for r in api.servers_state(backend) if r.get("be_name") == backend}
    out = []
    for name in sorted(stats):
        if servers is not None and name not in servers:
            continue
        st = stats[name]
        admin = states.get(name, {}).get("admin", "ready")
        out.append(dict(backend=backend, server=name, status=st["status"], check_status=st["check_status"],
                        check_desc=st["check_desc"], admin_state=admin, sessions=st["scur"],
                        healthy=is_up(st["status"])))
    return out


def health_verdict(targets, min_healthy):
    """(ok, healthy_count) when every target is healthy and at least ``min_healthy`` are."""
    healthy = sum(1 for t in targets if t["healthy"])
    return healthy == len(targets) and healthy >= min_healthy, healthy


def wait_healthy(api, backend, servers, min_healthy, timeout, interval, clock=time.monotonic, sleep=time.sleep):
    """Poll until every server is UP and at least ``min_healthy`` are; raise with every server's state."""
    start = clock()
    while True:
        targets = backend_health(api, backend, servers)
        ok, healthy = health_verdict(targets, min_healthy)
        if ok:
            return dict(healthy=True, healthy_count=healthy, waited=round(clock() - start, 3), targets=targets)
        if clock() - start >= timeout:
            raise HAProxyError(
                "Backend %s is not healthy after %ss: %d of %d servers UP (need all, and at least %d): %s"
                % (backend, timeout, healthy, len(targets), min_healthy,
                   ", ".join("%s=%s" % (t["server"], t["status"]) for t in targets) or "no servers"),
                targets=targets, backend=backend)
        sleep(interval)


def drain_wait(api, backend, servers, timeout, interval, clock=time.monotonic, sleep=time.sleep):
    """Wait until the sessions of the outgoing servers reach zero, at most ``timeout`` seconds."""
    start = clock()
    while True:
        stats = server_stats(api.stat(), backend)
        left = {name: st["scur"] for name, st in stats.items() if servers is None or name in servers}
        total = sum(left.values())
        waited = clock() - start
        if total == 0 or waited >= timeout:
            return dict(backend=backend, completed=total == 0, waited=round(waited, 3), timeout=timeout,
                        sessions_left=left)
        sleep(min(interval, max(0.0, timeout - waited)))


# ---------------------------------------------------------------------------
# The swap
# ---------------------------------------------------------------------------

class HAProxySwap:
    """Plan and apply a traffic move on HAProxy from the module parameters."""

    def __init__(self, params, api=None, check_mode=False):
        self.p = params
        self.api = api or RuntimeAPI(params["haproxy_socket"])
        self.check_mode = check_mode

    def run(self):
        self.api.check_admin()
        backends = self.api.backends()
        backend = self.p["backend"]
        if backend not in backends:
            raise HAProxyError("Backend %r is not defined in HAProxy on %s (backends: %s)"
                               % (backend, self.api.address, ", ".join(backends)), backends=backends)
        if self.p.get("map_file"):
            return self._run_map(backends)
        return self._run_servers()

    # -- map mode ----------------------------------------------------------
    def _run_map(self, backends):
        p = self.p
        map_file, key, backend = p["map_file"], p["map_key"], p["backend"]
        entries = self.api.map_entries(map_file)
        if key not in entries:
            raise HAProxyError("Key %r is absent from map %s on %s (keys: %s); add it to the map file first"
                               % (key, map_file, self.api.address, ", ".join(entries) or "none"),
                               map_file=map_file, map_key=key)
        before = entries[key]
        file_text = _read(map_file)
        file_value = map_file_value(file_text, key) if file_text is not None else None
        runtime_change = before != backend
        file_change = file_text is not None and file_value != backend
        result = dict(
            changed=runtime_change or file_change,
            previous=dict(provider="haproxy", haproxy_socket=p["haproxy_socket"], map_file=map_file,
                          map_key=key, backend=before),
            current=dict(provider="haproxy", haproxy_socket=p["haproxy_socket"], map_file=map_file,
                         map_key=key, backend=backend),
            diff=dict(before=_lb.split_doc({before: 100}, map_key=key, map_file_value=file_value),
                      after=_lb.split_doc({backend: 100}, map_key=key, map_file_value=backend)),
            persisted=file_text is not None,
        )
        if file_text is None:
            result["warnings"] = ["Map file %s is not readable from here: the change is made at runtime only and "
                                  "a reload of HAProxy will undo it" % map_file]
        if not result["changed"]:
            result["health"] = dict(targets=backend_health(self.api, backend))
            return result
        if self.check_mode:
            result["health"] = dict(targets=backend_health(self.api, backend))
            return result
        if runtime_change and p.get("wait", True):
            result["health"] = wait_healthy(self.api, backend, None, p["min_healthy_targets"],
                                            p["wait_timeout"], p["poll_interval"])
        else:
            result["health"] = dict(targets=backend_health(self.api, backend))
        started = time.monotonic()
        if runtime_change:
            self.api.set_map(map_file, key, backend)
        if file_change:
            write_atomic(map_file, rewrite_map_text(file_text, key, backend))
        result["swap_seconds"] = round(time.monotonic() - started, 4)
        if runtime_change and p.get("drain") and before in backends and before != backend:
            result["drain"] = drain_wait(self.api, before, None, p["drain_timeout"], min(p["poll_interval"], 0.5))
            if not result["drain"]["completed"]:
                result.setdefault("warnings", []).append(
                    "Backend %s still had %d sessions after drain_timeout=%ss"
                    % (before, sum(result["drain"]["sessions_left"].values()), p["drain_timeout"]))
        return result

    # -- servers mode ------------------------------------------------------
    def _run_servers(self):
        p = self.p
        backend = p["backend"]
        rows = {r["srv_name"]: r for r in self.api.servers_state(backend) if r.get("be_name") == backend}
        wanted = p["servers"]
        unknown = [s["name"] for s in wanted if s["name"] not in rows]
        if unknown:
            raise HAProxyError("Server(s) %s not found in backend %s (servers: %s)"
                               % (", ".join(unknown), backend, ", ".join(sorted(rows))), servers=sorted(rows))
        before, after, ops = [], [], []
        for srv in wanted:
            row = rows[srv["name"]]
            cur = dict(name=srv["name"], state=row["admin"], weight=row["srv_uweight"])
            new = dict(name=srv["name"], state=srv.get("state") or cur["state"],
                       weight=cur["weight"] if srv.get("weight") is None else srv["weight"])
            before.append(cur)
            after.append(new)
            if new["state"] != cur["state"]:
                ops.append(("state", srv["name"], new["state"]))
            if new["weight"] != cur["weight"]:
                ops.append(("weight", srv["name"], new["weight"]))
        result = dict(
            changed=bool(ops),
            previous=dict(provider="haproxy", haproxy_socket=p["haproxy_socket"], backend=backend, servers=before),
            current=dict(provider="haproxy", haproxy_socket=p["haproxy_socket"], backend=backend, servers=after),
            diff=dict(before=_lb.servers_doc(backend, before), after=_lb.servers_doc(backend, after)),
            persisted=False,
        )
        incoming = [s["name"] for s in after if s["state"] == "ready" and s["weight"] > 0]
        if not ops or self.check_mode:
            result["health"] = dict(targets=backend_health(self.api, backend, incoming))
            return result
        started = time.monotonic()
        # Incoming first (ready, weights up), wait for them, then the outgoing side (drain/maint, weights down).
        first = [o for o in ops if (o[0] == "state" and o[2] == "ready")
                 or (o[0] == "weight" and o[2] > rows[o[1]]["srv_uweight"])]
        second = [o for o in ops if o not in first]
        self._apply(backend, first)
        if p.get("wait", True) and incoming:
            result["health"] = wait_healthy(self.api, backend, incoming, p["min_healthy_targets"],
                                            p["wait_timeout"], p["poll_interval"])
        else:
            result["health"] = dict(targets=backend_health(self.api, backend, incoming))
        self._apply(backend, second)
        result["swap_seconds"] = round(time.monotonic() - started, 4)
        outgoing = [s["name"] for s in after if s["state"] in ("drain", "maint")]
        if p.get("drain") and outgoing:
            result["drain"] = drain_wait(self.api, backend, outgoing, p["drain_timeout"], min(p["poll_interval"], 0.5))
            if not result["drain"]["completed"]:
                result.setdefault("warnings", []).append(
                    "Servers %s of %s still had %d sessions after drain_timeout=%ss"
                    % (", ".join(outgoing), backend, sum(result["drain"]["sessions_left"].values()), p["drain_timeout"]))
        if p.get("server_state_file"):
            dump = self.api.command("show servers state")
            if os.path.exists(p["server_state_file"]):
                write_atomic(p["server_state_file"], dump)
            else:
                with open(p["server_state_file"], "w") as handle:
                    handle.write(dump)
            result["persisted"] = True
        return result

    def _apply(self, backend, ops):
        for kind, name, value in ops:
            if kind == "state":
                self.api.set_server_state(backend, name, value)
            else:
                self.api.set_server_weight(backend, name, value)


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def run_module(module):
    """Entry point of lb_target_swap for provider=haproxy; exits the module."""
    p = module.params
    if p["min_healthy_targets"] < 0:
        module.fail("min_healthy_targets must be 0 or more, got %d" % p["min_healthy_targets"])
    if p["drain_timeout"] < 0:
        module.fail("drain_timeout must be 0 or more, got %d" % p["drain_timeout"])
    for srv in p.get("servers") or []:
        if srv.get("weight") is not None and not 0 <= srv["weight"] <= 256:
            module.fail("weight of server %s is %d: HAProxy weights go from 0 to 256" % (srv["name"], srv["weight"]))
    try:
        result = HAProxySwap(p, check_mode=module.check_mode).run()
    except HAProxyError as exc:
        module.fail(exc.msg, **exc.facts)
    except OSError as exc:
        module.fail("HAProxy change failed: %s" % exc)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    module.exit_json(provider="haproxy", **result)
