"""AWX configuration as code (playbooks/awx_configure.yml, playbooks/awx/): the survey specs follow AWX's
survey rules, every template points at a playbook that exists, every survey and preset variable is read by
that playbook or the roles it runs, and the workflow's own detect/report playbooks run for real.

No AWX runs here: the awx.awx modules need a reachable controller even in check mode.
"""

import json
import re
import subprocess

import pytest
import yaml

from sandbox.runner import ROOT, ansible_env, run_playbook

AWX_DIR = ROOT / "playbooks" / "awx"
CONFIG = yaml.safe_load((AWX_DIR / "config.yml").read_text())
SURVEYS = {p.name: json.loads(p.read_text()) for p in sorted((AWX_DIR / "surveys").glob("*.json"))}
TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
TEMPLATES = CONFIG["awx_configure_job_templates"]
PENDING = CONFIG["awx_configure_pending_job_templates"]


def _choices(question):
    choices = question["choices"]
    return choices.split("\n") if isinstance(choices, str) else choices


def survey_errors(survey):
    """What AWX's survey_spec endpoint would reject (and what our playbooks rely on)."""
    errors = []
    for key in ("name", "description", "spec"):
        if key not in survey:
            errors.append("missing %s" % key)
    spec = survey.get("spec")
    if not isinstance(spec, list) or not spec:
        return errors + ["spec must be a non-empty list"]
    seen = set()
    for q in spec:
        where = q.get("variable", "?")
        for key in ("type", "question_name", "variable", "required"):
            if key not in q:
                errors.append("%s: missing %s" % (where, key))
        if q.get("type") not in TYPES:
            errors.append("%s: type %r" % (where, q.get("type")))
        if not re.match(r"^[a-zA-Z_][a-zA-Z0-9_]*$", q.get("variable", "")):
            errors.append("%s: not a valid variable name" % where)
        if where in seen:
            errors.append("%s: duplicate variable" % where)
        seen.add(where)
        if not isinstance(q.get("required"), bool):
            errors.append("%s: required must be a boolean" % where)
        default = q.get("default", "")
        if q.get("type") in ("multiplechoice", "multiselect"):
            choices = _choices(q) if "choices" in q else []
            if not choices or not all(isinstance(c, str) and c for c in choices):
                errors.append("%s: choices must be non-empty strings" % where)
            picked = [d for d in default.split("\n") if d] if q["type"] == "multiselect" else [default] if default else []
            if q["type"] == "multiplechoice" and len(picked) > 1:
                errors.append("%s: one default only" % where)
            for value in picked:
                if value not in choices:
                    errors.append("%s: default %r not in choices" % (where, value))
            if q.get("required") and not picked:
                errors.append("%s: required choice without a default" % where)
        if q.get("type") in ("text", "textarea", "password"):
            low, high = q.get("min", 0), q.get("max", 1024)
            if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high):
                errors.append("%s: min/max" % where)
            elif default and not low <= len(default) <= high:
                errors.append("%s: default length outside min/max" % where)
        if q.get("type") in ("integer", "float") and default != "":
            if not q.get("min", default) <= default <= q.get("max", default):
                errors.append("%s: default outside min/max" % where)
    return errors


def _consumers(playbook):
    """Text of the playbook, the playbooks it imports and every role of this collection it names."""
    text = (ROOT / playbook).read_text()
    roles = [p for p in (ROOT / "roles").iterdir() if p.is_dir() and re.search(r"\b%s\b" % p.name, text)]
    parts = [text] + [f.read_text() for role in roles for f in role.rglob("*") if f.is_file() and f.suffix in (".yml", ".j2")]
    return "\n".join(parts), [r.name for r in roles]


def _template_survey(template):
    spec = SURVEYS[template["survey"]]["spec"]
    wanted = template.get("survey_variables", [q["variable"] for q in spec])
    return [q for q in spec if q["variable"] in wanted]


@pytest.mark.parametrize("name", sorted(SURVEYS))
def test_survey_follows_awx_rules(name):
    assert survey_errors(SURVEYS[name]) == []


