# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: the incident journal, a JSON-lines file (mode 0600), one record per
line, appended with O_APPEND in a single write so records from the role's
tasks and from the failsafe.recovery.journal callback never interleave.

Record kinds:
- ``opened`` / ``closed``: the incident's first and last records;
- ``event``: a moment of the timeline (began, detected, decided, started,
  restored, verified, failed, note) with optional before/after;
- ``task``: one task result, written by the callback plugin (timings only);
- ``notification`` / ``escalation``: a webhook sent (or not) and why.

Values under keys that look like secrets are masked before they are written.
Shared by the incident_journal / incident_report modules and the callback.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time

EVENTS = ("began", "detected", "decided", "started", "restored", "verified", "failed", "note")
MASK = "********"
SECRET_KEY = re.compile(r"(pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|credential|authorization|"
                        r"cookie|webhook|(^|_)url$|dsn)", re.I)


def iso(epoch):
    """ISO 8601 UTC with microseconds for an epoch time."""
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc).isoformat()


def parse_time(value):
    """Epoch seconds from an epoch number or an ISO 8601 string (naive = UTC)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    stamp = datetime.datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.timestamp()


def redact(value, key=None):
    """A copy of ``value`` with the values of secret-looking keys masked."""
    if key is not None and SECRET_KEY.search(str(key)) and value not in (None, "", [], {}):
        return MASK
    if isinstance(value, dict):
        return dict((k, redact(v, k)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def make_record(kind, incident=None, actor=None, now=None, **fields):
    """A journal record stamped with the time it is written."""
    now = time.time() if now is None else now
    record = {"ts": iso(now), "epoch": round(now, 6), "kind": kind}
    if incident is not None:
        record["incident"] = incident
    if actor is not None:
        record["actor"] = actor
    for name, value in fields.items():
        if value is not None:
            record[name] = value
    return record


def append(path, record):
    """Append one record as one line in one write(); the file is created 0600."""
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
        os.write(fd, line)
    finally:
        os.close(fd)
    return record


def read(path):
    """(records, bad_lines) of the journal at ``path``; a missing file is ([], 0)."""
    records, bad = [], 0
    try:
        handle = open(path, "r")
    except (IOError, OSError):
        return records, bad
    with handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                item = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(item, dict):
                records.append(item)
            else:
                bad += 1
    return records, bad


def event_time(record):
    """When a record's moment happened: its ``at`` if given, else when it was written."""
    value = record.get("at_epoch")
    if value is None:
        value = record.get("epoch")
    return float(value) if value is not None else None


def first_events(records):
    """{event name: epoch of its first occurrence} from event records (``opened``/``closed`` included)."""
    out = {}
    for record in records:
        kind = record.get("kind")
        name = record.get("event") if kind == "event" else kind if kind in ("opened", "closed") else None
        if not name:
            continue
        when = event_time(record)
        if when is not None and name not in out:
            out[name] = when
    return out


def onset(records):
    """Start of the incident for escalation: the earliest of began, detected and opened."""
    events = first_events(records)
    times = [events[n] for n in ("began", "detected", "opened") if n in events]
    return min(times) if times else None


def escalation_status(records, marks, now=None):
    """(elapsed seconds, marks already escalated, marks due now) for marks given in minutes."""
    now = time.time() if now is None else now
    start = onset(records)
    sent = sorted(set(float(r.get("mark_minutes")) for r in records
                      if r.get("kind") == "escalation" and r.get("mark_minutes") is not None))
    if start is None:
        return None, sent, []
    elapsed = max(0.0, now - start)
    due = [float(m) for m in sorted(set(float(x) for x in marks)) if elapsed >= float(m) * 60 and float(m) not in sent]
    return elapsed, sent, due


def open_journal(path, incident, actor, now=None, **fields):
    """Create the journal with its ``opened`` record; reopening the same incident changes nothing.

    Returns (changed, opened record). Raises ValueError if the file belongs to
    another incident.
    """
    records, _bad = read(path)
    for record in records:
        if record.get("kind") == "opened":
            if record.get("incident") != incident:
                raise ValueError("journal %s belongs to incident %s, not %s" % (path, record.get("incident"), incident))
            return False, record
    record = make_record("opened", incident=incident, actor=actor, now=now, **fields)
    append(path, record)
    return True, record
