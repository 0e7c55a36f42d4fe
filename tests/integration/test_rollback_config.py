"""Role rollback_config (level 2) for real: a demo app reading a JSON config and a real HAProxy
configuration validated by ``haproxy -c -f``, snapshotted by playbooks/pre_deploy.yml and restored by
playbooks/rollback_config.yml on localhost. Failure injection: an invalid snapshot is refused by
validation, and a snapshot that makes the app unhealthy is undone after the health gate fails.
"""

import json
import pathlib
import subprocess

import pytest
import yaml

from sandbox import runner, services

PY = str(runner.ROOT / ".venv" / "bin" / "python")
PRE_DEPLOY = runner.ROOT / "playbooks" / "pre_deploy.yml"
ROLLBACK = runner.ROOT / "playbooks" / "rollback_config.yml"

HAPROXY_CFG = """global
    maxconn {maxconn}
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server app 127.0.0.1:{port} check
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """A demo app of this test module only (its config file is what the rollback restores)."""
    demo = services.DemoApp(tmp_path_factory.mktemp("cfgapp"), "cfgapp", "v1")
    demo.up()
    yield demo
    demo.stop()


@pytest.fixture
def site(tmp_path, app):
    """Inventory (host app1 on localhost), records dir and the two config files of the host."""
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"children": {"app": {"hosts": {"app1": {
        "ansible_connection": "local", "ansible_python_interpreter": PY}}}}}}))
    haproxy_cfg = tmp_path / "etc" / "haproxy.cfg"
    haproxy_cfg.parent.mkdir()
    return {"inv": inv, "records": tmp_path / "deployments", "app_cfg": pathlib.Path(app.config_file),
            "haproxy_cfg": haproxy_cfg}


def task(res, name, host="app1"):
    """The result of the last task ``name`` (role tasks are reported as ``<role> : <name>``)."""
    found = [r for n, r in res.task_results(host) if n == name or n.endswith(" : " + name)]
    assert found, "task %r did not run; rc=%s\n%s" % (name, res.rc, res.stdout[-3000:])
    return found[-1]


def write_config(app, path, data):
    pathlib.Path(path).write_text(json.dumps(data) + "\n")
    app.reload()
    services.wait_until(lambda: app.current_version() == data["version"], 10, "demo app at " + data["version"])


def pre_deploy(site, release):
    res = runner.run_playbook(PRE_DEPLOY, inventory=site["inv"], extra_vars={
        "deploy_snapshot_release": release,
        "deploy_snapshot_records_dir": str(site["records"]),
        "deploy_snapshot_config_files": [str(site["app_cfg"]), str(site["haproxy_cfg"])],
    })
    assert res.rc == 0, res.stdout[-3000:]
    return res


def rollback(site, app, check=False, health=True):
    extra = {
        "rollback_config_records_dir": str(site["records"]),
        "rollback_config_validate": {str(site["haproxy_cfg"]): "haproxy -c -f %s",
                                     str(site["app_cfg"]): PY + " -m json.tool %s"},
        "rollback_config_reload_command": "kill -HUP %d" % app.pid,
        "rollback_config_health_interval": 0.3,
        "rollback_config_health_timeout": 15,
    }
    if health:
        extra["rollback_config_health_checks"] = [{"name": "cfgapp", "type": "http", "url": app.url + "/health"}]
    return runner.run_playbook(ROLLBACK, inventory=site["inv"], extra_vars=extra, check=check)


def test_restore_previous_config_check_mode_and_idempotence(site, app):
    write_config(app, site["app_cfg"], {"version": "v1"})
    site["haproxy_cfg"].write_text(HAPROXY_CFG.format(maxconn=100, port=app.port))
    snapshot_app, snapshot_haproxy = site["app_cfg"].read_bytes(), site["haproxy_cfg"].read_bytes()
    pre_deploy(site, "v2")

    # the deploy: new config for both
    write_config(app, site["app_cfg"], {"version": "v2", "error_rate": 50})
    site["haproxy_cfg"].write_text(HAPROXY_CFG.format(maxconn=500, port=app.port))
    deployed_app, deployed_haproxy = site["app_cfg"].read_bytes(), site["haproxy_cfg"].read_bytes()

    check = rollback(site, app, check=True)
    assert check.rc == 0, check.stdout[-3000:]
    assert check.stats["app1"]["changed"] >= 1
    assert site["app_cfg"].read_bytes() == deployed_app
    assert site["haproxy_cfg"].read_bytes() == deployed_haproxy
    assert app.current_version() == "v2"

    res = rollback(site, app)
    assert res.rc == 0, res.stdout[-3000:]
    assert site["app_cfg"].read_bytes() == snapshot_app
    assert site["haproxy_cfg"].read_bytes() == snapshot_haproxy
    assert app.current_version() == "v1"
    assert task(res, "Run the health gate after the configuration rollback")["verdict"] == "pass"
    reload_task = task(res, "Run the reload command after the configuration rollback")
    assert reload_task["changed"] is True
    published = task(res, "Publish what the configuration rollback did")["ansible_facts"]["rollback_config_result"]
    assert sorted(published["changed_files"]) == sorted([str(site["app_cfg"]), str(site["haproxy_cfg"])])

    again = rollback(site, app)
    assert again.rc == 0, again.stdout[-3000:]
    assert again.stats["app1"]["changed"] == 0
    assert site["app_cfg"].read_bytes() == snapshot_app


def test_invalid_snapshot_is_refused_and_live_config_kept(site, app):
    # the recorded configuration is broken: HAProxy refuses it
    write_config(app, site["app_cfg"], {"version": "v7"})
    site["haproxy_cfg"].write_text("global\n    maxconn not-a-number\nfrontend\n")
    pre_deploy(site, "v8")

    write_config(app, site["app_cfg"], {"version": "v8"})
    site["haproxy_cfg"].write_text(HAPROXY_CFG.format(maxconn=300, port=app.port))
    live_app, live_haproxy = site["app_cfg"].read_bytes(), site["haproxy_cfg"].read_bytes()

    res = rollback(site, app, health=False)
    assert res.rc != 0
    msg = task(res, "Fail the configuration rollback loudly")["msg"]
    assert "Restore the recorded configuration files" in msg
    assert "put back" in msg
    # the app config (restored first, before haproxy.cfg failed validation) is back as it was
    assert site["app_cfg"].read_bytes() == live_app
    assert site["haproxy_cfg"].read_bytes() == live_haproxy
    assert app.current_version() == "v8"
    assert res.stats["app1"]["rescued"] == 1


def test_gate_failure_puts_previous_config_back(site, app):
    # the recorded configuration makes the app fail its health check
    write_config(app, site["app_cfg"], {"version": "v4", "fail_health": True})
    site["haproxy_cfg"].write_text(HAPROXY_CFG.format(maxconn=100, port=app.port))
    pre_deploy(site, "v5")

    write_config(app, site["app_cfg"], {"version": "v5"})
    live_app = site["app_cfg"].read_bytes()

    res = rollback(site, app)
    assert res.rc != 0
    gate = task(res, "Run the health gate after the configuration rollback")
    assert gate["failed"] is True and gate["verdict"] == "fail"
    msg = task(res, "Fail the configuration rollback loudly")["msg"]
    assert "Run the health gate after the configuration rollback" in msg
    assert site["app_cfg"].read_bytes() == live_app
    services.wait_until(lambda: app.get_json("/health")[0] == 200, 10, "demo app healthy again")
    assert app.current_version() == "v5"


def test_restore_from_git_revision(site, app, tmp_path):
    repo = tmp_path / "config-repo"
    repo.mkdir()

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
                              + list(args), check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    (repo / "app").mkdir()
    (repo / "app" / "config.json").write_text(json.dumps({"version": "g1"}) + "\n")
    git("add", "-A")
    git("commit", "-qm", "g1")
    good = git("rev-parse", "HEAD")
    (repo / "app" / "config.json").write_text(json.dumps({"version": "g2", "error_rate": 40}) + "\n")
    git("commit", "-qam", "g2")

    write_config(app, site["app_cfg"], {"version": "g2", "error_rate": 40})
    extra = {
        "rollback_config_source": "git",
        "rollback_config_records_dir": str(site["records"]),
        "rollback_config_git_repo": str(repo),
        "rollback_config_git_revision": good,
        "rollback_config_git_files": {str(site["app_cfg"]): "app/config.json"},
        "rollback_config_validate": {str(site["app_cfg"]): PY + " -m json.tool %s"},
        "rollback_config_reload_command": "kill -HUP %d" % app.pid,
        "rollback_config_health_checks": [{"name": "cfgapp", "type": "http", "url": app.url + "/health",
                                           "json_query": "version", "expected": "g1"}],
        "rollback_config_health_interval": 0.3,
        "rollback_config_health_timeout": 15,
    }
    res = runner.run_playbook(ROLLBACK, inventory=site["inv"], extra_vars=extra)
    assert res.rc == 0, res.stdout[-3000:]
    assert json.loads(site["app_cfg"].read_text()) == {"version": "g1"}
    assert app.current_version() == "g1"
    again = runner.run_playbook(ROLLBACK, inventory=site["inv"], extra_vars=extra)
    assert again.rc == 0, again.stdout[-3000:]
    assert again.stats["app1"]["changed"] == 0
