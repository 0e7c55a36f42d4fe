# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the pure parts of the restore-point ledger (no server)."""

from __future__ import annotations

import datetime
import itertools

import pytest

from ansible_collections.failsafe.recovery.plugins.module_utils import _postgres as pg
from ansible_collections.failsafe.recovery.tests.unit.fake_clock import FakeClock

UTC = datetime.timezone.utc


@pytest.mark.parametrize("name", ["p", "pre_deploy_42", "v1.2.3", "deploy:42@main+fix-1", "A" * 63, "0start"])
def test_valid_names(name):
    assert pg.validate_name(name) is None


@pytest.mark.parametrize("name, fragment", [
    ("", "must not be empty"),
    (None, "must not be empty"),
    ("A" * 64, "64 characters long"),
    ("has space", "may only hold"),
    ("quote'd", "may only hold"),
    ("_leading", "must start with a letter or digit"),
    ("-leading", "must start with a letter or digit"),
    ("semi;colon", "may only hold"),
    ("naïve", "may only hold"),
])
def test_invalid_names_say_why(name, fragment):
    reason = pg.validate_name(name)
    assert reason is not None and fragment in reason


def test_identifier_validation():
    assert pg.validate_identifier("ledger_schema", "failsafe_recovery") is None
    assert pg.validate_identifier("ledger_schema", "Mixed Case") is None
    assert "must not be empty" in pg.validate_identifier("ledger_db", "")
    assert "63 bytes" in pg.validate_identifier("ledger_db", "x" * 64)
    assert "NUL" in pg.validate_identifier("ledger_db", "a\x00b")


def test_parse_wal_segment():
    assert pg.parse_wal_segment("000000010000000000000003") == (1, 0, 3)
    assert pg.parse_wal_segment("0000000A00000002000000FF") == (10, 2, 255)
    assert pg.parse_wal_segment("0000000a00000002000000ff") == (10, 2, 255)
    for other in ("00000002.history", "000000010000000000000002.00000028.backup",
                  "000000010000000000000003.partial", "", None, "0000000100000000000003"):
        assert pg.parse_wal_segment(other) is None
    assert pg.timeline_of("000000030000000000000001") == 3
    assert pg.timeline_of("00000003.history") is None


@pytest.mark.parametrize("point, last, expected", [
    ("000000010000000000000003", "000000010000000000000003", True),
    ("000000010000000000000003", "000000010000000000000004", True),
    ("000000010000000000000003", "000000010000000000000002", False),
    ("0000000100000000000000FF", "000000010000000100000000", True),   # log rolls over
    ("000000010000000100000000", "0000000100000000000000FF", False),
    ("000000010000000000000003", "000000020000000000000005", True),   # later timeline, later segment
    ("000000020000000000000005", "000000010000000000000009", False),  # older timeline proves nothing
    ("000000010000000000000003", "00000002.history", False),
    ("000000010000000000000003", "000000010000000000000004.partial", False),
    ("000000010000000000000003", None, False),
    (None, "000000010000000000000004", False),
])
def test_segment_archived(point, last, expected):
    assert pg.segment_archived(point, last) is expected


def test_segment_archived_matches_numeric_order():
    names = ["%08X%08X%08X" % (1, log, seg) for log, seg in itertools.product(range(3), (0, 1, 0x7F, 0xFF))]
    for a, b in itertools.product(names, names):
        assert pg.segment_archived(a, b) is (names.index(b) >= names.index(a))


def test_shape_record_full_row():
    created = datetime.datetime(2026, 11, 22, 21, 0, 1, tzinfo=UTC)
    record = pg.shape_record(dict(
        name="p1", status="archived", lsn="0/3000090", timeline=1, wal_file="000000010000000000000003",
        labels={"deployment_id": "42"}, created_at=created, created_by="postgres", archived_at=created,
        system_identifier=7440123456789012345, database="postgres"))
    assert record == dict(
        name="p1", status="archived", archived=True, lsn="0/3000090", timeline=1,
        wal_file="000000010000000000000003", labels={"deployment_id": "42"},
        created_at="2026-11-22T21:00:01+00:00", created_by="postgres", archived_at="2026-11-22T21:00:01+00:00",
        system_identifier="7440123456789012345", database="postgres")


