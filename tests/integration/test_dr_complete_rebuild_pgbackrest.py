"""Role dr_complete_rebuild (DR tier 3) with the database from a pgBackRest S3 repository, for real.

A source PostgreSQL 15 cluster archives its WAL and keeps its backups in a pgBackRest repository in S3 (moto on
HTTPS with a self-signed certificate, stanza ``drsrc``): rows committed before the backup, rows committed after
it (only in the archived WAL). The cluster is then lost (stopped). The release and configuration backups live in
the plain moto, as for the dump source. The role runs through ansible-playbook and rebuilds the cluster into a
fresh data directory: every row is back (the WAL was replayed), the recovery point is the newest replayed commit.
Refusals (no such stanza, an occupied data directory without replace_existing) change nothing; check mode changes
nothing; a failing assertion after the original data directory was moved aside puts it back and it runs again.
"""

import datetime
import pathlib
import random
import shutil
import sys
import time

import pytest
import yaml

from sandbox import archives, services
from sandbox.runner import run_role

# what the tests read after the role ran, also when it failed
SHOW = {"result": "{{ dr_complete_rebuild_result | default(none) }}",
        "recovery_point": "{{ dr_complete_rebuild_recovery_point | default('') }}"}
ROWS_BEFORE = 500
ROWS_AFTER = 37
CONFIG_FILES = {"app.ini": b"[app]\nname = shop\n"}


class S3Cluster(services.PostgresCluster):
    """PostgresCluster whose pgBackRest repository (WAL archive and backups) is a bucket of the TLS moto."""

    def __init__(self, base_dir, moto_tls, bucket, **kwargs):
        self.moto_tls = moto_tls
        self.bucket = bucket
        super().__init__(base_dir, **kwargs)

    def prepare(self):
        super().prepare()
        text = self._pgbackrest_config.read_text()
        posix = "repo1-path=%s\n" % self._repo_path
        assert posix in text
        self._pgbackrest_config.write_text(text.replace(posix, (
            "repo1-type=s3\nrepo1-path=/pgbackrest\nrepo1-s3-bucket=%s\nrepo1-s3-endpoint=%s\n"
            "repo1-storage-port=%d\nrepo1-s3-region=%s\nrepo1-s3-key=%s\nrepo1-s3-key-secret=%s\n"
            "repo1-s3-uri-style=path\nrepo1-storage-ca-file=%s\nrepo1-bundle=y\nio-timeout=20\n")
            % (self.bucket, self.moto_tls.host, self.moto_tls.port, self.moto_tls.region, self.moto_tls.access_key,
               self.moto_tls.secret_key, self.moto_tls.ca_file)))


