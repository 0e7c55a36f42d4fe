"""meta/runtime.yml action groups: one module_defaults block sets the connection for the group."""

import pathlib

import yaml

from sandbox.runner import ROOT, run_playbook


def test_postgres_group_defaults_reach_both_modules(postgres, tmp_path):
    play = [{
        "name": "module_defaults through the postgres action group",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": str(ROOT / ".venv" / "bin" / "python")},
        "module_defaults": {"group/failsafe.recovery.postgres": dict(postgres.module_params, login_db="postgres")},
        "tasks": [
            {"name": "create", "failsafe.recovery.pg_restore_point": {"name": "module_defaults_probe"}},
            {"name": "read back", "failsafe.recovery.pg_restore_point_info": {"name": "module_defaults_probe"}},
        ],
    }]
    path = pathlib.Path(tmp_path) / "play.yml"
    path.write_text(yaml.safe_dump(play))
    result = run_playbook(path, inventory="localhost,")
    assert result.rc == 0, result.stdout[-3000:]
    assert result.result("create")["changed"] is True
    info = result.result("read back")
    assert [p["name"] for p in info["points"]] == ["module_defaults_probe"]
    assert info["points"][0]["archived"] is True
    assert postgres.psql("SELECT count(*) FROM failsafe_recovery.restore_points WHERE name = 'module_defaults_probe'").strip() == "1"
