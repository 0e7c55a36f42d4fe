"""health_gate run for real (ansible-playbook) against the demo apps, Prometheus, PostgreSQL and moto."""

import json
import os
import re
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from sandbox.runner import ROOT, run_module, run_playbook


def gate(args, check=False):
    return run_module("health_gate", args, check=check, timeout=120)


def gates(tasks, name="health_gate tests"):
    """Run several tasks in ONE ansible-playbook (startup dominates on a busy CI box).

    ``tasks`` are (name, args) for health_gate tasks (run with ignore_errors so a failed gate does not stop
    the play; Ansible still reports ``failed``) or full task dicts for anything else. Returns {name: result}.
    """
    play_tasks = []
    names = []
    for item in tasks:
        if isinstance(item, dict):
            play_tasks.append(item)
            continue
        task_name, args = item[0], item[1]
        task = {"name": task_name, "failsafe.recovery.health_gate": args, "ignore_errors": True,
                "register": re.sub(r"\W", "_", task_name)}
        if len(item) > 2:
            task.update(item[2])
        play_tasks.append(task)
        names.append(task_name)
    play = [{"name": name, "hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": str(ROOT / ".venv" / "bin" / "python")}, "tasks": play_tasks}]
    (ROOT / ".cache").mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=str(ROOT / ".cache"), delete=False) as handle:
        yaml.safe_dump(play, handle)
    try:
        res = run_playbook(handle.name, inventory="localhost,", timeout=300)
    finally:
        os.unlink(handle.name)
    return dict((n, res.result(n)) for n in names)


def fault(app, **body):
    """A uri task setting the demo app's faults (the same admin API a drill would use)."""
    label = " ".join("%s=%s" % kv for kv in sorted(body.items()))
    return {"name": "fault %s %s" % (app.name, label), "ansible.builtin.uri": {
        "url": app.url + "/admin/fault", "method": "POST", "body_format": "json", "body": body}}


def http_check(name, app, path="/", **kw):
    return dict(name=name, type="http", url=app.url + path, timeout=kw.pop("timeout", 2), **kw)


def app_requests(app):
    """Application requests the demo app has answered (from its own /metrics)."""
    return sum(int(v) for v in re.findall(r'^demoapp_requests_total\{[^}]*\} (\d+)', app.metrics(), re.M))


def test_demo_app_gates(demo_apps):
    """Healthy (check mode), latency breach, trigger evaluation and a stopped app, in one playbook."""
    blue, green = demo_apps.blue, demo_apps.green
    trigger_args = dict(mode="trigger", interval=0.2, timeout=40, min_samples=4, failure_limit=3, max_error_rate=10,
                        max_latency_p95_ms=700, max_latency_p99_ms=3000,
                        checks=[http_check("blue", blue, timeout=4), http_check("green", green, timeout=4),
                                dict(name="blue_tcp", type="tcp", host="127.0.0.1", port=blue.port)])
    results = gates([
        ("healthy", dict(mode="until_healthy", interval=0.2, timeout=20, consecutive_success=3,
                         checks=[http_check("blue", blue, json_query="version", expected="v1"),
                                 http_check("green_health", green, "/health", body_regex='"status": *"ok"'),
                                 dict(name="blue_tcp", type="tcp", host="127.0.0.1", port=blue.port)]),
         {"check_mode": True}),
        fault(blue, latency_ms=300),
        ("latency", dict(mode="steady", interval=0.2, timeout=20, min_samples=3, max_latency_p95_ms=150,
                         checks=[http_check("blue", blue)])),
        fault(blue, error_rate=30, latency_ms=1000),
        ("trigger", trigger_args),
        fault(blue, error_rate=100),
        ("trigger_fails", dict(mode="trigger", interval=0.2, timeout=30, min_samples=3, failure_limit=3,
                               fail_on_trigger=True, checks=[http_check("blue", blue)])),
        fault(green, exit=True),
        ("stopped", dict(mode="until_healthy", interval=0.2, timeout=60, failure_limit=3,
                         checks=[http_check("green", green)])),
    ])

    result = results["healthy"]
    assert result.get("failed", False) is False and result["changed"] is False
    assert result["passed"] is True and result["verdict"] == "pass"
    for name in ("blue", "green_health", "blue_tcp"):
        stats = result["checks"][name]
        assert stats["consecutive_successes"] >= 3 and stats["failures"] == 0
        assert stats["latency_ms"]["p95"] is not None
    assert result["checks"]["blue"]["last_value"] == "v1"

    result = results["latency"]
    assert result["failed"] is True and result["verdict"] == "fail"
    assert "check 'blue' latency p95" in result["reason"] and "exceeds max_latency_p95_ms 150" in result["reason"]
    assert result["checks"]["blue"]["latency_ms"]["p95"] >= 300
    assert result["checks"]["blue"]["failures"] == 0  # slow answers are still answers

    result = results["trigger"]
    assert result.get("failed", False) is False, result.get("msg")
    assert result["rollback_recommended"] is True
    fired = dict((t["trigger"], t) for t in result["triggers_fired"])
    assert sorted((t["check"], t["trigger"]) for t in result["triggers_fired"]) == [("blue", "error_rate"), ("blue", "latency_p95")]
    assert fired["error_rate"]["observed"] > 10 and fired["latency_p95"]["observed"] >= 1000
    assert result["checks"]["green"]["failures"] == 0 and result["checks"]["blue_tcp"]["failures"] == 0

    result = results["trigger_fails"]
    assert result["failed"] is True and result["rollback_recommended"] is True
    assert [t["trigger"] for t in result["triggers_fired"]] == ["consecutive_failures"]

    result = results["stopped"]
    assert result["failed"] is True and result["verdict"] == "fail"
    assert result["checks"]["green"]["consecutive_failures"] == 3
    assert result["checks"]["green"]["last_error"] == "connection refused"
    assert "failed 3 consecutive samples (failure_limit 3)" in result["reason"]
    assert result["elapsed"] < 5  # fail fast, not the 60 s timeout


