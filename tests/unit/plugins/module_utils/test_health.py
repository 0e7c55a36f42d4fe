# -*- coding: utf-8 -*-
"""health_gate engine (scheduling, bounds), input validation and probe error handling."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.error import URLError

import pytest

from ansible_collections.failsafe.recovery.plugins.module_utils import _health
from ansible_collections.failsafe.recovery.plugins.module_utils._stats import FAIL, NO_DATA, OK


def params(checks, **kw):
    base = dict(checks=checks, mode="until_healthy", interval=0.05, timeout=3.0, min_samples=3, failure_limit=3,
                consecutive_success=3, max_error_rate=None, max_latency_p95_ms=None, max_latency_p99_ms=None,
                inconclusive_limit=3, window=0, baseline=None, fail_on_trigger=False, max_workers=16, samples_limit=100)
    base.update(kw)
    return base


def chk(name, ctype="http", **kw):
    base = dict(name=name, type=ctype, timeout=1.0, url="http://127.0.0.1:1/", expected_status=[200], headers={},
                method="GET", validate_certs=True)
    base.update(kw)
    return base


class Scripted:
    """A fake probe returning scripted outcomes, optionally slow."""

    def __init__(self, outcomes, delay=0.0):
        self.outcomes = list(outcomes)
        self.delay = delay
        self.calls = []

    def __call__(self, timeout):
        self.calls.append(time.monotonic())
        if self.delay:
            time.sleep(min(self.delay, timeout))
        if len(self.outcomes) > 1:
            return self.outcomes.pop(0)
        return self.outcomes[0]


GOOD = (OK, 200, None)
BAD = (FAIL, 500, "HTTP 500 (expected 200)")


# ---------------------------------------------------------------- engine

def test_gate_passes_when_healthy_and_reports_stats():
    probe = Scripted([GOOD])
    result = _health.Gate([chk("a")], params([chk("a")]), probes={"a": probe}).run()
    assert result["passed"] and result["verdict"] == "pass"
    assert result["checks"]["a"]["samples"] == 3 and result["checks"]["a"]["consecutive_successes"] == 3
    assert result["time_to_detect"] <= result["elapsed"] < 1.0
    assert [s["status"] for s in result["samples"]] == ["ok", "ok", "ok"]


def test_gate_fails_fast_and_time_to_detect_matches_the_deciding_sample():
    probe = Scripted([GOOD, BAD, BAD, BAD, GOOD])
    result = _health.Gate([chk("a")], params([chk("a")], interval=0.1), probes={"a": probe}).run()
    assert result["verdict"] == "fail" and result["decided_by"] == "a"
    assert result["time_to_detect"] == result["samples"][-1]["t"]
    assert 0.3 <= result["time_to_detect"] < 0.3 + 0.25  # 4th sample at ~0.3 s
    assert "failed 3 consecutive samples" in result["reason"]


def test_slow_check_does_not_delay_the_others():
    slow = Scripted([GOOD], delay=0.8)
    fast = Scripted([GOOD])
    checks = [chk("slow"), chk("fast")]
    result = _health.Gate(checks, params(checks, mode="steady", interval=0.1, timeout=1.0),
                          probes={"slow": slow, "fast": fast}).run()
    # fast keeps its 0.1 s schedule while slow is stuck in one 0.8 s probe
    assert len(fast.calls) >= 8
    assert len(slow.calls) <= 2
    gaps = [b - a for a, b in zip(fast.calls, fast.calls[1:])]
    assert max(gaps) < 0.25


def test_gate_bounded_by_timeout_even_with_hanging_probe():
    hang = Scripted([GOOD], delay=1.5)
    started = time.monotonic()
    result = _health.Gate([chk("h")], params([chk("h", timeout=2.0)], timeout=0.5), probes={"h": hang}).run()
    assert time.monotonic() - started < 1.0
    assert result["verdict"] in ("inconclusive", "fail")
    assert not result["passed"]


def test_probe_exception_becomes_failed_sample():
    def broken(timeout):
        raise RuntimeError("boom")
    result = _health.Gate([chk("b")], params([chk("b")]), probes={"b": broken}).run()
    assert result["verdict"] == "fail"
    assert result["checks"]["b"]["last_error"] == "RuntimeError: boom"


def test_no_data_gives_inconclusive():
    probe = Scripted([(NO_DATA, None, "query returned no data")])
    result = _health.Gate([chk("p")], params([chk("p")], inconclusive_limit=2), probes={"p": probe}).run()
    assert result["verdict"] == "inconclusive" and not result["passed"]
    assert result["checks"]["p"]["no_data"] == 3


def test_trigger_mode_result_shape():
    probe = Scripted([GOOD, BAD, GOOD, GOOD])
    checks = [chk("a")]
    result = _health.Gate(checks, params(checks, mode="trigger", max_error_rate=10, min_samples=4), probes={"a": probe}).run()
    assert result["rollback_recommended"] is True
    assert result["triggers_fired"] == [dict(check="a", trigger="error_rate", threshold=10, observed=25.0, samples=4)]


def test_samples_list_is_bounded():
    probe = Scripted([GOOD])
    checks = [chk("a")]
    result = _health.Gate(checks, params(checks, mode="steady", timeout=0.6, samples_limit=4), probes={"a": probe}).run()
    assert len(result["samples"]) == 4
    assert result["checks"]["a"]["samples"] > 4


def test_baseline_from_registered_result():
    before = {"checks": {"a": {"state": "failed", "error_rate": 100.0, "max_consecutive_failures": 3}}}
    checks = [chk("a", ctype="cloudwatch_alarm", alarm_names=["x"])]
    probe = Scripted([(FAIL, {"x": "ALARM"}, "alarm(s) in ALARM: x")])
    result = _health.Gate(checks, params(checks, mode="steady", timeout=0.5, baseline=before), probes={"a": probe}).run()
    assert result["verdict"] == "pass", result["reason"]
    assert result["checks"]["a"]["limits"]["degraded_baseline"] is True


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("change, message", [
    (dict(interval=0), "interval must be greater than 0"),
    (dict(max_error_rate=150), "max_error_rate is a percentage and must be between 0 and 100"),
    (dict(max_error_rate=-1), "max_error_rate is a percentage"),
    (dict(max_latency_p95_ms=2000), "max_latency_p95_ms (2000 ms) is above the probe timeout of a (1.0 s)"),
    (dict(checks=[chk("a", url=None)]), "checks[0].url is required when type is http"),
    (dict(checks=[chk("a"), chk("b", ctype="tcp", port=5432)]), "checks[1].host is required when type is tcp"),
    (dict(checks=[chk("a", ctype="postgres")]), "checks[0].query is required when type is postgres"),
    (dict(checks=[chk("a", ctype="prometheus", query="up")]), "checks[0].op is required when type is prometheus"),
    (dict(checks=[chk("a", ctype="cloudwatch_alarm", alarm_names=[])]), "checks[0].alarm_names is required"),
    (dict(checks=[chk("a"), chk("a")]), "checks[1].name 'a' is used twice"),
    (dict(checks=[chk("a", json_query="status")]), "checks[0].json_query needs either checks[0].expected"),
    (dict(checks=[chk("a", json_query="[")]), "needs either"),
    (dict(checks=[chk("a", json_query="[", expected=1)]), "checks[0].json_query is not a valid JMESPath"),
    (dict(checks=[chk("a", body_regex="(")]), "checks[0].body_regex is not a valid regular expression"),
    (dict(checks=[]), "checks must list at least one check"),
])
def test_validation_names_the_option(change, message):
    with pytest.raises(_health.GateInputError) as err:
        _health.validate(dict(params([chk("a")]), **change))
    assert message in str(err.value)


# ---------------------------------------------------------------- real probes on 127.0.0.1

class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/slow":
            time.sleep(1.0)
        code = 500 if self.path == "/err" else 200
        body = json.dumps({"status": "ok", "depth": 3}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_http_probe_status_regex_and_json(server):
    assert _health.HttpProbe(chk("a", url=server + "/"))(2.0)[0] == OK
    status, value, error = _health.HttpProbe(chk("a", url=server + "/err"))(2.0)
    assert (status, value) == (FAIL, 500) and error == "HTTP 500 (expected 200)"
    assert _health.HttpProbe(chk("a", url=server + "/err", expected_status=[500]))(2.0)[0] == OK
    assert _health.HttpProbe(chk("a", url=server + "/", body_regex='"status": "ok"'))(2.0)[0] == OK
    assert _health.HttpProbe(chk("a", url=server + "/", body_regex="nope"))(2.0)[0] == FAIL
    assert _health.HttpProbe(chk("a", url=server + "/", json_query="status", expected="ok"))(2.0) == (OK, "ok", None)
    status, value, error = _health.HttpProbe(chk("a", url=server + "/", json_query="depth", op="<", threshold=2))(2.0)
    assert (status, value) == (FAIL, 3) and "not < 2" in error


def test_http_probe_timeout_and_refused_are_failed_samples(server):
    status, dummy, error = _health.HttpProbe(chk("a", url=server + "/slow"))(0.2)
    assert status == FAIL and "timed out" in error
    status, dummy, error = _health.HttpProbe(chk("a", url="http://127.0.0.1:%d/" % closed_port()))(1.0)
    assert status == FAIL and error == "connection refused"


def test_tcp_probe(server):
    port = int(server.rsplit(":", 1)[1])
    assert _health.TcpProbe(dict(host="127.0.0.1", port=port))(1.0)[0] == OK
    status, dummy, error = _health.TcpProbe(dict(host="127.0.0.1", port=closed_port()))(1.0)
    assert status == FAIL and "connection refused" in error


def test_prometheus_probe_against_fake_api():
    # a tiny stand-in for /api/v1/query answering an empty vector and then one sample
    answers = [{"status": "success", "data": {"resultType": "vector", "result": []}},
               {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"job": "x"}, "value": [1, "0.4"]}]}}]

    class Api(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            assert self.path.startswith("/api/v1/query?query=")
            body = json.dumps(answers.pop(0)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        probe = _health.PrometheusProbe(dict(url="http://127.0.0.1:%d/" % srv.server_address[1], query="up", op="<", threshold=0.1))
        assert probe(2.0)[0] == NO_DATA
        status, value, error = probe(2.0)
        assert status == FAIL and value == 0.4 and "0.4{job=x} is not < 0.1" in error
    finally:
        srv.shutdown()
        srv.server_close()


def test_normalize_baseline_accepts_result_checks_or_list():
    stats = {"state": "failed", "error_rate": 50.0}
    assert _health.normalize_baseline({"checks": {"a": stats}, "verdict": "fail"}) == {"a": stats}
    assert _health.normalize_baseline({"a": stats}) == {"a": stats}
    assert _health.normalize_baseline([dict(stats, name="a")]) == {"a": dict(stats, name="a")}
    assert _health.normalize_baseline(None) == {}


def test_error_reasons_are_short_sentences():
    assert _health.error_reason(URLError(ConnectionRefusedError(111, "Connection refused"))) == "connection refused"
    assert _health.error_reason(URLError(socket.gaierror(-2, "Name or service not known"))).startswith("DNS resolution failed")
    assert _health.error_reason(URLError(socket.timeout("timed out"))) == "timed out"
    cert_error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cert_error.verify_message = "self-signed certificate"
    assert _health.error_reason(URLError(cert_error)) == "TLS certificate verification failed: self-signed certificate"
    assert _health.error_reason(ValueError("bad\nsecond line")) == "ValueError: bad"
