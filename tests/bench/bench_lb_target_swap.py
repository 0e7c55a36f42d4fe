"""lb_target_swap: failed requests and swap latency under load; mutating ELBv2 calls per swap.

HAProxy 2.6 in front of the blue (v1) / green (v2) demo apps on 127.0.0.1, with a fixed number of
requests (BENCH_LB_REQUESTS, default 12 000) sent by BENCH_LB_THREADS threads while traffic is moved:
  - once through the module (ansible-playbook, what an operator runs): wall time, and the time from the
    start of the task until the first v2 answer is seen by a client;
  - then back and forth in-process (the module's own driver, runtime map + atomic map file rewrite)
    every 0.25 s until the requests are all sent: the median / max time of the move itself.
ELBv2 on the moto server: API calls (mutating and read-only) per move, counted on the client, for a
swap, a weighted canary step, a revert and a no-op re-run; and the module's own ``mutating_calls``.
Prints a table and FIGURE lines; asserts nothing.
"""

import http.client
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for extra in (str(HERE), str(ROOT / "extensions"), str(ROOT / ".collections")):
    if extra not in sys.path:
        sys.path.insert(0, extra)

from figures import figure  # noqa: E402  pylint: disable=wrong-import-position
from sandbox import services  # noqa: E402  pylint: disable=wrong-import-position
from sandbox.runner import run_module  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.failsafe.recovery.plugins.module_utils import _lb_elbv2, _lb_haproxy  # noqa: E402  pylint: disable=wrong-import-position

BENCH = "lb_target_swap"
REQUESTS = int(os.environ.get("BENCH_LB_REQUESTS", "12000"))
THREADS = int(os.environ.get("BENCH_LB_THREADS", "6"))
MAX_SECONDS = 90.0


class Load:
    """Send exactly ``total`` GET / requests (or stop after MAX_SECONDS) from ``threads`` threads."""

    def __init__(self, url, total, threads):
        parsed = urllib.parse.urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.total = total
        self.threads = threads
        self.lock = threading.Lock()
        self.sent = 0
        self.failed = []
        self.first_seen = {}
        self.started = self.ended = None
        self.workers = []

    def _work(self, deadline):
        while time.monotonic() < deadline:
            with self.lock:
                if self.sent >= self.total:
                    return
                self.sent += 1
            conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise ValueError("HTTP %d" % resp.status)
                version = json.loads(body)["version"]
                now = time.monotonic()
                with self.lock:
                    self.first_seen.setdefault(version, []).append(now)
            except (OSError, ValueError, KeyError, http.client.HTTPException) as exc:
                with self.lock:
                    self.failed.append(repr(exc))
            finally:
                conn.close()

    def start(self):
        self.started = time.monotonic()
        deadline = self.started + MAX_SECONDS
        self.workers = [threading.Thread(target=self._work, args=(deadline,), daemon=True) for _worker in range(self.threads)]
        for worker in self.workers:
            worker.start()

    def running(self):
        return any(w.is_alive() for w in self.workers)

    def join(self):
        for worker in self.workers:
            worker.join(MAX_SECONDS + 15)
        self.ended = time.monotonic()


def first_after(times, t0):
    later = [t for t in times if t >= t0]
    return min(later) - t0 if later else None


def bench_haproxy(base):
    blue = services.DemoApp(base, "blue", "v1")
    green = services.DemoApp(base, "green", "v2")
    started = []
    try:
        for app in (blue, green):
            app.up()
            started.append(app)
        proxy = services.HAProxy(base, blue.port, green.port)
        proxy.up()
        started.append(proxy)
        params = dict(haproxy_socket=proxy.socket, map_file=proxy.map_file, map_key=proxy.map_key, servers=None,
                      server_state_file=None, wait=True, wait_timeout=30, poll_interval=0.05, min_healthy_targets=1,
                      drain=False, drain_timeout=0)
        services.wait_until(lambda: all(t["healthy"] for b in ("be_blue", "be_green") for t in
                                        _lb_haproxy.backend_health(_lb_haproxy.RuntimeAPI(proxy.socket), b)),
                            30, "both backends UP")
        load = Load(proxy.url, REQUESTS, THREADS)
        load.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        res = run_module("lb_target_swap", dict(provider="haproxy", backend="be_green", haproxy_socket=proxy.socket,
                                                map_file=proxy.map_file, map_key=proxy.map_key, poll_interval=0.1))
        module_wall = time.monotonic() - t0
        with load.lock:
            first_v2 = first_after(load.first_seen.get("v2", []), t0)
        if res.get("failed"):
            raise RuntimeError("module swap failed: %s" % res.get("msg"))
        latencies = []
        target = "be_blue"
        while load.running():
            out = _lb_haproxy.HAProxySwap(dict(params, backend=target)).run()
            latencies.append(out["swap_seconds"])
            target = "be_green" if target == "be_blue" else "be_blue"
            time.sleep(0.25)
        load.join()
        elapsed = load.ended - load.started
        proxy.use_backend("be_blue")
        return dict(requests=load.sent, failed=len(load.failed), rps=load.sent / elapsed, elapsed=elapsed,
                    module_wall=module_wall, module_swap=res.get("swap_seconds"), first_v2=first_v2,
                    inproc_swaps=len(latencies), inproc_median=statistics.median(latencies) if latencies else None,
                    inproc_max=max(latencies) if latencies else None, errors=load.failed[:3])
    finally:
        for service in reversed(started):
            service.stop()


