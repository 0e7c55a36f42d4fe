"""rollback_database (pitr) for real: its own PostgreSQL 15 + pgBackRest cluster, rolled back by the role.

The cluster is private to this file (the shared ``postgres`` fixture keeps running for
everyone else). Each test runs the role through ansible-playbook and then reads the
cluster: rows, timeline, data directories, ledger.
"""

import pathlib
import shutil
import uuid

import pytest
import yaml

from sandbox import services
from sandbox.runner import ROOT, run_module, run_playbook


@pytest.fixture(scope="module")
def cluster(services_dir):
    pg = services.PostgresCluster(services_dir, stanza="rollback", name="pg_rollback")
    try:
        pg.up()
        yield pg
    finally:
        pg.stop()


def _playbook(tmp_path, cluster, **role_vars):
    play = [{
        "name": "roll the database back",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {
            "ansible_python_interpreter": str(ROOT / ".venv" / "bin" / "python"),
            "ansible_become_method": "ansible.builtin.su",
            "rollback_database_login": cluster.module_params,
            "rollback_database_data_dir": cluster.data_dir,
            "rollback_database_bin_dir": cluster.bin_dir,
            "rollback_database_server_log": str(pathlib.Path(cluster.data_dir).parent / "rollback.log"),
            "rollback_database_pgbackrest_config": cluster.pgbackrest_config,
            "rollback_database_stanza": cluster.stanza,
            "rollback_database_promote_timeout": 120,
        },
        "tasks": [{"name": "rollback", "ansible.builtin.include_role": {"name": "failsafe.recovery.rollback_database"},
                   "vars": role_vars}],
    }]
    path = tmp_path / "rollback.yml"
    path.write_text(yaml.safe_dump(play))
    return run_playbook(path, inventory="localhost,")


def _tasks(result):
    """Task names without the 'role : ' prefix."""
    return [name.split(" : ", 1)[-1] for name, dummy in result.task_results()]


def _task(result, name):
    found = [r for n, r in result.task_results() if n.split(" : ", 1)[-1] == name]
    assert found, "task %r did not run: %s" % (name, _tasks(result))
    return found[-1]


def _aside_dirs(cluster):
    data = pathlib.Path(cluster.data_dir)
    return sorted(p.name for p in data.parent.iterdir() if p.name.startswith(data.name + "."))


def _prepare(cluster, uid):
    """good row -> archived point -> bad writes, all archived; returns (point record, table)."""
    table = "accounts_" + uid
    cluster.psql("CREATE TABLE %s (id int PRIMARY KEY, balance int); INSERT INTO %s VALUES (1, 100), (2, 200)"
                 % (table, table))
    created = run_module("pg_restore_point", dict(cluster.module_params, name="pre_deploy_" + uid))
    assert not created.get("failed"), created
    cluster.psql("UPDATE %s SET balance = 0; INSERT INTO %s VALUES (3, -1)" % (table, table))
    cluster.switch_wal_and_wait()
    return created["point"], table


def _rows(cluster, table):
    return cluster.psql("SELECT string_agg(id || ':' || balance, ',' ORDER BY id) FROM %s" % table)


def _safety_points(cluster):
    if cluster.psql("SELECT to_regclass('failsafe_recovery.restore_points') IS NOT NULL") != "t":
        return "0"
    return cluster.psql("SELECT count(*) FROM failsafe_recovery.restore_points WHERE name LIKE 'pre_rollback_%'")


def test_unknown_target_refused_nothing_changed(cluster, tmp_path):
    before_dirs = _aside_dirs(cluster)
    sysid = cluster.psql("SELECT system_identifier FROM pg_control_system()")
    safety_before = _safety_points(cluster)
    result = _playbook(tmp_path, cluster, rollback_database_target_name="no_such_point")
    assert result.rc != 0
    failed = [r for n, r in result.task_results() if r.get("failed")]
    assert failed and "no_such_point" in failed[0]["msg"] and "Nothing was changed" in failed[0]["msg"]
    assert "Stop PostgreSQL" not in _tasks(result) and "Create the safety restore point" not in _tasks(result)
    assert _aside_dirs(cluster) == before_dirs
    assert cluster.psql("SELECT system_identifier FROM pg_control_system()") == sysid
    assert cluster.psql("SELECT pg_is_in_recovery()") == "f"
    assert _safety_points(cluster) == safety_before


