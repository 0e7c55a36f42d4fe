# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""main() of health_gate: argspec, option errors before any probe, fail_json on a failed gate."""

from __future__ import annotations

import json
import socket

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.failsafe.recovery.plugins.module_utils import _health
from ansible_collections.failsafe.recovery.plugins.modules import health_gate


def _run_main(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            health_gate.main()
    return json.loads(capsys.readouterr().out)


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_main_rejects_missing_url_before_probing(capsys, monkeypatch):
    def no_probe(check):
        raise AssertionError("must not probe")
    monkeypatch.setattr(_health, "make_probe", no_probe)
    result = _run_main(capsys, dict(checks=[dict(name="api", type="http")]))
    assert result["failed"] is True
    assert result["msg"] == "checks[0].url is required when type is http (check 'api')"


def test_main_rejects_unknown_type_and_op(capsys):
    result = _run_main(capsys, dict(checks=[dict(name="x", type="smtp")]))
    assert result["failed"] is True and "type" in result["msg"] and "smtp" in result["msg"]
    result = _run_main(capsys, dict(checks=[dict(name="x", type="prometheus", url="http://p", query="up", op="=~", threshold=1)]))
    assert result["failed"] is True and "op" in result["msg"]


def test_main_failed_gate_fails_with_full_result_and_hides_password(capsys):
    port = _closed_port()
    result = _run_main(capsys, dict(
        interval=0.1, timeout=5, failure_limit=2,
        checks=[dict(name="dead", type="tcp", host="127.0.0.1", port=port, timeout=1),
                dict(name="db", type="postgres", login_host="127.0.0.1", login_port=port,
                     login_password="Sekr1tPass", query="SELECT 1", timeout=2)]))
    assert result["failed"] is True and result["changed"] is False
    assert result["verdict"] == "fail" and result["passed"] is False
    assert result["checks"]["dead"]["last_error"].endswith("connection refused")
    assert result["msg"].startswith("health gate fail: check '")
    assert "time_to_detect" in result and result["samples"]
    assert "Sekr1tPass" not in json.dumps(result)


def test_main_trigger_mode_does_not_fail_unless_asked(capsys):
    port = _closed_port()
    args = dict(mode="trigger", interval=0.05, timeout=5, min_samples=2,
                checks=[dict(name="dead", type="tcp", host="127.0.0.1", port=port)])
    result = _run_main(capsys, args)
    assert result.get("failed") is not True
    assert result["rollback_recommended"] is True
    assert result["triggers_fired"][0]["trigger"] == "error_rate" or result["triggers_fired"][0]["trigger"] == "consecutive_failures"
    result = _run_main(capsys, dict(args, fail_on_trigger=True))
    assert result["failed"] is True