class CountingClient:
    """Wrap a boto3 client: count calls, split into mutating (modify/create/delete/...) and reads."""

    MUTATING = ("modify_", "create_", "delete_", "register_", "deregister_", "set_", "add_", "remove_")

    def __init__(self, client):
        self._client = client
        self.calls = []

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if callable(attr) and not name.startswith("get_paginator"):
            def wrapped(*args, **kwargs):
                self.calls.append(name)
                return attr(*args, **kwargs)
            return wrapped
        return attr

    def take(self):
        calls, self.calls = self.calls, []
        return dict(mutating=sum(1 for c in calls if c.startswith(self.MUTATING)), total=len(calls))


def bench_elbv2(base):
    moto = services.MotoServer(base)
    moto.up()
    try:
        ec2, elb = moto.client("ec2"), moto.client("elbv2")
        vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
        subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.%d.0/24" % i, AvailabilityZone="us-east-1" + az)
                   ["Subnet"]["SubnetId"] for i, az in ((1, "a"), (2, "b"))]
        lb = elb.create_load_balancer(Name="bench", Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
        arns = {}
        for name, ip in (("blue", "10.30.1.10"), ("green", "10.30.2.10")):
            arns[name] = elb.create_target_group(Name=name, Protocol="HTTP", Port=80, VpcId=vpc,
                                                 TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
            elb.register_targets(TargetGroupArn=arns[name], Targets=[{"Id": ip, "Port": 80}])
        listener = elb.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80, DefaultActions=[
            {"Type": "forward", "TargetGroupArn": arns["blue"]}])["Listeners"][0]["ListenerArn"]
        base_params = dict(provider="elbv2", listener_arn=listener, load_balancer_name=None, listener_port=None,
                           rule_arn=None, target_group=None, weights=None, wait=True, wait_timeout=30,
                           poll_interval=0.1, min_healthy_targets=1)
        client = CountingClient(elb)
        rows = []
        steps = [
            ("swap blue -> green", dict(target_group="green")),
            ("re-run (no-op)", dict(target_group="green")),
            ("canary 90/10", dict(weights=[dict(target_group="blue", weight=90), dict(target_group="green", weight=10)])),
            ("revert to blue", dict(target_group="blue")),
        ]
        for label, args in steps:
            t0 = time.perf_counter()
            out = _lb_elbv2.ElbSwap(client, dict(base_params, **args)).run()
            counts = client.take()
            rows.append((label, out["changed"], counts["mutating"], counts["total"], time.perf_counter() - t0))
        res = run_module("lb_target_swap", dict(moto.aws_params, provider="elbv2", listener_arn=listener,
                                                target_group="green", poll_interval=0.1))
        return dict(rows=rows, module_mutating=res.get("mutating_calls"), module_changed=res.get("changed"),
                    module_failed=res.get("failed", False))
    finally:
        moto.stop()


def main():
    base = pathlib.Path(tempfile.mkdtemp(prefix="bench-lb-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        hap = bench_haproxy(base)
        elb = bench_elbv2(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print("\nHAProxy: %d threads, %d requests through the frontend during the moves" % (THREADS, hap["requests"]))
    print("%-44s %12s" % ("measure", "value"))
    table = [
        ("requests sent", "%d" % hap["requests"]),
        ("failed requests", "%d" % hap["failed"]),
        ("throughput (req/s)", "%.0f" % hap["rps"]),
        ("module task wall time (s, ansible-playbook)", "%.2f" % hap["module_wall"]),
        ("  of which the move itself (s)", "%.4f" % (hap["module_swap"] or 0)),
        ("task start -> first v2 answer (s)", "%.2f" % hap["first_v2"] if hap["first_v2"] is not None else "n/a"),
        ("in-process moves during the load", "%d" % hap["inproc_swaps"]),
        ("in-process move median (ms)", "%.2f" % (1000 * hap["inproc_median"]) if hap["inproc_median"] else "n/a"),
        ("in-process move max (ms)", "%.2f" % (1000 * hap["inproc_max"]) if hap["inproc_max"] else "n/a"),
    ]
    for name, value in table:
        print("%-44s %12s" % (name, value))
    if hap["errors"]:
        print("first errors:", hap["errors"])
    print("\nELBv2 (moto): API calls per move, counted on the client")
    print("%-22s %8s %9s %6s %9s" % ("step", "changed", "mutating", "total", "time (s)"))
    for label, changed, mutating, total, seconds in elb["rows"]:
        print("%-22s %8s %9d %6d %9.3f" % (label, changed, mutating, total, seconds))
    print("module run: changed=%s mutating_calls=%s failed=%s"
          % (elb["module_changed"], elb["module_mutating"], elb["module_failed"]))

    figure(BENCH, "haproxy requests during swaps", hap["requests"])
    figure(BENCH, "haproxy failed requests", hap["failed"])
    figure(BENCH, "haproxy throughput", round(hap["rps"]), "req/s")
    figure(BENCH, "haproxy module swap wall time", round(hap["module_wall"], 2), "s")
    if hap["first_v2"] is not None:
        figure(BENCH, "haproxy task start to first v2 answer", round(hap["first_v2"], 2), "s")
    if hap["inproc_median"]:
        figure(BENCH, "haproxy in-process move median", round(1000 * hap["inproc_median"], 2), "ms")
    for label, _changed, mutating, total, _seconds in elb["rows"]:
        figure(BENCH, "elbv2 mutating calls: " + label, mutating)
        figure(BENCH, "elbv2 total calls: " + label, total)
    figure(BENCH, "elbv2 module mutating_calls per swap", elb["module_mutating"])


if __name__ == "__main__":
    main()
