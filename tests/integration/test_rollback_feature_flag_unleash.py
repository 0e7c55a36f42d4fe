"""Role rollback_feature_flag, provider unleash, against a real Unleash server (npm ``unleash-server``) on the
session PostgreSQL: the flags on in an environment are turned off through the Admin API and the client API
serves them off, a health gate passes, a second run changes nothing, check mode changes nothing, an unknown
flag fails before anything changes, and a failing gate turns back on exactly the flags the run turned off.

CI reaches only PyPI and Debian: Unleash is installed with npm into .cache/unleash when the npm registry
answers; otherwise these tests are skipped, saying so.
"""

import json
import os
import secrets
import shutil
import subprocess
import urllib.parse

import pytest
import yaml

from sandbox import runner, services

PY = str(runner.ROOT / ".venv" / "bin" / "python")
PLAYBOOK = runner.ROOT / "playbooks" / "rollback_feature_flag.yml"

UNLEASH_VERSION = "7.4.1"  # the newest unleash-server whose engines accept Node 20
UNLEASH_DIR = runner.ROOT / ".cache" / "unleash"
UNLEASH_MAIN = UNLEASH_DIR / "node_modules" / "unleash-server" / "dist" / "server.js"
PROJECT = "default"
ENV = "production"
FLAGS = ["new-checkout", "search-v2", "banner", "already-dark"]


def _installed_version():
    package = UNLEASH_DIR / "node_modules" / "unleash-server" / "package.json"
    try:
        return json.loads(package.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def ensure_unleash():
    """Install unleash-server into .cache/unleash once; pytest.skip (with the reason) when that cannot be done."""
    if _installed_version() == UNLEASH_VERSION and UNLEASH_MAIN.is_file():
        return
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            pytest.skip("%s is not installed: the Unleash tests need Node.js 20 and npm" % tool)
    try:
        probe = subprocess.run(["npm", "view", "--fetch-retries=0", "--fetch-timeout=15000",
                                "unleash-server@%s" % UNLEASH_VERSION, "version"],
                               capture_output=True, text=True, timeout=60, check=False)
        answered = probe.returncode == 0 and probe.stdout.strip() == UNLEASH_VERSION
    except subprocess.TimeoutExpired:
        answered = False
    if not answered:
        pytest.skip("the npm registry does not answer (npm view unleash-server failed): cannot install a real "
                    "Unleash server here (CI reaches only PyPI and Debian)")
    UNLEASH_DIR.mkdir(parents=True, exist_ok=True)
    # --ignore-scripts: no install hooks (some phone home); unleash-server needs none
    proc = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--omit=dev", "--ignore-scripts",
                           "--prefix", str(UNLEASH_DIR), "unleash-server@%s" % UNLEASH_VERSION],
                          capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0 or _installed_version() != UNLEASH_VERSION:
        pytest.fail("npm answered but installing unleash-server@%s failed:\n%s"
                    % (UNLEASH_VERSION, (proc.stderr or proc.stdout)[-3000:]))


