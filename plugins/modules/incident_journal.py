#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: incident_journal
short_description: Open an incident journal, append timeline events and read its escalation status
version_added: 0.1.0
description:
  - The incident journal is a JSON-lines file, mode C(0600), one record per line, appended atomically (one
    C(O_APPEND) write per record), so records written by this module and by the C(failsafe.recovery.journal)
    callback plugin never interleave.
  - O(action=open) creates the journal with its C(opened) record and returns the facts C(incident_journal_path),
    C(incident_id) and C(incident_actor); the callback plugin starts writing one record per task result once it sees
    C(incident_journal_path). Opening a journal that already belongs to the same incident changes nothing.
  - O(action=open) also records the moments given in O(events) (for example when the fault began and was
    detected), and creates the journal's directory (mode C(0700)) when missing.
  - O(action=event) appends a timeline event (C(began), C(detected), C(decided), C(started), C(restored),
    C(verified), C(failed), C(note)) with optional before/after state. Values under keys that look like secrets
    (password, token, secret, url, ...) are masked before they are written.
  - O(action=notification) records, per item of O(outcomes), that a webhook was sent (or failed), by target name and
    HTTP status only, never its URL. O(action=escalation) records that the mark O(mark) was escalated.
  - O(action=close) appends the C(closed) record (with the outcome in O(details)).
  - O(action=status) reads the journal and returns the incident's elapsed time and which escalation marks are due.
    Any other action returns the same after writing when O(marks) is given.
author:
  - failsafe.recovery contributors (@failsafe-recovery)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Returns the record that would be written without writing it. O(action=status) only reads.
  diff_mode:
    support: none
  platform:
    platforms: posix
  idempotent:
    description: When run again with the same arguments, the module changes nothing and returns C(changed=false).
    support: partial
    details:
      - O(action=open) is idempotent per incident. O(action=event) appends a new record every time, by design (a
        journal is an audit trail).
options:
  path:
    description:
      - Path of the journal file. Its directory must exist.
    type: path
    required: true
  action:
    description:
      - What to do, see the description.
    type: str
    choices: [open, event, notification, escalation, close, status]
    default: event
  incident_id:
    description:
      - Id of the incident. Required with O(action=open); recorded with every record.
    type: str
  actor:
    description:
      - Who acts (the AWX user or the local user). Recorded with every record.
    type: str
    default: unknown
  event:
    description:
      - With O(action=event), the moment of the timeline. With O(action=notification), the notification's event
        (for example C(start), C(level), C(done), C(failed)).
    type: str
  at:
    description:
      - When the event happened, ISO 8601 (naive means UTC) or epoch seconds, if not now. For example the time a
        health gate first saw the failure.
    type: str
  text:
    description:
      - A free-text line for the record (written as its C(message)).
    type: str
  before:
    description:
      - State before the action, recorded with secret-looking keys masked.
    type: raw
  after:
    description:
      - State after the action, recorded with secret-looking keys masked.
    type: raw
  details:
    description:
      - Further facts for the record (for example C(level), C(recovery_point), C(target), C(status)), secret-looking
        keys masked.
    type: dict
    default: {}
  marks:
    description:
      - The escalation marks in minutes since the incident's onset (the earliest of the C(began), C(detected) and
        C(opened) records). When given, the result says which are due (passed and not yet escalated).
    type: list
    elements: float
    default: []
  mark:
    description:
      - With O(action=escalation), the mark (minutes) being escalated.
    type: float
  events:
    description:
      - With O(action=open), timeline events that happened before the incident was opened - a dict of event name
        (C(began), C(detected), ...) to its time (ISO 8601 or epoch). Empty times are ignored. Only written when the
        journal is created.
    type: dict
    default: {}
  outcomes:
    description:
      - With O(action=notification), the HTTP status each webhook answered, by webhook name (C(-1) when there was
        no answer). Each item becomes one record with C(target), C(status) and C(ok) (a 2xx status). An empty dict
        writes nothing.
    type: dict
    default: {}
