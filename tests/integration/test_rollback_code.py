"""Role rollback_code (level 3) for real: several inventory hosts on localhost, each with its own
ansistrano-style releases directory and a demo app started from ``<host dir>/current``. The role moves
``current`` back and restarts (SIGHUP) the app, batch by batch with a health gate per batch; the
blue_green strategy moves the HAProxy fixture's traffic back. Failure injection: a rollback target
whose health fails is undone for its whole batch, the run fails naming the step and the later
batches are not touched.
"""

import json
import os
import pathlib

import pytest
import yaml

from sandbox import runner, services

PY = str(runner.ROOT / ".venv" / "bin" / "python")
PRE_DEPLOY = runner.ROOT / "playbooks" / "pre_deploy.yml"
ROLLBACK = runner.ROOT / "playbooks" / "rollback_code.yml"


class Fleet:
    """``count`` hosts app1..appN: a releases dir (v1 good, v2 bad) and a demo app on ``current``."""

    def __init__(self, base, count, current="v2", releases=None):
        self.base = pathlib.Path(base)
        self.hosts = {}
        self.apps = {}
        for num in range(1, count + 1):
            name = "app%d" % num
            root = self.base / name
            services.layout_releases(root, releases=releases, current=current)
            self.hosts[name] = root
        self.inventory = self.base / "inventory.yml"

    def start(self):
        for name, root in self.hosts.items():
            app = services.DemoApp(self.base / "run", name, release_dir=root / "current")
            app.up()
            self.apps[name] = app
        self.write_inventory()
        return self

    def write_inventory(self, extra=None):
        hosts = {}
        for name, root in self.hosts.items():
            app = self.apps.get(name)
            hosts[name] = {
                "ansible_connection": "local", "ansible_python_interpreter": PY, "ansible_pipelining": True,
                "rollback_code_deploy_to": str(root),
                "rollback_code_restart_command": "kill -HUP %d" % app.running_pid() if app else "true",
                "rollback_code_health_checks": [{"name": name, "type": "http", "url": app.url + "/health"}] if app else [],
            }
            hosts[name].update((extra or {}).get(name, {}))
        self.inventory.write_text(yaml.safe_dump({"all": {"children": {"app": {"hosts": hosts}}}}))

    def stop(self):
        for app in self.apps.values():
            app.stop()

    def link(self, name):
        return os.readlink(self.hosts[name] / "current")

    def serving(self, name):
        return self.apps[name].get_json("/health")[1]["version"]

    def wait_serving(self, name, version):
        services.wait_until(lambda: self.serving(name) == version, 10, "%s serving %s" % (name, version))


@pytest.fixture
def fleet_factory(tmp_path):
    made = []

    def make(count, **kwargs):
        fleet = Fleet(tmp_path, count, **kwargs)
        made.append(fleet)
        return fleet
    yield make
    for fleet in made:
        fleet.stop()


def rollback(fleet, check=False, **extra):
    extra_vars = {"rollback_code_records_dir": str(fleet.base / "deployments"),
                  "rollback_code_health_interval": 0.2, "rollback_code_health_timeout": 10}
    extra_vars.update(extra)
    return runner.run_playbook(ROLLBACK, inventory=fleet.inventory, extra_vars=extra_vars, check=check)


def task(res, name, host):
    found = [r for n, r in res.task_results(host) if n == name or n.endswith(" : " + name)]
    assert found, "task %r did not run on %s; rc=%s\n%s" % (name, host, res.rc, res.stdout[-3000:])
    return found[-1]


def test_rollback_to_recorded_previous_release_check_mode_and_idempotence(fleet_factory):
    fleet = fleet_factory(2, current="v1").start()
    # the deploy of v2, recorded by pre_deploy first
    res = runner.run_playbook(PRE_DEPLOY, inventory=fleet.inventory, extra_vars={
        "deploy_snapshot_release": "v2", "deploy_snapshot_previous_release": "v1",
        "deploy_snapshot_records_dir": str(fleet.base / "deployments")})
    assert res.rc == 0, res.stdout[-3000:]
    for name, root in fleet.hosts.items():
        services.switch_current(root, "v2")
        fleet.wait_serving(name, "v2")

    check = rollback(fleet, check=True, rollback_code_batch_size=2)
    assert check.rc == 0, check.stdout[-3000:]
    for name in fleet.hosts:
        assert check.stats[name]["changed"] >= 1
        assert fleet.link(name) == "releases/v2"
        assert fleet.serving(name) == "v2"

    res = rollback(fleet, rollback_code_batch_size=1, rollback_code_batch_delay=1)
    assert res.rc == 0, res.stdout[-3000:]
    for name, root in fleet.hosts.items():
        assert fleet.link(name) == "releases/v1"
        assert fleet.serving(name) == "v1"
        assert (root / "releases" / "v2" / "release.json").is_file(), "the release rolled back from is kept"
        assert task(res, "Run the health gate of this host", name)["verdict"] == "pass"
        published = task(res, "Publish what the code rollback did", name)["ansible_facts"]["rollback_code_result"]
        assert published["release_before"] == "v2" and published["release_target"] == "v1"
        assert published["target_source"].startswith("deployment ")
    # one host per batch: the wait runs before the second batch only
    assert task(res, "Wait between batches", "app1").get("skipped") is True
    assert task(res, "Wait between batches", "app2").get("skipped") is not True

    again = rollback(fleet, rollback_code_batch_size=2)
    assert again.rc == 0, again.stdout[-3000:]
    for name in fleet.hosts:
        assert again.stats[name]["changed"] == 0, again.stdout[-3000:]
        assert fleet.link(name) == "releases/v1"


