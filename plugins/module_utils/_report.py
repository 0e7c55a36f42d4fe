# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: the incident report, computed from the journal alone.

Timeline: began (the fault started, if known), detected, decided, started
(the rollback began), restored, verified. When ``started`` was not recorded
the journal's ``opened`` record stands in for it (and the report says so).

Measures, in seconds:
- time_to_detect   = detected - began
- time_to_decide   = decided - detected
- time_to_rollback = restored - started
- time_to_verify   = verified - restored
- recovery_time    = (verified, else restored) - (began, else detected)   -> RTO
- data_loss_window = started - recovery_point (the point the data was restored
  to: everything written after it until the rollback started is gone) -> RPO
- first_status_update = first successful notification - (detected, else opened)

Objectives (seconds) are compared with ``<=``; an objective whose measure is
unknown is reported as not measured (a skipped JUnit testcase), never as met.
Pure logic: no Ansible, no I/O besides the render helpers returning strings.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from ansible_collections.failsafe.recovery.plugins.module_utils import _journal

TIMELINE = ("began", "detected", "decided", "started", "restored", "verified")

# (measure key, label, objective key)
OBJECTIVES = (
    ("time_to_detect", "Time to detect", "detect_seconds"),
    ("time_to_decide", "Time to decide", "decide_seconds"),
    ("first_status_update", "First status update", "status_update_seconds"),
    ("time_to_rollback", "Time to roll back", "rollback_seconds"),
    ("recovery_time", "RTO (recovery time)", "rto_seconds"),
    ("data_loss_window", "RPO (data loss window)", "rpo_seconds"),
)


def _diff(later, earlier):
    if later is None or earlier is None:
        return None
    return round(later - earlier, 3)


