"""rollback_database (pitr and dump) for real: its own PostgreSQL 15 + pgBackRest cluster, rolled back by the role.

The cluster is private to this file (the shared ``postgres`` fixture keeps running for
everyone else). Each test runs the role through ansible-playbook and then reads the
cluster: rows, timeline, data directories, ledger.
"""

import json
import os
import pathlib
import pwd
import shutil
import time
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


def _playbook(tmp_path, cluster, incident=None, **role_vars):
    """Run the role in a play; with ``incident`` (a name) inside an incident opened first under tmp_path/incidents."""
    tasks = [{"name": "rollback", "ansible.builtin.include_role": {"name": "failsafe.recovery.rollback_database"},
              "vars": role_vars}]
    if incident:
        tasks.insert(0, {"name": "open the incident",
                         "ansible.builtin.include_role": {"name": "failsafe.recovery.incident", "tasks_from": "open"},
                         "vars": {"incident_dir": str(tmp_path / "incidents"), "incident_environment": incident,
                                  "incident_id": incident, "incident_title": "database rollback under test"}})
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
        "tasks": tasks,
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


def _journal_notes(tmp_path, cluster, incident):
    """The notes rollback_database wrote in the incident's journal (the raw text holds no password)."""
    text = (tmp_path / "incidents" / (incident + ".jsonl")).read_text()
    assert cluster.password not in text
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [r for r in records if r.get("kind") == "event" and r.get("event") == "note"
            and r.get("role") == "rollback_database"]


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

    # the rollback can be undone: the safety point is in the restored ledger (on the old timeline) and rolling
    # forward to it brings the post-point writes back, on yet another timeline
    kept = cluster.psql("SELECT status || ' ' || timeline FROM failsafe_recovery.restore_points WHERE name = '%s'"
                        % safety["point"]["name"])
    assert kept == "archived %d" % safety["point"]["timeline"]
    forward = _playbook(tmp_path, cluster, rollback_database_target_name=safety["point"]["name"])
    assert forward.rc == 0, forward.stdout[-3000:]
    assert _rows(cluster, table) == "1:0,2:0,3:-1"
    forward_record = _task(forward, "Record the result")["ansible_facts"]["rollback_database_result"]
    assert int(forward_record["timeline_after"]) > new_timeline


def test_failed_proof_puts_original_back(cluster, tmp_path):
    uid = uuid.uuid4().hex[:8]
    point, table = _prepare(cluster, uid)
    timeline = int(cluster.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)
    result = _playbook(tmp_path, cluster, incident="failed_" + uid, rollback_database_target_name=point["name"],
                       rollback_database_assertions=[{"name": "impossible", "sql": "SELECT count(*) FROM %s" % table,
                                                      "expect": "999"}])
    assert result.rc != 0
    final = _task(result, "Rescue | fail naming the step")
    assert "Run the integrity assertions" in final["msg"] and "original data directory" in final["msg"]
    # the rescue journaled what it put back, and the failure it ends with
    safety = _task(result, "Create the safety restore point")["point"]["name"]
    [note] = _journal_notes(tmp_path, cluster, "failed_" + uid)
    kept = cluster.data_dir + ".failed_rollback_" + safety[len("pre_rollback_"):]
    assert note["outcome"] == "failed" and note["method"] == "pitr" and note["target"] == point["name"]
    assert note["failed_step"] == "Run the integrity assertions" and note["safety_point"] == safety
    assert note["put_back"] == "the original data directory " + cluster.data_dir
    assert note["failed_restore_kept"] == kept and pathlib.Path(kept, "PG_VERSION").is_file()
    assert note["timeline"] == timeline and note["host"] == "localhost" and note["seconds"] > 0
    assert note["message"].startswith("Level 4 database rollback FAILED on localhost: ") and final["msg"] in note["message"]
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


# ----------------------------------------------------------------------------- method dump

def _db_rows(cluster, db):
    return cluster.psql("SELECT string_agg(id || ':' || balance, ',' ORDER BY id) FROM accounts", db=db)


def _databases(cluster, prefix):
    return cluster.psql("SELECT coalesce(string_agg(datname, ',' ORDER BY datname), '') FROM pg_database "
                        "WHERE datname LIKE '%s%%'" % prefix).split(",")


def _db_oid(cluster, db):
    return cluster.psql("SELECT oid FROM pg_database WHERE datname = '%s'" % db)


