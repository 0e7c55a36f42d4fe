# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""main() of incident_lock, incident_journal and incident_report: options, check mode, errors."""

from __future__ import annotations

import json
import os

from ansible_collections.failsafe.recovery.plugins.modules import incident_journal, incident_lock, incident_report


def test_lock_main_take_refuse_release(run_main, tmp_path):
    path = str(tmp_path / "sub" / "env.lock")
    result, failed = run_main(incident_lock.main, dict(path=path, holder="inc-1", actor="alice", pid=os.getpid()))
    assert not failed and result["changed"] and result["lock"]["holder"] == "inc-1"
    assert os.stat(str(tmp_path / "sub")).st_mode & 0o777 == 0o700
    result, failed = run_main(incident_lock.main, dict(path=path, holder="inc-2", actor="bob"))
    assert failed and result["holder"] == "inc-1" and "held by inc-1 (actor alice" in result["msg"]
    result, failed = run_main(incident_lock.main, dict(path=path, holder="inc-2", state="absent"))
    assert failed and "only its holder" in result["msg"]
    result, failed = run_main(incident_lock.main, dict(path=path, holder="inc-1", state="absent",
                                                       _ansible_check_mode=True))
    assert not failed and result["changed"] and os.path.exists(path)
    result, failed = run_main(incident_lock.main, dict(path=path, holder="inc-1", state="absent"))
    assert not failed and result["changed"] and not os.path.exists(path)


def test_lock_main_rejects_negative_ttl(run_main, tmp_path):
    result, failed = run_main(incident_lock.main, dict(path=str(tmp_path / "l"), holder="i", ttl=-1))
    assert failed and "ttl must be 0" in result["msg"]


def test_journal_main_open_event_status(run_main, tmp_path):
    path = str(tmp_path / "j" / "inc.jsonl")
    result, failed = run_main(incident_journal.main, dict(path=path, action="open", incident_id="inc-1", actor="al",
                                                          events={"began": "2026-11-22T21:00:00Z", "detected": ""},
                                                          marks=[15]))
    assert not failed and result["ansible_facts"]["incident_journal_path"] == path and result["due"] == [15.0]
    result, failed = run_main(incident_journal.main, dict(path=path, action="open", incident_id="inc-1"))
    assert not failed and result["changed"] is False
    result, failed = run_main(incident_journal.main, dict(path=path, incident_id="inc-1", event="restored",
                                                          before={"token": "abc", "v": 2}, details={"url": "http://x"}))
    assert not failed and result["record"]["before"] == {"token": "********", "v": 2}
    assert result["record"]["url"] == "********"
    result, failed = run_main(incident_journal.main, dict(path=path, action="notification", event="start",
                                                          outcomes={"slack": 200, "dead": -1}))
    assert [(r["target"], r["ok"]) for r in result["written"]] == [("dead", False), ("slack", True)]
    with open(path) as handle:
        kinds = [json.loads(line)["kind"] for line in handle]
    assert kinds == ["opened", "event", "event", "notification", "notification"]
    result, failed = run_main(incident_journal.main, dict(path=path, event="verified", _ansible_check_mode=True))
    assert not failed and result["changed"]
    with open(path) as handle:
        assert len(handle.readlines()) == 5


def test_journal_main_errors(run_main, tmp_path):
    path = str(tmp_path / "inc.jsonl")
    result, failed = run_main(incident_journal.main, dict(path=path, event="exploded"))
    assert failed and "not a timeline event" in result["msg"]
    result, failed = run_main(incident_journal.main, dict(path=path, event="note", at="yesterday"))
    assert failed and "at=yesterday" in result["msg"]
    result, failed = run_main(incident_journal.main, dict(path=path, action="open"))
    assert failed and "incident_id" in result["msg"]


def test_report_main_writes_three_files_and_is_idempotent(run_main, tmp_path):
    journal = str(tmp_path / "inc.jsonl")
    run_main(incident_journal.main, dict(path=journal, action="open", incident_id="inc-9",
                                         events={"detected": "2026-11-22T21:00:00Z"}))
    run_main(incident_journal.main, dict(path=journal, event="restored", at="2026-11-22T21:03:00Z"))
    args = dict(journal=journal, dest=str(tmp_path / "reports"), service="core_api",
                service_objectives={"core_api": {"rto_minutes": 5, "rpo_minutes": 1}})
    result, failed = run_main(incident_report.main, dict(args, _ansible_check_mode=True))
    assert not failed and result["changed"] and not os.path.exists(str(tmp_path / "reports"))
    result, failed = run_main(incident_report.main, args)
    assert not failed and result["changed"] and result["report"]["measures"]["recovery_time"] == 180
    for key in ("markdown", "json", "junit"):
        assert os.stat(result["paths"][key]).st_mode & 0o777 == 0o600
    again, failed = run_main(incident_report.main, args)
    assert not failed and again["changed"] is False
    assert "recovery_time pass" in again["summary"]


def test_report_main_missing_journal(run_main, tmp_path):
    result, failed = run_main(incident_report.main, dict(journal=str(tmp_path / "nope"), dest=str(tmp_path)))
    assert failed and "open the incident first" in result["msg"]
