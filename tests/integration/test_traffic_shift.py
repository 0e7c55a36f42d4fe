"""traffic_shift for real: a private HAProxy with ONE backend holding the blue (v1) and green (v2) demo
apps as weighted servers; the role moves 10 -> 50 -> 100 % to green with a health gate on green after
each step. Green starts failing when its weight reaches 50: the gate fails, the role reverts to the
split before the first step (blue 100 %) and fails, while clients see no failed request
(HAProxy retries a failed request on the other server).
"""

import http.client
import json
import os
import subprocess
import tempfile
import threading
import time

import pytest
import yaml

from sandbox import services
from sandbox.runner import ROOT, run_playbook


@pytest.fixture(scope="module")
def weighted_proxy(demo_apps, tmp_path_factory):
    base = tmp_path_factory.mktemp("shiftproxy")
    os.chmod(base, 0o755)
    port = services.free_port()
    sock = base / "admin.sock"
    config = base / "haproxy.cfg"
    config.write_text("""global
    stats socket %(sock)s mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 10s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 500 502 503 504
frontend fe
    bind 127.0.0.1:%(port)d
    default_backend be_app
backend be_app
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    server blue 127.0.0.1:%(blue)d check inter 300ms fall 2 rise 2 weight 100
    server green 127.0.0.1:%(green)d check inter 300ms fall 2 rise 2 weight 0
""" % dict(sock=sock, port=port, blue=demo_apps.blue.port, green=demo_apps.green.port))
    with open(base / "haproxy.log", "w") as log:
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        services.wait_until(lambda: sock.exists() and services.port_open(port), 15, "weighted haproxy")
        yield dict(port=port, socket=str(sock), admin=lambda cmd: _admin(str(sock), cmd))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _admin(path, cmd):
    import socket  # pylint: disable=import-outside-toplevel
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(5)
        conn.connect(path)
        conn.sendall(cmd.encode() + b"\n")
        chunks = []
        while True:
            data = conn.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode()


def weights(proxy):
    """{server: (admin_state, user weight)} of be_app, from the runtime API."""
    out = {}
    for line in proxy["admin"]("show servers state be_app").splitlines():
        parts = line.split()
        if len(parts) > 7 and parts[1] == "be_app":
            out[parts[3]] = (int(parts[6]), int(parts[7]))
    return out


