"""Role dr_complete_rebuild (DR tier 3) for real: an off-site backup set in S3 (moto server) - a pg_dump -Fc of a
seeded database on PostgreSQL 15, a tarball of the demo app's release v1, a tarball of the configuration directory,
each with a SHA256 S3 checksum and a ``.sha256`` sidecar - and a system that is lost (database dropped, releases
and configuration deleted, application stopped, HAProxy sending traffic to a dead backend).

The role runs through ansible-playbook. Good set: the rows are back exactly, the rebuilt app serves v1 over HTTP
directly and through HAProxy (now on the rebuilt backend), the configuration is back byte for byte, the result
carries the recovery point (the dump's time) and per-step timings. Corrupted set (the dump's bytes changed after
its sidecar was written): refused in the verify step, nothing restored. Check mode: the whole verify step runs
for real (the S3 checks, the downloads into a work directory, pg_restore --list, the reads), the plan is reported,
and nothing changes, no work files left.
"""

import datetime
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys

import pytest

from sandbox import archives, services
from sandbox.runner import run_role

# what the tests read after the role ran, also when it failed
SHOW = {"result": "{{ dr_complete_rebuild_result | default(none) }}",
        "recovery_point": "{{ dr_complete_rebuild_recovery_point | default('') }}"}
CONFIG_FILES = {
    "app.ini": b"[app]\nname = shop\nworkers = 4\n",
    "features/flags.json": b'{"checkout_v2": false, "search": true}\n',
    "secrets/README": b"mounted from the vault at start\n",
}