def _pg_dump(cluster, db, path):
    """pg_dump -Fc as the cluster's OS user (the file is the postgres user's, as in production)."""
    cluster.run_as([pathlib.Path(cluster.bin_dir, "pg_dump"), "-Fc", "-h", cluster.socket_dir, "-p", str(cluster.port),
                    "-U", cluster.user, "-f", path, db])
    return path


def _prepare_dump(cluster, uid):
    """database app_<uid>: an old dump (row 1), the good dump (rows 1, 2), then bad writes.

    Returns (db, dumps dir, old dump, good dump). The dumps live in a directory of the cluster's OS user.
    """
    db = "app_" + uid
    cluster.psql("CREATE DATABASE %s" % db)
    cluster.psql("CREATE TABLE accounts (id int PRIMARY KEY, balance int); CREATE INDEX accounts_balance ON accounts "
                 "(balance); INSERT INTO accounts VALUES (1, 100)", db=db)
    dumps = pathlib.Path(cluster.dir, "dumps_" + uid)
    dumps.mkdir()
    owner = pwd.getpwnam(cluster.os_user)
    os.chown(dumps, owner.pw_uid, owner.pw_gid)
    os.chmod(dumps, 0o750)
    old = _pg_dump(cluster, db, dumps / "old.dump")
    os.utime(old, (time.time() - 3600, time.time() - 3600))  # an hour older than the good one
    cluster.psql("INSERT INTO accounts VALUES (2, 200)", db=db)
    good = _pg_dump(cluster, db, dumps / "good.dump")
    cluster.psql("UPDATE accounts SET balance = 0; INSERT INTO accounts VALUES (3, -1)", db=db)
    return db, dumps, old, good


def _writes(tmp_path):
    """stop/resume commands that leave a trace, and the trace file."""
    marker = tmp_path / "writes.log"
    return ({"rollback_database_stop_writes_commands": [["sh", "-c", "echo stop >> %s" % marker]],
             "rollback_database_resume_writes_commands": [["sh", "-c", "echo resume >> %s" % marker]]}, marker)


def test_dump_restores_newest_dump_and_keeps_safety_copy(cluster, tmp_path):
    uid = uuid.uuid4().hex[:8]
    db, dumps, old, good = _prepare_dump(cluster, uid)
    original_oid = _db_oid(cluster, db)
    writes, marker = _writes(tmp_path)
    try:
        result = _playbook(tmp_path, cluster, incident="dump_" + uid, rollback_database_method="dump",
                           rollback_database_dump_dir=str(dumps),
                           rollback_database_assertions=[{"name": "balances back", "sql": "SELECT sum(balance) FROM accounts",
                                                          "expect": "300"}], **writes)
        assert result.rc == 0, result.stdout[-3000:]
        record = _task(result, "Record the result")["ansible_facts"]["rollback_database_result"]
        # the newest dump of the directory was restored: both good rows, no bad writes
        assert record["dump"] == str(good) and record["database"] == db
        assert _db_rows(cluster, db) == "1:100,2:200"
        assert _db_oid(cluster, db) != original_oid
        # the safety copy IS the original database (same oid), renamed, with the bad rows, open to connections
        safety = record["safety_copy"]
        assert safety.startswith(db + "_pre_rollback_") and _db_oid(cluster, safety) == original_oid
        assert _db_rows(cluster, safety) == "1:0,2:0,3:-1"
        assert _databases(cluster, db) == sorted([db, safety])
        # amcheck verified every btree index of the restored database
        assert sorted(record["amcheck"][db]) == ["accounts_balance", "accounts_pkey"]
        assert cluster.psql("SELECT extname FROM pg_extension WHERE extname = 'amcheck'", db=db) == "amcheck"
        assert marker.read_text() == "stop\nresume\n"
        [note] = _journal_notes(tmp_path, cluster, "dump_" + uid)
        assert note["outcome"] == "rolled back" and note["method"] == "dump" and note["database"] == db
        assert note["dump"] == str(good) and note["safety_copy"] == safety and note["safety_copy_dropped"] is False
        assert note["amcheck"] == record["amcheck"] and note["host"] == "localhost" and note["seconds"] > 0
        assert "commands" not in note and ("kept as " + safety) in note["message"]

        # again from the old dump, this time dropping the safety copy once the proof passed
        again = _playbook(tmp_path, cluster, rollback_database_method="dump", rollback_database_dump_file=str(old),
                          rollback_database_drop_safety_copy=True)
        assert again.rc == 0, again.stdout[-3000:]
        second = _task(again, "Record the result")["ansible_facts"]["rollback_database_result"]
        assert second["safety_copy"] is None and second["safety_copy_dropped"]
        assert _db_rows(cluster, db) == "1:100"
        assert _databases(cluster, db) == sorted([db, safety])
    finally:
        shutil.rmtree(dumps, ignore_errors=True)


