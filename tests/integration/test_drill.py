"""The rollback drill (playbooks/drill.yml) end to end on the sandbox's fixed ports.

The sandbox (``python -m sandbox up``) is brought up by this module and brought down in
teardown, unless it was already up before (then it is left as found). Its ports
(25432, 25000, 28080-28082, 29090) are reserved for the sandbox, so the session fixtures
on free ports never collide with it. Its webhook receiver (status page stub) takes a free port;
the sandbox inventory posts the incident's notifications to it.
"""

import json
import os
import pathlib
import subprocess

import pytest

from sandbox import services
from sandbox.runner import ROOT, run_playbook

STATE = ROOT / ".cache" / "sandbox"
DRILLS = STATE / "drills"
ENV = {"ANSIBLE_CALLBACKS_ENABLED": "failsafe.recovery.journal", "ANSIBLE_PIPELINING": "True"}


def _sandbox(*args):
    return subprocess.run([str(services.VENV_BIN / "python"), "-m", "sandbox"] + list(args), cwd=str(ROOT),
                          env=dict(os.environ, PYTHONPATH=str(ROOT / "extensions")), capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def sandbox():
    was_up = _sandbox("status").returncode == 0
    if not was_up:
        started = _sandbox("up")
        assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield json.loads((STATE / "state.json").read_text())
    finally:
        if not was_up:
            _sandbox("down")


def _psql(state, sql):
    pg = services.from_state(state["services"]["postgres"])
    return pg.psql(sql)


def _front(state):
    status, body = services.http_get(state["services"]["haproxy"]["url"] + "/", timeout=5)
    return status, json.loads(body) if status == 200 else body


def _newest(pattern):
    found = sorted(DRILLS.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _event_epochs(journal):
    events = {}
    for line in journal.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "event":
            events[rec["event"]] = rec.get("at_epoch", rec["epoch"])
    return events


def test_drill_bad_release_and_bad_writes_rolled_back(sandbox):
    result = run_playbook(ROOT / "playbooks" / "drill.yml", inventory=ROOT / "inventories" / "sandbox",
                          extra_vars={"drill_keep_table": True}, env=ENV, timeout=600)
    assert result.rc == 0, result.stdout[-4000:]
    try:
        # the bad writes are gone, the good rows are back (the table was kept for this check)
        rows = _psql(sandbox, "SELECT string_agg(id || ':' || balance, ',' ORDER BY id) FROM failsafe_drill.accounts")
        assert rows == "1:100,2:200,3:300"
    finally:
        _psql(sandbox, "DROP TABLE IF EXISTS failsafe_drill.accounts")
    # v1 serves through the front end, traffic back on blue
    for dummy in range(10):
        status, body = _front(sandbox)
        assert status == 200 and body["version"] == "v1"
    report_md = _newest("incidents/reports/*.md")
    report = json.loads(report_md.with_suffix(".json").read_text())
    assert report["outcome"] == "restored" and report["objectives_met"] is True
    assert report_md.with_suffix(".xml").is_file()
    # the report's numbers are the journal's timestamps
    events = _event_epochs(pathlib.Path(report["journal"]["path"]))
    measures = report["measures"]
    assert set(events) >= {"began", "detected", "decided", "started", "restored", "verified"}
    assert measures["time_to_detect"] == pytest.approx(events["detected"] - events["began"], abs=0.01)
    assert measures["time_to_rollback"] == pytest.approx(events["restored"] - events["started"], abs=0.01)
    assert measures["recovery_time"] == pytest.approx(events["verified"] - events["began"], abs=0.01)
    assert 0 < measures["data_loss_window"] < 300
    # the sandbox's status page (webhook receiver) got the drill's notifications; the first is measured
    receiver = services.from_state(sandbox["services"]["webhook"])
    received = receiver.notifications(incident=report["incident"])
    assert [body["event"] for body in received] == ["start", "level", "done"]
    assert received[0]["environment"] == "sandbox" and received[0]["title"] == report["title"]
    assert received[2]["outcome"] == "restored"
    assert isinstance(measures["first_status_update"], float) and measures["first_status_update"] >= 0
    assert [o["status"] for o in report["objectives"] if o["name"] == "first_status_update"] in (["pass"], ["fail"])
    # no secret of the inventory in the journal, the report or the deployment records
    password = (STATE / "postgres.password").read_text().strip()
    for path in [pathlib.Path(report["journal"]["path"])] + list(report_md.parent.glob(report_md.stem + ".*")) \
            + list((DRILLS / "deployments").rglob("*.json")):
        assert password not in path.read_text(errors="replace"), path
        assert receiver.token not in path.read_text(errors="replace"), path
    assert receiver.token not in result.stdout + result.stderr
    assert oct(pathlib.Path(report["journal"]["path"]).stat().st_mode & 0o777) == "0o600"


def test_missed_objective_fails_the_drill_and_still_cleans_up(sandbox):
    result = run_playbook(ROOT / "playbooks" / "drill.yml", inventory=ROOT / "inventories" / "sandbox",
                          extra_vars={"drill_faults": ["bad_release"],
                                      "drill_service_objectives": {"core_api": {"rto_minutes": 0.001, "rpo_minutes": 5}}},
                          env=ENV, timeout=600)
    assert result.rc != 0
    failed = [r for name, r in result.task_results() if r.get("failed")]
    assert failed and "Objective missed" in failed[-1]["msg"] and "RTO" in failed[-1]["msg"]
    report = json.loads(pathlib.Path(failed[-1]["msg"].rsplit("Report: ", 1)[1].strip()).with_suffix(".json").read_text())
    assert report["objectives_met"] is False and report["outcome"] == "restored"
    # cleaned up: the good side serves, the lock is released
    status, body = _front(sandbox)
    assert status == 200 and body["version"] == "v1"
    assert not (DRILLS / "incidents" / "sandbox.lock").exists()


def _blue_pid():
    return int((STATE / "blue" / "demoapp.pid").read_text().strip())


def _cmdline(pid):
    try:
        return (pathlib.Path("/proc/%d/cmdline" % pid).read_bytes().replace(b"\0", b" ").decode())
    except OSError:
        return ""


def test_drill_broken_config_and_killed_service_recovered(sandbox):
    config = STATE / "app" / "releases" / "v1" / "release.json"
    good_config = config.read_bytes()
    old_pid = _blue_pid()
    assert "demoapp" in _cmdline(old_pid)
    blue_url = sandbox["services"]["blue"]["url"]

    result = run_playbook(ROOT / "playbooks" / "drill.yml", inventory=ROOT / "inventories" / "sandbox",
                          extra_vars={"drill_faults": ["broken_config", "killed_service"]}, env=ENV, timeout=600)
    assert result.rc == 0, result.stdout[-4000:]

    # the faults were real: the broken configuration was written, the app restarted with it, then killed
    assert result.result("Inject | write the broken configuration")["changed"] is True
    assert result.result("Inject | restart the app with the broken configuration")["rc"] == 0
    assert result.result("Inject | kill the app process")["rc"] == 0
    # and recovered by DR tier 1 (restart command) and level 2 (the recorded file back)
    restarted = result.result("Restart | run the restart command of the services found failed or unhealthy")
    assert [r["item"]["name"] for r in restarted["results"]] == ["blue"]
    assert result.result("Restore the recorded configuration files")["changed"] is True

    # the good configuration is back byte for byte; no safety copy of the broken one is left behind
    assert config.read_bytes() == good_config
    assert list(config.parent.glob("release.json.*~")) == []
    # a new process serves blue, started with the good configuration; the old one is gone
    new_pid = _blue_pid()
    assert new_pid != old_pid
    assert "demoapp" in _cmdline(new_pid) and str(config) in _cmdline(new_pid)
    assert "demoapp" not in _cmdline(old_pid)
    assert json.loads((STATE / "state.json").read_text())["services"]["blue"]["pid"] == new_pid
    status, body = services.http_get(blue_url + "/health", timeout=5)
    assert status == 200 and json.loads(body)["status"] == "ok"
    fault = json.loads(services.http_get(blue_url + "/admin/fault", timeout=5)[1])
    assert fault["faults"]["error_rate"] == 0 and fault["faults"]["fail_health"] is False
    for dummy in range(10):
        status, body = _front(sandbox)
        assert status == 200 and body["version"] == "v1" and body["pid"] == new_pid

    # the report: level 2 (the highest of the faults), restored, every measured objective met
    report_md = _newest("incidents/reports/*.md")
    report = json.loads(report_md.with_suffix(".json").read_text())
    assert report["outcome"] == "restored" and report["objectives_met"] is True
    assert str(report["level"]) == "2"
    statuses = {item["name"]: item["status"] for item in report["objectives"]}
    assert statuses["recovery_time"] == "pass" and statuses["time_to_rollback"] == "pass"
    assert statuses["data_loss_window"] == "not measured"
    events = _event_epochs(pathlib.Path(report["journal"]["path"]))
    measures = report["measures"]
    assert measures["recovery_time"] == pytest.approx(events["verified"] - events["began"], abs=0.01)
    assert measures["time_to_rollback"] == pytest.approx(events["restored"] - events["started"], abs=0.01)
    assert "broken configuration" in report_md.read_text() and "killed" in report_md.read_text()
