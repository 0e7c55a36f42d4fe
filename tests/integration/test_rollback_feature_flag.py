"""Role rollback_feature_flag (level 1, flagd file provider) for real on localhost: check mode
predicts without writing, the flags are switched off atomically with a backup, a second run changes
nothing, a health gate runs against the demo app, a demo app that evaluates the flag file heals once
the broken feature's flag evaluates off, and a failing gate puts the flag file back.
"""

import json

import pytest
import yaml

from sandbox import runner, services

PY = str(runner.ROOT / ".venv" / "bin" / "python")
PLAYBOOK = runner.ROOT / "playbooks" / "rollback_feature_flag.yml"

FLAGS = {
    "$schema": "https://flagd.dev/schema/v0/flags.json",
    "flags": {
        "new-checkout": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
        "banner": {"state": "ENABLED", "variants": {"shown": "yes", "hidden": "off"}, "defaultVariant": "shown",
                   "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "shown", None]}},
        "search-v2": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
    },
}


def task(res, name, host="app1"):
    """The result of the last task ``name`` (role tasks are reported as ``<role> : <name>``)."""
    found = [r for n, r in res.task_results(host) if n == name or n.endswith(" : " + name)]
    assert found, "task %r did not run; rc=%s\n%s" % (name, res.rc, res.stdout[-3000:])
    return found[-1]


@pytest.fixture
def site(tmp_path):
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"children": {"app": {"hosts": {"app1": {
        "ansible_connection": "local", "ansible_python_interpreter": PY}}}}}}))
    flag_file = tmp_path / "flags.json"
    flag_file.write_text(json.dumps(FLAGS))
    flag_file.chmod(0o640)
    return {"inv": inv, "file": flag_file, "dir": tmp_path}


def run(site, flags, check=False, **extra):
    extra_vars = {"rollback_feature_flag_flags": flags, "rollback_feature_flag_flagd_file": str(site["file"]),
                  "rollback_feature_flag_health_interval": 0.3, "rollback_feature_flag_health_timeout": 10}
    extra_vars.update(extra)
    return runner.run_playbook(PLAYBOOK, inventory=site["inv"], extra_vars=extra_vars, check=check)


def backups(site):
    return sorted(p for p in site["dir"].iterdir() if p.name.startswith("flags.json.") and p.name.endswith("~"))


def test_switch_off_check_mode_idempotence_and_gate(site, demo_apps):
    original = site["file"].read_bytes()
    gate = [{"name": "blue", "type": "http", "url": demo_apps.blue.url + "/health"}]

    check = run(site, ["new-checkout", "banner"], check=True, rollback_feature_flag_health_checks=gate)
    assert check.rc == 0, check.stdout[-3000:]
    assert check.stats["app1"]["changed"] == 1
    assert site["file"].read_bytes() == original

    res = run(site, ["new-checkout", "banner"], rollback_feature_flag_health_checks=gate)
    assert res.rc == 0, res.stdout[-3000:]
    doc = json.loads(site["file"].read_text())
    flags = doc["flags"]
    assert flags["new-checkout"]["defaultVariant"] == "off" and flags["new-checkout"]["state"] == "ENABLED"
    assert flags["banner"]["defaultVariant"] == "hidden" and "targeting" not in flags["banner"]
    assert flags["search-v2"] == FLAGS["flags"]["search-v2"], "flags not named must stay as they were"
    assert doc["$schema"] == FLAGS["$schema"]
    assert oct(site["file"].stat().st_mode & 0o777) == "0o640"
    assert task(res, "Run the health gate after the flag rollback")["verdict"] == "pass"
    published = task(res, "Publish what the flag rollback did")["ansible_facts"]["rollback_feature_flag_result"]
    assert published["switched_off"] == ["new-checkout", "banner"]
    kept = backups(site)
    assert len(kept) == 1 and kept[0].read_bytes() == original

    after = site["file"].read_bytes()
    again = run(site, ["new-checkout", "banner"])
    assert again.rc == 0, again.stdout[-3000:]
    assert again.stats["app1"]["changed"] == 0
    assert site["file"].read_bytes() == after
    assert len(backups(site)) == 1


def test_app_reading_the_flag_file_heals(site, services_dir):
    """The feature behind new-checkout fails every request while the flag is on; the gate asks the app
    itself how it evaluates the flag (GET /flags) and whether it serves again."""
    app = services.DemoApp(services_dir, "flagged", flags_file=site["file"],
                           flag_faults={"new-checkout": {"error_rate": 100}})
    try:
        app.up()
        assert services.http_get(app.url + "/")[0] == 500
        assert app.get_json("/flags")[1]["flags"]["new-checkout"] == {"value": True, "variant": "on",
                                                                      "reason": "STATIC"}
        res = run(site, ["new-checkout"], rollback_feature_flag_health_checks=[
            {"name": "app serves", "type": "http", "url": app.url + "/"},
            {"name": "app evaluates new-checkout off", "type": "http", "url": app.url + "/flags",
             "json_query": 'flags."new-checkout".value', "expected": False}])
        assert res.rc == 0, res.stdout[-3000:]
        assert task(res, "Run the health gate after the flag rollback")["verdict"] == "pass"
        flags = app.get_json("/flags")[1]["flags"]
        assert flags["new-checkout"] == {"value": False, "variant": "off", "reason": "STATIC"}
        assert flags["banner"]["reason"] == "TARGETING_MATCH_UNKNOWN", "flags not named stay as they were"
        assert {services.http_get(app.url + "/")[0] for dummy in range(20)} == {200}
    finally:
        app.stop()


def test_gate_failure_puts_flag_file_back(site, demo_apps):
    original = site["file"].read_bytes()
    demo_apps.blue.set_fault(fail_health=True)
    res = run(site, ["search-v2"], rollback_feature_flag_health_checks=[
        {"name": "blue", "type": "http", "url": demo_apps.blue.url + "/health"}])
    assert res.rc != 0
    msg = task(res, "Fail the flag rollback loudly")["msg"]
    assert "Run the health gate after the flag rollback" in msg and "put back" in msg
    assert site["file"].read_bytes() == original


def test_unknown_flag_is_refused_before_writing(site):
    original = site["file"].read_bytes()
    res = run(site, ["no-such-flag"])
    assert res.rc != 0
    assert "no-such-flag not in the flag file" in task(res, "Preflight | plan which flags to switch off")["msg"]
    assert site["file"].read_bytes() == original
    assert backups(site) == []