def test_pitr_to_ledger_point(cluster, tmp_path):
    uid = uuid.uuid4().hex[:8]
    point, table = _prepare(cluster, uid)
    timeline = int(cluster.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)
    result = _playbook(tmp_path, cluster, rollback_database_target_name=point["name"],
                       rollback_database_assertions=[{"name": "balances back", "sql": "SELECT sum(balance) FROM %s" % table,
                                                      "expect": "300"}])
    assert result.rc == 0, result.stdout[-3000:]
    record = _task(result, "Record the result")["ansible_facts"]["rollback_database_result"]
    assert _rows(cluster, table) == "1:100,2:200"
    new_timeline = int(cluster.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)
    # +1 from the timeline the point is on; higher when an earlier (rescued) restore archived one in between
    assert new_timeline > timeline and new_timeline == int(record["timeline_after"])
    # recovery stopped exactly at the point: the history file's switch LSN is the ledger's LSN
    history = pathlib.Path(cluster.data_dir, "pg_wal", "%08X.history" % new_timeline).read_text().strip().splitlines()[-1]
    assert history.split("\t")[1] == point["lsn"] and point["name"] in history
    # the ledger row of the point survived the restore; the safety point was archived before
    assert cluster.psql("SELECT count(*) FROM failsafe_recovery.restore_points WHERE name = '%s'" % point["name"]) == "1"
    safety = _task(result, "Create the safety restore point")
    assert safety["changed"] and safety["point"]["archived"] and safety["point"]["name"].startswith("pre_rollback_")
    assert pathlib.Path(record["old_data_dir"], "PG_VERSION").is_file()
    assert cluster.psql("SELECT pg_is_in_recovery()") == "f"


def test_failed_proof_puts_original_back(cluster, tmp_path):
    uid = uuid.uuid4().hex[:8]
    point, table = _prepare(cluster, uid)
    timeline = int(cluster.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)
    result = _playbook(tmp_path, cluster, rollback_database_target_name=point["name"],
                       rollback_database_assertions=[{"name": "impossible", "sql": "SELECT count(*) FROM %s" % table,
                                                      "expect": "999"}])
    assert result.rc != 0
    final = _task(result, "Rescue | fail naming the step")
    assert "Run the integrity assertions" in final["msg"] and "original data directory" in final["msg"]
    # original back: the post-point rows are there, same timeline, server answering as primary
    assert _rows(cluster, table) == "1:0,2:0,3:-1"
    assert int(cluster.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16) == timeline
    assert cluster.psql("SELECT pg_is_in_recovery()") == "f"
    aside = _aside_dirs(cluster)
    assert any(".failed_rollback_" in name for name in aside)


def test_missing_wal_segment_refused_nothing_changed(cluster, tmp_path):
    uid = uuid.uuid4().hex[:8]
    point, table = _prepare(cluster, uid)
    pattern = "*/%s/%s-*" % (point["wal_file"][:16], point["wal_file"])
    archived = list(pathlib.Path(cluster.repo_path, "archive", cluster.stanza).glob(pattern))
    assert len(archived) == 1, archived
    hidden = tmp_path / archived[0].name  # out of the repository: as good as deleted
    before_dirs = _aside_dirs(cluster)
    shutil.move(str(archived[0]), str(hidden))
    try:
        result = _playbook(tmp_path, cluster, rollback_database_target_name=point["name"])
    finally:
        shutil.move(str(hidden), str(archived[0]))
    assert result.rc != 0
    refusal = _task(result, "Preflight | the cluster, the backup, the WAL archive and the disk allow the rollback")
    assert refusal["failed"] and point["wal_file"] in refusal["msg"] and "nothing was changed" in refusal["msg"]
    assert "Stop PostgreSQL" not in _tasks(result)
    assert _aside_dirs(cluster) == before_dirs
    assert _rows(cluster, table) == "1:0,2:0,3:-1"
