# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""main() of pg_restore_point_info: option checks before any connection, and connection errors."""

from __future__ import annotations

import json

import psycopg
import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.failsafe.recovery.plugins.module_utils import _postgres
from ansible_collections.failsafe.recovery.plugins.modules import pg_restore_point_info


def _run_main(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            pg_restore_point_info.main()
    return json.loads(capsys.readouterr().out)


def test_main_rejects_bad_schema_before_connecting(capsys, monkeypatch):
    monkeypatch.setattr(_postgres, "connect", lambda *a, **k: pytest.fail("must not connect"))
    result = _run_main(capsys, dict(ledger_schema="", login_host="db1"))
    assert result["failed"] is True and "ledger_schema must not be empty" in result["msg"]


def test_main_unreachable_host_names_target(capsys, monkeypatch):
    def refuse(params, dbname=None, autocommit=True):
        raise psycopg.OperationalError('connection to server at "db9" (10.0.0.9), port 5432 failed: Connection refused')

    monkeypatch.setattr(_postgres, "connect", refuse)
    result = _run_main(capsys, dict(login_host="db9", login_password="Hush123", login_db="app"))
    assert result["failed"] is True
    assert "app@db9:5432" in result["msg"] and "Connection refused" in result["msg"]
    assert "Hush123" not in json.dumps(result)