class Site:
    """One lost system: database, releases, configuration, an app (stopped) and HAProxy in front of it."""

    def __init__(self, base, postgres, moto):
        self.base = pathlib.Path(base)
        self.postgres = postgres
        self.moto = moto
        self.uid = "%06d" % random.randrange(10 ** 6)
        self.db = "dr_shop_" + self.uid
        self.bucket = "dr-offsite-" + self.uid
        self.deploy_to = self.base / "site"
        self.config_dir = self.base / "etc" / "shop"
        self.run_dir = self.base / "run"
        self.when = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)).replace(microsecond=0)
        self.dump_key = "db/shop-%s.dump" % self.when.strftime("%Y%m%dT%H%M%SZ")
        self.release_key = "artifacts/shop/v1.tar.gz"
        self.config_key = "config/shop-%s.tar.gz" % self.when.strftime("%Y%m%dT%H%M%SZ")
        # the lost site (blue, dead after the loss) and the rebuilt app (green), HAProxy in front
        self.old_port = services.free_port()
        self.app = services.DemoApp(self.run_dir, "shop", port=services.free_port(), release_dir=self.deploy_to / "current")
        self.proxy = services.HAProxy(self.base / "lb", self.old_port, self.app.port)
        self.rows = None

    def build_backups(self):
        """Seed the database and the site, upload the off-site backup set; returns the release tree."""
        pg = self.postgres
        pg.psql("CREATE DATABASE %s" % self.db)
        pg.psql("CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, total numeric(10,2)); "
                "INSERT INTO orders SELECT g, 'c' || (g % 37), round((g * 1.37)::numeric, 2) FROM generate_series(1, 500) g; "
                "CREATE INDEX ON orders (customer);", db=self.db)
        self.rows = self.table_digest()
        dump = self.base / "shop.dump"
        subprocess.run([os.path.join(pg.bin_dir, "pg_dump"), "-Fc", "-h", pg.host, "-p", str(pg.port), "-U", pg.user,
                        "-f", str(dump), self.db], env=dict(os.environ, PGPASSWORD=pg.password), check=True, timeout=60)

        services.layout_releases(self.deploy_to)  # releases/v1 (good), releases/v2 (bad), current -> v1
        release_tree = archives.tree(self.deploy_to / "releases" / "v1")
        self.config_dir.mkdir(parents=True)
        for name, body in CONFIG_FILES.items():
            (self.config_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (self.config_dir / name).write_bytes(body)

        s3 = self.moto.client("s3")
        s3.create_bucket(Bucket=self.bucket)
        archives.put_with_sidecar(s3, self.bucket, self.dump_key, dump.read_bytes())
        archives.put_with_sidecar(s3, self.bucket, self.release_key, archives.tar_gz(release_tree))
        archives.put_with_sidecar(s3, self.bucket, self.config_key, archives.tar_gz(archives.tree(self.config_dir)))
        return release_tree

    def start_old_site(self):
        self.proxy.up()  # traffic on be_blue, the lost site

    def lose_everything(self):
        self.postgres.psql("DROP DATABASE %s" % self.db)
        shutil.rmtree(self.deploy_to / "releases")  # current dangles
        shutil.rmtree(self.config_dir)

    def start_script(self):
        """A restart command: start the app from <deploy_to>/current, detached (it writes its pidfile)."""
        self.app.prepare()
        script = self.base / "start_shop.py"
        argv = [str(a) for a in self.app.command()]
        script.write_text(
            "import subprocess, sys\n"
            "log = open(%r, 'ab')\n"
            "subprocess.Popen(%r, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)\n"
            % (str(self.app.log), argv))
        return [sys.executable, str(script)]

    def table_digest(self):
        return self.postgres.psql(
            "SELECT count(*) || '/' || md5(string_agg(id || ':' || customer || ':' || total, ',' ORDER BY id)) FROM orders",
            db=self.db)

    def db_exists(self):
        return self.postgres.psql("SELECT count(*) FROM pg_database WHERE datname = '%s'" % self.db) == "1"

    def role_vars(self):
        backup = {"bucket": self.bucket, "checksum": ["s3", "sidecar", "deep"]}
        return {
            "dr_complete_rebuild_aws": self.moto.aws_params,
            "dr_complete_rebuild_database_backup": dict(
                backup, prefix="db/", key_regex=r"^db/shop-(?P<time>\d{8}T\d{6}Z)\.dump$", max_age="1h", min_size=1024),
            "dr_complete_rebuild_release_backup": dict(backup, key=self.release_key),
            "dr_complete_rebuild_config_backup": dict(backup, prefix="config/", max_age="1d"),
            "dr_complete_rebuild_postgres": self.postgres.module_params,
            "dr_complete_rebuild_pg_bin_dir": self.postgres.bin_dir,
            "dr_complete_rebuild_assertions": [
                {"name": "every order is back", "sql": "SELECT count(*) FROM orders", "expect": "500"},
                {"name": "the index is back", "sql": "SELECT count(*) FROM pg_indexes WHERE tablename = 'orders'",
                 "expect": "2"},
            ],
            "dr_complete_rebuild_deploy_to": str(self.deploy_to),
            "dr_complete_rebuild_config_dest": str(self.config_dir),
            "dr_complete_rebuild_restart_commands": [self.start_script()],
            "dr_complete_rebuild_lb": {"provider": "haproxy", "haproxy_socket": self.proxy.socket,
                                       "map_file": self.proxy.map_file, "map_key": self.proxy.map_key,
                                       "backend": "be_green", "wait_timeout": 30},
            "dr_complete_rebuild_checks": [{"name": "shop via the load balancer", "type": "http",
                                            "url": self.proxy.url + "/health", "json_query": "version",
                                            "expected": "v1"}],
            "dr_complete_rebuild_health_timeout": 30,
            "dr_complete_rebuild_health_interval": 0.5,
        }

    def run(self, check=False):
        res, shown = run_role("dr_complete_rebuild", self.role_vars(), show=SHOW, check=check, timeout=600)
        return res, shown["result"], shown["recovery_point"]

    def stop(self):
        self.app.stop()
        self.proxy.stop()


@pytest.fixture
def site(tmp_path, postgres, moto):
    os.chmod(tmp_path, 0o755)
    made = Site(tmp_path, postgres, moto)
    yield made
    made.stop()
    postgres.psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % made.db)