class UnleashServer(services.Service):
    """Unleash OSS on 127.0.0.1 with its own database on ``postgres``; no outside network calls."""

    name = "unleash"
    ready_timeout = 120.0  # the first start runs the migrations

    def __init__(self, base_dir, postgres):
        super().__init__(base_dir)
        self.postgres = postgres
        self.database = "unleash_%s" % secrets.token_hex(4)
        self.admin_token = "*:*.%s" % secrets.token_hex(16)
        self.client_token = "%s:%s.%s" % (PROJECT, ENV, secrets.token_hex(16))
        self.dev_client_token = "%s:development.%s" % (PROJECT, secrets.token_hex(16))

    def prepare(self):
        super().prepare()
        self.postgres.psql("CREATE DATABASE %s" % self.database)

    def command(self):
        return ["node", UNLEASH_MAIN]

    def spawn_kwargs(self):
        password = urllib.parse.quote(self.postgres.password, safe="")
        pg = self.postgres
        url = "postgres://%s:%s@%s:%d/%s" % (pg.user, password, pg.host, pg.port, self.database)
        env = {key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_", "UNLEASH_"))}
        env.update(
            DATABASE_URL=url, DATABASE_SSL="false", HTTP_HOST=self.host, HTTP_PORT=str(self.port),
            INIT_ADMIN_API_TOKENS=self.admin_token,
            INIT_CLIENT_API_TOKENS="%s,%s" % (self.client_token, self.dev_client_token),
            # no outside network: no version check, no telemetry, no analytics
            CHECK_VERSION="false", SEND_TELEMETRY="false", UNLEASH_VERSION_URL="http://127.0.0.1:9/",
            SCARF_ANALYTICS="false", DO_NOT_TRACK="1", LOG_LEVEL="warn", NODE_ENV="production",
            UNLEASH_SECRET=secrets.token_hex(16))
        return {"cwd": str(self.dir), "env": env}

    def ready(self):
        status, body = services.http_get(self.url + "/health", timeout=2.0)
        return status == 200 and json.loads(body).get("health") == "GOOD"

    def api(self, method, path, body=None, token=None):
        data = json.dumps(body).encode() if body is not None else None
        status, raw = services.http_get(self.url + path, data=data, method=method, headers={
            "Authorization": token or self.admin_token, "Content-Type": "application/json",
            "Accept": "application/json"})
        return status, (json.loads(raw) if raw.strip() else None)

    def flag_path(self, flag, env=None):
        path = "/api/admin/projects/%s/features/%s" % (PROJECT, flag)
        return path + ("/environments/%s" % env if env else "")

    def create_flag(self, flag):
        status, body = self.api("POST", "/api/admin/projects/%s/features" % PROJECT, {"name": flag})
        assert status in (200, 201), (status, body)
        for env in ("development", ENV):
            status, body = self.api("POST", self.flag_path(flag, env) + "/strategies",
                                    {"name": "default", "constraints": [], "parameters": {}})
            assert status in (200, 201), (status, body)

    def set_enabled(self, flag, enabled, env=ENV):
        status, body = self.api("POST", self.flag_path(flag, env) + ("/on" if enabled else "/off"))
        assert status == 200, (status, body)

    def enabled(self, flag, env=ENV):
        """The admin view: is ``flag`` on in ``env``."""
        status, body = self.api("GET", self.flag_path(flag))
        assert status == 200, (status, body)
        return [e["enabled"] for e in body["environments"] if e["name"] == env][0]

    def client_enabled(self, flag, token=None):
        """The SDK view (client API, environment of the token)."""
        status, body = self.api("GET", "/api/client/features/%s" % flag, token=token or self.client_token)
        assert status == 200, (status, body)
        return body["enabled"]

    def states(self):
        return {flag: (self.enabled(flag), self.enabled(flag, "development")) for flag in FLAGS}


@pytest.fixture(scope="module")
def unleash(services_dir, postgres):
    ensure_unleash()
    server = UnleashServer(services_dir, postgres)
    server.die_with_parent = True
    try:
        server.up()
        for flag in FLAGS:
            server.create_flag(flag)
        yield server
    finally:
        server.stop()  # by its PID (Service.stop)


@pytest.fixture
def flags(unleash):
    """Every flag on in both environments except already-dark, which is off in production."""
    for flag in FLAGS:
        unleash.set_enabled(flag, True, "development")
        unleash.set_enabled(flag, flag != "already-dark")
    return unleash


@pytest.fixture
def inventory(tmp_path):
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"children": {"app": {"hosts": {"app1": {
        "ansible_connection": "local", "ansible_python_interpreter": PY},
        "app2": {"ansible_connection": "local", "ansible_python_interpreter": PY}}}}}}))
    return inv


def run(unleash, inventory, names, check=False, playbook=PLAYBOOK, **extra):
    extra_vars = {"rollback_feature_flag_provider": "unleash", "rollback_feature_flag_flags": names,
                  "rollback_feature_flag_unleash": {"url": unleash.url, "environment": ENV,
                                                    "admin_token": unleash.admin_token,
                                                    "client_token": unleash.client_token},
                  "rollback_feature_flag_health_interval": 0.3, "rollback_feature_flag_health_timeout": 10}
    extra_vars.update(extra)
    res = runner.run_playbook(playbook, inventory=inventory, extra_vars=extra_vars, check=check)
    for secret in (unleash.admin_token, unleash.client_token):
        assert secret not in res.stdout and secret not in res.stderr, "a token leaked into the output"
    return res


def published(res):
    return res.result("Publish what the flag rollback did", host="app1")["ansible_facts"]["rollback_feature_flag_result"]


def test_turn_off_verify_gate_check_mode_and_idempotence(flags, inventory, demo_apps):
    unleash = flags
    names = ["new-checkout", "search-v2", "already-dark"]
    gate = [{"name": "blue", "type": "http", "url": demo_apps.blue.url + "/health"}]
    before = unleash.states()
    assert unleash.client_enabled("new-checkout") is True

    check = run(unleash, inventory, names, check=True, rollback_feature_flag_health_checks=gate)
    assert check.rc == 0, check.stdout[-3000:]
    assert check.stats["app1"]["changed"] == 1
    assert unleash.states() == before, "check mode must change nothing"
    assert published(check)["switched_off"] == ["new-checkout", "search-v2"]

    res = run(unleash, inventory, names, rollback_feature_flag_health_checks=gate)
    assert res.rc == 0, res.stdout[-3000:]
    result = published(res)
    assert result["switched_off"] == ["new-checkout", "search-v2"]
    assert result["already_off"] == ["already-dark"]
    assert res.result("Run the health gate after the flag rollback", host="app1")["verdict"] == "pass"
    # the API is called once per play; every host publishes the same result
    by_host = res.result("Publish the result", host="app1")["ansible_stats"]["data"]["rollback_feature_flag_results"]
    assert by_host["app1"] == by_host["app2"] == result
    for flag in names:
        assert unleash.enabled(flag) is False
        assert unleash.client_enabled(flag) is False, "%s must evaluate off for SDKs of %s" % (flag, ENV)
    # flags not named, and other environments, stay as they were
    assert unleash.enabled("banner") is True and unleash.client_enabled("banner") is True
    assert all(unleash.enabled(flag, "development") for flag in FLAGS)
    assert unleash.client_enabled("new-checkout", token=unleash.dev_client_token) is True

    after = unleash.states()
    again = run(unleash, inventory, names, rollback_feature_flag_health_checks=gate)
    assert again.rc == 0, again.stdout[-3000:]
    assert again.stats["app1"]["changed"] == 0
    assert published(again)["switched_off"] == []
    assert unleash.states() == after


