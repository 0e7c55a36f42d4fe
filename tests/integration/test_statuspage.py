"""The sandbox's webhook receiver / status-page stub (extensions/sandbox/statuspage.py) for real.

The ``webhook`` fixture runs the receiver on a free port under the session's services directory.
An incident (role failsafe.recovery.incident: open, decided, close) runs on the sandbox inventory with
``sandbox_state_dir`` pointed at that directory, so the inventory's own ``incident_webhooks`` wiring
(the 0600 URL file written by the receiver) is what delivers the notifications.
"""

import datetime
import json
import os
import pathlib
import stat
import time

import pytest
import yaml

from sandbox import services
from sandbox.runner import ROOT, run_playbook

ENV = {"ANSIBLE_CALLBACKS_ENABLED": "failsafe.recovery.journal", "ANSIBLE_PIPELINING": "True"}
INCIDENT = "statuspage-inc-1"


def _role(tasks_from, **variables):
    task = {"name": "incident " + tasks_from,
            "ansible.builtin.include_role": {"name": "failsafe.recovery.incident", "tasks_from": tasks_from}}
    if variables:
        task["vars"] = variables
    return task


def _post(url, body, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return services.http_get(url, data=data, headers={"Content-Type": content_type}, method="POST")


@pytest.fixture(scope="module")
def incident(webhook, services_dir, tmp_path_factory):
    """One incident on the sandbox inventory whose webhook is the fixture's receiver."""
    work = tmp_path_factory.mktemp("statuspage")
    before = len(webhook.received())
    detected = time.time() - 2
    play = [{"name": "incident with the sandbox's status page", "hosts": "localhost", "gather_facts": False,
             "tasks": [_role("open"),
                       _role("record", incident_event="decided", incident_level=3),
                       _role("record", incident_event="started"),
                       _role("record", incident_event="restored"),
                       _role("close")]}]
    playbook = work / "incident.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    result = run_playbook(playbook, inventory=ROOT / "inventories" / "sandbox", env=ENV, timeout=300, extra_vars={
        "sandbox_state_dir": str(services_dir), "incident_dir": str(work / "incidents"), "incident_id": INCIDENT,
        "incident_environment": "statuspage-test", "incident_title": "status page test", "incident_service": "core_api",
        "incident_detected_at": datetime.datetime.fromtimestamp(detected, tz=datetime.timezone.utc).isoformat()})
    reports = work / "incidents" / "reports"
    return {"result": result, "records": webhook.received()[before:], "work": work,
            "report": json.loads((reports / (INCIDENT + ".json")).read_text()) if reports.is_dir() else None,
            "reports": reports, "journal": work / "incidents" / (INCIDENT + ".jsonl")}


def test_incident_notifications_arrive_at_the_receiver(incident, webhook):
    result = incident["result"]
    assert result.rc == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = incident["records"]
    assert [r["accepted"] for r in records] == [True] * 3 and [r["status"] for r in records] == [200] * 3
    bodies = [r["body"] for r in records]
    assert [b["event"] for b in bodies] == ["start", "level", "done"]
    for body in bodies:
        assert body["incident"] == INCIDENT and body["environment"] == "statuspage-test"
        assert body["title"] == "status page test"
    assert bodies[0]["text"].startswith("ROLLBACK INITIATED\nIncident: %s (statuspage-test)" % INCIDENT)
    # the level was chosen with no message: the text says which level, it is not empty
    assert bodies[1]["text"].startswith("ROLLBACK LEVEL 3 CHOSEN\nIncident: %s" % INCIDENT)
    assert bodies[2]["text"].startswith("incident %s: restored" % INCIDENT)
    assert str(bodies[1]["level"]) == "3"
    assert bodies[2]["outcome"] == "restored" and isinstance(bodies[2]["measures"]["first_status_update"], float)
    assert all(r["content_type"].startswith("application/json") for r in records)
    # the same, asked from the running receiver; and the status page shows the incident resolved
    assert webhook.received_via_http()[-3:] == records
    status, page = services.http_get(webhook.url + "/", timeout=5)
    assert status == 200
    assert json.loads(page) == {"status": "resolved", "event": "done", "incident": INCIDENT,
                                "title": "status page test", "environment": "statuspage-test",
                                "updated": records[-1]["received_at"]}
    assert [b["event"] for b in webhook.notifications(incident=INCIDENT)] == ["start", "level", "done"]