def test_broken_target_restores_the_batch_and_stops_the_fleet(fleet_factory):
    # app2's v1 fails its health check: batch 1 (app1, app2) must end up on v2 again, app3 untouched
    fleet = fleet_factory(3, current="v2")
    services.layout_release(fleet.hosts["app2"] / "releases", "v1", fail_health=True)
    fleet.start()
    res = rollback(fleet, rollback_code_batch_size=2, rollback_code_release="v1", rollback_code_health_timeout=3)
    assert res.rc != 0, res.stdout[-3000:]
    for name in fleet.hosts:
        assert fleet.link(name) == "releases/v2", name
    for name in ("app1", "app2"):
        fleet.wait_serving(name, "v2")
        failed = task(res, "Fail the code rollback loudly", name)
        assert failed["failed"] is True
        assert "failed at step 'Retry | run the health gate of this host again' on app2" in failed["msg"], failed["msg"]
        restored = task(res, "Put the pre-rollback release back", name)
        assert restored["changed"] is True
    # app2 was retried once (restart again, gate again) before its batch gave up
    assert task(res, "Retry | run the restart command again", "app2")["changed"] is True
    assert task(res, "Point current at the target release", "app1")["changed"] is True
    for name in ("app3",):
        assert res.task_results(name) == [], "a later batch ran on %s" % name
        assert fleet.serving(name) == "v2"


def test_previous_release_by_order_keep_releases_and_preflight(fleet_factory):
    releases = {rid: {"version": rid} for rid in ("r1", "r2", "r3", "r4", "r5")}
    fleet = fleet_factory(1, current="r5", releases=releases)
    fleet.write_inventory()  # no app: restart command `true`, no gate
    root = fleet.hosts["app1"]

    bad = rollback(fleet, rollback_code_release="r9", rollback_code_records_dir="")
    assert bad.rc != 0
    msg = task(bad, "Preflight | the target release exists on this host", "app1")["msg"]
    assert "cannot roll back to 'r9'" in msg and "r1, r2, r3, r4, r5" in msg, msg
    assert fleet.link("app1") == "releases/r5"

    res = rollback(fleet, rollback_code_records_dir="", rollback_code_keep_releases=3)
    assert res.rc == 0, res.stdout[-3000:]
    assert fleet.link("app1") == "releases/r4"
    assert sorted(p.name for p in (root / "releases").iterdir()) == ["r3", "r4", "r5"]
    assert json.loads((root / ".rollback_code.json").read_text()) == {"release": "r4", "rolled_back_from": "r5"}

    again = rollback(fleet, rollback_code_records_dir="", rollback_code_keep_releases=3)
    assert again.rc == 0, again.stdout[-3000:]
    assert again.stats["app1"]["changed"] == 0, again.stdout[-3000:]
    assert fleet.link("app1") == "releases/r4"
    published = task(again, "Publish what the code rollback did", "app1")["ansible_facts"]["rollback_code_result"]
    assert published["target_source"] == "rolled back already"


@pytest.fixture
def lb(haproxy, demo_apps, tmp_path):
    inv = tmp_path / "lb.yml"
    inv.write_text(yaml.safe_dump({"all": {"children": {"app": {"hosts": {"lb1": {
        "ansible_connection": "local", "ansible_python_interpreter": PY, "ansible_pipelining": True}}}}}}))
    haproxy.use_backend("be_green")  # the bad deploy: v2 serves
    yield {"inv": inv, "proxy": haproxy, "apps": demo_apps}
    haproxy.reset()


def frontend_version(proxy):
    return json.loads(services.http_get(proxy.url + "/health")[1].decode())["version"]


def test_blue_green_traffic_back_gate_and_revert(lb):
    proxy, apps = lb["proxy"], lb["apps"]
    extra = {"rollback_code_strategy": "blue_green", "rollback_code_records_dir": "",
             "rollback_code_lb": {"provider": "haproxy", "haproxy_socket": str(proxy.socket),
                                  "map_file": str(proxy.map_file), "map_key": proxy.map_key,
                                  "wait_timeout": 10, "poll_interval": 0.2},
             "rollback_code_lb_target": {"backend": "be_blue"},
             "rollback_code_health_checks": [{"name": "frontend", "type": "http", "url": proxy.url + "/"}],
             "rollback_code_health_interval": 0.2, "rollback_code_health_timeout": 5}

    check = runner.run_playbook(ROLLBACK, inventory=lb["inv"], extra_vars=extra, check=True)
    assert check.rc == 0, check.stdout[-3000:]
    assert check.stats["lb1"]["changed"] >= 1
    assert proxy.current_backend() == "be_green"

    res = runner.run_playbook(ROLLBACK, inventory=lb["inv"], extra_vars=extra)
    assert res.rc == 0, res.stdout[-3000:]
    assert proxy.current_backend() == "be_blue"
    assert frontend_version(proxy) == "v1"
    assert task(res, "Run the health gate after the traffic moved", "lb1")["verdict"] == "pass"

    again = runner.run_playbook(ROLLBACK, inventory=lb["inv"], extra_vars=extra)
    assert again.rc == 0, again.stdout[-3000:]
    assert again.stats["lb1"]["changed"] == 0, again.stdout[-3000:]

    # the target side itself is broken (every request fails, /health still ok): traffic goes back
    proxy.use_backend("be_green")
    apps.blue.set_fault(error_rate=100)
    bad = runner.run_playbook(ROLLBACK, inventory=lb["inv"], extra_vars=extra)
    assert bad.rc != 0
    failed = task(bad, "Fail the code rollback loudly", "lb1")
    assert "failed at step 'Run the health gate after the traffic moved'" in failed["msg"], failed["msg"]
    assert task(bad, "Send the traffic back to where it was before the rollback", "lb1")["changed"] is True
    assert proxy.current_backend() == "be_green"
    assert frontend_version(proxy) == "v2"
