"""pg_restore_point / pg_restore_point_info against a real PostgreSQL 15 whose WAL pgBackRest archives.

Every module run goes through ansible-playbook (sandbox.runner.run_module); the
assertions read the real state afterwards: the ledger table, pg_stat_archiver,
the WAL segments in the pgBackRest repository (decoded with pg_waldump), and a
cluster restored to the point.
"""

import concurrent.futures
import json
import os
import pathlib
import shutil
import tempfile
import uuid


from sandbox import services
from sandbox.runner import run_module

LEDGER = "failsafe_recovery.restore_points"


def _uid():
    return uuid.uuid4().hex[:8]


def _run(postgres, args, check=False, module="pg_restore_point", **login):
    params = dict(postgres.module_params, **login)
    params.update(args)
    return run_module(module, params, check=check)


def _ledger_rows(cluster, name, schema="failsafe_recovery"):
    exists = cluster.psql("SELECT to_regclass('%s.restore_points') IS NOT NULL" % schema)
    if exists != "t":
        return []
    out = cluster.psql("SELECT row_to_json(r) FROM %s.restore_points r WHERE name = '%s'" % (schema, name))
    return [json.loads(line) for line in out.splitlines() if line]


def _segments(first, last):
    """WAL segment names from ``first`` to ``last`` on first's timeline (16 MB segments)."""
    tli, log, seg = int(first[:8], 16), int(first[8:16], 16), int(first[16:], 16)
    end = (int(last[8:16], 16), int(last[16:], 16))
    names = []
    while (log, seg) <= end and len(names) < 64:
        names.append("%08X%08X%08X" % (tli, log, seg))
        seg += 1
        if seg > 0xFF:
            log, seg = log + 1, 0
    return names


def _restore_points_in_archive(postgres, first_wal, name):
    """How many RESTORE_POINT records called ``name`` the archived WAL from ``first_wal`` on holds.

    Segments are fetched from the pgBackRest repository with archive-get, so this
    also proves they reached the archive.
    """
    last_wal = postgres.switch_wal_and_wait()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="waldump-", dir=str(postgres.base_dir)))
    os.chmod(workdir, 0o755)
    postgres._chown(workdir)  # pylint: disable=protected-access
    try:
        segments = _segments(first_wal, last_wal)
        for segment in segments:
            postgres.pgbackrest("archive-get", segment, str(workdir / segment))
        proc = postgres.run_as([os.path.join(postgres.bin_dir, "pg_waldump"), "-p", str(workdir),
                                segments[0], segments[-1]], check=False)
        records = [line for line in proc.stdout.splitlines() if "desc: RESTORE_POINT" in line]
        assert records or proc.returncode == 0, proc.stderr
        return sum(1 for line in records if line.rstrip().endswith("RESTORE_POINT " + name))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_check_mode_create_idempotent_and_info(postgres):
    name = "deploy_" + _uid()
    schema = "ledger_" + _uid()
    wal_before = postgres.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")

    # check mode: a prediction, nothing written (not even the ledger schema)
    predicted = _run(postgres, dict(name=name, ledger_schema=schema, labels={"deployment_id": "42"}), check=True)
    assert not predicted.get("failed"), predicted
    assert predicted["changed"] is True and predicted["created"] is True
    assert predicted["point"]["lsn"] is None and "would create the ledger" in predicted["msg"]
    assert postgres.psql("SELECT count(*) FROM pg_namespace WHERE nspname = '%s'" % schema) == "0"

    # apply: the point exists, the ledger row says archived, the archiver agrees
    created = _run(postgres, dict(name=name, ledger_schema=schema, labels={"deployment_id": "42", "git": "1a2b3c4"}))
    assert not created.get("failed"), created
    assert created["changed"] is True and created["created"] is True
    point = created["point"]
    assert point["status"] == "archived" and point["archived"] is True
    assert point["timeline"] == int(point["wal_file"][:8], 16)
    rows = _ledger_rows(postgres, name, schema)
    assert len(rows) == 1
    assert rows[0]["lsn"] == point["lsn"] and rows[0]["wal_file"] == point["wal_file"]
    assert rows[0]["status"] == "archived" and rows[0]["labels"] == {"deployment_id": "42", "git": "1a2b3c4"}
    assert postgres.psql("SELECT pg_walfile_name('%s'::pg_lsn)" % point["lsn"]) == point["wal_file"]
    assert postgres.psql("SELECT last_archived_wal >= '%s' FROM pg_stat_archiver" % point["wal_file"]) == "t"
    assert created["wal_switched"] is True

    # again: unchanged, the same record, no second point
    again = _run(postgres, dict(name=name, ledger_schema=schema))
    assert not again.get("failed"), again
    assert again["changed"] is False and again["created"] is False
    assert again["point"]["lsn"] == point["lsn"] and again["point"]["created_at"] == point["created_at"]
    assert len(_ledger_rows(postgres, name, schema)) == 1
    # and check mode on an existing, archived point predicts no change
    again_check = _run(postgres, dict(name=name, ledger_schema=schema), check=True)
    assert again_check["changed"] is False and again_check["point"]["lsn"] == point["lsn"]

    # the archived WAL itself holds exactly one restore point of that name
    assert _restore_points_in_archive(postgres, min(wal_before, point["wal_file"]), name) == 1

    # pg_restore_point_info reads the same record
    info = _run(postgres, dict(name=name, ledger_schema=schema), module="pg_restore_point_info")
    assert not info.get("failed"), info
    assert info["changed"] is False and info["ledger_exists"] is True
    assert info["point"] == again["point"] and info["points"] == [again["point"]]
    missing = _run(postgres, dict(ledger_schema="nothing_here_" + _uid()), module="pg_restore_point_info")
    assert missing["ledger_exists"] is False and missing["points"] == [] and missing["point"] is None