def test_error_switch_mid_gate_is_detected_quickly(demo_apps):
    blue = demo_apps.blue
    interval, failure_limit = 0.3, 6
    before = app_requests(blue)
    switched = {}

    def inject():
        deadline = time.monotonic() + 60
        # mid-gate: right after the gate's 4th sample (t = 0.9 s on its clock)
        while app_requests(blue) < before + 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        blue.set_fault(error_rate=30)
        switched["at"] = time.monotonic()

    thread = threading.Thread(target=inject, daemon=True)
    thread.start()
    result = gate(dict(mode="steady", interval=interval, timeout=20, min_samples=3, failure_limit=failure_limit,
                       max_error_rate=10, window=5, checks=[http_check("blue", blue)]))
    thread.join(5)
    assert "at" in switched, "the fault was never injected"
    assert result["failed"] is True and result["verdict"] == "fail"
    assert result["decided_by"] == "blue"
    assert "check 'blue' error rate" in result["reason"] and "exceeds max_error_rate 10 %" in result["reason"]
    assert "HTTP 500" in result["reason"]
    assert 0.9 <= result["time_to_detect"] <= interval * failure_limit + 1.0, [(s["t"], s["status"], s["latency_ms"]) for s in result["samples"]]
    statuses = [s["status"] for s in result["samples"] if s["check"] == "blue"]
    assert statuses[:3] == ["ok", "ok", "ok"] and statuses[-1] == "fail"


def test_prometheus_checks_against_real_prometheus(demo_apps, prometheus):
    green = demo_apps.green
    green.set_fault(error_rate=50)
    for dummy in range(40):
        try:
            urllib.request.urlopen(green.url + "/", timeout=5).read()
        except urllib.error.HTTPError:
            pass
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # wait until Prometheus has scraped the errors
        if prometheus.query('demoapp_requests_total{color="green",status="500"} >= 20'):
            break
        time.sleep(0.5)
    ratio = 'sum(demoapp_requests_total{color="green",status="500"}) / sum(demoapp_requests_total{color="green"})'
    missing = dict(name="missing", type="prometheus", url=prometheus.url, query="no_such_metric_total", op=">", threshold=0)
    results = gates([
        ("trigger", dict(mode="trigger", interval=0.3, timeout=30, min_samples=3, failure_limit=3, inconclusive_limit=1,
                         checks=[dict(name="blue_up", type="prometheus", url=prometheus.url, query='up{color="blue"}', op="==", threshold=1),
                                 dict(name="green_errors", type="prometheus", url=prometheus.url, query=ratio, op="<", threshold=0.1),
                                 missing])),
        ("no_data", dict(interval=0.2, timeout=10, inconclusive_limit=2, checks=[missing])),
    ])
    result = results["trigger"]
    assert result.get("failed", False) is False
    checks = result["checks"]
    assert checks["blue_up"]["failures"] == 0 and checks["blue_up"]["last_value"] == 1.0
    assert checks["green_errors"]["state"] == "failed" and 0.1 < checks["green_errors"]["last_value"] <= 1.0
    assert "is not < 0.1" in checks["green_errors"]["last_error"]
    assert checks["missing"]["state"] == "inconclusive" and checks["missing"]["successes"] == 0
    assert checks["missing"]["last_error"] == "query returned no data"
    assert [(t["check"], t["trigger"]) for t in result["triggers_fired"]] == [("green_errors", "consecutive_failures")]
    # no data alone is never a pass
    result = results["no_data"]
    assert result["failed"] is True and result["verdict"] == "inconclusive"
    assert "returned no data 3 times (inconclusive_limit 2)" in result["reason"]


def pg_check(postgres, **kw):
    check = dict(name="db", type="postgres", query="SELECT NOT pg_is_in_recovery()", timeout=3)
    check.update(postgres.module_params)
    check.update(kw)
    return check