class Rebuild:
    """The lost cluster's repository in S3, the artifact set in S3, and the hosts' directories."""

    def __init__(self, base, source, moto, moto_tls):
        self.base = pathlib.Path(base)
        self.source = source
        self.moto = moto
        self.moto_tls = moto_tls
        self.uid = "%06d" % random.randrange(10 ** 6)
        self.bucket = "dr-artifacts-" + self.uid
        self.digest = None
        self.backup_label = None
        self.backup_stop = None
        self.late_commit = None
        # credentials only the role gets (moto accepts any): they must never show in the output
        self.key = "AKIADR%s" % self.uid
        self.secret = "dr-secret-%s-%06d" % (self.uid, random.randrange(10 ** 6))

    def build(self):
        pg = self.source
        pg.psql("CREATE DATABASE shop")
        pg.psql("CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, total numeric(10,2)); "
                "INSERT INTO orders SELECT g, 'c' || (g %% 37), round((g * 1.37)::numeric, 2) "
                "FROM generate_series(1, %d) g; CREATE INDEX ON orders (customer);" % ROWS_BEFORE, db="shop")
        self.backup_label = pg.backup("incr")
        info = yaml.safe_load(pg.pgbackrest("--output=json", "info").stdout)[0]
        self.backup_stop = info["backup"][-1]["timestamp"]["stop"]
        # committed after the backup: only the archived WAL brings these back. At least a second after its stop
        # time (whole seconds), so a target time can fall between the two.
        time.sleep(max(0.0, self.backup_stop + 1.2 - time.time()))
        before = float(pg.psql("SELECT extract(epoch FROM clock_timestamp())"))
        pg.psql("INSERT INTO orders SELECT g, 'late', 1 FROM generate_series(%d, %d) g"
                % (ROWS_BEFORE + 1, ROWS_BEFORE + ROWS_AFTER), db="shop")
        after = float(pg.psql("SELECT extract(epoch FROM clock_timestamp())"))
        self.late_commit = (before, after)
        self.digest = self.table_digest(pg)
        pg.switch_wal_and_wait()

        s3 = self.moto.client("s3")
        s3.create_bucket(Bucket=self.bucket)
        release_tree = {"app.py": b"print('v1')\n", "VERSION": b"v1\n"}
        archives.put_with_sidecar(s3, self.bucket, "artifacts/shop/v1.tar.gz", archives.tar_gz(release_tree))
        archives.put_with_sidecar(s3, self.bucket, "config/shop.tar.gz", archives.tar_gz(CONFIG_FILES))

    @staticmethod
    def table_digest(cluster):
        return cluster.psql(
            "SELECT count(*) || '/' || md5(string_agg(id || ':' || customer || ':' || total, ',' ORDER BY id)) FROM orders",
            db="shop")

    def host(self, name):
        """A host's cluster object (not initialised): its data directory, socket directory and port."""
        cluster = self.source._sibling(name, services.free_port())  # pylint: disable=protected-access
        cluster.die_with_parent = True
        return cluster

    def role_vars(self, target, **overrides):
        site = self.base / ("site-" + target.name)
        pgbr = {"stanza": self.source.stanza, "bucket": self.source.bucket, "region": self.moto_tls.region,
                "endpoint": self.moto_tls.host, "port": self.moto_tls.port, "path": "/pgbackrest",
                "uri_style": "path", "ca_file": self.moto_tls.ca_file,
                "key": self.key, "key_secret": self.secret}
        role_vars = {
            "dr_complete_rebuild_database_source": "pgbackrest",
            "dr_complete_rebuild_pgbackrest": pgbr,
            "dr_complete_rebuild_pg_data_dir": target.data_dir,
            "dr_complete_rebuild_pg_os_user": target.os_user,
            "dr_complete_rebuild_pg_bin_dir": target.bin_dir,
            "dr_complete_rebuild_pg_server_log": str(target.dir / "server.log"),
            "dr_complete_rebuild_pg_settings": {"port": target.port, "unix_socket_directories": target.socket_dir,
                                                "archive_mode": "off"},
            "dr_complete_rebuild_pg_start_timeout": 120,
            "dr_complete_rebuild_postgres": dict(target.module_params, login_db="shop"),
            "dr_complete_rebuild_assertions": [
                {"name": "rows before and after the backup", "sql": "SELECT count(*) FROM orders",
                 "expect": str(ROWS_BEFORE + ROWS_AFTER)},
                {"name": "the index is back", "sql": "SELECT count(*) FROM pg_indexes WHERE tablename = 'orders'",
                 "expect": "2"},
            ],
            "dr_complete_rebuild_aws": self.moto.aws_params,
            "dr_complete_rebuild_release_backup": {"bucket": self.bucket, "key": "artifacts/shop/v1.tar.gz"},
            "dr_complete_rebuild_config_backup": {"bucket": self.bucket, "key": "config/shop.tar.gz"},
            "dr_complete_rebuild_deploy_to": str(site / "srv"),
            "dr_complete_rebuild_config_dest": str(site / "etc" / "shop"),
        }
        role_vars.update(overrides)
        return role_vars

    def run(self, role_vars, check=False):
        res, shown = run_role("dr_complete_rebuild", role_vars, show=SHOW, check=check, timeout=600)
        return res, shown["result"], shown["recovery_point"]


def aside(target):
    """The directories beside the target's data directory the rebuild moved there."""
    return sorted(p.name for p in target.dir.iterdir() if p.name.startswith("data."))


@pytest.fixture(scope="module")
def rebuild(services_dir, moto, moto_tls):
    base = services_dir / ("dr-pgbackrest-%06d" % random.randrange(10 ** 6))
    base.mkdir(mode=0o755)
    bucket = "pgbackrest-" + base.name.rsplit("-", 1)[1]
    moto_tls.client("s3").create_bucket(Bucket=bucket)
    source = S3Cluster(base, moto_tls, bucket, stanza="drsrc", name="source")
    source.die_with_parent = True
    made = Rebuild(base, source, moto, moto_tls)
    try:
        source.up()  # stanza-create and a full backup into S3
        made.build()
        source.stop()  # the lost host
        yield made
    finally:
        source.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def target(rebuild):
    cluster = rebuild.host("host%06d" % random.randrange(10 ** 6))
    yield cluster
    cluster.stop()