def test_wrong_password_and_unreachable_host_name_the_target(postgres):
    name = "never_" + _uid()
    wrong = _run(postgres, dict(name=name), login_password="not-the-password-" + _uid())
    assert wrong["failed"] is True
    assert "postgres@127.0.0.1:%d" % postgres.port in wrong["msg"]
    assert "password authentication failed" in wrong["msg"]
    dumped = json.dumps(wrong)
    assert "not-the-password" not in dumped and postgres.password not in dumped

    closed_port = services.free_port()
    unreachable = _run(postgres, dict(name=name), login_port=closed_port, connect_timeout=3)
    assert unreachable["failed"] is True
    assert "postgres@127.0.0.1:%d" % closed_port in unreachable["msg"]
    assert postgres.password not in json.dumps(unreachable)
    assert _ledger_rows(postgres, name) == []


def test_refuses_without_privilege_then_works_when_granted(postgres):
    uid = _uid()
    role, password = "rp_deployer_" + uid, "pw-" + uuid.uuid4().hex
    name = "priv_" + uid
    login = dict(login_user=role, login_password=password)
    postgres.psql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (role, password))
    try:
        # make sure the shared ledger exists (owned by postgres)
        assert not _run(postgres, dict(name="owner_" + uid, wait_archived=False, switch_wal=False)).get("failed")

        denied = _run(postgres, dict(name=name), **login)
        assert denied["failed"] is True
        assert "pg_create_restore_point" in denied["msg"] and role in denied["msg"]
        assert "GRANT EXECUTE ON FUNCTION pg_catalog.pg_create_restore_point(text) TO %s" % role in denied["msg"]

        postgres.psql("GRANT EXECUTE ON FUNCTION pg_catalog.pg_create_restore_point(text) TO %s" % role)
        no_switch = _run(postgres, dict(name=name), **login)
        assert no_switch["failed"] is True and "pg_switch_wal()" in no_switch["msg"] and role in no_switch["msg"]

        postgres.psql("GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO %s" % role)
        no_ledger = _run(postgres, dict(name=name), **login)
        assert no_ledger["failed"] is True
        assert "may not write the ledger" in no_ledger["msg"] and role in no_ledger["msg"]
        assert _ledger_rows(postgres, name) == []

        # with its own ledger schema (CREATE on the database) the non-superuser succeeds
        postgres.psql("GRANT CREATE ON DATABASE postgres TO %s" % role)
        schema = "ledger_" + uid
        granted = _run(postgres, dict(name=name, ledger_schema=schema), **login)
        assert not granted.get("failed"), granted
        assert granted["changed"] is True and granted["point"]["status"] == "archived"
        assert granted["point"]["created_by"] == role
        assert granted["point"]["system_identifier"] == postgres.psql("SELECT system_identifier FROM pg_control_system()")
        assert len(_ledger_rows(postgres, name, schema)) == 1
    finally:
        postgres.psql("DROP SCHEMA IF EXISTS ledger_%s CASCADE; REVOKE CREATE ON DATABASE postgres FROM %s; "
                      "REVOKE EXECUTE ON FUNCTION pg_catalog.pg_create_restore_point(text) FROM %s; "
                      "REVOKE EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() FROM %s; DROP ROLE %s"
                      % (uid, role, role, role, role))