def test_first_status_update_is_measured_from_the_delivered_start(incident):
    report = incident["report"]
    assert report is not None, incident["result"].stdout[-3000:]
    measured = report["measures"]["first_status_update"]
    assert isinstance(measured, float) and not isinstance(measured, bool) and measured >= 0
    objective = [o for o in report["objectives"] if o["name"] == "first_status_update"]
    assert len(objective) == 1 and objective[0]["objective_seconds"] == 60.0
    assert objective[0]["measured_seconds"] == measured and objective[0]["status"] != "not measured"
    # the report is written before 'done' is posted: it lists start and level
    assert [(n["event"], n["target"], n["ok"], n["status"]) for n in report["notifications"]] == [
        ("start", "sandbox-status-page", True, 200), ("level", "sandbox-status-page", True, 200)]
    # the measure is the journaled delivery of 'start' minus detected; the receiver had it before that record
    journal = [json.loads(line) for line in incident["journal"].read_text().splitlines() if line.strip()]
    detected = [r for r in journal if r.get("kind") == "event" and r.get("event") == "detected"][0]
    detected_epoch = detected.get("at_epoch", detected["epoch"])
    delivered = [r for r in journal if r.get("kind") == "notification" and r["event"] == "start"][0]
    assert measured == pytest.approx(delivered["epoch"] - detected_epoch, abs=0.01)
    assert incident["records"][0]["epoch"] <= delivered["epoch"]
    assert "First status update" in (incident["reports"] / (INCIDENT + ".md")).read_text()


def test_webhook_url_is_a_secret_kept_out_of_output(incident, webhook):
    token = webhook.token
    assert len(token) >= 24 and token in webhook.hook_url
    for path in (webhook.url_file, webhook.token_file, webhook.record_file):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert webhook.url_file.read_text().strip() == webhook.hook_url
    result = incident["result"]
    assert token not in result.stdout and token not in result.stderr
    step = "Post the notification to every webhook subscribed to the event"
    notify = [r for name, r in result.task_results() if name.endswith(step)]
    assert len(notify) == 3 and all(r.get("censored") for r in notify)
    for path in [incident["journal"]] + sorted(incident["reports"].iterdir()):
        assert token not in path.read_text(), path
    assert token not in webhook.record_file.read_text()


def test_refused_posts_are_recorded_without_path_or_body(webhook):
    before = len(webhook.received())
    status = _post(webhook.url + "/hooks/not-the-token", {"event": "start", "secret": "guess-1"})[0]
    assert status == 404
    status = _post(webhook.url + "/elsewhere", b"plain words", "text/plain")[0]
    assert status == 404
    status, body = _post(webhook.hook_url, b"plain words", "text/plain")
    assert status == 200 and json.loads(body)["ok"] is True
    status = _post(webhook.hook_url, b"x" * (1024 * 1024 + 1), "text/plain")[0]
    assert status == 413
    records = webhook.received()[before:]
    assert [(r["accepted"], r["status"]) for r in records] == [(False, 404), (False, 404), (True, 200), (False, 413)]
    assert "body" not in records[0] and "body" not in records[1] and "body" not in records[3]
    assert records[2]["body"] == "plain words" and records[2]["content_type"] == "text/plain"
    assert [r["seq"] for r in records] == list(range(before + 1, before + 5))
    assert "guess-1" not in webhook.record_file.read_text()
    # the list is only served on the webhook URL itself
    assert services.http_get(webhook.url + "/hooks/not-the-token", timeout=5)[0] == 404


def test_stopped_by_pid_and_restarted_with_a_new_token(tmp_path):
    receiver = services.WebhookReceiver(tmp_path)
    receiver.die_with_parent = True
    receiver.up()
    try:
        first_url, pid = receiver.hook_url, receiver.pid
        assert _post(first_url, {"event": "start", "incident": "x"})[0] == 200
        # the sandbox CLI's way: re-attached from its state, stopped by the recorded PID
        attached = services.from_state(json.loads(json.dumps(receiver.to_state())))
        assert attached.running_pid() == pid and attached.answers()
        attached.stop()
        assert not attached.answers() and not services.port_open(receiver.port)
        assert not pathlib.Path("/proc/%d" % pid).exists() or services.proc_start_time(pid) is None
        assert not receiver.url_file.exists()
        # records survive a restart; the old URL stops working (a fresh token)
        receiver.up()
        assert receiver.hook_url != first_url and receiver.url_file.read_text().strip() == receiver.hook_url
        assert _post(first_url, {"event": "done"})[0] == 404
        assert [(r["seq"], r["accepted"]) for r in receiver.received()] == [(1, True), (2, False)]
        assert receiver.notifications(incident="x", event="start")[0]["incident"] == "x"
    finally:
        receiver.stop()
