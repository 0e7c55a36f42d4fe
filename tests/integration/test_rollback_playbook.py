"""playbooks/rollback.yml for real on localhost: decision matrix, level 1 (flagd file) through the
incident role, the health gate re-check, the report, the lock against a concurrent run, approval."""

import concurrent.futures
import json
import pathlib
import subprocess
import time
import uuid

import pytest
import yaml

from sandbox import runner

PLAYBOOK = runner.ROOT / "playbooks" / "rollback.yml"
PY = str(runner.ROOT / ".venv" / "bin" / "python")
SECRET = "s3cr3t-" + uuid.uuid4().hex
FLAGS = {"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}}}


@pytest.fixture
def site(tmp_path, demo_apps):
    env = "it-" + uuid.uuid4().hex[:8]
    flag_file = tmp_path / "flags.json"
    flag_file.write_text(json.dumps(FLAGS))
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {
        "vars": {
            "rollback_environment": env,
            "incident_dir": str(tmp_path / "incidents"),
            "incident_title": "new checkout errors",
            "incident_service": "core_api",
            # a credential in the inventory: a dead webhook whose URL carries a token (never blocks, never logged)
            "incident_webhooks": [{"name": "ops", "url": "http://127.0.0.1:9/hook?token=" + SECRET}],
            "incident_notify_timeout": 1,
            "rollback_feature_flag_flags": ["new-checkout"],
            "rollback_feature_flag_flagd_file": str(flag_file),
            "rollback_verify_checks": [{"name": "blue", "type": "http", "url": demo_apps.blue.url + "/health"}],
            "rollback_verify_interval": 0.2,
            "rollback_verify_timeout": 60,
        },
        "children": {"app": {"hosts": {"app1": {"ansible_connection": "local", "ansible_python_interpreter": PY}}}}}}))
    yield {"inv": inv, "dir": tmp_path, "env": env, "flags": flag_file}
    demo_apps.blue.reset()


def _run(site, **extra):
    return runner.run_playbook(PLAYBOOK, inventory=site["inv"], extra_vars=extra,
                               env={"ANSIBLE_CALLBACKS_ENABLED": "failsafe.recovery.journal"}, timeout=300)


def _task(res, name):
    found = [r for n, r in res.task_results("app1") if n == name or n.endswith(" : " + name)]
    assert found, "task %r did not run; rc=%s\n%s" % (name, res.rc, res.stdout[-3000:])
    return found[-1]


def _reports(site):
    return sorted((site["dir"] / "incidents" / "reports").glob("*.json"))


def test_matrix_level_1_rolls_back_with_report_and_no_secret(site):
    res = _run(site, auto_confirm=True, rollback_severity="medium", rollback_impact_percent=20,
               rollback_time_to_fix_minutes=20, rollback_scope="flag")
    assert res.rc == 0, res.stdout[-3000:]
    assert int(_task(res, "Choose the level")["ansible_facts"]["rollback_chosen_level"]) == 1
    assert json.loads(site["flags"].read_text())["flags"]["new-checkout"]["defaultVariant"] == "off"
    assert _task(res, "Re-verify with the health gate")["verdict"] == "pass"
    [report_json] = _reports(site)
    report = json.loads(report_json.read_text())
    assert report["outcome"] == "restored" and str(report["level"]) == "1"
    assert {e["event"] for e in report["timeline"] if e["at"]} >= {"decided", "started", "restored", "verified"}
    stats = res.data.get("custom_stats", {}).get("_run", {}) or res.data.get("global_custom_stats", {})
    if stats:
        assert stats["rollback_level"] == 1 and stats["rollback_report"].endswith(".md")
    journal = pathlib.Path(report["journal"]["path"])
    for path in [journal] + list(report_json.parent.iterdir()):
        assert SECRET not in path.read_text(errors="replace"), path
    assert not (site["dir"] / "incidents" / (site["env"] + ".lock")).exists()


@pytest.mark.parametrize("inputs, level", [
    ({"rollback_severity": "critical", "rollback_impact_percent": 100, "rollback_time_to_fix_minutes": 90}, 3),
    ({"rollback_severity": "critical", "rollback_impact_percent": 100, "rollback_time_to_fix_minutes": 90,
      "rollback_scope": "database"}, 4),
    ({"rollback_severity": "high", "rollback_impact_percent": 60, "rollback_time_to_fix_minutes": 45,
      "rollback_scope": "full"}, 3),
    ({"rollback_severity": "low", "rollback_impact_percent": 5, "rollback_time_to_fix_minutes": 10}, 0),
    ({"rollback_severity": "low", "rollback_level": 2}, 2),
])
def test_decision_matrix(site, inputs, level):
    res = runner.run_playbook(PLAYBOOK, inventory=site["inv"], extra_vars=dict(inputs, auto_confirm=True),
                              extra_args=["--tags", "decide"], timeout=120)
    assert res.rc == 0, res.stdout[-3000:]
    assert int(_task(res, "Choose the level")["ansible_facts"]["rollback_chosen_level"]) == level
    if level == 0:
        assert res.rc == 0 and "fix forward" in _task(res, "Fix forward (the decision matrix does not call for a rollback)")["msg"]
        assert not (site["dir"] / "incidents").exists()
    # the decision alone changes nothing
    assert json.loads(site["flags"].read_text()) == FLAGS


def test_second_concurrent_rollback_is_refused(site, demo_apps):
    demo_apps.blue.set_fault(fail_health=True)  # holds the first run in its verify gate
    lock = site["dir"] / "incidents" / (site["env"] + ".lock")
    args = dict(auto_confirm=True, rollback_level=1)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(_run, site, **args)
        deadline = time.monotonic() + 120
        while not lock.exists() and time.monotonic() < deadline and not first.done():
            time.sleep(0.2)
        assert lock.exists(), "the first run never took the lock"
        second = _run(site, **args)
        demo_apps.blue.reset()
        first_res = first.result(timeout=300)
    assert second.rc != 0
    refusal = _task(second, "Take the incident lock for the environment")
    holder = json.loads(lock.read_text()) if lock.exists() else None
    assert refusal["failed"] and "is held by" in refusal["msg"] and "since" in refusal["msg"]
    assert first_res.rc == 0, first_res.stdout[-3000:]
    assert holder is None  # released by the first run
    assert len(_reports(site)) == 1  # the refused run wrote no report


def test_not_approved_changes_nothing(site):
    proc = subprocess.run(["ansible-playbook", "-i", str(site["inv"]), str(PLAYBOOK), "-e", "rollback_level=1"],
                          cwd=str(runner.ROOT), env=runner.ansible_env(), input="no\n", capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert "not approved" in proc.stdout + proc.stderr
    assert json.loads(site["flags"].read_text()) == FLAGS
    assert not (site["dir"] / "incidents").exists()


def test_unknown_level_is_refused_before_the_lock(site):
    res = runner.run_playbook(PLAYBOOK, inventory=site["inv"], extra_vars={"auto_confirm": True, "rollback_level": 6},
                              timeout=120)
    assert res.rc != 0
    assert "rollback_level must be 1-5 (got '6')" in _task(res, "Check the level")["msg"]
    assert not (site["dir"] / "incidents").exists()
    assert json.loads(site["flags"].read_text()) == FLAGS