def test_broken_archiver_fails_not_durable_then_recovers(postgres):
    name = "unarchived_" + _uid()
    postgres.psql("ALTER SYSTEM SET archive_command = 'false'")
    postgres.psql("SELECT pg_reload_conf()")
    try:
        services.wait_until(lambda: postgres.psql("SHOW archive_command") == "false", 10, "archive_command reloaded")
        failed = _run(postgres, dict(name=name, archive_timeout=4, poll_interval=0.2))
        assert failed["failed"] is True and failed["changed"] is True
        assert "NOT durable" in failed["msg"] and "archiver is failing" in failed["msg"]
        archiver = failed["archiver"]
        assert archiver["last_failed_wal"] and archiver["last_failed_wal"] in failed["msg"]
        assert archiver["last_failed_time"] in failed["msg"]
        assert failed["point"]["wal_file"] in failed["msg"]
        # the backlog in pg_wal/archive_status is named, the point's segment among it
        assert "wait in pg_wal/archive_status" in failed["msg"] and "segment is among them" in failed["msg"]
        rows = _ledger_rows(postgres, name)
        assert len(rows) == 1 and rows[0]["status"] == "created" and rows[0]["archived_at"] is None
        # check mode on the unarchived point predicts the wait (a change of the ledger row)
        predicted = _run(postgres, dict(name=name), check=True)
        assert predicted["changed"] is True and predicted["created"] is False
    finally:
        postgres.psql("ALTER SYSTEM RESET archive_command")
        postgres.psql("SELECT pg_reload_conf()")
    services.wait_until(lambda: postgres.psql("SHOW archive_command") != "false", 10, "archive_command restored")
    recovered = _run(postgres, dict(name=name, archive_timeout=60))
    assert not recovered.get("failed"), recovered
    assert recovered["changed"] is True and recovered["created"] is False
    assert recovered["point"]["lsn"] == failed["point"]["lsn"]
    rows = _ledger_rows(postgres, name)
    assert len(rows) == 1 and rows[0]["status"] == "archived"


def test_switches_the_segment_while_the_wal_writer_lags(postgres):
    """The point's record may be inserted but not yet written: the module must still switch its segment.

    With synchronous_commit=off and a WAL writer that sleeps 10 s, pg_current_wal_lsn() (the write
    position) stays in the previous segment after the point; judging by it, the point's segment looked
    complete, was never switched, and the wait timed out.
    """
    name = "lagging_writer_" + _uid()
    postgres.psql("ALTER SYSTEM SET wal_writer_delay = '10s'")
    postgres.psql("SELECT pg_reload_conf()")
    try:
        services.wait_until(lambda: postgres.psql("SHOW wal_writer_delay") == "10s", 10, "wal_writer_delay reloaded")
        postgres.switch_wal_and_wait()  # the point is the first record of a fresh segment
        created = _run(postgres, dict(name=name, archive_timeout=30, poll_interval=0.2))
    finally:
        postgres.psql("ALTER SYSTEM RESET wal_writer_delay")
        postgres.psql("SELECT pg_reload_conf()")
    assert not created.get("failed"), created
    assert created["wal_switched"] is True and created["point"]["archived"] is True
    assert postgres.psql("SELECT pg_walfile_name(pg_current_wal_insert_lsn()) > '%s'" % created["point"]["wal_file"]) == "t"