@pytest.fixture
def original(rebuild):
    """A host whose data directory holds a running cluster of its own (one table with a marker row)."""
    cluster = rebuild.host("orig%06d" % random.randrange(10 ** 6))
    cluster.prepare()  # initdb with the source's password; its own posix stanza stays unused
    with open(pathlib.Path(cluster.data_dir) / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
        conf.write("archive_mode = off\n")
    cluster.start()
    cluster.psql("CREATE TABLE original_marker (note text); INSERT INTO original_marker VALUES ('kept')")
    yield cluster
    cluster.stop()


def system_id(cluster):
    return cluster.psql("SELECT system_identifier FROM pg_control_system()")


def test_rebuild_from_pgbackrest_s3_replays_the_archived_wal(rebuild, target):
    res, result, recovery_point = rebuild.run(rebuild.role_vars(target))
    assert res.rc == 0, res.stdout[-6000:]

    # the restored cluster runs on the fresh host, promoted, with every row: those in the backup and those
    # only in the WAL archived after it
    assert Rebuild.table_digest(target) == rebuild.digest
    assert target.psql("SELECT pg_is_in_recovery()") == "f"
    assert target.psql("SELECT count(*) FROM orders WHERE customer = 'late'", db="shop") == str(ROWS_AFTER)
    assert target.psql("SHOW archive_mode") == "off"

    # the recovery point is the newest replayed commit (the rows after the backup), not the backup's stop time
    assert recovery_point == result["recovery_point"]
    assert result["recovery_point_source"] == "replay"
    point = datetime.datetime.strptime(recovery_point, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    assert rebuild.late_commit[0] <= point.timestamp() <= rebuild.late_commit[1], (recovery_point, rebuild.late_commit)
    assert point.timestamp() >= rebuild.backup_stop

    assert result["succeeded"] is True and result["failed_step"] == ""
    assert result["database_source"] == "pgbackrest"
    assert result["steps"] == ["verify", "database", "release", "config"]
    assert result["pgbackrest"]["backup"] == rebuild.backup_label
    assert result["pgbackrest"]["backup_type"] == "incr"
    assert result["pgbackrest"]["target"] == "latest"
    assert result["pgbackrest"]["safety_copy"] is None  # the data directory did not exist
    assert sorted(result["backups"]) == ["config", "release"]
    assert aside(target) == []

    # the repository's credentials were never shown, and never on a command line the server keeps
    assert rebuild.secret not in res.stdout and rebuild.key not in res.stdout
    assert rebuild.secret not in (pathlib.Path(target.data_dir) / "postgresql.auto.conf").read_text()


def test_rebuild_to_a_target_time_stops_before_the_later_commit(rebuild, target):
    # a time after the backup stopped and before the rows committed after it
    when = datetime.datetime.fromtimestamp(rebuild.late_commit[0] - 0.000001, datetime.timezone.utc)
    assert when.timestamp() >= rebuild.backup_stop + 1
    role_vars = rebuild.role_vars(target, dr_complete_rebuild_recovery_target_time=when.strftime("%Y-%m-%d %H:%M:%S.%f+00"))
    role_vars["dr_complete_rebuild_assertions"] = [
        {"name": "only the rows of the backup", "sql": "SELECT count(*) FROM orders", "expect": str(ROWS_BEFORE)}]
    res, result, recovery_point = rebuild.run(role_vars)
    assert res.rc == 0, res.stdout[-6000:]

    assert target.psql("SELECT count(*) FROM orders WHERE customer = 'late'", db="shop") == "0"
    assert target.psql("SELECT pg_is_in_recovery()") == "f"
    assert result["pgbackrest"]["backup"] == rebuild.backup_label
    assert result["pgbackrest"]["target"] == role_vars["dr_complete_rebuild_recovery_target_time"]
    # nothing committed between the backup and the target: the point is the backup set's stop time
    assert result["recovery_point_source"] == "backup"
    assert recovery_point == datetime.datetime.fromtimestamp(rebuild.backup_stop, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def test_check_mode_verifies_and_changes_nothing(rebuild, original):
    pid = original.postmaster_pid()
    before = system_id(original)
    role_vars = rebuild.role_vars(original, dr_complete_rebuild_replace_existing=True)
    res, result, recovery_point = rebuild.run(role_vars, check=True)
    assert res.rc == 0, res.stdout[-6000:]

    # the verify step ran for real (the repository was read) and the plan names what would happen
    assert result["check_mode"] is True and result["succeeded"] is True
    assert result["steps"] == ["verify"] and recovery_point == ""
    assert result["pgbackrest"]["backup"] == rebuild.backup_label
    plan = res.result("Preflight | check mode, report what the rebuild would do")["msg"]
    assert "Check mode, nothing changes" in plan and rebuild.backup_label in plan, plan
    assert "moved aside to %s.pre_rebuild_" % original.data_dir in plan, plan
    # nothing changed: the same server on the same data directory, nothing moved aside, no release, no config
    assert original.postmaster_pid() == pid
    assert system_id(original) == before
    assert original.psql("SELECT note FROM original_marker") == "kept"
    assert aside(original) == []
    assert not pathlib.Path(role_vars["dr_complete_rebuild_deploy_to"]).exists()
    assert not pathlib.Path(role_vars["dr_complete_rebuild_config_dest"]).exists()


def test_missing_stanza_is_refused_naming_why(rebuild, original):
    pid = original.postmaster_pid()
    role_vars = rebuild.role_vars(original, dr_complete_rebuild_replace_existing=True)
    role_vars["dr_complete_rebuild_pgbackrest"] = dict(role_vars["dr_complete_rebuild_pgbackrest"], stanza="nosuch")
    res, result, recovery_point = rebuild.run(role_vars)

    assert res.rc != 0
    failed = res.result("Rescue | fail naming the step")
    assert "refused at step 'verify'" in failed["msg"], failed["msg"]
    assert "no stanza 'nosuch'" in failed["msg"] or "stanza is not usable" in failed["msg"], failed["msg"]
    assert "Nothing was changed" in failed["msg"], failed["msg"]
    assert result["succeeded"] is False and result["failed_step"] == "verify" and recovery_point == ""
    # the original cluster kept running untouched
    assert original.postmaster_pid() == pid
    assert original.psql("SELECT note FROM original_marker") == "kept"
    assert aside(original) == []


def test_occupied_data_directory_is_refused_without_replace_existing(rebuild, original):
    pid = original.postmaster_pid()
    res, result, recovery_point = rebuild.run(rebuild.role_vars(original))

    assert res.rc != 0 and recovery_point == ""
    failed = res.result("Rescue | fail naming the step")
    assert "refused at step 'verify'" in failed["msg"] and "Nothing was changed" in failed["msg"], failed["msg"]
    assert "is not empty (it holds a PostgreSQL cluster, running)" in failed["msg"], failed["msg"]
    assert "dr_complete_rebuild_replace_existing" in failed["msg"], failed["msg"]
    assert result["failed_step"] == "verify"
    assert original.postmaster_pid() == pid
    assert aside(original) == []


def test_failure_after_the_move_puts_the_original_data_directory_back(rebuild, original):
    before = system_id(original)
    role_vars = rebuild.role_vars(original, dr_complete_rebuild_replace_existing=True)
    role_vars["dr_complete_rebuild_assertions"] = [
        {"name": "an impossible row count", "sql": "SELECT count(*) FROM orders", "expect": "1"}]
    res, result, recovery_point = rebuild.run(role_vars)

    assert res.rc != 0
    failed = res.result("Rescue | fail naming the step")
    assert "failed at step 'database'" in failed["msg"], failed["msg"]
    assert "an impossible row count returned '%d', expected '1'" % (ROWS_BEFORE + ROWS_AFTER) in failed["msg"], failed["msg"]
    assert result["succeeded"] is False and result["failed_step"] == "database"
    assert result["pgbackrest"]["safety_copy"] is None
    assert recovery_point == ""

    # the original data directory is back in place and its server runs again; the failed restore is kept aside
    assert system_id(original) == before
    assert original.psql("SELECT note FROM original_marker") == "kept"
    assert original.psql("SELECT pg_is_in_recovery()") == "f"
    kept = aside(original)
    assert len(kept) == 1 and kept[0].startswith("data.failed_rebuild_"), kept
    failed_restore = original.dir / kept[0]
    assert (failed_restore / "PG_VERSION").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
