# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Role failsafe.recovery.incident run for real with ansible-playbook on localhost.

Three runs go at once to keep the wall time down:
  A  a whole incident (open, decided, started, restored, verified, close) with live
     Slack-form and generic webhooks on a local HTTP receiver, a dead webhook, an
     escalation webhook, secrets in the inventory and the extra vars; it holds the
     lock on a signal file while
  B  tries to open an incident for the same environment and must be refused naming A;
  C  opens and closes an incident whose lock was left by a process that is gone
     (recovered with a warning);
  D  runs a whole incident in check mode: nothing may be written.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import http.server
import json
import os
import pathlib
import socket
import stat
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import pytest
import yaml

from sandbox.runner import run_playbook

CALLBACK_ENV = {"ANSIBLE_CALLBACKS_ENABLED": "failsafe.recovery.journal", "ANSIBLE_PIPELINING": "1"}
DB_SECRET = "Pg-Secret-7f3a9c"
HOOK_SECRET = "hook-token-4b1e8d"
ACTOR = "awx-alice"


class Receiver:
    """A stdlib HTTP server on 127.0.0.1 recording every POST (path and JSON body)."""

    def __init__(self):
        self.posts = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    data = json.loads(body)
                except ValueError:
                    data = None
                receiver.posts.append((self.path.split("?")[0], data))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, path):
        return [body for p, body in self.posts if p == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _dead_url():
    """A URL on 127.0.0.1 where nothing listens."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return "http://127.0.0.1:%d/hook?token=%s" % (port, HOOK_SECRET)


def _iso(epoch):
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc).isoformat()


def _role(tasks_from, **variables):
    task = {"name": "incident " + tasks_from,
            "ansible.builtin.include_role": {"name": "failsafe.recovery.incident", "tasks_from": tasks_from}}
    if variables:
        task["vars"] = variables
    return task


def _write_playbook(path, tasks):
    play = [{"name": "incident under test", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    return path


def _result(run, name):
    """The result of the last task whose name ends with ``name`` (role tasks carry the role's prefix)."""
    found = [r for n, r in run.task_results() if n.endswith(name)]
    assert found, "task %r did not run; rc=%s\n%s" % (name, run.rc, run.stdout[-3000:])
    return found[-1]


def _journal(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _first(records, name):
    for record in records:
        if record.get("kind") == "event" and record.get("event") == name:
            return record.get("at_epoch", record["epoch"])
    return None


@pytest.fixture(scope="module")
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, receiver):
    """Run A, B and C concurrently; return their results and paths."""
    work = tmp_path_factory.mktemp("incident")
    incident_dir = work / "incidents"
    inventory = work / "inventory.ini"
    inventory.write_text("localhost ansible_connection=local ansible_python_interpreter=%s db_password=%s\n"
                         % (sys.executable, DB_SECRET))
    hold = work / "release-a"
    now = time.time()
    began, detected = now - 16 * 60, now - 15.5 * 60  # escalation mark 15 already passed
    webhooks = [
        {"name": "ops-slack", "url": receiver.url + "/slack?token=" + HOOK_SECRET},
        {"name": "ops-generic", "url": receiver.url + "/generic", "format": "generic", "events": ["start", "done"],
         "headers": {"Authorization": "Bearer " + HOOK_SECRET}},
        {"name": "dead", "url": _dead_url(), "format": "generic", "events": ["start"]},
    ]
    common = {"incident_dir": str(incident_dir), "incident_notify_timeout": 3,
              "awx_user_name": ACTOR}

    play_a = _write_playbook(work / "a.yml", [
        _role("open"),
        _role("record", incident_event="decided", incident_level=3, incident_event_message="error rate 34%"),
        _role("record", incident_event="started",
              incident_event_before={"release": "v2", "password": "{{ db_password }}"}),
        {"name": "Roll back (held until the test has tried a second run; the callback journals its timing)",
         "ansible.builtin.wait_for": {"path": str(hold), "timeout": 240}},
        _role("record", incident_event="restored", incident_recovery_point=_iso(began - 20),
              incident_event_after={"release": "v1"}),
        _role("record", incident_event="verified"),
        _role("close", incident_root_cause="v2 ships a bad query plan", incident_prevention=["canary v2 first"]),
    ])
    vars_a = dict(common, incident_environment="prod", incident_id="prod-inc-a", incident_title="v2 error spike",
                  incident_service="core_api", incident_began_at=_iso(began), incident_detected_at=_iso(detected),
                  incident_webhooks=webhooks,
                  incident_escalation=[
                      {"after_minutes": 15, "name": "Level 2: technical lead",
                       "webhooks": [{"name": "lead", "url": receiver.url + "/escalate", "format": "generic"}]},
                      {"after_minutes": 600, "name": "Executive team", "webhooks": []}])
    play_b = _write_playbook(work / "b.yml", [_role("open")])
    vars_b = dict(common, incident_environment="prod", incident_id="prod-inc-b", awx_user_name="awx-bob")
    play_c = _write_playbook(work / "c.yml", [_role("open"), _role("close")])
    vars_c = dict(common, incident_environment="stale", incident_id="stale-inc-c")
    play_d = _write_playbook(work / "d.yml", [
        _role("open"), _role("record", incident_event="decided", incident_level=2), _role("close")])
    vars_d = dict(common, incident_environment="dry", incident_id="dry-inc-d",
                  incident_webhooks=[{"name": "ops-generic", "url": receiver.url + "/dry", "format": "generic"}])

    # C's environment has a lock left by an ansible-playbook process that is gone.
    incident_dir.mkdir(mode=0o700)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (incident_dir / "stale.lock").write_text(json.dumps({
        "version": 1, "holder": "ghost-incident", "actor": "carol", "host": socket.gethostname(), "pid": gone.pid,
        "since": _iso(now - 300), "since_epoch": now - 300, "ttl": 7200, "expires": _iso(now + 6900)}))

    lock_a = incident_dir / "prod.lock"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        future_d = pool.submit(run_playbook, play_d, inventory=inventory, extra_vars=vars_d, env=CALLBACK_ENV,
                               check=True, timeout=400)
        future_a = pool.submit(run_playbook, play_a, inventory=inventory, extra_vars=vars_a, env=CALLBACK_ENV,
                               timeout=400)
        future_c = pool.submit(run_playbook, play_c, inventory=inventory, extra_vars=vars_c, env=CALLBACK_ENV,
                               timeout=400)
        deadline = time.time() + 240
        while not lock_a.exists() and time.time() < deadline and not future_a.done():
            time.sleep(0.2)
        try:
            result_b = run_playbook(play_b, inventory=inventory, extra_vars=vars_b, env=CALLBACK_ENV, timeout=400)
            lock_during_b = json.loads(lock_a.read_text()) if lock_a.exists() else None
            holder_cmdline = b""
            if lock_during_b and lock_during_b.get("pid"):
                with open("/proc/%d/cmdline" % lock_during_b["pid"], "rb") as handle:
                    holder_cmdline = handle.read()
        finally:
            released_at = time.time()
            hold.write_text("go")
        result_a = future_a.result()
        result_c = future_c.result()
        result_d = future_d.result()
    return dict(a=result_a, b=result_b, c=result_c, d=result_d, dir=incident_dir, lock_during_b=lock_during_b, holder_cmdline=holder_cmdline,
                released_at=released_at,
                began=began, detected=detected)


def test_whole_incident_succeeds_despite_dead_webhook(runs):
    a = runs["a"]
    assert a.rc == 0, a.stdout[-3000:] + a.stderr[-3000:]
    assert a.stats["localhost"]["failures"] == 0
    assert not (runs["dir"] / "prod.lock").exists(), "close must release the lock"


def test_second_run_refused_naming_holder_and_since(runs):
    b, holder = runs["b"], runs["lock_during_b"]
    assert holder is not None and holder["holder"] == "prod-inc-a" and holder["actor"] == ACTOR
    # the lock names run A's ansible-playbook process (it lives as long as the run), not a short-lived worker
    assert b"ansible-playbook" in runs["holder_cmdline"] and b"a.yml" in runs["holder_cmdline"]
    assert b.rc != 0
    refused = _result(b, "Take the incident lock for the environment")
    assert refused["failed"] is True
    assert "prod-inc-a" in refused["msg"] and ACTOR in refused["msg"] and holder["since"] in refused["msg"]
    assert refused["holder"] == "prod-inc-a" and refused["since"] == holder["since"]
    assert not (runs["dir"] / "prod-inc-b.jsonl").exists()


def test_stale_lock_recovered_with_warning(runs):
    c = runs["c"]
    assert c.rc == 0, c.stdout[-3000:]
    taken = _result(c, "Take the incident lock for the environment")
    assert taken["changed"] is True and taken["recovered"]["holder"] == "ghost-incident"
    warnings = " ".join(taken.get("warnings", []))
    assert "stale lock" in warnings and "ghost-incident" in warnings and "is gone" in warnings
    assert not (runs["dir"] / "stale.lock").exists()


def test_journal_is_private_timed_and_free_of_secrets(runs):
    path = runs["dir"] / "prod-inc-a.jsonl"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    records = _journal(path)
    tasks = [r for r in records if r["kind"] == "task"]
    assert len(tasks) > 10
    for record in tasks:
        assert record["actor"] == ACTOR and record["incident"] == "prod-inc-a" and record["host"] == "localhost"
        assert record["duration"] >= 0 and record["start"] <= record["end"]
        assert set(record) <= {"ts", "epoch", "kind", "incident", "actor", "task", "action", "role", "play", "host",
                               "status", "changed", "start", "end", "duration", "delegated_to", "ignored", "no_log",
                               "msg"}
    work = [r for r in tasks if r["task"].startswith("Roll back (held until")]
    assert len(work) == 1 and work[0]["action"] == "ansible.builtin.wait_for" and work[0]["status"] == "ok"
    # it could only end once the test released it, after run B: its journaled end says so
    end = datetime.datetime.fromisoformat(work[0]["end"]).timestamp()
    start = datetime.datetime.fromisoformat(work[0]["start"]).timestamp()
    assert end >= runs["released_at"] - 0.5 and work[0]["duration"] == pytest.approx(end - start, abs=2e-3)
    started = [r for r in records if r.get("event") == "started"][0]
    assert started["before"] == {"release": "v2", "password": "********"}
    text = path.read_text()
    for secret in (DB_SECRET, HOOK_SECRET):
        assert secret not in text
    for report in (runs["dir"] / "reports").iterdir():
        assert DB_SECRET not in report.read_text() and HOOK_SECRET not in report.read_text()


def test_webhooks_received_in_slack_and_generic_form(runs, receiver):
    slack = receiver.bodies("/slack")
    generic = receiver.bodies("/generic")
    assert [set(b) for b in slack] == [{"text"}] * 3  # start, level, done
    assert slack[0]["text"].startswith("ROLLBACK INITIATED") and "prod-inc-a" in slack[0]["text"]
    assert slack[1]["text"].startswith("ROLLBACK LEVEL 3 CHOSEN")
    assert slack[2]["text"].startswith("ROLLBACK DONE")
    assert [b["event"] for b in generic] == ["start", "done"]  # subscribed to these two only
    assert all(b["incident"] == "prod-inc-a" and b["actor"] == ACTOR for b in generic)
    assert generic[1]["outcome"] == "restored" and "objectives_met" in generic[1]
    records = _journal(runs["dir"] / "prod-inc-a.jsonl")
    notes = [(r["event"], r["target"], r["ok"], r["status"]) for r in records if r["kind"] == "notification"]
    assert ("start", "dead", False, -1) in notes and not [n for n in notes if n[1] == "dead" and n[0] != "start"]
    assert ("start", "ops-slack", True, 200) in notes and ("done", "ops-generic", True, 200) in notes


def test_escalation_sent_once_for_the_mark_passed(runs, receiver):
    escalations = receiver.bodies("/escalate")
    assert len(escalations) == 1 and escalations[0]["event"] == "escalation"
    assert "15 min" in escalations[0]["text"]
    records = _journal(runs["dir"] / "prod-inc-a.jsonl")
    marks = [(r["mark_minutes"], r["ok"]) for r in records if r["kind"] == "escalation"]
    assert marks == [(15.0, True)]


def test_report_files_and_numbers_match_the_journal(runs):
    reports = runs["dir"] / "reports"
    records = _journal(runs["dir"] / "prod-inc-a.jsonl")
    data = json.loads((reports / "prod-inc-a.json").read_text())
    m = data["measures"]
    began, detected = _first(records, "began"), _first(records, "detected")
    assert abs(began - runs["began"]) < 1e-3 and abs(detected - runs["detected"]) < 1e-3
    decided, started = _first(records, "decided"), _first(records, "started")
    restored, verified = _first(records, "restored"), _first(records, "verified")
    assert m["time_to_detect"] == pytest.approx(detected - began, abs=1e-3)
    assert m["time_to_decide"] == pytest.approx(decided - detected, abs=1e-3)
    assert m["time_to_rollback"] == pytest.approx(restored - started, abs=1e-3)
    assert m["time_to_verify"] == pytest.approx(verified - restored, abs=1e-3)
    assert m["recovery_time"] == pytest.approx(verified - began, abs=1e-3)
    assert m["data_loss_window"] == pytest.approx(started - (runs["began"] - 20), abs=1e-3)
    first_ok = min(r["epoch"] for r in records if r["kind"] == "notification" and r["ok"])
    assert m["first_status_update"] == pytest.approx(first_ok - detected, abs=1e-3)
    assert data["level"] == "3" and data["outcome"] == "restored" and data["actor"] == ACTOR
    status = dict((o["name"], o["status"]) for o in data["objectives"])
    # detected 30 s after it began: met; the incident lasted over 15 min: RTO of core_api (5 min) missed.
    assert status["time_to_detect"] == "pass" and status["recovery_time"] == "fail"
    assert status["time_to_decide"] == "fail" and data["objectives_met"] is False

    junit = ET.parse(str(reports / "prod-inc-a.xml")).getroot()
    cases = list(junit.iter("testcase"))
    assert len(cases) == len(data["objectives"]) + 1
    failed = set(c.get("name") for c in cases if c.find("failure") is not None)
    assert failed == set(o["label"] for o in data["objectives"] if o["status"] == "fail")

    markdown = (reports / "prod-inc-a.md").read_text()
    for heading in ("## Summary", "## Timeline", "## Impact", "## Root cause", "## Resolution", "## Prevention"):
        assert heading in markdown
    assert "v2 ships a bad query plan" in markdown and "- canary v2 first" in markdown
    assert "Escalated at the 15.0 min mark to Level 2: technical lead (sent)" in markdown
    for path in reports.iterdir():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_report_paths_returned_to_the_play(runs):
    facts = _result(runs["a"], "Remember the report")["ansible_facts"]
    assert facts["incident_report_paths"]["markdown"] == str(runs["dir"] / "reports" / "prod-inc-a.md")
    assert pathlib.Path(facts["incident_report_paths"]["junit"]).exists()


def test_check_mode_writes_nothing(runs, receiver):
    d = runs["d"]
    assert d.rc == 0, d.stdout[-3000:] + d.stderr[-3000:]
    assert _result(d, "Take the incident lock for the environment")["changed"] is True
    report = _result(d, "Write the report (Markdown, JSON, JUnit)")
    assert report["changed"] is True and report["paths"]["markdown"].endswith("dry-inc-d.md")
    assert not (runs["dir"] / "dry.lock").exists()
    assert not (runs["dir"] / "dry-inc-d.jsonl").exists()
    assert not (runs["dir"] / "reports" / "dry-inc-d.md").exists()
    assert receiver.bodies("/dry") == []


def test_record_per_host_writes_every_hosts_event(tmp_path):
    """Two hosts share one include of `record`: by default the play's event is written once (the first host's);
    with incident_event_per_host each host writes its own, as rollback_database and rollback_full_system do."""
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("".join("%s ansible_connection=local ansible_python_interpreter=%s\n" % (host, sys.executable)
                                 for host in ("db1", "db2")))
    play = [{"name": "notes from two hosts", "hosts": "all", "gather_facts": False, "tasks": [
        _role("open"),
        _role("record", incident_event="note", incident_event_message="per host from {{ inventory_hostname }}",
              incident_event_per_host=True),
        _role("record", incident_event="note", incident_event_message="once from {{ inventory_hostname }}"),
        _role("close"),
    ]}]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    result = run_playbook(path, inventory=inventory, timeout=300, extra_vars={
        "incident_dir": str(tmp_path / "incidents"), "incident_environment": "per-host", "incident_id": "per-host-1",
        "awx_user_name": ACTOR})
    assert result.rc == 0, result.stdout[-3000:] + result.stderr[-3000:]
    notes = [r["message"] for r in _journal(tmp_path / "incidents" / "per-host-1.jsonl")
             if r.get("kind") == "event" and r.get("event") == "note"]
    assert sorted(n for n in notes if n.startswith("per host")) == ["per host from db1", "per host from db2"]
    assert len([n for n in notes if n.startswith("once")]) == 1, notes