def test_rebuild_from_offsite_backups_restores_data_code_config_and_traffic(site):
    release_tree = site.build_backups()
    rows_before = site.rows
    site.start_old_site()
    site.lose_everything()
    assert not site.db_exists()
    assert services.http_get(site.proxy.url + "/health")[0] == 503  # the whole system is gone
    assert not site.app.answers()

    res, result, recovery_point = site.run()
    assert res.rc == 0, res.stdout[-5000:]

    # data: every row exactly as dumped
    assert site.table_digest() == rows_before
    # code: release v1 unpacked from the artifact store, current points at it, the app serves it
    assert os.readlink(site.deploy_to / "current") == "releases/v1"
    assert archives.tree(site.deploy_to / "releases" / "v1") == release_tree
    status, body = site.app.get_json("/health")
    assert (status, body["version"]) == (200, "v1")
    # configuration byte for byte
    assert archives.tree(site.config_dir) == CONFIG_FILES
    # traffic: HAProxy now routes to the rebuilt backend, which answers v1
    assert site.proxy.current_backend() == "be_green"
    status, body = services.http_get(site.proxy.url + "/health")
    assert status == 200 and json.loads(body)["version"] == "v1"

    # evidence: the recovery point is the dump's own time (from its key), timings per step, objects used
    expected_point = site.when.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert recovery_point == expected_point
    assert result["succeeded"] is True and result["failed_step"] == ""
    assert result["recovery_point"] == expected_point and result["recovery_point_source"] == "key"
    steps = ["verify", "database", "release", "config", "start", "traffic", "health"]
    assert result["steps"] == steps
    assert sorted(result["timings"]) == sorted(steps)
    assert all(isinstance(v, (int, float)) and v >= 0 for v in result["timings"].values())
    assert {name: b["key"] for name, b in result["backups"].items()} == {
        "database": site.dump_key, "release": site.release_key, "config": site.config_key}
    assert all(len(b["sha256"]) == 64 and b["passed"] for b in result["backups"].values())
    assert result["database"] == site.db and result["release"] == "v1"
    assert result["traffic_moved"] is True and result["lb_before"]["backend"] == "be_blue"
    assert result["health"] == "pass"
    # nothing was there to replace, so no safety copies; the work files are gone
    assert result["safety_copies"] == {"database": None, "release": None, "config": None}
    assert sorted(p.name for p in site.deploy_to.iterdir()) == ["current", "releases"]
    assert sorted(p.name for p in site.config_dir.parent.iterdir()) == ["shop"]


def test_corrupted_backup_is_refused_before_anything_changes(site):
    site.build_backups()
    # bit rot in the off-site copy: the dump's bytes change after its sidecar was written
    s3 = site.moto.client("s3")
    body = bytearray(s3.get_object(Bucket=site.bucket, Key=site.dump_key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    s3.put_object(Bucket=site.bucket, Key=site.dump_key, Body=bytes(body))
    site.start_old_site()
    site.lose_everything()

    res, result, recovery_point = site.run()
    assert res.rc != 0
    failed = res.result("Rescue | fail naming the step")
    assert failed.get("failed") is True
    assert "refused at step 'verify'" in failed["msg"], failed["msg"]
    assert "s3://%s/%s" % (site.bucket, site.dump_key) in failed["msg"], failed["msg"]
    assert "checksum_deep" in failed["msg"] and "Nothing was changed" in failed["msg"], failed["msg"]
    assert "release backup" not in failed["msg"] and "config backup" not in failed["msg"], failed["msg"]

    # nothing restored: no database, no release, no configuration, traffic where it was, no work files left
    assert not site.db_exists()
    assert not (site.deploy_to / "releases").exists()
    assert sorted(p.name for p in site.deploy_to.iterdir()) == ["current"]
    assert not site.config_dir.exists() and list(site.config_dir.parent.iterdir()) == []
    assert site.proxy.current_backend() == "be_blue"
    assert not site.app.answers()
    assert recovery_point == ""
    assert result["succeeded"] is False and result["failed_step"] == "verify" and result["steps"] == []
    assert result["backups"]["database"]["passed"] is False
    assert result["backups"]["release"]["passed"] is True and result["backups"]["config"]["passed"] is True


def test_check_mode_verifies_the_dump_set_and_changes_nothing(site):
    site.build_backups()
    site.start_old_site()
    site.lose_everything()

    res, result, recovery_point = site.run(check=True)
    assert res.rc == 0, res.stdout[-5000:]

    plan = res.result("Preflight | check mode, report what the rebuild would do")["msg"]
    assert "Check mode, nothing changes" in plan, plan
    assert "s3://%s/%s into database %s" % (site.bucket, site.dump_key, site.db) in plan, plan
    assert result["check_mode"] is True and result["succeeded"] is True
    assert result["steps"] == ["verify"] and recovery_point == ""
    assert all(len(b["sha256"]) == 64 and b["passed"] for b in result["backups"].values())

    # nothing restored, nothing moved, no work files
    assert not site.db_exists()
    assert sorted(p.name for p in site.deploy_to.iterdir()) == ["current"]
    assert not site.config_dir.exists() and list(site.config_dir.parent.iterdir()) == []
    assert site.proxy.current_backend() == "be_blue"
    assert not site.app.answers()