def test_refuses_on_standby(postgres):
    uid = _uid()
    known = "before_standby_" + uid
    assert not _run(postgres, dict(name=known)).get("failed")
    # the UPDATE that marked the point archived sits in the next segment: ship it too
    postgres.switch_wal_and_wait()
    standby = postgres.restore_copy("standby_" + uid, extra_args=["--type=standby"])
    try:
        assert standby.psql("SELECT pg_is_in_recovery()") == "t"
        services.wait_until(lambda: standby.psql("SELECT count(*) FROM %s WHERE name = '%s'" % (LEDGER, known)) == "1",
                            30, "ledger row replayed on the standby")
        refused = _run(standby, dict(name="on_standby_" + uid))
        assert refused["failed"] is True
        assert "standby" in refused["msg"] and "127.0.0.1:%d" % standby.port in refused["msg"]
        assert standby.psql("SELECT count(*) FROM %s WHERE name = 'on_standby_%s'" % (LEDGER, uid)) == "0"
        # reading the ledger works on a standby
        info = _run(standby, dict(name=known), module="pg_restore_point_info")
        assert not info.get("failed"), info
        assert info["point"]["name"] == known and info["point"]["status"] == "archived"
    finally:
        standby.stop()


def test_concurrent_runs_of_one_name_create_one_point(postgres):
    """Two deploys racing on one name: one point in the WAL, one ledger row, one run reports the creation."""
    name = "race_" + _uid()
    wal_before = postgres.psql("SELECT pg_walfile_name(pg_current_wal_insert_lsn())")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda dummy: _run(postgres, dict(name=name, archive_timeout=60)), range(2)))
    assert all(not r.get("failed") for r in results), results
    assert sorted(r["created"] for r in results) == [False, True]
    assert results[0]["point"]["lsn"] == results[1]["point"]["lsn"]
    rows = _ledger_rows(postgres, name)
    assert len(rows) == 1 and rows[0]["status"] == "archived"
    assert _restore_points_in_archive(postgres, wal_before, name) == 1


def test_pitr_to_the_point_brings_back_its_ledger_row(postgres):
    uid = _uid()
    name = "pitr_" + uid
    table = "orders_" + uid
    postgres.psql("CREATE TABLE %s (id int PRIMARY KEY, note text); INSERT INTO %s VALUES (1, 'good')" % (table, table))
    created = _run(postgres, dict(name=name, labels={"deployment_id": uid}))
    assert not created.get("failed"), created
    original_tli = created["point"]["timeline"]
    postgres.psql("INSERT INTO %s VALUES (2, 'bad write'); DELETE FROM %s WHERE id = 1" % (table, table))
    postgres.switch_wal_and_wait()

    copy = postgres.restore_copy("pitr_" + uid, target=name)
    try:
        services.wait_until(lambda: copy.psql("SELECT pg_is_in_recovery()") == "f", 60, "restored copy promoted")
        assert copy.psql("SELECT string_agg(id || ':' || note, ',' ORDER BY id) FROM %s" % table) == "1:good"
        rows = _ledger_rows(copy, name)
        # the row was committed before the point: it is there, still pending (its LSN was written later)
        assert len(rows) == 1 and rows[0]["status"] == "pending" and rows[0]["labels"] == {"deployment_id": uid}
        new_tli = int(copy.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)
        assert new_tli > original_tli
        info = _run(copy, dict(name=name), module="pg_restore_point_info")
        assert info["point"]["status"] == "pending" and info["point"]["lsn"] is None
    finally:
        copy.stop()
    # the source cluster still has both the row (archived) and the bad write
    assert _ledger_rows(postgres, name)[0]["status"] == "archived"
    assert postgres.psql("SELECT count(*) FROM %s" % table) == "1"