def test_green_failing_at_50_percent_is_reverted(weighted_proxy, demo_apps):
    proxy = weighted_proxy
    assert weights(proxy) == {"blue": (0, 100), "green": (0, 0)}
    stop = threading.Event()
    stats = dict(sent=0, failed=[], versions={}, fault_at=None)

    def load():
        while not stop.is_set() and stats["sent"] < 100000:
            stats["sent"] += 1
            conn = http.client.HTTPConnection("127.0.0.1", proxy["port"], timeout=10)
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    stats["failed"].append(resp.status)
                else:
                    version = json.loads(body)["version"]
                    stats["versions"][version] = stats["versions"].get(version, 0) + 1
            except (OSError, ValueError, http.client.HTTPException) as exc:
                stats["failed"].append(repr(exc))
            finally:
                conn.close()

    def break_green_at_50():
        while not stop.is_set():
            if weights(proxy).get("green", (0, 0))[1] == 50:
                demo_apps.green.set_fault(error_rate=100, fail_health=True)
                stats["fault_at"] = time.monotonic()
                return
            time.sleep(0.05)

    def server(name, weight):
        return dict(name=name, state="ready", weight=weight)

    role_vars = dict(
        traffic_shift_lb=dict(provider="haproxy", haproxy_socket=proxy["socket"], backend="be_app",
                              poll_interval=0.2, wait_timeout=20),
        traffic_shift_steps=[dict(servers=[server("blue", 90), server("green", 10)]),
                             dict(servers=[server("blue", 50), server("green", 50)]),
                             dict(servers=[server("blue", 0), server("green", 100)])],
        traffic_shift_health_checks=[dict(name="green", type="http", url=demo_apps.green.url + "/health", timeout=2)],
        traffic_shift_gate=dict(mode="steady", interval=0.5, timeout=3, max_error_rate=0),
    )
    play = [{"name": "traffic_shift test", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": dict(role_vars, ansible_python_interpreter=str(ROOT / ".venv" / "bin" / "python")),
             "tasks": [{"name": "shift", "ansible.builtin.include_role": {"name": "failsafe.recovery.traffic_shift"}}]}]
    (ROOT / ".cache").mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=str(ROOT / ".cache"), delete=False) as handle:
        yaml.safe_dump(play, handle)
    threads = [threading.Thread(target=load, daemon=True) for _n in range(2)]
    threads.append(threading.Thread(target=break_green_at_50, daemon=True))
    for thread in threads:
        thread.start()
    try:
        res = run_playbook(handle.name, inventory="localhost,")
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
        os.unlink(handle.name)
        demo_apps.green.set_fault(error_rate=0, fail_health=False)

    results = res.task_results()
    names = [name.split(" : ", 1)[-1] for name, _result in results]

    def last(task):
        found = [r for n, r in results if n.split(" : ", 1)[-1] == task]
        assert found, "task %r did not run; ran: %s" % (task, names)
        return found[-1]

    assert stats["fault_at"] is not None, "green never reached weight 50: %s" % names
    assert res.rc != 0, "the role must fail when a gate fails"
    failure = last("Fail loudly")
    assert failure.get("failed") and "step 2 of 3" in failure["msg"] and "traffic reverted" in failure["msg"], failure
    revert = last("Revert the traffic to the split before the first step")
    assert revert.get("changed") is True, revert
    assert not any(n.startswith("Move the traffic (step 3") for n in names), "step 3 must not run"
    assert weights(proxy) == {"blue": (0, 100), "green": (0, 0)}
    assert stats["sent"] > 20 and stats["failed"] == [], stats["failed"][:5]
    assert stats["versions"].get("v2", 0) > 0, "green took traffic at 10 % and 50 %"


def test_healthy_green_takes_all_traffic_and_a_second_run_changes_nothing(weighted_proxy, demo_apps):
    proxy = weighted_proxy
    assert weights(proxy) == {"blue": (0, 100), "green": (0, 0)}
    steps = [dict(servers=[dict(name="blue", state="ready", weight=50), dict(name="green", state="ready", weight=50)]),
             dict(servers=[dict(name="blue", state="ready", weight=0), dict(name="green", state="ready", weight=100)])]
    role_vars = dict(
        traffic_shift_lb=dict(provider="haproxy", haproxy_socket=proxy["socket"], backend="be_app",
                              poll_interval=0.2, wait_timeout=20),
        traffic_shift_steps=steps,
        traffic_shift_health_checks=[dict(name="green", type="http", url=demo_apps.green.url + "/health", timeout=2)],
        traffic_shift_gate=dict(mode="steady", interval=0.3, timeout=1.5, max_error_rate=0),
    )
    play = [{"name": "traffic_shift %s" % run, "hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": dict(role_vars, ansible_python_interpreter=str(ROOT / ".venv" / "bin" / "python")),
             "tasks": [{"name": "shift", "ansible.builtin.include_role": {"name": "failsafe.recovery.traffic_shift"}}]}
            for run in ("first", "again")]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=str(ROOT / ".cache"), delete=False) as handle:
        yaml.safe_dump(play, handle)
    try:
        res = run_playbook(handle.name, inventory="localhost,")
    finally:
        os.unlink(handle.name)
        after = weights(proxy)
        proxy["admin"]("set server be_app/blue weight 100")
        proxy["admin"]("set server be_app/green weight 0")
    assert res.rc == 0, res.stdout[-3000:]
    assert after == {"blue": (0, 0), "green": (0, 100)}
    ran = [(n.split(" : ", 1)[-1], r) for n, r in res.task_results() if "previous" in r]
    # first run: the probe sees a change coming, both steps move; second run: only the probe, unchanged
    assert [(n, r["changed"]) for n, r in ran] == [
        ("Move the traffic (probe of the last step)", True), ("Move the traffic (step 1)", True),
        ("Move the traffic (step 2)", True), ("Move the traffic (probe of the last step)", False)]