def test_the_validator_rejects_what_awx_rejects():
    good = {"type": "multiplechoice", "question_name": "q", "variable": "v", "required": True, "choices": ["a"], "default": "a"}
    assert survey_errors({"name": "s", "description": "", "spec": [good]}) == []
    bad = [dict(good, default="b"), dict(good, type="dropdown"), dict(good, variable="not-a-var"), {"type": "text"},
           dict(good, type="multiselect", default="a\nz"), dict(good, required="yes")]
    for question in bad:
        assert survey_errors({"name": "s", "description": "", "spec": [question]}), question
    assert survey_errors({"name": "s", "description": "", "spec": [good, good]}) == ["v: duplicate variable"]
    assert survey_errors({"description": "", "spec": []})


def test_rollback_survey_asks_level_reason_target_and_confirmation():
    variables = {q["variable"] for q in SURVEYS["rollback.json"]["spec"]}
    assert {"rollback_level", "incident_title", "auto_confirm", "rollback_code_deployment_id",
            "rollback_database_target_name"} <= variables
    level = next(q for q in SURVEYS["rollback.json"]["spec"] if q["variable"] == "rollback_level")
    assert _choices(level) == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("template", TEMPLATES, ids=[t["name"] for t in TEMPLATES])
def test_job_template_playbook_exists_and_reads_every_variable(template):
    assert (ROOT / template["playbook"]).is_file(), template["playbook"]
    text, roles = _consumers(template["playbook"])
    variables = list(template.get("extra_vars", {}))
    if "survey" in template:
        assert set(template.get("survey_variables", [])) <= {q["variable"] for q in SURVEYS[template["survey"]]["spec"]}
        survey = _template_survey(template)
        assert survey and survey_errors(dict(SURVEYS[template["survey"]], spec=survey)) == []
        variables += [q["variable"] for q in survey]
    unread = [v for v in variables if not re.search(r"\b%s\b" % v, text)]
    assert not unread, "%s (roles searched: %s) never reads %s" % (template["playbook"], roles, unread)


def test_per_level_templates_preset_their_level_and_drop_the_level_question():
    levels = {t["extra_vars"]["rollback_level"]: t for t in TEMPLATES + PENDING if "rollback_level" in t.get("extra_vars", {})}
    assert sorted(levels) == [1, 2, 3, 4, 5]
    for template in levels.values():
        assert "rollback_level" not in [q["variable"] for q in _template_survey(template)]
        assert "auto_confirm" in [q["variable"] for q in _template_survey(template)]


def test_pending_templates_say_why_and_are_skipped_by_default():
    playbook = yaml.safe_load((ROOT / "playbooks" / "awx_configure.yml").read_text())[0]
    assert playbook["vars"]["awx_configure_include_pending"] is False
    task = next(t for t in playbook["tasks"] if t.get("loop") == "{{ awx_configure_pending_job_templates }}")
    assert task["when"] == "awx_configure_include_pending | bool"
    for template in PENDING:
        assert template["pending"]
        missing_playbook = not (ROOT / template["playbook"]).is_file()
        missing_role = "rollback_full_system" in template["pending"] and not (ROOT / "roles" / "rollback_full_system").is_dir()
        assert missing_playbook or missing_role, "%s is no longer pending: move it to awx_configure_job_templates" % template["name"]


def test_workflow_schedules_and_teams_reference_what_exists():
    playbook = yaml.safe_load((ROOT / "playbooks" / "awx_configure.yml").read_text())[0]
    names = {t["name"] for t in TEMPLATES}
    workflow_task = next(t for t in playbook["tasks"] if "awx.awx.workflow_job_template" in t)
    nodes = workflow_task["awx.awx.workflow_job_template"]["workflow_nodes"]
    ids = [n["identifier"] for n in nodes]
    assert ids == ["detect", "approve", "rollback", "verify", "report"]
    for node in nodes:
        ujt = node["unified_job_template"]
        assert ujt["type"] == "workflow_approval" or ujt["name"] in names, ujt
        for edges in node.get("related", {}).values():
            assert all(e["identifier"] in ids for e in edges)
    workflow = CONFIG["awx_configure_workflow"]
    assert set(workflow["survey_variables"]) <= {q["variable"] for q in SURVEYS[workflow["survey"]]["spec"]}
    assert workflow["extra_vars"] == {"auto_confirm": True}

    schedules = {s["job_template"]: s["rrule"] for s in CONFIG["awx_configure_schedules"]}
    assert "FREQ=DAILY" in schedules["Backup verification"] and "FREQ=MONTHLY" in schedules["Rollback drill"]

    for team in CONFIG["awx_configure_teams"]:
        assert set(team.get("execute", [])) <= names, team["name"]
        for key in ("execute_workflows", "approve_workflows"):
            assert set(team.get(key, [])) <= {workflow["name"]}
    # Only directors and infrastructure leads may launch the data-losing level 4.
    level4 = {t["name"] for t in CONFIG["awx_configure_teams"] if "Rollback level 4: database" in t.get("execute", [])}
    assert level4 == {"Technical Directors", "Infrastructure Leads"}