def test_postgres_check_live_and_stopped(postgres):
    results = gates([
        ("live", dict(interval=0.2, timeout=20, checks=[pg_check(postgres)])),
        ("falsy", dict(interval=0.2, timeout=20, failure_limit=2,
                       checks=[pg_check(postgres, query="SELECT count(*) FROM pg_database WHERE datname = 'nope'")])),
    ])
    assert results["live"]["passed"] is True and results["live"]["checks"]["db"]["last_value"] is True
    assert results["falsy"]["failed"] is True and "query returned 0 (not truthy)" in results["falsy"]["reason"]
    postgres.stop()
    try:
        result = gate(dict(interval=0.2, timeout=30, failure_limit=2, checks=[pg_check(postgres)]))
    finally:
        postgres.start()
    assert result["failed"] is True and result["verdict"] == "fail"
    assert result["elapsed"] < 15
    assert "postgres@127.0.0.1:%d" % postgres.port in result["checks"]["db"]["last_error"]
    assert postgres.password not in json.dumps(result)
    assert postgres.psql("SELECT 1").strip() == "1"


def test_cloudwatch_alarm_via_moto(moto):
    cloudwatch = moto.client("cloudwatch")
    states = {"hg-ok": "OK", "hg-5xx": "ALARM", "hg-new": "INSUFFICIENT_DATA"}
    for name, state in states.items():
        cloudwatch.put_metric_alarm(AlarmName=name, MetricName=name, Namespace="failsafe/test", Statistic="Sum",
                                    Period=60, EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold")
        cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason="test")

    def check(*names):
        return dict(name="alarms", type="cloudwatch_alarm", alarm_names=list(names), **moto.aws_params)

    results = gates([
        ("ok", dict(interval=0.2, timeout=20, checks=[check("hg-ok")])),
        ("before", dict(mode="trigger", interval=0.2, timeout=20, failure_limit=3, checks=[check("hg-ok", "hg-5xx")])),
        ("firing", dict(mode="steady", interval=0.2, timeout=2, failure_limit=3, checks=[check("hg-ok", "hg-5xx")])),
        # judged against the baseline taken while it was already firing: does not block the fix
        ("baseline", dict(mode="steady", interval=0.2, timeout=2, failure_limit=3, baseline="{{ before }}",
                          checks=[check("hg-ok", "hg-5xx")])),
        ("insufficient", dict(interval=0.2, timeout=20, inconclusive_limit=1, checks=[check("hg-ok", "hg-new")])),
    ])
    result = results["ok"]
    assert result["passed"] is True and result["checks"]["alarms"]["last_value"] == {"hg-ok": "OK"}
    result = results["before"]
    assert result.get("failed", False) is False and result["rollback_recommended"] is True
    assert "alarm(s) in ALARM: hg-5xx" in result["checks"]["alarms"]["last_error"]
    result = results["firing"]
    assert result["failed"] is True and "alarm(s) in ALARM: hg-5xx" in result["reason"]
    result = results["baseline"]
    assert result.get("failed", False) is False and result["passed"] is True, result.get("msg")
    assert result["checks"]["alarms"]["limits"]["degraded_baseline"] is True
    result = results["insufficient"]
    assert result["failed"] is True and result["verdict"] == "inconclusive"
    assert result["checks"]["alarms"]["successes"] == 0
    assert result["checks"]["alarms"]["last_value"] == {"hg-ok": "OK", "hg-new": "INSUFFICIENT_DATA"}


# ---------------------------------------------------------------- TLS

class _Hello(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def tls_server(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield "https://127.0.0.1:%d/" % srv.server_address[1], str(cert)
    srv.shutdown()
    srv.server_close()


def test_self_signed_tls_fails_unless_validate_certs_false(tls_server):
    url, cert = tls_server
    results = gates([
        ("verified", dict(interval=0.2, timeout=20, checks=[dict(name="tls", type="http", url=url)])),
        ("unverified", dict(interval=0.2, timeout=20, checks=[dict(name="tls", type="http", url=url, validate_certs=False)])),
        ("own_ca", dict(interval=0.2, timeout=20, checks=[dict(name="tls", type="http", url=url, ca_path=cert)])),
    ])
    assert results["verified"]["failed"] is True
    assert "TLS certificate verification failed" in results["verified"]["checks"]["tls"]["last_error"]
    assert results["unverified"]["passed"] is True
    assert results["own_ca"]["passed"] is True


def test_bad_input_names_the_option():
    results = gates([
        ("interval", dict(interval=0, checks=[dict(name="a", type="tcp", host="127.0.0.1", port=1)])),
        ("latency", dict(max_latency_p95_ms=9000, checks=[dict(name="a", type="tcp", host="127.0.0.1", port=1, timeout=2)])),
        ("missing_url", dict(checks=[dict(name="api", type="http")])),
    ])
    assert results["interval"]["msg"] == "interval must be greater than 0 seconds, got 0.0"
    assert "max_latency_p95_ms (9000.0 ms) is above the probe timeout of a" in results["latency"]["msg"]
    assert results["missing_url"]["msg"] == "checks[0].url is required when type is http (check 'api')"
    assert all(r["failed"] is True and "samples" not in r for r in results.values())