def test_dump_failed_proof_puts_original_database_back(cluster, tmp_path):
    uid = uuid.uuid4().hex[:8]
    db, dumps, dummy, good = _prepare_dump(cluster, uid)
    original_oid = _db_oid(cluster, db)
    writes, marker = _writes(tmp_path)
    try:
        result = _playbook(tmp_path, cluster, rollback_database_method="dump", rollback_database_dump_file=str(good),
                           rollback_database_assertions=[{"name": "impossible", "sql": "SELECT count(*) FROM accounts",
                                                          "expect": "999"}], **writes)
        assert result.rc != 0
        assert "Restore the dump with pg_restore" in _tasks(result)
        final = _task(result, "Rescue | fail naming the step")
        assert "Run the integrity assertions" in final["msg"] and db in final["msg"]
        # the original database is back under its name (same oid) with its rows; no half-restored or safety copy left
        assert _db_oid(cluster, db) == original_oid
        assert _db_rows(cluster, db) == "1:0,2:0,3:-1"
        assert _databases(cluster, db) == [db]
        assert cluster.psql("SELECT datallowconn FROM pg_database WHERE datname = '%s'" % db) == "t"
        assert marker.read_text() == "stop\nresume\n"
    finally:
        shutil.rmtree(dumps, ignore_errors=True)


def test_dump_missing_file_refused_nothing_changed(cluster, tmp_path):
    uid = uuid.uuid4().hex[:8]
    db, dumps, dummy, good = _prepare_dump(cluster, uid)
    original_oid = _db_oid(cluster, db)
    writes, marker = _writes(tmp_path)
    try:
        result = _playbook(tmp_path, cluster, rollback_database_method="dump", rollback_database_dump_database=db,
                           rollback_database_dump_file=str(dumps / "no_such.dump"), **writes)
        assert result.rc != 0
        failed = [r for n, r in result.task_results() if r.get("failed")]
        assert failed and "rollback_database_dump_file" in failed[0]["msg"] and "no_such.dump" in failed[0]["msg"]
        assert "Nothing was changed" in failed[0]["msg"]
        assert "Stop application writes" not in _tasks(result) and not marker.exists()
        assert _db_oid(cluster, db) == original_oid and _databases(cluster, db) == [db]
        assert _db_rows(cluster, db) == "1:0,2:0,3:-1"

        # a readable dump but a database that does not exist: refused by name, nothing changed
        unknown = _playbook(tmp_path, cluster, rollback_database_method="dump", rollback_database_dump_file=str(good),
                            rollback_database_dump_database="no_such_" + uid, **writes)
        assert unknown.rc != 0
        refusal = _task(unknown, "Preflight | the database and the disk allow the rollback")
        assert refusal["failed"] and "no_such_%s does not exist" % uid in refusal["msg"]
        assert "nothing was changed" in refusal["msg"] and not marker.exists()
        assert _databases(cluster, "no_such_" + uid) == [""] and _db_oid(cluster, db) == original_oid
    finally:
        shutil.rmtree(dumps, ignore_errors=True)


# ----------------------------------------------------------------------------- pitr retention + amcheck