def human(seconds):
    """'2 min 5.0 s' / '42.3 s' / 'not measured'."""
    if seconds is None:
        return "not measured"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds >= 3600:
        return "%s%d h %d min" % (sign, seconds // 3600, (seconds % 3600) // 60)
    if seconds >= 60:
        return "%s%d min %.1f s" % (sign, seconds // 60, seconds % 60)
    return "%s%.1f s" % (sign, seconds)


def objectives_for(service=None, service_objectives=None, level=None, level_objectives=None, response=None):
    """Objectives in seconds from the inventory's tables (minutes, as in the runbooks).

    ``service_objectives``: {service: {rto_minutes, rpo_minutes}};
    ``level_objectives``: {level: minutes to roll back};
    ``response``: {detect_minutes, decide_minutes, status_update_seconds}.
    """
    out = {}
    response = response or {}
    if response.get("detect_minutes") is not None:
        out["detect_seconds"] = float(response["detect_minutes"]) * 60
    if response.get("decide_minutes") is not None:
        out["decide_seconds"] = float(response["decide_minutes"]) * 60
    if response.get("status_update_seconds") is not None:
        out["status_update_seconds"] = float(response["status_update_seconds"])
    table = (service_objectives or {}).get(service) if service else None
    if table:
        if table.get("rto_minutes") is not None:
            out["rto_seconds"] = float(table["rto_minutes"]) * 60
        if table.get("rpo_minutes") is not None:
            out["rpo_seconds"] = float(table["rpo_minutes"]) * 60
    if level not in (None, "") and level_objectives:
        minutes = None
        for key, value in level_objectives.items():
            if str(key) == str(level):
                minutes = value
        if minutes is not None:
            out["rollback_seconds"] = float(minutes) * 60
    return out


def compute(records, objectives=None, meta=None):
    """The report as a dict (what the JSON file holds)."""
    objectives = objectives or {}
    meta = dict(meta or {})
    events = _journal.first_events(records)
    timeline = []
    times = {}
    for name in TIMELINE:
        when = events.get(name)
        source = "journal"
        if when is None and name == "started" and "opened" in events:
            when, source = events["opened"], "opened (no started event recorded)"
        times[name] = when
        timeline.append(dict(event=name, at=_journal.iso(when) if when is not None else None, epoch=when,
                             source=source if when is not None else None))

    recovery_point = None
    for record in records:
        if record.get("recovery_point"):
            try:
                recovery_point = _journal.parse_time(record["recovery_point"])
            except ValueError:
                recovery_point = None
    notifications = [r for r in records if r.get("kind") == "notification"]
    first_ok = min([_journal.event_time(r) for r in notifications if r.get("ok")] or [None],
                   key=lambda x: float("inf") if x is None else x)
    reference = times["detected"] if times["detected"] is not None else events.get("opened")
    finish = times["verified"] if times["verified"] is not None else times["restored"]
    onset = times["began"] if times["began"] is not None else times["detected"]
    measures = dict(
        time_to_detect=_diff(times["detected"], times["began"]),
        time_to_decide=_diff(times["decided"], times["detected"]),
        time_to_rollback=_diff(times["restored"], times["started"]),
        time_to_verify=_diff(times["verified"], times["restored"]),
        recovery_time=_diff(finish, onset),
        data_loss_window=(max(0.0, _diff(times["started"], recovery_point))
                          if recovery_point is not None and times["started"] is not None else None),
        first_status_update=_diff(first_ok, reference),
    )

    results = []
    for key, label, objective_key in OBJECTIVES:
        target = objectives.get(objective_key)
        if target is None:
            continue
        value = measures.get(key)
        status = "not measured" if value is None else ("pass" if value <= float(target) else "fail")
        results.append(dict(name=key, label=label, objective_seconds=float(target), measured_seconds=value,
                            status=status))

    tasks = [r for r in records if r.get("kind") == "task"]
    failed_tasks = [r for r in tasks if r.get("status") in ("failed", "unreachable") and not r.get("ignored")]
    slowest = sorted(tasks, key=lambda r: -(r.get("duration") or 0))[:5]
    escalations = [r for r in records if r.get("kind") == "escalation"]
    levels = [r.get("level") for r in records if r.get("level") not in (None, "")]
    outcome = meta.get("outcome") or ("failed" if events.get("failed") is not None else
                                      "restored" if finish is not None else "unknown")
    opened = next((r for r in records if r.get("kind") == "opened"), {})
    report = dict(
        incident=meta.get("incident") or opened.get("incident"),
        title=meta.get("title") or "",
        environment=meta.get("environment") or "",
        service=meta.get("service") or "",
        severity=meta.get("severity") or "",
        level=str(meta["level"]) if meta.get("level") not in (None, "") else (str(levels[-1]) if levels else None),
        actor=opened.get("actor") or meta.get("actor"),
        outcome=outcome,
        timeline=timeline,
        measures=measures,
        recovery_point=_journal.iso(recovery_point) if recovery_point is not None else None,
        objectives=results,
        objectives_met=all(r["status"] == "pass" for r in results if r["status"] != "not measured"),
        notifications=[dict(event=r.get("event"), target=r.get("target"), ok=bool(r.get("ok")),
                            status=r.get("status"), at=r.get("ts")) for r in notifications],
        escalations=[dict(mark_minutes=r.get("mark_minutes"), target=r.get("target"), ok=bool(r.get("ok")),
                          at=r.get("ts")) for r in escalations],
        tasks=dict(total=len(tasks), changed=sum(1 for r in tasks if r.get("changed")), failed=len(failed_tasks),
                   seconds=round(sum(r.get("duration") or 0 for r in tasks), 3),
                   slowest=[dict(task=r.get("task"), host=r.get("host"), duration=r.get("duration"))
                            for r in slowest],
                   failed_tasks=[dict(task=r.get("task"), host=r.get("host"), msg=r.get("msg"))
                                 for r in failed_tasks]),
        notes=[r.get("message") for r in records if r.get("kind") == "event" and r.get("event") == "note"
               and r.get("message")],
        impact=meta.get("impact") or "",
        root_cause=meta.get("root_cause") or "",
        resolution=meta.get("resolution") or "",
        prevention=list(meta.get("prevention") or []),
        journal=dict(path=meta.get("journal_path"), records=len(records)),
    )
    return report


def _cell(value):
    return str(value if value not in (None, "") else "-").replace("|", "\\|").replace("\n", " ")


def render_markdown(report):
    """The incident template (summary, timeline, impact, root cause, resolution, prevention) filled in."""
    tbd = "_To be completed in the post-incident review._"
    m = report["measures"]
    lines = ["# Incident %s%s" % (report["incident"], (": " + report["title"]) if report["title"] else ""), ""]
    lines += ["## Summary", ""]
    lines += ["| | |", "|---|---|"]
    for label, value in (("Environment", report["environment"]), ("Service", report["service"]),
                         ("Severity", report["severity"]), ("Level", report["level"]),
                         ("Outcome", report["outcome"]), ("Actor", report["actor"]),
                         ("Objectives met", "yes" if report["objectives_met"] else "NO")):
        lines.append("| %s | %s |" % (label, _cell(value)))
    lines += ["", "## Timeline", "", "| Event | Time (UTC) | Source |", "|---|---|---|"]
    for item in report["timeline"]:
        lines.append("| %s | %s | %s |" % (item["event"], _cell(item["at"]), _cell(item["source"])))
    lines += ["", "## Metrics", "", "| Measure | Value |", "|---|---|"]
    for key, label in (("time_to_detect", "Time to detect"), ("time_to_decide", "Time to decide"),
                       ("time_to_rollback", "Time to roll back"), ("time_to_verify", "Time to verify"),
                       ("recovery_time", "Total downtime (recovery time)"),
                       ("data_loss_window", "Data loss window"), ("first_status_update", "First status update")):
        lines.append("| %s | %s |" % (label, human(m.get(key))))
    lines += ["", "## Objectives", "", "| Objective | Target | Measured | Result |", "|---|---|---|---|"]
    for item in report["objectives"]:
        cells = (item["label"], human(item["objective_seconds"]), human(item["measured_seconds"]), item["status"].upper())
        lines.append("| %s | %s | %s | %s |" % cells)
    lines += ["", "## Impact", ""]
    lines.append(report["impact"] or tbd)
    lines.append("")
    lines.append("- Duration: %s" % human(m.get("recovery_time")))
    restored_to = (" (restored to %s)" % report["recovery_point"]) if report["recovery_point"] else ""
    lines.append("- Data loss window: %s%s" % (human(m.get("data_loss_window")), restored_to))
    lines += ["", "## Root cause", "", report["root_cause"] or tbd]
    lines += ["", "## Resolution", ""]
    lines.append(report["resolution"] or ("Level %s, outcome: %s." % (_cell(report["level"]), report["outcome"])))
    tasks = report["tasks"]
    lines.append("")
    lines.append("- Tasks journaled: %d (%d changed, %d failed), %s of task time"
                 % (tasks["total"], tasks["changed"], tasks["failed"], human(tasks["seconds"])))
    for item in tasks["failed_tasks"]:
        lines.append("- Failed: %s on %s: %s" % (_cell(item["task"]), _cell(item["host"]), _cell(item["msg"])))
    for note in report["notes"]:
        lines.append("- Note: %s" % _cell(note))
    for item in report["escalations"]:
        delivery = "sent" if item["ok"] else "NOT delivered"
        lines.append("- Escalated at the %s min mark to %s (%s)" % (item["mark_minutes"], _cell(item["target"]), delivery))
    for item in report["notifications"]:
        delivery = "sent" if item["ok"] else "NOT delivered: %s" % _cell(item["status"])
        lines.append("- Notified %s: %s (%s)" % (_cell(item["target"]), _cell(item["event"]), delivery))
    lines += ["", "## Prevention", ""]
    if report["prevention"]:
        lines += ["- %s" % _cell(item) for item in report["prevention"]]
    else:
        lines.append(tbd)
    lines += ["", "---", "Journal: %s (%d records)." % (_cell(report["journal"]["path"]), report["journal"]["records"]),
              ""]
    return "\n".join(lines)


def render_json(report):
    return json.dumps(report, indent=2, sort_keys=True) + "\n"


def render_junit(report):
    """One testcase per objective, plus one for the outcome."""
    cases = []
    for item in report["objectives"]:
        cases.append((item["label"], item["measured_seconds"], item["status"],
                      "%s: measured %s, objective %s" % (item["label"], human(item["measured_seconds"]),
                                                         human(item["objective_seconds"]))))
    outcome_status = "fail" if report["outcome"] == "failed" else "pass"
    cases.append(("Outcome", report["measures"].get("recovery_time"), outcome_status,
                  "outcome: %s" % report["outcome"]))
    failures = sum(1 for c in cases if c[2] == "fail")
    skipped = sum(1 for c in cases if c[2] == "not measured")
    suite = ET.Element("testsuite", name="incident %s" % report["incident"], tests=str(len(cases)),
                       failures=str(failures), errors="0", skipped=str(skipped))
    for name, seconds, status, text in cases:
        case = ET.SubElement(suite, "testcase", classname="failsafe.recovery.incident.%s"
                             % (report["environment"] or "default"), name=name,
                             time="%.3f" % (seconds if seconds is not None and seconds > 0 else 0))
        if status == "fail":
            ET.SubElement(case, "failure", message=text).text = text
        elif status == "not measured":
            ET.SubElement(case, "skipped", message=text)
    root = ET.Element("testsuites", tests=str(len(cases)), failures=str(failures), errors="0", skipped=str(skipped))
    root.append(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def summary_line(report):
    parts = ["incident %s: %s" % (report["incident"], report["outcome"])]
    for item in report["objectives"]:
        values = (item["name"], item["status"], human(item["measured_seconds"]), human(item["objective_seconds"]))
        parts.append("%s %s (%s <= %s)" % values)
    return "; ".join(parts)
