"""Benchmark health_gate (figures are printed, never asserted).

1. Verify 50 local HTTP endpoints (10 of them answering in 300 ms):
   health_gate (one task, concurrent probes) versus the usual ansible.builtin.uri + until loop
   over the same 50 URLs, both run through ansible-playbook. Wall time of each and the ratio.
2. time_to_detect over 10 fault injections on a real demo app process (error_rate=100, crash,
   hang), gate engine run in-process (the module's own code path minus Ansible's start-up), against
   interval x failure_limit.

Run: .venv/bin/python tests/bench/bench_health_gate.py   (about 1-3 minutes)
"""

import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "extensions"), str(ROOT / ".collections")]

import yaml  # noqa: E402  pylint: disable=wrong-import-position

from sandbox import services  # noqa: E402  pylint: disable=wrong-import-position
from sandbox.runner import run_playbook  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.failsafe.recovery.plugins.module_utils import _health  # noqa: E402  pylint: disable=wrong-import-position

N_ENDPOINTS = 50
N_SLOW = 10
SLOW_S = 0.3
INTERVAL = 0.2
FAILURE_LIMIT = 3


class Endpoint(BaseHTTPRequestHandler):
    delay = 0.0

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.delay:
            time.sleep(self.delay)
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start_endpoints():
    servers = []
    for i in range(N_ENDPOINTS):
        handler = type("Endpoint%d" % i, (Endpoint,), {"delay": SLOW_S if i < N_SLOW else 0.0})
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    return servers


def playbook(path, tasks):
    play = [{"name": "bench", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": str(ROOT / ".venv" / "bin" / "python")}, "tasks": tasks}]
    path.write_text(yaml.safe_dump(play))
    return path


def timed_play(path):
    started = time.monotonic()
    res = run_playbook(path, inventory="localhost,", timeout=600)
    wall = time.monotonic() - started
    if res.rc != 0:
        print("  ! %s exited %s: %s" % (path.name, res.rc, res.stdout[-600:]))
    return wall, res


def part_one(tmp):
    servers = start_endpoints()
    urls = ["http://127.0.0.1:%d/health" % s.server_address[1] for s in servers]
    try:
        noop = playbook(tmp / "noop.yml", [{"name": "noop", "ansible.builtin.debug": {"msg": "start-up only"}}])
        uri = playbook(tmp / "uri.yml", [{
            "name": "uri until", "ansible.builtin.uri": {"url": "{{ item }}", "status_code": 200, "timeout": 5},
            "register": "r", "until": "r.status == 200", "retries": 30, "delay": 1, "loop": urls}])
        checks = [{"name": "ep%02d" % i, "type": "http", "url": u, "timeout": 5} for i, u in enumerate(urls)]
        gate1 = playbook(tmp / "gate1.yml", [{"name": "gate", "failsafe.recovery.health_gate": {
            "checks": checks, "interval": 0.5, "timeout": 120, "min_samples": 1, "consecutive_success": 1}}])
        gate3 = playbook(tmp / "gate3.yml", [{"name": "gate", "failsafe.recovery.health_gate": {
            "checks": checks, "interval": 0.5, "timeout": 120, "min_samples": 3, "consecutive_success": 3,
            "max_latency_p95_ms": 3000}}])
        rows = []
        for label, path in (("ansible-playbook start-up (debug task)", noop),
                            ("uri + until, loop over %d URLs (1 success each)" % N_ENDPOINTS, uri),
                            ("health_gate, %d checks, 1 success each" % N_ENDPOINTS, gate1),
                            ("health_gate, %d checks, 3 successes + p95" % N_ENDPOINTS, gate3)):
            wall, res = timed_play(path)
            inner = ""
            if "gate" in path.name:
                inner = "%.2f" % res.result("gate").get("elapsed", float("nan"))
            rows.append((label, wall, inner))
            print("  ran %-48s %6.1f s" % (label, wall), flush=True)
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()
    uri_wall = rows[1][1]
    print()
    print("1. %d local endpoints (%d answer in %d ms), load average %s" % (
        N_ENDPOINTS, N_SLOW, SLOW_S * 1000, " ".join("%.1f" % x for x in os.getloadavg())))
    print("   %-50s %10s %14s %12s" % ("run", "wall s", "gate elapsed s", "uri / this"))
    for label, wall, inner in rows:
        print("   %-50s %10.2f %14s %12s" % (label, wall, inner or "-", "%.1fx" % (uri_wall / wall) if wall else "-"))


def part_two(tmp):
    app = services.DemoApp(tmp, "bench", "v1")
    app.up()
    faults = ["error_rate", "crash", "hang"] * 4
    faults = faults[:10]
    rows = []
    try:
        for n, kind in enumerate(faults):
            offset = 0.6 + 0.1 * n  # inject at a different phase of the sampling schedule each time
            params = dict(checks=[dict(name="app", type="http", url=app.url + "/", timeout=0.5, expected_status=[200],
                                       headers={}, method="GET", validate_certs=True)],
                          mode="steady", interval=INTERVAL, timeout=15, min_samples=3, failure_limit=FAILURE_LIMIT,
                          consecutive_success=3, max_error_rate=None, max_latency_p95_ms=None, max_latency_p99_ms=None,
                          inconclusive_limit=3, window=0, baseline=None, fail_on_trigger=False, max_workers=4,
                          samples_limit=50)

            def inject(kind=kind):
                if kind == "error_rate":
                    app.set_fault(error_rate=100)
                elif kind == "crash":
                    app.crash()
                else:
                    app.set_fault(hang=True)

            timer = threading.Timer(offset, inject)
            timer.start()
            result = _health.run_gate(params)
            timer.join()
            rows.append((kind, offset, result["verdict"], result["time_to_detect"], result["time_to_detect"] - offset))
            if kind == "crash":
                app.start()
            else:
                app.reset()
            time.sleep(0.2)
    finally:
        app.stop()
    bound = INTERVAL * FAILURE_LIMIT
    print()
    print("2. time_to_detect over %d fault injections (interval %.1f s, failure_limit %d, probe timeout 0.5 s;"
          " interval x failure_limit = %.1f s)" % (len(rows), INTERVAL, FAILURE_LIMIT, bound))
    print("   %-11s %9s %8s %15s %22s" % ("fault", "inject s", "verdict", "time_to_detect", "detect after fault s"))
    for kind, offset, verdict, ttd, delay in rows:
        print("   %-11s %9.2f %8s %15.3f %22.3f" % (kind, offset, verdict, ttd, delay))
    delays = [r[4] for r in rows]
    print("   detection delay after the fault: min %.3f  median %.3f  max %.3f s  (bound %.1f s; hang adds the probe timeout)"
          % (min(delays), statistics.median(delays), max(delays), bound))
    for kind in ("error_rate", "crash", "hang"):
        sel = [r[4] for r in rows if r[0] == kind]
        print("   %-11s median %.3f s over %d" % (kind, statistics.median(sel), len(sel)))


def main():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-health-gate-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    started = time.monotonic()
    try:
        part_one(tmp)
        part_two(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("\nbench finished in %.0f s" % (time.monotonic() - started))


if __name__ == "__main__":
    main()
