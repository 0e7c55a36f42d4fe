"""playbooks/rollback.yml through ansible-runner, the engine AWX runs jobs with: a level 1 rollback (flagd
file) on localhost, then assertions on what AWX would show and keep: the job events, the stats published
with set_stats (artifact_data), the artifacts directory, and the files the rollback wrote (flag file,
incident journal, report)."""

import datetime
import json
import os
import pathlib
import uuid

import ansible_runner
import pytest
import yaml

from sandbox.runner import ROOT

PLAYBOOK = ROOT / "playbooks" / "rollback.yml"
PY = str(ROOT / ".venv" / "bin" / "python")
FLAGS = {"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}}}


@pytest.fixture
def private_data_dir(tmp_path, demo_apps):
    (tmp_path / "inventory").mkdir()
    flags = tmp_path / "flags.json"
    flags.write_text(json.dumps(FLAGS))
    (tmp_path / "inventory" / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"app": {"hosts": {
        "app1": {"ansible_connection": "local", "ansible_python_interpreter": PY}}}}}}))
    yield tmp_path
    demo_apps.blue.reset()


def test_rollback_through_ansible_runner(private_data_dir, demo_apps, monkeypatch):
    # ansible-runner finds ansible-playbook on PATH, as on an execution node.
    monkeypatch.setenv("PATH", "%s:%s" % (ROOT / ".venv" / "bin", os.environ["PATH"]))
    env_name = "runner-" + uuid.uuid4().hex[:8]
    incidents = private_data_dir / "incidents"
    extravars = {
        "rollback_level": 1, "auto_confirm": True, "rollback_environment": env_name,
        "incident_title": "new checkout errors",
        # RTO counts from detection (without it the report has no recovery time).
        "incident_detected_at": (datetime.datetime.now(datetime.timezone.utc)
                                 - datetime.timedelta(seconds=30)).isoformat(), "incident_service": "core_api", "incident_dir": str(incidents),
        "rollback_feature_flag_flags": ["new-checkout"], "rollback_feature_flag_flagd_file": str(private_data_dir / "flags.json"),
        "rollback_verify_checks": [{"name": "blue", "type": "http", "url": demo_apps.blue.url + "/health"}],
        "rollback_verify_interval": 0.2, "rollback_verify_timeout": 60,
    }
    run = ansible_runner.run(
        private_data_dir=str(private_data_dir), playbook=str(PLAYBOOK), inventory=str(private_data_dir / "inventory"),
        extravars=extravars, ident="rollback", quiet=True, timeout=240,
        envvars={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
                 "ANSIBLE_CALLBACKS_ENABLED": "failsafe.recovery.journal", "ANSIBLE_ROLES_PATH": str(ROOT / "roles")})
    stdout = run.stdout.read() if run.stdout else ""
    assert (run.status, run.rc) == ("successful", 0), stdout[-4000:]

    events = list(run.events)
    ok_tasks = {e["event_data"].get("task") for e in events if e["event"] == "runner_on_ok"}
    for task in ("Choose the level", "Open the incident (takes the environment's lock)", "Re-verify with the health gate",
                 "Publish the result"):
        assert task in ok_tasks, sorted(t for t in ok_tasks if t)
    choose = next(e for e in events if e["event"] == "runner_on_ok" and e["event_data"]["task"] == "Choose the level")
    assert int(choose["event_data"]["res"]["ansible_facts"]["rollback_chosen_level"]) == 1
    assert events[-1]["event"] == "playbook_on_stats"

    # Stats: per host counts and the set_stats data AWX shows as the job's artifacts.
    assert run.stats["failures"] == {} and run.stats["ok"]["app1"] > 0
    artifacts = events[-1]["event_data"]["artifact_data"]
    assert artifacts["rollback_level"] == 1
    assert artifacts["rollback_result"] == "restored"
    assert float(artifacts["rollback_rto_seconds"]) >= 30

    # What ansible-runner keeps on disk (AWX stores the same).
    job_dir = private_data_dir / "artifacts" / "rollback"
    assert (job_dir / "rc").read_text().strip() == "0" and (job_dir / "status").read_text().strip() == "successful"
    assert len(list((job_dir / "job_events").glob("*.json"))) == len(events)

    # The files the rollback wrote: flag off, report (json + md), the incident journal, lock released.
    assert json.loads((private_data_dir / "flags.json").read_text())["flags"]["new-checkout"]["defaultVariant"] == "off"
    report_md = pathlib.Path(artifacts["rollback_report"])
    assert report_md.is_file() and report_md.is_relative_to(incidents)
    [report_json] = list(report_md.parent.glob("*.json"))
    report = json.loads(report_json.read_text())
    assert report["outcome"] == "restored" and int(report["level"]) == 1  # "1" (a string) when rollback_level is given
    assert {e["event"] for e in report["timeline"] if e["at"]} >= {"decided", "started", "restored", "verified"}
    journal = pathlib.Path(report["journal"]["path"])
    lines = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
    assert "restored" in [line.get("event") for line in lines]
    assert not (incidents / (env_name + ".lock")).exists()
