"""inventories/example_production: structure, objectives, variable names the roles really read,
every playbook's --syntax-check, and rollback.yml's decision run (--check --tags decide) against it.

The hosts are examples and unreachable: only what needs no connection runs for real (the syntax
check and the decision tasks, which are controller-side set_fact/assert/debug)."""

import json
import subprocess

import pytest
import yaml

from sandbox import runner

INVENTORY = runner.ROOT / "inventories" / "example_production"
PLAYBOOKS = sorted((runner.ROOT / "playbooks").glob("*.yml"))
ROLE_PREFIXES = sorted((p.name for p in (runner.ROOT / "roles").iterdir() if p.is_dir()), key=len, reverse=True)


def _cmd(*args):
    return subprocess.run(list(args), cwd=str(runner.ROOT), env=runner.ansible_env(), capture_output=True, text=True,
                          timeout=300, check=False)


def _inventory():
    proc = _cmd("ansible-inventory", "-i", str(INVENTORY), "--list")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _group_vars():
    out = {}
    for path in sorted((INVENTORY / "group_vars").glob("*.yml")):
        out[path.stem] = yaml.safe_load(path.read_text()) or {}
    return out


def _role_variables(role):
    names = set(yaml.safe_load((runner.ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {})
    specs = runner.ROOT / "roles" / role / "meta" / "argument_specs.yml"
    if specs.exists():
        for entry in (yaml.safe_load(specs.read_text())["argument_specs"] or {}).values():
            names |= set(entry.get("options", {}))
    return names


def test_two_sites_with_groups_per_role():
    inv = _inventory()
    for site in ("site_eu_central", "site_us_east"):
        children = set(inv[site]["children"])
        assert {c.split("_")[-1] for c in children} == {"app", "db", "lb"}, children
        for child in children:
            assert inv[child]["hosts"], child
    for role in ("app", "db", "lb"):
        assert set(inv[role]["children"]) == {"eu_central_" + role, "us_east_" + role}
    assert inv["bastion"]["hosts"] == ["bastion.ops.example.com"]


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=lambda p: p.name)
def test_playbook_syntax_check(playbook):
    proc = _cmd("ansible-playbook", "-i", str(INVENTORY), str(playbook), "--syntax-check")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_objectives_are_the_runbooks():
    objectives = _group_vars()["all"]["incident_service_objectives"]
    rto = {name: o["rto_minutes"] for name, o in objectives.items()}
    rpo = {name: o["rpo_minutes"] for name, o in objectives.items()}
    assert (rto["core_api"], rto["database"], rto["file_storage"], rto["complete_system"]) == (5, 10, 15, 30)
    assert (rpo["core_api"], rpo["database"], rpo["file_storage"], rpo["logging"]) == (0, 5, 15, 30)
    assert _group_vars()["all"]["rollback_trigger"]["max_error_rate"] == 10
    ages = {s["name"]: s["max_age"] for s in _group_vars()["all"]["backup_verify_sets"]}
    assert ages["postgres-wal"] <= 5 * 60 and ages["uploads"] <= 15 * 60 and ages["logs"] <= 30 * 60


def test_every_role_variable_is_one_the_role_reads():
    unknown = []
    for group, data in _group_vars().items():
        for name in data:
            prefix = next((p for p in ROLE_PREFIXES if name.startswith(p + "_")), None)
            if prefix and name not in _role_variables(prefix):
                unknown.append("%s: %s" % (group, name))
    assert not unknown, "variables no role reads: %s" % unknown


def _secrets(node, found):
    """(key, value) of every password/secret/token key and every webhook URL, anywhere in ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            secret_key = any(word in str(key) for word in ("password", "secret", "token"))
            webhook_url = key == "url" and "name" in node and "type" not in node
            if secret_key or webhook_url:
                found.append((key, value))
            _secrets(value, found)
    elif isinstance(node, list):
        for item in node:
            _secrets(item, found)
    return found


def test_no_literal_secret_in_the_inventory():
    found = []
    for path in INVENTORY.rglob("*.yml"):
        _secrets(yaml.safe_load(path.read_text()), found)
    assert len(found) >= 7, found
    literal = [(k, v) for k, v in found if not str(v).startswith("{{ vault_")]
    assert not literal, literal


@pytest.mark.parametrize("inputs, level", [
    (["rollback_severity=critical", "rollback_impact_percent=100", "rollback_time_to_fix_minutes=90"], 3),
    (["rollback_severity=high", "rollback_impact_percent=60", "rollback_time_to_fix_minutes=45",
      "rollback_scope=config"], 2),
])
def test_rollback_decision_runs_in_check_mode_against_it(inputs, level):
    args = ["ansible-playbook", "-i", str(INVENTORY), str(runner.ROOT / "playbooks" / "rollback.yml"), "--check",
            "--tags", "decide", "-e", "rollback_hosts=app", "-e", "auto_confirm=true"]
    for item in inputs:
        args += ["-e", item]
    proc = subprocess.run(args, cwd=str(runner.ROOT), capture_output=True, text=True, timeout=300, check=False,
                          env=runner.ansible_env({"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    plays = json.loads(proc.stdout)["plays"]
    chosen = [t["hosts"] for t in plays[0]["tasks"] if t["task"]["name"] == "Choose the level"][0]
    assert list(chosen) == ["app1.eu-central.example.com"]  # run_once: decided once for the whole play
    assert {int(r["ansible_facts"]["rollback_chosen_level"]) for r in chosen.values()} == {level}


@pytest.mark.parametrize("tier, refused", [(2, False), (4, True)])
def test_dr_tier_check_runs_in_check_mode_against_it(tier, refused):
    args = ["ansible-playbook", "-i", str(INVENTORY), str(runner.ROOT / "playbooks" / "dr_failover.yml"), "--check",
            "--tags", "decide", "-e", "dr_hosts=bastion", "-e", "dr_tier=%d" % tier]
    proc = subprocess.run(args, cwd=str(runner.ROOT), capture_output=True, text=True, timeout=300, check=False,
                          env=runner.ansible_env({"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}))
    plays = json.loads(proc.stdout)["plays"]
    checked = [t["hosts"] for t in plays[0]["tasks"] if t["task"]["name"] == "Check the tier"][0]
    assert list(checked) == ["bastion.ops.example.com"]
    assert (proc.returncode != 0) is refused, proc.stdout[-3000:]
    assert bool(checked["bastion.ops.example.com"].get("failed")) is refused