def test_pitr_retention_of_old_data_dirs(cluster, tmp_path):
    data = pathlib.Path(cluster.data_dir)
    stale = [data.parent / (data.name + ".pre_rollback_20000101T000000Z"),
             data.parent / (data.name + ".failed_rollback_20000102T000000Z")]
    for path in stale:
        path.mkdir()
        (path / "PG_VERSION").write_text("15\n")
    before = _aside_dirs(cluster)
    # newest other one by the stamp that ends the name: the one kept beside this run's
    kept = max(before, key=lambda name: name.rsplit("_", 1)[1])
    uid = uuid.uuid4().hex[:8]
    point, table = _prepare(cluster, uid)
    result = _playbook(tmp_path, cluster, rollback_database_target_name=point["name"],
                       rollback_database_keep_old_data_dirs=2)
    assert result.rc == 0, result.stdout[-3000:]
    record = _task(result, "Record the result")["ansible_facts"]["rollback_database_result"]
    assert _rows(cluster, table) == "1:100,2:200"
    aside = _aside_dirs(cluster)
    assert len(aside) == 2 and sorted(aside) == sorted([pathlib.Path(record["old_data_dir"]).name, kept])
    assert pathlib.Path(record["old_data_dir"], "PG_VERSION").is_file()
    assert sorted(pathlib.Path(p).name for p in record["removed_old_data_dirs"]) == sorted(set(before) - {kept})
    assert not any(path.exists() for path in stale)
    # amcheck ran on the restored cluster, the table's primary key among the indexes checked
    assert "%s_pkey" % table in record["amcheck"]["postgres"]


# ----------------------------------------------------------------------------- method migrations

def test_migrations_rescue_then_rollback(cluster, tmp_path):
    uid = uuid.uuid4().hex[:8]
    db = "mig_" + uid
    cluster.psql("CREATE DATABASE %s" % db)
    # schema at version 2: the up-migration added accounts.note
    cluster.psql("CREATE TABLE schema_migrations (version int PRIMARY KEY); INSERT INTO schema_migrations VALUES (1), (2);"
                 "CREATE TABLE accounts (id int PRIMARY KEY, balance int, note text); INSERT INTO accounts VALUES (1, 100, 'x')",
                 db=db)
    original_oid = _db_oid(cluster, db)

    def psql_command(sql):
        return [str(pathlib.Path(cluster.bin_dir, "psql")), "-X", "-v", "ON_ERROR_STOP=1", "-h", cluster.socket_dir,
                "-p", str(cluster.port), "-U", cluster.user, "-d", db, "-c", sql]

    def schema():
        return cluster.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations", db=db) + " " + \
            cluster.psql("SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = "
                         "'accounts'::regclass AND attnum > 0 AND NOT attisdropped", db=db)

    down = psql_command("ALTER TABLE accounts DROP COLUMN note; DELETE FROM schema_migrations WHERE version = 2")
    writes, marker = _writes(tmp_path)
    # the second command fails after the first changed the database: the original comes back untouched
    failed = _playbook(tmp_path, cluster, incident="mig_" + uid, rollback_database_method="migrations",
                       rollback_database_migrations_database=db,
                       rollback_database_migrations_commands=[down, psql_command("SELECT no_such_function()")], **writes)
    assert failed.rc != 0
    final = _task(failed, "Rescue | fail naming the step")
    assert "Run the down-migrations" in final["msg"] and db in final["msg"] and "half-migrated copy was dropped" in final["msg"]
    [note] = _journal_notes(tmp_path, cluster, "mig_" + uid)
    assert note["outcome"] == "failed" and note["method"] == "migrations" and note["database"] == db
    assert note["failed_step"] == "Run the down-migrations" and note["dropped_half_done"] is True
    assert note["put_back"] == "the original database under its name" and "dump" not in note
    assert final["msg"] in note["message"]
    assert _db_oid(cluster, db) == original_oid and _databases(cluster, db) == [db]
    assert schema() == "1,2 id,balance,note"
    assert marker.read_text() == "stop\nresume\n"

    result = _playbook(tmp_path, cluster, rollback_database_method="migrations", rollback_database_migrations_database=db,
                       rollback_database_migrations_commands=[down],
                       rollback_database_assertions=[{"name": "at version 1", "sql": "SELECT max(version) FROM schema_migrations",
                                                      "expect": "1"}])
    assert result.rc == 0, result.stdout[-3000:]
    record = _task(result, "Record the result")["ansible_facts"]["rollback_database_result"]
    assert schema() == "1 id,balance" and _db_rows(cluster, db) == "1:100"
    safety = record["safety_copy"]
    assert safety.startswith(db + "_pre_rollback_") and _db_oid(cluster, safety) == original_oid
    assert _databases(cluster, db) == sorted([db, safety])
    assert cluster.psql("SELECT max(version) FROM schema_migrations", db=safety) == "2"
    assert sorted(record["amcheck"][db]) == ["accounts_pkey", "schema_migrations_pkey"]


# ----------------------------------------------------------------------------- pitr to a time

def _timeline(cluster):
    return int(cluster.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)


