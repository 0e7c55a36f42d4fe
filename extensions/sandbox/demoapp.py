"""The failsafe.recovery demo application: a small HTTP service that can be told to misbehave.

Standard library only (Python 3.9+), so it runs from the checkout, from a release
directory (``releases/<id>/demoapp.py`` + ``release.json``) and inside the Debian
containers Molecule uses.

Endpoints:
  GET  /              JSON {"version", "release", "hostname", "pid", "request"}; HTTP 500 for
                      ``error_rate`` percent of requests (deterministic: spread evenly over
                      every 100 requests), delayed by ``latency_ms``, blocked while ``hang``.
  GET  /health        200 {"status": "ok", "version"}; 503 {"status": "failing"} with ``fail_health``.
                      Also delayed by ``latency_ms`` and blocked while ``hang``.
  GET  /metrics       Prometheus text: demoapp_requests_total{status}, the
                      demoapp_request_duration_seconds histogram (application requests only,
                      i.e. not /health, /metrics or /admin), demoapp_info{version} 1.
  GET  /flags         {"flags": {key: {"value", "variant", "reason"}}, "version"}: how this app
                      evaluates every flag of the ``--flags`` file (a flagd flag file), without an
                      evaluation context: reason STATIC (the default variant's value), DISABLED or
                      TARGETING_MATCH_UNKNOWN (value null), as a flagd provider would answer.
  GET  /admin/fault   the faults in force, the configured ones and the runtime overrides.
  POST /admin/fault   JSON body with any of error_rate, latency_ms, hang, fail_health, exit,
                      reset. ``reset: true`` drops every runtime override (back to the config
                      file); ``exit: true`` (or an exit code) makes the process exit right after
                      answering.

Configuration: ``--config FILE`` (JSON with version, release, error_rate, latency_ms, hang,
fail_health, flag_faults) is read at start, on SIGHUP and whenever the file changes (inode, mtime
or size; checked at most every 0.2 s). Values from the file override ``--version``; runtime
overrides from /admin/fault win over both until reset. ``--flags FILE`` is watched the same way.
``flag_faults`` maps a flag key to faults that apply while that flag evaluates to a true value
(e.g. ``{"new-checkout": {"error_rate": 100}}``: the feature behind the flag is broken, and
switching the flag off is what heals the app); the configured and runtime faults win over them.
"""

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULT_FIELDS = ("error_rate", "latency_ms", "hang", "fail_health")
DEFAULT_FAULTS = {"error_rate": 0.0, "latency_ms": 0, "hang": False, "fail_health": False}
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HANG_LIMIT = 600.0  # a hung request gives up after this many seconds