def test_shape_record_pending_row_and_json_labels():
    record = pg.shape_record(dict(name="p2", status="pending", labels='{"git": "abc"}'))
    assert record["labels"] == {"git": "abc"}
    assert record["archived"] is False
    assert record["lsn"] is None and record["timeline"] is None and record["archived_at"] is None
    assert pg.shape_record(dict(name="p3", status="created", labels=None))["labels"] == {}


def test_shape_archiver_turns_times_into_text():
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    shaped = pg.shape_archiver(dict(archived_count=3, last_archived_wal="000000010000000000000003",
                                    last_archived_time=when, last_failed_time=None))
    assert shaped == dict(archived_count=3, last_archived_wal="000000010000000000000003",
                          last_archived_time="2026-01-02T03:04:05+00:00", last_failed_time=None)
    assert pg.shape_archiver(None) == {}


def test_archiver_failed_since():
    start = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    before, after = start - datetime.timedelta(seconds=5), start + datetime.timedelta(seconds=5)
    assert pg.archiver_failed_since(dict(last_failed_time=after), start) is True
    assert pg.archiver_failed_since(dict(last_failed_time=before), start) is False
    assert pg.archiver_failed_since(dict(last_failed_time=None), start) is False
    # a success after the failure means the archiver recovered
    assert pg.archiver_failed_since(dict(last_failed_time=after, last_archived_time=after
                                         + datetime.timedelta(seconds=1)), start) is False
    assert pg.archiver_failed_since(dict(last_failed_time=after.isoformat()), start) is True


class _FakeLedger(pg.RestorePointLedger):
    """Feeds wait_archived() a scripted sequence of pg_stat_archiver rows."""

    def __init__(self, rows):
        super().__init__(dict(login_host="db1", login_port=5432, login_password="s3cret"), "postgres", "ledger")
        self.rows = list(rows)
        self.reads = 0

    def _run(self, what, query, args=None, fetch=True):
        return dict(now=datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC))

    def archiver(self):
        self.reads += 1
        return self.rows.pop(0) if len(self.rows) > 1 else self.rows[0]


POINT = dict(name="p1", lsn="0/3000090", wal_file="000000010000000000000003")


def test_wait_archived_returns_when_segment_shows_up():
    ledger = _FakeLedger([dict(last_archived_wal="000000010000000000000002"),
                          dict(last_archived_wal="000000010000000000000003")])
    clock = FakeClock()
    row = ledger.wait_archived(POINT, timeout=10, poll_interval=1, clock=clock, sleep=clock.sleep)
    assert row["last_archived_wal"] == "000000010000000000000003"
    assert ledger.reads == 2 and clock.now == 1


def test_wait_archived_failing_archiver_reports_its_error_and_not_durable():
    failed = datetime.datetime(2026, 1, 1, 12, 0, 3, tzinfo=UTC)
    ledger = _FakeLedger([dict(last_archived_wal="000000010000000000000002", failed_count=4,
                               last_failed_wal="000000010000000000000003", last_failed_time=failed)])
    clock = FakeClock()
    with pytest.raises(pg.LedgerError) as info:
        ledger.wait_archived(POINT, timeout=3, poll_interval=1, clock=clock, sleep=clock.sleep)
    msg = info.value.msg
    assert "NOT durable" in msg and "archiver is failing" in msg
    assert "000000010000000000000003" in msg and "2026-01-01T12:00:03+00:00" in msg
    assert "s3cret" not in msg and "postgres@db1:5432" in msg
    assert info.value.facts["archiver"]["last_failed_wal"] == "000000010000000000000003"
    assert info.value.facts["point"] == POINT
    assert clock.now == 3


def test_wait_archived_stalled_archiver():
    ledger = _FakeLedger([dict(last_archived_wal="000000010000000000000001", last_failed_time=None)])
    clock = FakeClock()
    with pytest.raises(pg.LedgerError) as info:
        ledger.wait_archived(POINT, timeout=2, poll_interval=0.5, clock=clock, sleep=clock.sleep)
    assert "stalled" in info.value.msg and "000000010000000000000001" in info.value.msg


def test_quote_ident():
    assert pg._quote_ident("deployer") == "deployer"
    assert pg._quote_ident("Deploy Bot") == '"Deploy Bot"'
    assert pg._quote_ident('we"ird') == '"we""ird"'