notes:
  - The role C(failsafe.recovery.incident) drives this module; see its README.
seealso:
  - module: failsafe.recovery.incident_lock
  - module: failsafe.recovery.incident_report
"""

EXAMPLES = r"""
- name: Open the journal
  failsafe.recovery.incident_journal:
    path: /var/lib/failsafe/incidents/production-20261122T2153Z.jsonl
    action: open
    incident_id: production-20261122T2153Z
    actor: alice

- name: Record when the health gate first saw the failure
  failsafe.recovery.incident_journal:
    path: /var/lib/failsafe/incidents/production-20261122T2153Z.jsonl
    incident_id: production-20261122T2153Z
    event: detected
    at: "2026-11-22T21:52:10Z"
    text: error rate 34% > 10% on app1

- name: Which escalation marks are due?
  failsafe.recovery.incident_journal:
    path: /var/lib/failsafe/incidents/production-20261122T2153Z.jsonl
    action: status
    marks: [15, 30, 60]
  register: status
"""

RETURN = r"""
record:
  description: The (last) record written, or that would be written in check mode; null when nothing was written.
  returned: when action is not status
  type: dict
  sample:
    ts: "2026-11-22T21:53:39.120000+00:00"
    epoch: 1795384419.12
    kind: event
    event: detected
    incident: production-20261122T2153Z
    actor: alice
elapsed_seconds:
  description: Seconds since the incident's onset; null when the journal holds no onset.
  returned: when action=status or marks is given
  type: float
escalated:
  description: Marks (minutes) already escalated according to the journal.
  returned: when action=status or marks is given
  type: list
  elements: float
due:
  description: Marks (minutes) passed and not yet escalated.
  returned: when action=status or marks is given
  type: list
  elements: float
events:
  description: Epoch time of the first record of each timeline event found in the journal.
  returned: when action=status or marks is given
  type: dict
records:
  description: Number of records in the journal.
  returned: when action=status or marks is given
  type: int
bad_lines:
  description: Number of journal lines that could not be read.
  returned: when action=status or marks is given
  type: int
written:
  description: The notification records written, one per webhook of O(outcomes).
  returned: when action=notification
  type: list
  elements: dict
ansible_facts:
  description: Facts for the rest of the play and for the journal callback plugin.
  returned: when action=open
  type: dict
  contains:
    incident_journal_path:
      description: Absolute path of the journal.
      type: str
      returned: when action=open
    incident_id:
      description: The incident id.
      type: str
      returned: when action=open
    incident_actor:
      description: The actor.
      type: str
      returned: when action=open
