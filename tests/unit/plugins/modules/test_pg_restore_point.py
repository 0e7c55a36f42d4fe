# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""main() of pg_restore_point: option checks before any connection, and connection errors."""

from __future__ import annotations

import json

import psycopg
import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.failsafe.recovery.plugins.module_utils import _postgres
from ansible_collections.failsafe.recovery.plugins.modules import pg_restore_point


def _run_main(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            pg_restore_point.main()
    return json.loads(capsys.readouterr().out)


def _no_connect(*args, **kwargs):
    raise AssertionError("must not connect")


def test_main_rejects_bad_name_before_connecting(capsys, monkeypatch):
    monkeypatch.setattr(_postgres, "connect", _no_connect)
    result = _run_main(capsys, dict(name="bad name", login_host="db1"))
    assert result["failed"] is True
    assert "restore point name 'bad name'" in result["msg"]


def test_main_requires_name_for_present(capsys, monkeypatch):
    monkeypatch.setattr(_postgres, "connect", _no_connect)
    result = _run_main(capsys, dict(state="present", login_host="db1"))
    assert result["failed"] is True and "name" in result["msg"]


def test_main_connection_error_names_target_not_password(capsys, monkeypatch):
    seen = {}

    def refuse(params, dbname=None, autocommit=True):
        seen.update(dbname=dbname, autocommit=autocommit)
        raise psycopg.OperationalError('connection to server at "db1" (10.0.0.1), port 6543 failed: '
                                       'FATAL:  password authentication failed for user "deployer"')

    monkeypatch.setattr(_postgres, "connect", refuse)
    result = _run_main(capsys, dict(name="p1", login_host="db1", login_port=6543, login_user="deployer",
                                    login_password="TopSecret99", ledger_db="app"))
    assert result["failed"] is True
    assert seen == dict(dbname="app", autocommit=True)
    assert "app@db1:6543" in result["msg"] and "'deployer'" in result["msg"]
    assert "password authentication failed" in result["msg"]
    assert "TopSecret99" not in json.dumps(result)