def test_pitr_to_time(cluster, tmp_path):
    uid = uuid.uuid4().hex[:8]
    table = "accounts_" + uid
    cluster.psql("CREATE TABLE %s (id int PRIMARY KEY, balance int); INSERT INTO %s VALUES (1, 100), (2, 200)"
                 % (table, table))
    time.sleep(1)  # the server clock separates the good rows, the target and the bad writes
    target = cluster.psql("SELECT now()")
    time.sleep(1)
    cluster.psql("UPDATE %s SET balance = 0; INSERT INTO %s VALUES (3, -1)" % (table, table))
    after_bad = cluster.psql("SELECT now()")
    cluster.switch_wal_and_wait()
    timeline = _timeline(cluster)
    result = _playbook(tmp_path, cluster, rollback_database_target_time=target,
                       rollback_database_assertions=[{"name": "balances back", "sql": "SELECT sum(balance) FROM %s" % table,
                                                      "expect": "300"}])
    assert result.rc == 0, result.stdout[-3000:]
    assert not _task(result, "Preflight | the pgBackRest repository verified clean").get("failed")
    record = _task(result, "Record the result")["ansible_facts"]["rollback_database_result"]
    assert record["target"] == target and record["target_lsn"] is None
    assert cluster.psql("SELECT '%s'::timestamptz = '%s'::timestamptz" % (record["target_time"], target)) == "t"
    assert _rows(cluster, table) == "1:100,2:200"
    new_timeline = _timeline(cluster)
    assert new_timeline > timeline and new_timeline == int(record["timeline_after"])
    # recovery stopped before the first commit past the target: the bad UPDATE, committed between the two clock reads
    reason = pathlib.Path(cluster.data_dir, "pg_wal", "%08X.history" % new_timeline).read_text().strip() \
        .splitlines()[-1].split("\t")[2]
    assert reason.startswith("before "), reason
    stop = reason[len("before "):]
    assert cluster.psql("SELECT '%s'::timestamptz > '%s'::timestamptz AND '%s'::timestamptz <= '%s'::timestamptz"
                        % (stop, target, stop, after_bad)) == "t"
    # the safety point is in the restored ledger (created there: the target predates the ledger on a fresh cluster)
    safety = _task(result, "Create the safety restore point")["point"]
    assert cluster.psql("SELECT status || ' ' || timeline FROM failsafe_recovery.restore_points WHERE name = '%s'"
                        % safety["name"]) == "archived %d" % safety["timeline"]
    assert cluster.psql("SELECT pg_is_in_recovery()") == "f"


def test_pitr_bad_time_refused_nothing_changed(cluster, tmp_path):
    before_dirs = _aside_dirs(cluster)
    sysid = cluster.psql("SELECT system_identifier FROM pg_control_system()")
    safety_before = _safety_points(cluster)
    timeline = _timeline(cluster)
    refusals = [
        # not the shape of a time with a zone (and an injection attempt): refused before it reaches the server
        ("2026-11-23 01:05:09'; DROP TABLE x; --", "Preflight | check the pitr target", "got rollback_database_target_time"),
        # the right shape but no such day: the server refuses to read it
        ("2026-02-30 01:05:09+00", "Preflight | the target time is a valid timestamp", "out of range"),
        # a time the server clock has not reached
        ("2999-01-01 00:00:00+00", "Preflight | the cluster, the backup, the WAL archive and the disk allow the rollback",
         "the target time lies in the future of the server clock"),
    ]
    for value, task, reason in refusals:
        result = _playbook(tmp_path, cluster, rollback_database_target_time=value)
        assert result.rc != 0, value
        refusal = _task(result, task)
        assert refusal["failed"] and reason in refusal["msg"], refusal["msg"]
        assert "nothing was changed" in refusal["msg"].lower()
        if task != "Preflight | the cluster, the backup, the WAL archive and the disk allow the rollback":
            assert "rollback_database_target_time" in refusal["msg"] and "2026-11-23 01:05:09+00" in refusal["msg"]
        else:
            assert "2999-01-01 00:00:00.000000+00" in refusal["msg"]
        assert "Stop PostgreSQL" not in _tasks(result) and "Create the safety restore point" not in _tasks(result)
    assert _aside_dirs(cluster) == before_dirs
    assert cluster.psql("SELECT system_identifier FROM pg_control_system()") == sysid
    assert cluster.psql("SELECT pg_is_in_recovery()") == "f" and _timeline(cluster) == timeline
    assert _safety_points(cluster) == safety_before