def test_awx_playbooks_pass_syntax_check():
    paths = [ROOT / "playbooks" / "awx_configure.yml"] + [AWX_DIR / n for n in ("detect.yml", "verify.yml", "report.yml")]
    proc = subprocess.run(["ansible-playbook", "--syntax-check"] + [str(p) for p in paths], cwd=str(ROOT), env=ansible_env(),
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_detect_and_report_nodes_run_and_publish_stats(demo_apps):
    """The workflow's detect node against a faulty app publishes what fired; report summarises the artifacts."""
    demo_apps.green.set_fault(error_rate=100)
    checks = [{"name": "green", "type": "http", "url": demo_apps.green.url + "/"}]
    env = {"ANSIBLE_SHOW_CUSTOM_STATS": "true", "ANSIBLE_PYTHON_INTERPRETER": str(ROOT / ".venv" / "bin" / "python")}
    detect = run_playbook(AWX_DIR / "detect.yml", inventory="localhost,", env=env, extra_args=["-c", "local"],
                          extra_vars={"detect_checks": checks, "detect_timeout": 20, "detect_interval": 0.2, "detect_max_error_rate": 50})
    assert detect.rc == 0, detect.stdout[-3000:] + detect.stderr[-2000:]
    stats = detect.data["global_custom_stats"]
    assert stats["detect_rollback_recommended"] is True
    assert "green" in [t["check"] for t in stats["detect_triggers_fired"]]

    demo_apps.green.reset()
    healthy = run_playbook(AWX_DIR / "detect.yml", inventory="localhost,", env=env, extra_args=["-c", "local"],
                           extra_vars={"detect_checks": checks, "detect_timeout": 20, "detect_interval": 0.2, "detect_max_error_rate": 50})
    assert healthy.rc != 0
    assert "nothing to roll back" in healthy.result("Stop the workflow when no trigger fired")["msg"]

    report = run_playbook(AWX_DIR / "report.yml", inventory="localhost,", env=env, extra_args=["-c", "local"],
                          extra_vars={"rollback_level": 3, "rollback_result": "recovered", "detect_triggers_fired": stats["detect_triggers_fired"]})
    assert report.rc == 0, report.stdout[-3000:]
    summary = report.data["global_custom_stats"]["workflow_summary"]
    assert summary["rollback_result"] == "recovered" and summary["verify_passed"] is None
    assert summary["triggers_fired"] == stats["detect_triggers_fired"]


def test_level_playbook_publishes_results_by_host(tmp_path):
    """rollback_feature_flag.yml on two hosts: set_stats publishes each host's result for AWX."""
    flags = tmp_path / "flags.json"
    flags.write_text(json.dumps({"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": True, "off": False},
                                                            "defaultVariant": "on"}}}))
    res = run_playbook(ROOT / "playbooks" / "rollback_feature_flag.yml", inventory="app1,app2,", extra_args=["-c", "local"],
                       env={"ANSIBLE_SHOW_CUSTOM_STATS": "true", "ANSIBLE_PYTHON_INTERPRETER": str(ROOT / ".venv" / "bin" / "python")},
                       extra_vars={"target_hosts": "all", "rollback_feature_flag_flags": ["new-checkout"],
                                   "rollback_feature_flag_flagd_file": str(flags)})
    assert res.rc == 0, res.stdout[-3000:]
    results = res.data["global_custom_stats"]["rollback_feature_flag_results"]
    assert sorted(results) == ["app1", "app2"]
    assert all(r["file"] == str(flags) and r["off_variants"] == {"new-checkout": "off"} for r in results.values())
    assert json.loads(flags.read_text())["flags"]["new-checkout"]["defaultVariant"] == "off"