def test_unknown_flag_or_environment_changes_nothing(flags, inventory):
    unleash = flags
    before = unleash.states()
    res = run(unleash, inventory, ["new-checkout", "no-such-flag"])
    assert res.rc != 0
    msg = res.result("Preflight | every flag exists in the environment", host="app1")["msg"]
    assert "no-such-flag" in msg and "rollback_feature_flag_flags" in msg and "nothing was changed" in msg
    assert res.stats["app1"]["failures"] == res.stats["app2"]["failures"] == 1
    assert unleash.states() == before

    res = run(unleash, inventory, ["new-checkout"], rollback_feature_flag_unleash={
        "url": unleash.url, "environment": "staging-typo", "admin_token": unleash.admin_token,
        "client_token": unleash.client_token})
    assert res.rc != 0
    msg = res.result("Preflight | every flag exists in the environment", host="app1")["msg"]
    assert "staging-typo" in msg and "rollback_feature_flag_unleash.environment" in msg
    assert unleash.states() == before


def test_missing_token_is_refused_before_any_call(flags, inventory):
    unleash = flags
    before = unleash.states()
    res = run(unleash, inventory, ["new-checkout"], rollback_feature_flag_unleash={
        "url": unleash.url, "environment": ENV, "client_token": unleash.client_token})
    assert res.rc != 0
    msg = res.result("Preflight | check the Unleash inputs", host="app1")["msg"]
    assert "rollback_feature_flag_unleash.admin_token" in msg
    assert unleash.states() == before


def test_failing_gate_turns_back_on_what_it_turned_off(flags, inventory, demo_apps, tmp_path):
    unleash = flags
    before = unleash.states()
    demo_apps.blue.set_fault(fail_health=True)
    # the role, then a task on every host: it must not run once the rollback failed
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{"name": "flags", "hosts": "app", "gather_facts": False, "tasks": [
        {"name": "Roll back", "ansible.builtin.include_role": {"name": "failsafe.recovery.rollback_feature_flag"}},
        {"name": "After the rollback", "ansible.builtin.debug": {"msg": "continued"}}]}]))
    res = run(unleash, inventory, ["new-checkout", "already-dark"], playbook=playbook,
              rollback_feature_flag_health_timeout=3,
              rollback_feature_flag_health_checks=[{"name": "blue", "type": "http",
                                                    "url": demo_apps.blue.url + "/health"}])
    assert res.rc != 0
    msg = res.result("Fail the flag rollback loudly", host="app1")["msg"]
    assert "Run the health gate after the flag rollback" in msg
    assert "turned back on: new-checkout." in msg
    # the flags are global: the failure stops the play on every host
    assert not [name for host in ("app1", "app2") for name, dummy in res.task_results(host)
                if name == "After the rollback"]
    # new-checkout is on again; already-dark, off before the run, stays off
    assert unleash.states() == before
    assert unleash.enabled("new-checkout") is True and unleash.enabled("already-dark") is False


def test_verification_failure_turns_flags_back_on(flags, inventory):
    """A client token of another environment still sees the flag on: verification fails, the flag goes back on."""
    unleash = flags
    before = unleash.states()
    res = run(unleash, inventory, ["search-v2"], rollback_feature_flag_unleash={
        "url": unleash.url, "environment": ENV, "admin_token": unleash.admin_token,
        "client_token": unleash.dev_client_token, "verify_retries": 2, "verify_delay": 1})
    assert res.rc != 0
    for secret in (unleash.dev_client_token,):
        assert secret not in res.stdout and secret not in res.stderr, "a token leaked into the output"
    msg = res.result("Fail the flag rollback loudly", host="app1")["msg"]
    assert "Verify every flag evaluates off through the client API" in msg
    assert "still serves on: search-v2" in msg and "rollback_feature_flag_unleash.client_token" in msg
    assert "turned back on: search-v2." in msg
    assert unleash.states() == before
