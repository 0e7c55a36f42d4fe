#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: incident_report
short_description: Write the incident report (Markdown, JSON, JUnit XML) from the incident journal
version_added: 0.1.0
description:
  - Reads the incident journal written by M(failsafe.recovery.incident_journal) and the
    C(failsafe.recovery.journal) callback, and computes the timeline (began, detected, decided, started, restored,
    verified), the time to detect, decide, roll back and verify, the recovery time (RTO) and the data loss window
    (RPO).
  - Compares them with the objectives taken from the inventory's tables (RTO/RPO per service, time to roll back per
    level, response times) and writes three files next to each other in O(dest) - C(<incident>.md) (the incident
    template - summary, timeline, impact, root cause, resolution, prevention - filled with what is known),
    C(<incident>.json) (everything, for machines) and C(<incident>.xml) (JUnit, one testcase per objective plus the
    outcome, for CI and AWX).
  - A measure the journal cannot give (for example no C(began) event, so no time to detect) is reported as not
    measured - a skipped testcase - never as met.
  - The report holds only what the journal holds, which never holds module arguments or results.
author:
  - failsafe.recovery contributors (@failsafe-recovery)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Computes the report and returns it; no file is written. A journal that does not exist yet (its opening was
        only predicted) gives an empty report instead of an error.
  diff_mode:
    support: none
  platform:
    platforms: posix
  idempotent:
    description: When run again with the same arguments, the module changes nothing and returns C(changed=false).
    support: full
    details:
      - Files are rewritten only when their content differs.
options:
  journal:
    description:
      - Path of the incident journal.
    type: path
    required: true
  dest:
    description:
      - Directory for the report files; created (mode C(0700)) when missing.
    type: path
    required: true
  incident_id:
    description:
      - The incident id, used for the file names. Defaults to the id in the journal's C(opened) record.
    type: str
  title:
    description: A one-line title for the incident.
    type: str
    default: ""
  environment:
    description: The environment (for the summary and the JUnit class name).
    type: str
    default: ""
  service:
    description:
      - The service whose RTO/RPO apply, a key of O(service_objectives).
    type: str
    default: ""
  severity:
    description: The incident's severity.
    type: str
    default: ""
  level:
    description:
      - The rollback level (1-5) or DR tier used; defaults to the last C(level) recorded in the journal.
    type: str
  outcome:
    description:
      - How the incident ended. Defaults to C(failed) when the journal holds a C(failed) event, C(restored) when it
        holds C(restored) or C(verified), else C(unknown).
    type: str
    choices: [restored, failed, unknown]
  service_objectives:
    description:
      - RTO and RPO per service, in minutes, as in the runbooks' tables - a dict of service name to a dict with the
        keys C(rto_minutes) and C(rpo_minutes). See the example.
    type: dict
    default: {}
  level_objectives:
    description:
      - Time to roll back per level, in minutes - a dict of level to minutes. See the example.
    type: dict
    default: {}
  response_objectives:
    description:
      - Response time objectives - C(detect_minutes), C(decide_minutes) and C(status_update_seconds).
    type: dict
    default: {}
  impact:
    description: What users saw, for the Impact section.
    type: str
    default: ""
  root_cause:
    description: The root cause, if known, for the Root cause section.
    type: str
    default: ""
  resolution:
    description: What resolved it; by default the level and the outcome with the journal's task figures.
    type: str
    default: ""
  prevention:
    description: Actions to prevent a recurrence, for the Prevention section.
    type: list
    elements: str
    default: []
  mode:
    description: File mode of the report files.
    type: raw
    default: "0600"
notes:
  - The role C(failsafe.recovery.incident) calls this module in its C(close) entry point.
seealso:
  - module: failsafe.recovery.incident_journal
  - module: failsafe.recovery.incident_lock
"""

EXAMPLES = r"""
- name: Write the report
  failsafe.recovery.incident_report:
    journal: /var/lib/failsafe/incidents/production-20261122T2153Z.jsonl
    dest: /var/lib/failsafe/incidents/reports
    environment: production
    service: core_api
    service_objectives:
      core_api: {rto_minutes: 5, rpo_minutes: 1}
    level_objectives: {1: 1, 2: 5, 3: 15, 4: 30, 5: 60}
    response_objectives: {detect_minutes: 2, decide_minutes: 3, status_update_seconds: 60}
  register: report

- name: Fail the pipeline when an objective was missed
  ansible.builtin.assert:
    that: report.report.objectives_met