"""

import os

from ansible_collections.failsafe.recovery.plugins.module_utils._base import FailsafeModule
from ansible_collections.failsafe.recovery.plugins.module_utils import _journal


def _status(path, marks):
    records, bad = _journal.read(path)
    elapsed, sent, due = _journal.escalation_status(records, marks)
    return dict(elapsed_seconds=elapsed, escalated=sent, due=due, events=_journal.first_events(records),
                records=len(records), bad_lines=bad)


def main():
    module = FailsafeModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            action=dict(type="str", choices=["open", "event", "notification", "escalation", "close", "status"], default="event"),
            incident_id=dict(type="str"),
            actor=dict(type="str", default="unknown"),
            event=dict(type="str"),
            at=dict(type="str"),
            text=dict(type="str"),
            before=dict(type="raw"),
            after=dict(type="raw"),
            details=dict(type="dict", default={}),
            marks=dict(type="list", elements="float", default=[]),
            mark=dict(type="float"),
            outcomes=dict(type="dict", default={}),
            events=dict(type="dict", default={}),
        ),
        required_if=[
            ("action", "open", ["incident_id"]),
            ("action", "event", ["event"]),
            ("action", "notification", ["event"]),
            ("action", "escalation", ["mark"]),
        ],
    )
    p = module.params
    path = os.path.abspath(p["path"])
    if p["action"] == "event" and p["event"] not in _journal.EVENTS:
        module.fail("event=%s is not a timeline event; use one of %s." % (p["event"], ", ".join(_journal.EVENTS)))
    try:
        at_epoch = _journal.parse_time(p["at"])
    except ValueError:
        module.fail("at=%s is neither epoch seconds nor an ISO 8601 time such as 2026-11-22T21:52:10Z." % p["at"])

    if p["action"] == "status":
        module.exit_json(changed=False, **_status(path, p["marks"]))

    if p["action"] == "open":
        early = {}
        for name, when in p["events"].items():
            if name not in _journal.EVENTS:
                module.fail("events: %s is not a timeline event; use %s." % (name, ", ".join(_journal.EVENTS)))
            try:
                epoch = _journal.parse_time(when)
            except ValueError:
                module.fail("events: the time of %s (%s) is neither epoch seconds nor ISO 8601." % (name, when))
            if epoch is not None:
                early[name] = epoch
        facts = dict(incident_journal_path=path, incident_id=p["incident_id"], incident_actor=p["actor"])
        if module.check_mode:
            record = _journal.make_record("opened", incident=p["incident_id"], actor=p["actor"])
            module.exit_json(changed=not os.path.exists(path), record=record, ansible_facts=facts)
        try:
            if not os.path.isdir(os.path.dirname(path)):
                os.makedirs(os.path.dirname(path), 0o700)
            changed, record = _journal.open_journal(path, p["incident_id"], p["actor"], **_journal.redact(p["details"]))
            if changed:
                for name, epoch in sorted(early.items(), key=lambda item: item[1]):
                    _journal.append(path, _journal.make_record("event", incident=p["incident_id"], actor=p["actor"],
                                                               event=name, at=_journal.iso(epoch),
                                                               at_epoch=round(epoch, 6)))
        except ValueError as exc:
            module.fail("Cannot open the journal: %s. Use a journal path per incident." % exc)
        except (IOError, OSError) as exc:
            module.fail("Cannot create journal %s: %s. Check that its directory exists and is writable." % (path, exc))
        result = dict(changed=changed, record=record, ansible_facts=facts)
        if p["marks"]:
            result.update(_status(path, p["marks"]))
        module.exit_json(**result)

    fields = dict(message=p["text"])
    fields.update(_journal.redact(p["details"]))
    if at_epoch is not None:
        fields.update(at=_journal.iso(at_epoch), at_epoch=round(at_epoch, 6))
    if p["before"] is not None:
        fields["before"] = _journal.redact(p["before"], "before")
    if p["after"] is not None:
        fields["after"] = _journal.redact(p["after"], "after")
    if p["action"] == "escalation":
        fields["mark_minutes"] = p["mark"]
        if p["event"]:
            fields["event"] = p["event"]
    elif p["action"] in ("event", "notification"):
        fields["event"] = p["event"]
    kind = {"event": "event", "close": "closed"}.get(p["action"], p["action"])
    if p["action"] == "notification":
        records = []
        for target, status in sorted(p["outcomes"].items()):
            try:
                status = int(status)
            except (TypeError, ValueError):
                status = -1
            item = dict(fields, target=target, status=status, ok=200 <= status < 300)
            records.append(_journal.make_record(kind, incident=p["incident_id"], actor=p["actor"], **item))
    else:
        records = [_journal.make_record(kind, incident=p["incident_id"], actor=p["actor"], **fields)]
    if not module.check_mode:
        try:
            for record in records:
                _journal.append(path, record)
        except (IOError, OSError) as exc:
            module.fail("Cannot append to journal %s: %s." % (path, exc))
    result = dict(changed=bool(records), record=records[-1] if records else None)
    if p["action"] == "notification":
        result["written"] = records
    if p["marks"]:
        result.update(_status(path, p["marks"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
