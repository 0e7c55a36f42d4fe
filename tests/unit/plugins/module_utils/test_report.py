# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_report: measures from journal timestamps, objectives, Markdown/JSON/JUnit rendering."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from ansible_collections.failsafe.recovery.plugins.module_utils import _journal, _report

T0 = 1_800_000_000.0


def _event(name, at, written=None, **fields):
    return _journal.make_record("event", incident="inc-1", actor="alice", now=written or at + 1, event=name,
                                at=_journal.iso(at), at_epoch=at, **fields)


def _journal_records():
    return [
        _journal.make_record("opened", incident="inc-1", actor="alice", now=T0 + 100),
        _event("began", T0),
        _event("detected", T0 + 90),
        _journal.make_record("notification", now=T0 + 101, event="start", target="ops", ok=True, status=200),
        _event("decided", T0 + 200, level=3),
        _event("started", T0 + 210, written=T0 + 210),
        _journal.make_record("task", now=T0 + 250, task="swap", host="h", status="ok", changed=True, duration=40.0),
        _journal.make_record("task", now=T0 + 251, task="oops", host="h", status="failed", changed=False,
                             duration=1.0, ignored=True),
        _event("restored", T0 + 500, recovery_point=_journal.iso(T0 - 30)),
        _event("verified", T0 + 560),
    ]


OBJECTIVES = _report.objectives_for("core_api", {"core_api": {"rto_minutes": 5, "rpo_minutes": 1}}, 3,
                                    {1: 1, 2: 5, 3: 15, 4: 30, 5: 60},
                                    {"detect_minutes": 2, "decide_minutes": 3, "status_update_seconds": 60})


def test_objectives_from_tables_in_seconds():
    assert OBJECTIVES == {"detect_seconds": 120.0, "decide_seconds": 180.0, "status_update_seconds": 60.0,
                          "rto_seconds": 300.0, "rpo_seconds": 60.0, "rollback_seconds": 900.0}
    # YAML may give level keys as strings
    assert _report.objectives_for(level="2", level_objectives={"2": 5}) == {"rollback_seconds": 300.0}


def test_measures_follow_the_timestamps():
    report = _report.compute(_journal_records(), OBJECTIVES, {"environment": "prod", "service": "core_api"})
    m = report["measures"]
    assert m["time_to_detect"] == 90 and m["time_to_decide"] == 110
    assert m["time_to_rollback"] == 290 and m["time_to_verify"] == 60
    assert m["recovery_time"] == 560 and m["data_loss_window"] == 240
    assert m["first_status_update"] == 11
    assert report["level"] == "3" and report["outcome"] == "restored" and report["actor"] == "alice"
    status = dict((o["name"], o["status"]) for o in report["objectives"])
    assert status == {"time_to_detect": "pass", "time_to_decide": "pass", "first_status_update": "pass",
                      "time_to_rollback": "pass", "recovery_time": "fail", "data_loss_window": "fail"}
    assert report["objectives_met"] is False
    assert report["tasks"]["total"] == 2 and report["tasks"]["failed"] == 0 and report["tasks"]["seconds"] == 41.0


def test_unknown_measures_are_not_measured_never_met():
    records = [_journal.make_record("opened", incident="inc-2", now=T0), _event("restored", T0 + 30)]
    report = _report.compute(records, OBJECTIVES)
    status = dict((o["name"], o["status"]) for o in report["objectives"])
    assert status["time_to_detect"] == "not measured" and status["data_loss_window"] == "not measured"
    # no detected: started falls back to opened, and says so
    started = [t for t in report["timeline"] if t["event"] == "started"][0]
    assert started["epoch"] == T0 and started["source"].startswith("opened")
    assert report["measures"]["time_to_rollback"] == 30
    assert report["objectives_met"] is True


def test_failed_event_makes_outcome_failed_and_junit_fail():
    records = _journal_records()[:6] + [_event("failed", T0 + 300, message="gate failed")]
    report = _report.compute(records, OBJECTIVES, {"environment": "prod"})
    assert report["outcome"] == "failed"
    root = ET.fromstring(_report.render_junit(report))
    outcome = [c for c in root.iter("testcase") if c.get("name") == "Outcome"][0]
    assert outcome.find("failure") is not None


def test_junit_one_testcase_per_objective():
    report = _report.compute(_journal_records(), OBJECTIVES, {"environment": "prod"})
    root = ET.fromstring(_report.render_junit(report))
    cases = list(root.iter("testcase"))
    assert len(cases) == len(report["objectives"]) + 1
    failed = sorted(c.get("name") for c in cases if c.find("failure") is not None)
    assert failed == ["RPO (data loss window)", "RTO (recovery time)"]
    suite = root.find("testsuite")
    assert suite.get("failures") == "2" and suite.get("tests") == str(len(cases))
    assert all(c.get("classname") == "failsafe.recovery.incident.prod" for c in cases)


def test_markdown_has_template_sections_and_numbers():
    report = _report.compute(_journal_records(), OBJECTIVES,
                             {"title": "v2 error spike", "impact": "checkout errors for 30% of users",
                              "prevention": ["canary the release"], "journal_path": "/j"})
    text = _report.render_markdown(report)
    for heading in ("## Summary", "## Timeline", "## Impact", "## Root cause", "## Resolution", "## Prevention"):
        assert heading in text
    assert "# Incident inc-1: v2 error spike" in text
    assert "| Time to roll back | 4 min 50.0 s |" in text
    assert "| RTO (recovery time) | 5 min 0.0 s | 9 min 20.0 s | FAIL |" in text
    assert "checkout errors for 30% of users" in text and "- canary the release" in text
    assert "_To be completed in the post-incident review._" in text  # root cause unknown
    assert json.loads(_report.render_json(report))["measures"]["recovery_time"] == 560


def test_human():
    assert _report.human(None) == "not measured"
    assert _report.human(42.25) == "42.2 s" or _report.human(42.25) == "42.3 s"
    assert _report.human(125) == "2 min 5.0 s"
    assert _report.human(3720) == "1 h 2 min"