def _history_last(cluster, timeline):
    """The last line of a timeline's history file: (parent timeline, switch LSN, reason)."""
    line = pathlib.Path(cluster.data_dir, "pg_wal", "%08X.history" % timeline).read_text().strip().splitlines()[-1]
    parent, lsn, reason = line.split("\t", 2)
    return int(parent), lsn, reason


def test_pitr_to_time_then_roll_forward(cluster, tmp_path):
    """Undo a time rollback: roll forward to the pre_rollback_* point the restored ledger keeps."""
    uid = uuid.uuid4().hex[:8]
    table = "accounts_" + uid
    cluster.psql("CREATE TABLE %s (id int PRIMARY KEY, balance int); INSERT INTO %s VALUES (1, 100), (2, 200)"
                 % (table, table))
    time.sleep(1)
    target = cluster.psql("SELECT now()")
    time.sleep(1)
    cluster.psql("UPDATE %s SET balance = 0; INSERT INTO %s VALUES (3, -1)" % (table, table))
    cluster.switch_wal_and_wait()
    timeline = _timeline(cluster)
    back = _playbook(tmp_path, cluster, incident="back_" + uid, rollback_database_target_time=target)
    assert back.rc == 0, back.stdout[-3000:]
    assert _rows(cluster, table) == "1:100,2:200"
    back_timeline = _timeline(cluster)
    assert back_timeline > timeline
    safety = _task(back, "Create the safety restore point")["point"]
    assert safety["timeline"] == timeline and safety["archived"]
    # the role's own note in the incident journal: what it did, from where to where, and how to undo it
    back_record = _task(back, "Record the result")["ansible_facts"]["rollback_database_result"]
    [note] = _journal_notes(tmp_path, cluster, "back_" + uid)
    stop_parent, stop_lsn, dummy = _history_last(cluster, back_timeline)
    assert stop_parent == timeline
    assert note["outcome"] == "rolled back" and note["method"] == "pitr" and note["host"] == "localhost"
    assert note["target"] == target and note["target_type"] == "time" and "target_lsn" not in note
    assert note["target_time"] == back_record["target_time"]
    assert cluster.psql("SELECT '%s'::timestamptz = '%s'::timestamptz" % (note["target_time"], target)) == "t"
    assert note["safety_point"] == safety["name"] and note["safety_point_lsn"] == safety["lsn"]
    assert note["timeline_before"] == timeline and note["timeline_after"] == back_timeline
    # before: at or past the safety point (taken after the preflight read); stop: the switch point in the history
    # file, before the bad writes; after: on the new timeline, past the switch point
    assert cluster.psql("SELECT '%s'::pg_lsn <= '%s'::pg_lsn AND '%s'::pg_lsn < '%s'::pg_lsn AND '%s'::pg_lsn >= '%s'::pg_lsn"
                        % (note["lsn_before"], safety["lsn"], stop_lsn, note["lsn_before"], note["lsn_after"], stop_lsn)) == "t"
    assert note["stop_lsn"] == stop_lsn == back_record["stop_lsn"]
    assert note["old_data_dir"] == back_record["old_data_dir"] and pathlib.Path(note["old_data_dir"], "PG_VERSION").is_file()
    assert note["backup"] == back_record["backup"] and isinstance(note["seconds"], float) and note["seconds"] > 0
    assert safety["name"] in note["message"] and note["old_data_dir"] in note["message"]
    # the restored ledger names the safety point, on the timeline the bad rows were written on
    kept = cluster.psql("SELECT status || ' ' || timeline || ' ' || lsn FROM failsafe_recovery.restore_points "
                        "WHERE name = '%s'" % safety["name"])
    assert kept == "archived %d %s" % (timeline, safety["lsn"])

    forward = _playbook(tmp_path, cluster, incident="forward_" + uid, rollback_database_target_name=safety["name"],
                        rollback_database_assertions=[{"name": "bad rows back", "sql": "SELECT sum(balance) FROM %s" % table,
                                                       "expect": "-1"}])
    assert forward.rc == 0, forward.stdout[-3000:]
    # the rows written after the target time are back: the state at the moment the time rollback began
    assert _rows(cluster, table) == "1:0,2:0,3:-1"
    record = _task(forward, "Record the result")["ansible_facts"]["rollback_database_result"]
    forward_timeline = _timeline(cluster)
    assert forward_timeline > back_timeline and forward_timeline == int(record["timeline_after"])
    assert int(record["timeline_before"]) == back_timeline
    # the new timeline branched off the ORIGINAL timeline (not the rolled-back one) exactly at the safety point
    parent, switch_lsn, reason = _history_last(cluster, forward_timeline)
    assert parent == timeline and switch_lsn == safety["lsn"] and reason == 'at restore point "%s"' % safety["name"]
    assert cluster.psql("SELECT pg_is_in_recovery()") == "f"
    [note] = _journal_notes(tmp_path, cluster, "forward_" + uid)
    assert note["target"] == safety["name"] and note["target_type"] == "name" and note["target_lsn"] == safety["lsn"]
    assert note["timeline_before"] == back_timeline and note["timeline_after"] == forward_timeline
    assert note["stop_lsn"] == safety["lsn"] and note["safety_point"] == record["safety_point"] != safety["name"]


