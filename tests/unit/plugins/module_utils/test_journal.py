# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_journal: 0600 JSON lines, secret masking, timeline events, escalation marks."""

from __future__ import annotations

import os

import pytest

from ansible_collections.failsafe.recovery.plugins.module_utils import _journal

T0 = 1_800_000_000.0


def test_append_creates_0600_and_reads_back(tmp_path):
    path = str(tmp_path / "j.jsonl")
    os.umask(0o022)
    _journal.append(path, _journal.make_record("event", incident="i", actor="a", now=T0, event="detected"))
    _journal.append(path, _journal.make_record("event", incident="i", actor="a", now=T0 + 1, event="decided"))
    with open(path, "a") as handle:
        handle.write("garbage\n")
    assert os.stat(path).st_mode & 0o777 == 0o600
    records, bad = _journal.read(path)
    assert [r["event"] for r in records] == ["detected", "decided"] and bad == 1


def test_existing_loose_file_is_tightened(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text("")
    path.chmod(0o644)
    _journal.append(str(path), {"kind": "x"})
    assert path.stat().st_mode & 0o777 == 0o600


def test_redact_masks_secret_keys_recursively():
    value = {"db": {"password": "hunter2", "user": "app"}, "webhook_url": "https://hooks/x", "items": [{"token": "t"}],
             "empty_token": "", "version": "v2"}
    masked = _journal.redact(value)
    assert masked == {"db": {"password": "********", "user": "app"}, "webhook_url": "********",
                      "items": [{"token": "********"}], "empty_token": "", "version": "v2"}


@pytest.mark.parametrize("value,expected", [
    ("2027-01-15T08:00:00Z", T0), ("2027-01-15T08:00:00+00:00", T0), ("2027-01-15T08:00:00", T0),
    ("2027-01-15T09:00:00+01:00", T0), (str(T0), T0), (T0, T0), ("", None), (None, None)])
def test_parse_time(value, expected):
    assert _journal.parse_time(value) == expected


def test_first_events_prefer_at_and_first_occurrence():
    records = [
        _journal.make_record("opened", incident="i", now=T0 + 100),
        _journal.make_record("event", now=T0 + 110, event="detected", at=_journal.iso(T0 + 50), at_epoch=T0 + 50),
        _journal.make_record("event", now=T0 + 120, event="detected"),
        _journal.make_record("task", now=T0 + 130, task="x"),
    ]
    assert _journal.first_events(records) == {"opened": T0 + 100, "detected": T0 + 50}
    assert _journal.onset(records) == T0 + 50


def test_escalation_status_due_and_sent():
    records = [_journal.make_record("opened", incident="i", now=T0)]
    elapsed, sent, due = _journal.escalation_status(records, [15, 30, 60], now=T0 + 31 * 60)
    assert elapsed == 31 * 60 and sent == [] and due == [15.0, 30.0]
    records.append(_journal.make_record("escalation", now=T0 + 31 * 60, mark_minutes=15.0))
    elapsed, sent, due = _journal.escalation_status(records, [15, 30, 60], now=T0 + 31 * 60)
    assert sent == [15.0] and due == [30.0]
    assert _journal.escalation_status([], [15], now=T0) == (None, [], [])


def test_open_journal_idempotent_and_refuses_other_incident(tmp_path):
    path = str(tmp_path / "j.jsonl")
    changed, record = _journal.open_journal(path, "inc-1", "alice", now=T0, environment="prod")
    assert changed and record["environment"] == "prod"
    changed, again = _journal.open_journal(path, "inc-1", "alice")
    assert not changed and again == record
    with pytest.raises(ValueError):
        _journal.open_journal(path, "inc-2", "bob")