def validate_faults(data):
    """Return the fault fields of ``data`` with their types checked; raise ValueError otherwise."""
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    out = {}
    for key, value in data.items():
        if key in ("error_rate", "latency_ms"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError("%s must be a number, got %r" % (key, value))
            if key == "error_rate" and not 0 <= value <= 100:
                raise ValueError("error_rate must be between 0 and 100, got %r" % (value,))
            if key == "latency_ms" and value < 0:
                raise ValueError("latency_ms must not be negative, got %r" % (value,))
            out[key] = float(value) if key == "error_rate" else int(value)
        elif key in ("hang", "fail_health", "reset"):
            if not isinstance(value, bool):
                raise ValueError("%s must be true or false, got %r" % (key, value))
            out[key] = value
        elif key == "exit":
            if not isinstance(value, (bool, int)):
                raise ValueError("exit must be true, false or an exit code, got %r" % (value,))
            out[key] = value
        elif key in ("version", "release"):
            continue
        else:
            raise ValueError("unknown field %r; known: %s" % (key, ", ".join(FAULT_FIELDS + ("exit", "reset"))))
    return out


def fails(counter, error_rate):
    """True if request number ``counter`` (1-based) must fail at ``error_rate`` percent.

    Failures are spread evenly: over any 100 consecutive requests exactly
    round(error_rate) of them fail (for whole-number rates).
    """
    if error_rate <= 0:
        return False
    if error_rate >= 100:
        return True
    return int(counter * error_rate / 100.0) > int((counter - 1) * error_rate / 100.0)


class Metrics:
    """Request counter by status and a latency histogram, rendered in Prometheus text format."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_status = {}
        self.bucket_counts = [0] * len(BUCKETS)
        self.count = 0
        self.total = 0.0

    def observe(self, status, seconds):
        with self.lock:
            key = str(status)
            self.by_status[key] = self.by_status.get(key, 0) + 1
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.bucket_counts[i] += 1
            self.count += 1
            self.total += seconds

    def render(self, version):
        with self.lock:
            lines = [
                "# HELP demoapp_requests_total Application requests answered, by HTTP status.",
                "# TYPE demoapp_requests_total counter",
            ]
            for status in sorted(self.by_status):
                lines.append('demoapp_requests_total{status="%s"} %d' % (status, self.by_status[status]))
            lines += [
                "# HELP demoapp_request_duration_seconds Time to answer application requests.",
                "# TYPE demoapp_request_duration_seconds histogram",
            ]
            for bound, count in zip(BUCKETS, self.bucket_counts):
                lines.append('demoapp_request_duration_seconds_bucket{le="%s"} %d' % (repr(bound), count))
            lines.append('demoapp_request_duration_seconds_bucket{le="+Inf"} %d' % self.count)
            lines.append("demoapp_request_duration_seconds_sum %.6f" % self.total)
            lines.append("demoapp_request_duration_seconds_count %d" % self.count)
        lines += [
            "# HELP demoapp_info The running release.",
            "# TYPE demoapp_info gauge",
            'demoapp_info{version="%s"} 1' % version.replace("\\", "\\\\").replace('"', '\\"'),
        ]
        return "\n".join(lines) + "\n"


def evaluate_flag(flag):
    """A flagd flag's value without an evaluation context: ``{"value", "variant", "reason"}``."""
    if flag.get("state", "ENABLED") == "DISABLED":
        return {"value": None, "variant": None, "reason": "DISABLED"}
    if flag.get("targeting"):
        return {"value": None, "variant": None, "reason": "TARGETING_MATCH_UNKNOWN"}
    variant = flag.get("defaultVariant")
    variants = flag.get("variants") or {}
    if variant not in variants:
        return {"value": None, "variant": variant, "reason": "ERROR_DEFAULT_VARIANT_MISSING"}
    return {"value": variants[variant], "variant": variant, "reason": "STATIC"}


class WatchedFile:
    """A JSON file re-read when its identity changes (inode too: a release switch, i.e. a moved
    symlink, or an atomic rename may land on a file with the same mtime)."""

    def __init__(self, path, what):
        self.path = path
        self.what = what
        self.stamp = None

    def read_if_changed(self, force=False):
        """The parsed document if forced or changed since the last call, else None."""
        if not self.path:
            return None
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        stamp = (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)
        if not force and stamp == self.stamp:
            return None
        self.stamp = stamp
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return data
        except (OSError, ValueError) as exc:
            sys.stderr.write("demoapp: ignoring %s %s: %s\n" % (self.what, self.path, exc))
            return None


class AppState:
    """Configuration and flags (files), runtime overrides (admin API) and counters, behind one lock."""

    def __init__(self, version, config_path=None, flags_path=None):
        self.lock = threading.Lock()
        self.cli_version = version
        self.config_file = WatchedFile(config_path, "config")
        self.flags_file = WatchedFile(flags_path, "flags")
        self.config = {}
        self.flag_faults = {}
        self.flags = {}
        self.last_check = 0.0
        self.overrides = {}
        self.counter = 0
        self.metrics = Metrics()
        self.started = time.time()
        self.reload(force=True)

    def reload(self, force=False):
        """Re-read the config and flag files if forced or changed. Returns True if one was read."""
        data = self.config_file.read_if_changed(force)
        if data is not None:
            try:
                faults = validate_faults({k: v for k, v in data.items() if k in FAULT_FIELDS})
                flag_faults = data.get("flag_faults") or {}
                if not isinstance(flag_faults, dict):
                    raise ValueError("flag_faults must map flag keys to faults")
                flag_faults = {key: validate_faults(value) for key, value in flag_faults.items()}
            except ValueError as exc:
                sys.stderr.write("demoapp: ignoring config %s: %s\n" % (self.config_file.path, exc))
                data = None
        if data is not None:
            with self.lock:
                self.config = dict(faults)
                self.flag_faults = flag_faults
                for key in ("version", "release"):
                    if key in data:
                        self.config[key] = str(data[key])
                self.counter = 0
        flags = self.flags_file.read_if_changed(force)
        if flags is not None:
            with self.lock:
                self.flags = flags.get("flags") if isinstance(flags.get("flags"), dict) else {}
                self.counter = 0
        return data is not None or flags is not None

    def maybe_reload(self):
        now = time.monotonic()
        if now - self.last_check >= 0.2:
            self.last_check = now
            self.reload()

    def evaluations(self):
        with self.lock:
            return {key: evaluate_flag(flag) for key, flag in self.flags.items() if isinstance(flag, dict)}

    @property
    def version(self):
        return self.config.get("version", self.cli_version)

    @property
    def release(self):
        return self.config.get("release", self.version)

    def faults(self):
        evaluations = self.evaluations()
        with self.lock:
            out = dict(DEFAULT_FAULTS)
            for key, faults in sorted(self.flag_faults.items()):
                if evaluations.get(key, {}).get("value"):
                    out.update(faults)
            out.update({k: v for k, v in self.config.items() if k in FAULT_FIELDS})
            out.update(self.overrides)
            return out

    def next_request(self):
        with self.lock:
            self.counter += 1
            return self.counter

    def apply(self, changes):
        with self.lock:
            if changes.get("reset"):
                self.overrides = {}
            for key in FAULT_FIELDS:
                if key in changes:
                    self.overrides[key] = changes[key]
            self.counter = 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "demoapp"
    state = None  # set by make_server()
    quiet = True

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        if not self.quiet:
            super().log_message(format, *args)

    def _send(self, status, body, content_type="application/json"):
        if not isinstance(body, bytes):
            if content_type == "application/json":
                body = json.dumps(body, sort_keys=True).encode() + b"\n"
            else:
                body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return status

    def _delay(self, faults):
        if faults["latency_ms"]:
            time.sleep(faults["latency_ms"] / 1000.0)
        deadline = time.monotonic() + HANG_LIMIT
        while self.state.faults()["hang"] and time.monotonic() < deadline:
            time.sleep(0.05)

    def _path(self):
        return self.path.split("?", 1)[0]

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        state = self.state
        state.maybe_reload()
        path = self._path()
        if path == "/metrics":
            return self._send(200, state.metrics.render(state.version), "text/plain; version=0.0.4; charset=utf-8")
        if path == "/flags":
            return self._send(200, {"flags": state.evaluations(), "version": state.version})
        if path == "/admin/fault":
            configured = {k: v for k, v in state.config.items() if k in FAULT_FIELDS}
            return self._send(200, {"faults": state.faults(), "configured": configured,
                                    "overrides": dict(state.overrides), "version": state.version})
        faults = state.faults()
        if path == "/health":
            self._delay(faults)
            if faults["fail_health"]:
                return self._send(503, {"status": "failing", "version": state.version})
            return self._send(200, {"status": "ok", "version": state.version})
        start = time.monotonic()
        if path != "/":
            status = self._send(404, {"error": "not found", "path": path, "version": state.version})
        else:
            number = state.next_request()
            self._delay(faults)
            if fails(number, faults["error_rate"]):
                status = self._send(500, {"error": "injected failure", "version": state.version, "request": number})
            else:
                status = self._send(200, {"version": state.version, "release": state.release,
                                          "hostname": socket.gethostname(), "pid": os.getpid(),
                                          "request": number})
        state.metrics.observe(status, time.monotonic() - start)
        return None

    def do_POST(self):
        state = self.state
        if self._path() != "/admin/fault":
            return self._send(404, {"error": "not found", "path": self._path()})
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            changes = validate_faults(json.loads(raw.decode() or "{}"))
        except ValueError as exc:
            return self._send(400, {"error": str(exc)})
        state.apply(changes)
        code = changes.get("exit", False)
        exit_code = 1 if code is True else (None if code is False else int(code))
        self._send(200, {"faults": state.faults(), "version": state.version, "exiting": exit_code is not None})
        if exit_code is not None:
            self.wfile.flush()
            threading.Timer(0.05, os._exit, args=(exit_code,)).start()
        return None


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def make_server(host, port, state, quiet=True):
    handler = type("DemoHandler", (Handler,), {"state": state, "quiet": quiet})
    return Server((host, port), handler)


def main(argv=None):
    parser = argparse.ArgumentParser(description="failsafe.recovery demo application")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--version", default="v1", help="version string (the config file's 'version' wins)")
    parser.add_argument("--config", help="JSON file: version, release, error_rate, latency_ms, hang, fail_health")
    parser.add_argument("--flags", help="flagd flag file (JSON) this app evaluates; see GET /flags")
    parser.add_argument("--access-log", action="store_true", help="log every request to stderr")
    parser.add_argument("--pidfile", help="write the PID here while running (removed on a clean exit)")
    args = parser.parse_args(argv)

    state = AppState(args.version, args.config, args.flags)
    server = make_server(args.host, args.port, state, quiet=not args.access_log)

    def on_hup(_signum, _frame):
        state.reload(force=True)

    def on_term(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_term)
    if args.pidfile:
        with open(args.pidfile, "w", encoding="utf-8") as handle:
            handle.write("%d\n" % os.getpid())
    sys.stderr.write("demoapp %s listening on %s:%d (pid %d)\n" % (state.version, args.host, args.port, os.getpid()))
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if args.pidfile:
            try:
                os.unlink(args.pidfile)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