def test_restored_ledger_ddl_matches_pg_restore_point(cluster):
    """pitr.yml recreates the ledger a time or LSN target may predate with its own copy of the table's DDL (the module
    pg_restore_point cannot record an existing point, only create one): both must make the same table."""
    tasks = yaml.safe_load((ROOT / "roles" / "rollback_database" / "tasks" / "pitr.yml").read_text())
    block = next(t for t in tasks if t.get("name") == "Roll the database back")["block"]
    keep = next(t for t in block if t.get("name") == "Keep the safety restore point in the restored ledger")
    uid = uuid.uuid4().hex[:8]
    role_schema, module_schema = "ddl_role_" + uid, "ddl_module_" + uid
    point = {"name": "kept_" + uid, "lsn": "0/3000090", "timeline": 1, "wal_file": "000000010000000000000003",
             "labels": {"rollback_to": "x"}, "created_at": "2026-11-23T01:00:00+00:00",
             "archived_at": "2026-11-23T01:00:01+00:00", "system_identifier": "1"}
    proc = cluster.run_as([pathlib.Path(cluster.bin_dir, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                           "-h", cluster.socket_dir, "-p", str(cluster.port), "-U", cluster.user, "-d", "postgres",
                           "-v", "schema=" + role_schema, "-v", "point=" + json.dumps(point)],
                          input=keep["ansible.builtin.command"]["stdin"])
    assert proc.stdout.strip() == point["name"], proc
    created = run_module("pg_restore_point", dict(cluster.module_params, name="ddl_" + uid, ledger_schema=module_schema,
                                                  wait_archived=False))
    assert not created.get("failed"), created

    def table(schema):
        return cluster.psql(
            "SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull || ' '"
            " || coalesce(pg_get_expr(d.adbin, d.adrelid), ''), ', ' ORDER BY a.attnum) FROM pg_attribute a"
            " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE a.attrelid = '%s.restore_points'::regclass AND a.attnum > 0 AND NOT a.attisdropped" % schema) + \
            " | " + cluster.psql("SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), ', ' ORDER BY conname)"
                                 " FROM pg_constraint WHERE conrelid = '%s.restore_points'::regclass" % schema)

    try:
        assert table(role_schema) == table(module_schema)
        assert "status text true 'pending'::text" in table(module_schema)
        row = cluster.psql("SELECT status || ' ' || lsn || ' ' || timeline FROM %s.restore_points" % role_schema)
        assert row == "archived 0/3000090 1"
    finally:
        cluster.psql("DROP SCHEMA %s CASCADE; DROP SCHEMA %s CASCADE" % (role_schema, module_schema))


# ----------------------------------------------------------------------------- a journal that cannot be written

JOURNAL_PROBLEM = "The incident journal note of this failure could not be written: Cannot append to journal "


def _unwritable_journal(tmp_path):
    """An open incident whose journal cannot be written: the journal's directory is a regular file (root ignores
    modes, not this), as when the incident directory vanished or was replaced after the incident was opened."""
    blocker = tmp_path / "incidents_gone"
    blocker.write_text("a regular file where the incident directory was\n")
    journal = blocker / "broken.jsonl"
    return {"incident_journal_path": str(journal), "incident_id": "broken_journal"}, journal


def test_pitr_rescue_with_unwritable_journal_still_fails_naming_the_step(cluster, tmp_path):
    uid = uuid.uuid4().hex[:8]
    point, table = _prepare(cluster, uid)
    timeline = _timeline(cluster)
    journal_vars, journal = _unwritable_journal(tmp_path)
    result = _playbook(tmp_path, cluster, rollback_database_target_name=point["name"],
                       rollback_database_assertions=[{"name": "impossible", "sql": "SELECT count(*) FROM %s" % table,
                                                      "expect": "999"}], **journal_vars)
    assert result.rc != 0
    # the journal write failed inside the rescue, and the rescue went on to the role's own failure
    assert _task(result, "Append the event to the journal for this host")["failed"]
    final = _task(result, "Rescue | fail naming the step")
    assert final["failed"] and final["msg"].startswith("rollback_database to %s failed at step 'Run the integrity assertions'"
                                                       % point["name"]), final["msg"]
    assert "original data directory" in final["msg"] and "failed restore is kept in" in final["msg"]
    assert JOURNAL_PROBLEM + str(journal) in final["msg"] and "Not a directory" in final["msg"], final["msg"]
    assert cluster.password not in final["msg"]
    # the last failure the operator sees is the role's, not the journal's
    assert [n for n, r in result.task_results() if r.get("failed")][-1].endswith("Rescue | fail naming the step")
    # the rescue put the original back: the post-point rows, same timeline, primary, the failed restore kept aside
    assert _rows(cluster, table) == "1:0,2:0,3:-1"
    assert _timeline(cluster) == timeline and cluster.psql("SELECT pg_is_in_recovery()") == "f"
    safety = _task(result, "Create the safety restore point")["point"]["name"]
    kept = pathlib.Path(cluster.data_dir + ".failed_rollback_" + safety[len("pre_rollback_"):])
    assert (kept / "PG_VERSION").is_file()
    assert journal.parent.is_file() and not journal.exists()


def test_dump_with_unwritable_journal_rescue_fails_loudly_success_warns(cluster, tmp_path):
    uid = uuid.uuid4().hex[:8]
    db, dumps, dummy, good = _prepare_dump(cluster, uid)
    original_oid = _db_oid(cluster, db)
    writes, marker = _writes(tmp_path)
    journal_vars, journal = _unwritable_journal(tmp_path)
    try:
        failed = _playbook(tmp_path, cluster, rollback_database_method="dump", rollback_database_dump_file=str(good),
                           rollback_database_assertions=[{"name": "impossible", "sql": "SELECT count(*) FROM accounts",
                                                          "expect": "999"}], **writes, **journal_vars)
        assert failed.rc != 0
        assert _task(failed, "Append the event to the journal for this host")["failed"]
        final = _task(failed, "Rescue | fail naming the step")
        assert final["msg"].startswith("rollback_database of database %s from the dump %s failed at step "
                                       "'Run the integrity assertions'" % (db, good)), final["msg"]
        assert "original database is back under its name" in final["msg"]
        assert JOURNAL_PROBLEM + str(journal) in final["msg"] and "Not a directory" in final["msg"], final["msg"]
        assert cluster.password not in final["msg"]
        # the rescue put the original database back (same oid, its rows, open), no copy left, writes resumed
        assert _db_oid(cluster, db) == original_oid and _db_rows(cluster, db) == "1:0,2:0,3:-1"
        assert _databases(cluster, db) == [db]
        assert cluster.psql("SELECT datallowconn FROM pg_database WHERE datname = '%s'" % db) == "t"
        assert marker.read_text() == "stop\nresume\n"

        # a successful rollback whose note cannot be written succeeds, with a warning saying so
        result = _playbook(tmp_path, cluster, rollback_database_method="dump", rollback_database_dump_file=str(good),
                           **journal_vars)
        assert result.rc == 0, result.stdout[-3000:]
        assert _task(result, "Append the event to the journal for this host")["failed"]
        record = _task(result, "Record the result")["ansible_facts"]["rollback_database_result"]
        assert _db_rows(cluster, db) == "1:100,2:200"
        assert _db_oid(cluster, record["safety_copy"]) == original_oid
        warning = _task(result, "Warn that the rollback succeeded but its journal note could not be written")["msg"]
        assert warning.startswith("WARNING: rollback_database succeeded on localhost") and str(journal) in warning
        assert "Cannot append to journal" in warning and "Not a directory" in warning, warning
        assert "Rescue | fail naming the step" not in _tasks(result)
    finally:
        shutil.rmtree(dumps, ignore_errors=True)