"""

RETURN = r"""
report:
  description: The report (the content of the JSON file).
  returned: always
  type: dict
  contains:
    incident:
      description: Incident id.
      type: str
      returned: always
    outcome:
      description: restored, failed or unknown.
      type: str
      returned: always
    timeline:
      description: One item per timeline event with C(event), C(at) (ISO 8601 UTC or null), C(epoch) and C(source).
      type: list
      elements: dict
      returned: always
    measures:
      description: >-
        Seconds - time_to_detect, time_to_decide, time_to_rollback, time_to_verify, recovery_time, data_loss_window,
        first_status_update (null when not measurable).
      type: dict
      returned: always
    objectives:
      description: One item per objective with C(name), C(label), C(objective_seconds), C(measured_seconds), C(status).
      type: list
      elements: dict
      returned: always
    objectives_met:
      description: False when any measured objective failed.
      type: bool
      returned: always
paths:
  description: Paths of the report files (written, or that would be written in check mode).
  returned: always
  type: dict
  sample:
    markdown: /var/lib/failsafe/incidents/reports/production-20261122T2153Z.md
    json: /var/lib/failsafe/incidents/reports/production-20261122T2153Z.json
    junit: /var/lib/failsafe/incidents/reports/production-20261122T2153Z.xml
summary:
  description: One line with the outcome and every objective's result.
  returned: always
  type: str
"""

import os
import tempfile

from ansible_collections.failsafe.recovery.plugins.module_utils._base import FailsafeModule
from ansible_collections.failsafe.recovery.plugins.module_utils import _journal, _report


def _write(module, path, content, mode):
    try:
        with open(path, "r") as handle:
            if handle.read() == content:
                return False
    except (IOError, OSError):
        pass
    if module.check_mode:
        return True
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".report-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except (IOError, OSError) as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        module.fail("Cannot write report %s: %s." % (path, exc))
    return True


def main():
    module = FailsafeModule(
        argument_spec=dict(
            journal=dict(type="path", required=True),
            dest=dict(type="path", required=True),
            incident_id=dict(type="str"),
            title=dict(type="str", default=""),
            environment=dict(type="str", default=""),
            service=dict(type="str", default=""),
            severity=dict(type="str", default=""),
            level=dict(type="str"),
            outcome=dict(type="str", choices=["restored", "failed", "unknown"]),
            service_objectives=dict(type="dict", default={}),
            level_objectives=dict(type="dict", default={}),
            response_objectives=dict(type="dict", default={}),
            impact=dict(type="str", default=""),
            root_cause=dict(type="str", default=""),
            resolution=dict(type="str", default=""),
            prevention=dict(type="list", elements="str", default=[]),
            mode=dict(type="raw", default="0600"),
        ),
    )
    p = module.params
    if not os.path.exists(p["journal"]) and not module.check_mode:
        module.fail("Journal %s does not exist; open the incident first (incident role, tasks_from: open)."
                    % p["journal"])
    # In check mode the journal may not exist (opening it was only predicted): report on what there is.
    records, bad = _journal.read(p["journal"])
    if bad:
        module.warn("Journal %s has %d unreadable line(s); they were skipped." % (p["journal"], bad))
    try:
        mode = int(p["mode"], 8) if isinstance(p["mode"], str) else int(p["mode"])
    except ValueError:
        module.fail("mode=%s is not an octal file mode such as '0600'." % p["mode"])
    try:
        objectives = _report.objectives_for(p["service"], p["service_objectives"], p["level"], p["level_objectives"],
                                            p["response_objectives"])
    except (TypeError, ValueError, AttributeError) as exc:
        module.fail("Objectives must be numbers of minutes (service_objectives: {svc: {rto_minutes, rpo_minutes}}, "
                    "level_objectives: {level: minutes}, response_objectives: {detect_minutes, decide_minutes, "
                    "status_update_seconds}): %s" % exc)
    meta = dict(incident=p["incident_id"], title=p["title"], environment=p["environment"], service=p["service"],
                severity=p["severity"], level=p["level"], outcome=p["outcome"], impact=p["impact"],
                root_cause=p["root_cause"], resolution=p["resolution"], prevention=p["prevention"],
                journal_path=os.path.abspath(p["journal"]))
    report = _report.compute(records, objectives, meta)
    if not report["incident"]:
        module.fail("No incident id: the journal %s has no opened record and incident_id is not set." % p["journal"])
    base = os.path.join(p["dest"], report["incident"])
    paths = dict(markdown=base + ".md", json=base + ".json", junit=base + ".xml")
    changed = False
    if not os.path.isdir(p["dest"]):
        changed = True
        if not module.check_mode:
            try:
                os.makedirs(p["dest"], 0o700)
            except OSError as exc:
                module.fail("Cannot create report directory %s: %s." % (p["dest"], exc))
    if not module.check_mode or os.path.isdir(p["dest"]):
        for key, content in (("markdown", _report.render_markdown(report)), ("json", _report.render_json(report)),
                             ("junit", _report.render_junit(report))):
            changed = _write(module, paths[key], content, mode) or changed
    module.exit_json(changed=changed, report=report, paths=paths, summary=_report.summary_line(report))


if __name__ == "__main__":
    main()
