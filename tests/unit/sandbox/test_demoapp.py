"""Pure logic of the demo app: failure spreading, fault validation, metrics text, config precedence, flags."""

import json
import os
import threading
import urllib.error
import urllib.request

import pytest

from sandbox import demoapp


@pytest.mark.parametrize("rate", [0, 1, 5, 30, 50, 99, 100])
def test_error_rate_is_exact_over_every_hundred(rate):
    for start in (1, 101, 537):
        failures = sum(demoapp.fails(n, rate) for n in range(start, start + 100))
        assert failures == rate


def test_error_rate_spreads_failures():
    pattern = [demoapp.fails(n, 30) for n in range(1, 11)]
    assert sum(pattern) == 3
    assert pattern != [True] * 3 + [False] * 7


@pytest.mark.parametrize("body, message", [
    ({"error_rate": 101}, "between 0 and 100"),
    ({"error_rate": True}, "must be a number"),
    ({"latency_ms": -1}, "must not be negative"),
    ({"hang": "yes"}, "true or false"),
    ({"exit": "now"}, "exit must be"),
    ({"colour": "red"}, "unknown field 'colour'"),
    ([], "JSON object"),
])
def test_validate_faults_rejects(body, message):
    with pytest.raises(ValueError, match=message):
        demoapp.validate_faults(body)


def test_validate_faults_accepts_and_normalises():
    out = demoapp.validate_faults({"error_rate": 30, "latency_ms": 12.7, "hang": False, "exit": 3,
                                   "version": "ignored"})
    assert out == {"error_rate": 30.0, "latency_ms": 12, "hang": False, "exit": 3}


def test_metrics_histogram_is_cumulative():
    metrics = demoapp.Metrics()
    for status, seconds in ((200, 0.001), (200, 0.2), (500, 3.0)):
        metrics.observe(status, seconds)
    text = metrics.render('v"2')
    assert 'demoapp_requests_total{status="200"} 2' in text
    assert 'demoapp_requests_total{status="500"} 1' in text
    assert 'demoapp_request_duration_seconds_bucket{le="0.005"} 1' in text
    assert 'demoapp_request_duration_seconds_bucket{le="0.25"} 2' in text
    assert 'demoapp_request_duration_seconds_bucket{le="5.0"} 3' in text
    assert 'demoapp_request_duration_seconds_bucket{le="+Inf"} 3' in text
    assert "demoapp_request_duration_seconds_count 3" in text
    assert 'demoapp_info{version="v\\"2"} 1' in text
    assert "# TYPE demoapp_request_duration_seconds histogram" in text


def test_config_file_overrides_and_reset(tmp_path):
    config = tmp_path / "release.json"
    config.write_text(json.dumps({"version": "v2", "release": "r2", "error_rate": 30}))
    state = demoapp.AppState("v1", str(config))
    assert state.version == "v2" and state.release == "r2"
    assert state.faults()["error_rate"] == 30.0

    state.apply({"error_rate": 0, "fail_health": True})
    assert state.faults()["error_rate"] == 0 and state.faults()["fail_health"] is True
    state.apply({"reset": True})
    assert state.faults() == {"error_rate": 30.0, "latency_ms": 0, "hang": False, "fail_health": False}


def test_config_reload_follows_a_replaced_file(tmp_path):
    config = tmp_path / "release.json"
    config.write_text(json.dumps({"version": "v1"}))
    state = demoapp.AppState("v0", str(config))
    assert state.reload() is False  # unchanged
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"version": "v2", "latency_ms": 5}))
    os.replace(new, config)  # a new inode, possibly the same mtime
    assert state.reload() is True
    assert state.version == "v2" and state.faults()["latency_ms"] == 5


def test_bad_config_is_ignored(tmp_path, capsys):
    config = tmp_path / "release.json"
    config.write_text("{not json")
    state = demoapp.AppState("v1", str(config))
    assert state.version == "v1"
    assert "ignoring config" in capsys.readouterr().err


@pytest.mark.parametrize("flag, expected", [
    ({"variants": {"on": True, "off": False}, "defaultVariant": "on"},
     {"value": True, "variant": "on", "reason": "STATIC"}),
    ({"state": "DISABLED", "variants": {"on": True}, "defaultVariant": "on"},
     {"value": None, "variant": None, "reason": "DISABLED"}),
    ({"variants": {"on": True}, "defaultVariant": "on", "targeting": {"if": [True, "on"]}},
     {"value": None, "variant": None, "reason": "TARGETING_MATCH_UNKNOWN"}),
    ({"variants": {"on": True}, "defaultVariant": "gone"},
     {"value": None, "variant": "gone", "reason": "ERROR_DEFAULT_VARIANT_MISSING"}),
])
def test_evaluate_flag(flag, expected):
    assert demoapp.evaluate_flag(flag) == expected


def test_flag_faults_follow_the_flag_file(tmp_path):
    config = tmp_path / "release.json"
    config.write_text(json.dumps({"version": "v1", "flag_faults": {"new-checkout": {"error_rate": 100}}}))
    flags = tmp_path / "flags.json"
    flag = {"variants": {"on": True, "off": False}, "defaultVariant": "on"}
    flags.write_text(json.dumps({"flags": {"new-checkout": flag}}))
    state = demoapp.AppState("v1", str(config), str(flags))
    assert state.evaluations()["new-checkout"]["value"] is True
    assert state.faults()["error_rate"] == 100.0
    replaced = tmp_path / "new.json"  # switched off atomically, as rollback_feature_flag writes it
    replaced.write_text(json.dumps({"flags": {"new-checkout": dict(flag, defaultVariant="off")}}))
    os.replace(replaced, flags)
    assert state.reload() is True
    assert state.evaluations()["new-checkout"] == {"value": False, "variant": "off", "reason": "STATIC"}
    assert state.faults()["error_rate"] == 0.0


def test_bad_flag_faults_are_ignored(tmp_path, capsys):
    config = tmp_path / "release.json"
    config.write_text(json.dumps({"version": "v2", "flag_faults": {"x": {"error_rate": 500}}}))
    state = demoapp.AppState("v1", str(config))
    assert state.version == "v1" and state.flag_faults == {}
    assert "between 0 and 100" in capsys.readouterr().err


def test_admin_endpoint_rejects_bad_body():
    state = demoapp.AppState("v1")
    server = demoapp.make_server("127.0.0.1", 0, state)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = "http://127.0.0.1:%d/admin/fault" % server.server_address[1]
        req = urllib.request.Request(url, data=b'{"error_rate": "lots"}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=5)
        assert info.value.code == 400
        assert "error_rate must be a number" in json.loads(info.value.read())["error"]
        assert state.faults()["error_rate"] == 0
    finally:
        server.shutdown()
        server.server_close()
