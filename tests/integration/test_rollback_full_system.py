"""Role rollback_full_system (level 5) for real: code, configuration, database and files of one host rolled back.

The host (``app1`` on localhost) has an ansistrano releases directory with a demo app running on ``current``, a
configuration file, a directory of user files backed up as a tar.gz in S3 (the moto fixture, with S3 SHA256
checksums and a sidecar), and a private PostgreSQL 15 + pgBackRest cluster. The good state is recorded by
playbooks/pre_deploy.yml (release, config snapshot, archived restore point); then a bad deploy changes all four;
the role, driven by a playbook like an operator's, must bring all four back. Failure injection: a corrupted S3
backup is refused in the preflight with nothing changed at all, and a files restore that fails after the database
was rolled back (its check against the manifest fails) puts the live files back and names the component, the step and what was already done.
"""

import datetime
import hashlib
import json
import os
import pathlib
import uuid

import pytest
import yaml

from sandbox import archives, runner, services

PY = str(runner.ROOT / ".venv" / "bin" / "python")
PRE_DEPLOY = runner.ROOT / "playbooks" / "pre_deploy.yml"
ROLLBACK = runner.ROOT / "playbooks" / "rollback.yml"
KEY_REGEX = r"uploads-(?P<time>\d{8}T\d{6}Z)\.tar\.gz$"
GOOD_FILES = {"a.txt": b"invoice 1: 100 EUR\n", "sub/b.bin": bytes(range(256)) * 8, "sub/deeper/c.txt": b"kept\n"}
GOOD_CONFIG = {"feature_x": False, "pool": 10}
BAD_CONFIG = {"feature_x": True, "pool": 500}


@pytest.fixture(scope="module")
def cluster(services_dir):
    pg = services.PostgresCluster(services_dir, stanza="fullsys", name="pg_fullsys")
    try:
        pg.up()
        yield pg
    finally:
        pg.stop()


def _manifest(files):
    """MANIFEST.sha256 (sha256sum format) of ``files``."""
    return "".join("%s  %s\n" % (hashlib.sha256(body).hexdigest(), name) for name, body in sorted(files.items())).encode()


class Site:
    """One host's good state (v1, good config, good rows, good files backed up), then its bad deploy."""

    def __init__(self, base, cluster, moto):
        self.base = pathlib.Path(base)
        self.cluster = cluster
        self.moto = moto
        self.s3 = moto.client("s3")
        self.uid = uuid.uuid4().hex[:8]
        self.table = "orders_" + self.uid
        self.bucket = "files-backup-" + self.uid
        self.root = self.base / "app"
        self.config = self.base / "etc" / "app.json"
        self.files = self.base / "srv" / "uploads"
        self.records = self.base / "deployments"
        self.inventory = self.base / "inventory.yml"
        self.app = None
        self.key = None
        self.restore_point = None

    # -- good state
    def good_state(self):
        services.layout_releases(self.root, current="v1")
        self.app = services.DemoApp(self.base / "run", "fsapp", release_dir=self.root / "current")
        self.app.up()
        self.config.parent.mkdir(parents=True)
        self.config.write_text(json.dumps(GOOD_CONFIG) + "\n")
        for name, body in GOOD_FILES.items():
            (self.files / name).parent.mkdir(parents=True, exist_ok=True)
            (self.files / name).write_bytes(body)
        (self.files / "MANIFEST.sha256").write_bytes(_manifest(GOOD_FILES))
        self.cluster.psql("CREATE TABLE %s (id int PRIMARY KEY, amount int); INSERT INTO %s VALUES (1, 100), (2, 200)"
                          % (self.table, self.table))
        # the nightly files backup: tar.gz with an S3 SHA256 checksum and a sha256sum sidecar
        archive = archives.tar_gz(archives.tree(self.files))
        taken = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        self.key = "files/uploads-%s.tar.gz" % taken.strftime("%Y%m%dT%H%M%SZ")
        self.s3.create_bucket(Bucket=self.bucket)
        self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=archive, ChecksumAlgorithm="SHA256")
        self.s3.put_object(Bucket=self.bucket, Key=self.key + ".sha256",
                           Body=("%s  %s\n" % (hashlib.sha256(archive).hexdigest(), self.key.rsplit("/", 1)[-1])).encode())
        self.inventory.write_text(yaml.safe_dump({"all": {"children": {"app": {"hosts": {"app1": {
            "ansible_connection": "local", "ansible_python_interpreter": PY, "ansible_pipelining": True}}}}}}))
        # the deploy of v2 is recorded first: release, config snapshot, archived restore point
        res = runner.run_playbook(PRE_DEPLOY, inventory=self.inventory, extra_vars={
            "deploy_snapshot_release": "v2", "deploy_snapshot_previous_release": "v1",
            "deploy_snapshot_records_dir": str(self.records),
            "deploy_snapshot_config_files": [str(self.config)],
            "deploy_snapshot_restore_point": dict(self.cluster.module_params, wait_archived=True)})
        assert res.rc == 0, res.stdout[-3000:]
        record = json.loads(next(self.records.glob("*/record.json")).read_text())
        self.restore_point = record["restore_point_name"]
        assert self.restore_point
        self.good = self.snapshot()
        return self

    # -- bad deploy
    def bad_deploy(self):
        services.switch_current(self.root, "v2")
        services.wait_until(lambda: self.serving() == "v2", 10, "demo app serving v2")
        self.config.write_text(json.dumps(BAD_CONFIG) + "\n")
        self.cluster.psql("UPDATE %s SET amount = 0; INSERT INTO %s VALUES (3, -1)" % (self.table, self.table))
        self.cluster.switch_wal_and_wait()
        (self.files / "a.txt").write_bytes(b"invoice 1: 0 EUR\n")
        (self.files / "sub" / "b.bin").unlink()
        (self.files / "evil.php").write_bytes(b"<?php system($_GET['c']);\n")
        self.bad = self.snapshot()
        assert self.bad != self.good
        return self

    def corrupt_backup(self):
        """Replace the backup's bytes; the sidecar keeps the digest of the original (moto accepts any upload)."""
        body = bytearray(self.s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read())
        body[len(body) // 2] ^= 0xFF
        self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(body), ChecksumAlgorithm="SHA256")

    def serving(self):
        return self.app.get_json("/health")[1]["version"]

    def rows(self):
        return self.cluster.psql("SELECT string_agg(id || ':' || amount, ',' ORDER BY id) FROM %s" % self.table)

    def snapshot(self):
        return {"link": os.readlink(self.root / "current"), "config": self.config.read_bytes(),
                "rows": self.rows(), "files": archives.tree(self.files)}

    def aside(self):
        """Directories beside the files directory and the data directory (safety copies, failed restores)."""
        data = pathlib.Path(self.cluster.data_dir)
        return sorted([p.name for p in self.files.parent.iterdir() if p.name.startswith("uploads.")]
                      + [p.name for p in data.parent.iterdir() if p.name.startswith(data.name + ".")])

    # -- the rollback: playbooks/rollback.yml at level 5 (incident, journal, gate, report), or the role alone
    def rollback(self, operator=False, check=False, **extra):
        play = [{
            "name": "level 5 rollback",
            "hosts": "app",
            "gather_facts": False,
            "tasks": [{"name": "rollback", "ansible.builtin.include_role": {"name": "failsafe.recovery.rollback_full_system"}}],
        }]
        path = self.base / "rollback_full_system.yml"
        path.write_text(yaml.safe_dump(play))
        extra_vars = {
            "rollback_full_system_aws": self.moto.aws_params,
            "rollback_full_system_files_bucket": self.bucket,
            "rollback_full_system_files_prefix": "files/",
            "rollback_full_system_files_key_regex": KEY_REGEX,
            "rollback_full_system_files_checksum": ["s3", "sidecar", "deep"],
            "rollback_full_system_files_max_age": "1h",
            "rollback_full_system_files_dest": str(self.files),
            "rollback_full_system_files_manifest": "MANIFEST.sha256",
            "rollback_database_target_name": self.restore_point,
            "rollback_database_login": self.cluster.module_params,
            "rollback_database_data_dir": self.cluster.data_dir,
            "rollback_database_bin_dir": self.cluster.bin_dir,
            "rollback_database_server_log": str(pathlib.Path(self.cluster.data_dir).parent / "rollback.log"),
            "rollback_database_pgbackrest_config": self.cluster.pgbackrest_config,
            "rollback_database_stanza": self.cluster.stanza,
            "rollback_database_promote_timeout": 120,
            "rollback_database_assertions": [{"name": "amounts back", "sql": "SELECT sum(amount) FROM %s" % self.table,
                                              "expect": "300"}],
            "rollback_config_records_dir": str(self.records),
            "rollback_config_validate": {str(self.config): PY + " -m json.tool %s"},
            "rollback_config_reload_command": "kill -HUP %d" % self.app.running_pid(),
            "rollback_code_deploy_to": str(self.root),
            "rollback_code_records_dir": str(self.records),
            "rollback_code_restart_command": "kill -HUP %d" % self.app.running_pid(),
            "rollback_code_health_checks": [{"name": "fsapp", "type": "http", "url": self.app.url + "/health"}],
            "rollback_code_health_interval": 0.2,
            "rollback_code_health_timeout": 10,
        }
        if operator:
            path = ROLLBACK
            extra_vars.update({
                "rollback_level": 5, "auto_confirm": True, "rollback_environment": "l5-" + self.uid,
                "incident_dir": str(self.base / "incidents"), "incident_service": "core_api",
                "rollback_verify_checks": [{"name": "fsapp", "type": "http", "url": self.app.url + "/health"}],
                "rollback_verify_interval": 0.2, "rollback_verify_timeout": 30})
        extra_vars.update(extra)
        return runner.run_playbook(path, inventory=self.inventory, extra_vars=extra_vars, check=check)

    def journal_notes(self):
        """The level 5 notes of the incident journal, in order."""
        [journal] = (self.base / "incidents").glob("*.jsonl")
        records = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
        return [r for r in records if r.get("kind") == "event" and r.get("event") == "note" and r.get("level") == 5]


@pytest.fixture
def site(tmp_path, cluster, moto):
    made = Site(tmp_path, cluster, moto)
    yield made
    if made.app:
        made.app.stop()


def task(res, name, host="app1"):
    """The result of the last task ``name`` (role tasks are reported as ``<role> : <name>``)."""
    found = [r for n, r in res.task_results(host) if n == name or n.endswith(" : " + name)]
    assert found, "task %r did not run; rc=%s\n%s\n%s" % (name, res.rc, res.stdout[-3000:], res.stderr[-3000:])
    return found[-1]


def ran(res, name, host="app1"):
    return [i for i, (n, r) in enumerate(res.task_results(host))
            if (n == name or n.endswith(" : " + name)) and not r.get("skipped")]


def test_all_four_rolled_back_in_order(site):
    site.good_state().bad_deploy()
    aside_before = site.aside()
    res = site.rollback(operator=True)
    assert res.rc == 0, res.stdout[-4000:]

    # all four are back
    assert site.snapshot() == site.good
    services.wait_until(lambda: site.serving() == "v1", 10, "demo app serving v1")
    # safety copies: the bad files moved aside, the pre-rollback data directory kept
    new = sorted(set(site.aside()) - set(aside_before))
    files_copy = [name for name in new if name.startswith("uploads.pre_rollback_")]
    data_copy = [name for name in new if ".pre_rollback_" in name and not name.startswith("uploads.")]
    assert len(files_copy) == 1 and len(data_copy) == 1 and len(new) == 2, new
    assert archives.tree(site.files.parent / files_copy[0]) == site.bad["files"]
    result = task(res, "Publish what the full system rollback did")["ansible_facts"]["rollback_full_system_result"]
    assert result["database"]["old_data_dir"] == str(pathlib.Path(site.cluster.data_dir).parent / data_copy[0])
    assert pathlib.Path(result["database"]["old_data_dir"], "PG_VERSION").is_file()

    # one result: every component done, timed, the verified backup named
    assert result["components"] == result["done"] == ["database", "files", "config", "code"]
    assert sorted(result["timings"]) == ["code", "config", "database", "files"]
    assert all(float(seconds) > 0 for seconds in result["timings"].values()), result["timings"]
    assert result["failed_component"] == "" and result["message"] == ""
    assert result["files"]["key"] == site.key and result["files"]["safety_copy"] == str(site.files.parent / files_copy[0])
    assert result["files"]["sha256"] == hashlib.sha256(
        site.s3.get_object(Bucket=site.bucket, Key=site.key)["Body"].read()).hexdigest()
    assert int(result["files"]["restored"]) == len(GOOD_FILES) + 1  # and the manifest
    assert result["code"]["release_target"] == "v1" and result["code"]["release_before"] == "v2"
    assert result["config"]["changed_files"] == [str(site.config)]

    # the backup was read in full before anything changed; then database, files, config, code in that order
    verify = task(res, "Preflight | files | verify the backup in S3 (age, size and integrity, reading every byte)")
    assert verify["passed"] and verify["deep"]["results"][0]["ok"]
    order = [ran(res, name) for name in ("Preflight | files | verify the backup in S3 (age, size and integrity, reading every byte)",
                                         "Stop PostgreSQL", "Files | extract the backup",
                                         "Restore the recorded configuration files", "Point current at the target release")]
    assert all(order) and [o[0] for o in order] == sorted(o[0] for o in order), order
    assert task(res, "Files | check the restored files against the manifest of the backup")["rc"] == 0

    # one journal: a note per component, in order, inside the incident that rollback.yml opened and closed
    notes = site.journal_notes()
    assert [n["component"] for n in notes] == ["database", "files", "config", "code"], notes
    assert all(n["host"] == "app1" and n["seconds"] == float(result["timings"][n["component"]]) for n in notes), notes
    [report] = (site.base / "incidents" / "reports").glob("*.json")
    report = json.loads(report.read_text())
    assert report["outcome"] == "restored" and str(report["level"]) == "5"
    assert task(res, "Re-verify with the health gate")["verdict"] == "pass"
    assert not (site.base / "incidents" / ("l5-%s.lock" % site.uid)).exists()


def test_corrupted_files_backup_refused_nothing_changed(site):
    site.good_state().bad_deploy()
    site.corrupt_backup()
    aside_before = site.aside()
    res = site.rollback()
    assert res.rc != 0
    refusal = task(res, "Preflight | files | the backup verified")
    assert refusal["failed"] and site.key in refusal["msg"] and "Nothing was changed" in refusal["msg"], refusal["msg"]
    assert "sha256" in refusal["msg"]
    # nothing at all changed: code, config, rows, files still the bad deploy's; no safety copy, no restore
    assert site.snapshot() == site.bad
    assert site.serving() == "v2"
    assert site.aside() == aside_before
    for step in ("Stop PostgreSQL", "Create the safety restore point", "Files | download the verified backup",
                 "Restore the recorded configuration files", "Point current at the target release"):
        assert not ran(res, step), step


def assert_files_put_back(site, aside_before):
    """After a failed files restore: the database rolled back, the live files, link and configuration those of the
    bad deploy again, and the failed restore kept aside (no pre-rollback copy left behind)."""
    now = site.snapshot()
    assert now["rows"] == site.good["rows"] and now["files"] == site.bad["files"]
    assert now["link"] == site.bad["link"] and now["config"] == site.bad["config"]
    new = sorted(set(site.aside()) - set(aside_before))
    assert not [name for name in new if name.startswith("uploads.pre_rollback_")], new
    failed_copy = [name for name in new if name.startswith("uploads.failed_rollback_")]
    assert len(failed_copy) == 1 and archives.tree(site.files.parent / failed_copy[0]) == site.good["files"], new


def test_failed_files_restore_puts_files_back_after_database(site):
    site.good_state().bad_deploy()
    aside_before = site.aside()
    # check mode: only the (read-only) preflight runs, and it passes
    check = site.rollback(check=True, rollback_full_system_components=["database", "files"])
    assert check.rc == 0, check.stdout[-3000:]
    said = task(check, "Tell what a real run would do (check mode stops after the preflight)")["msg"]
    assert "rolls back database, files (files from s3://%s/%s)" % (site.bucket, site.key) in said, said
    assert site.snapshot() == site.bad and site.aside() == aside_before

    res = site.rollback(rollback_full_system_components=["database", "files"],
                        rollback_full_system_files_manifest="NO_SUCH_MANIFEST.sha256")
    assert res.rc != 0
    failure = task(res, "Rescue | fail naming the component and the step")
    msg = failure["msg"]
    assert "in component 'files'" in msg and "Files | check the restored files against the manifest" in msg, msg
    assert "Rolled back before the failure: database; not rolled back: files." in msg, msg
    # the database stays rolled back; the live files are back as they were (the bad deploy's), the failed restore kept
    assert_files_put_back(site, aside_before)
    result = task(res, "Publish what the full system rollback did")["ansible_facts"]["rollback_full_system_result"]
    assert result["done"] == ["database"] and result["failed_component"] == "files"
    assert result["failed_task"].endswith("Files | check the restored files against the manifest of the backup")
    assert sorted(result["timings"]) == ["database"]


def test_unwritable_journal_neither_hides_the_failure_nor_fails_a_rollback(site):
    """The incident journal cannot be written (its directory is a regular file: root ignores modes, not this)."""
    site.good_state().bad_deploy()
    aside_before = site.aside()
    blocker = site.base / "incidents_gone"
    blocker.write_text("a regular file where the incident directory was\n")
    journal = blocker / "broken.jsonl"
    broken = {"incident_journal_path": str(journal), "incident_id": "broken_journal"}
    problem = "The incident journal note of this failure could not be written: Cannot append to journal %s" % journal

    # the files restore fails after the database was rolled back: the role's own failure, with the journal problem
    res = site.rollback(rollback_full_system_components=["database", "files"],
                        rollback_full_system_files_manifest="NO_SUCH_MANIFEST.sha256", **broken)
    assert res.rc != 0
    msg = task(res, "Rescue | fail naming the component and the step")["msg"]
    assert msg.startswith("rollback_full_system failed on app1 in component 'files' at step "
                          "'Files | check the restored files against the manifest of the backup'"), msg
    assert "Rolled back before the failure: database; not rolled back: files." in msg, msg
    assert problem in msg and "Not a directory" in msg and site.cluster.password not in msg, msg
    assert task(res, "Append the event to the journal for this host")["failed"]  # the last one: the rescue's note
    # the database's notes could not be written either: warnings, not a failure, and the rollback went on to files
    warning = task(res, "Component | warn that it is rolled back but its journal note could not be written")["msg"]
    assert warning.startswith("WARNING: database is rolled back on app1 and stays so") and str(journal) in warning
    assert "Not a directory" in warning, warning
    assert "Not a directory" in task(res, "Warn that the rollback succeeded but its journal note could not be written")["msg"]
    # the state the rescue leaves, as without a journal problem
    assert_files_put_back(site, aside_before)
    result = task(res, "Publish what the full system rollback did")["ansible_facts"]["rollback_full_system_result"]
    assert result["done"] == ["database"] and result["failed_component"] == "files" and result["message"] == msg

    # the files alone, with their manifest: rolled back and the play succeeds; the note's failure is a warning only
    res = site.rollback(rollback_full_system_components=["files"], **broken)
    assert res.rc == 0, res.stdout[-3000:]
    assert site.snapshot()["files"] == site.good["files"]
    warning = task(res, "Component | warn that it is rolled back but its journal note could not be written")["msg"]
    assert warning.startswith("WARNING: files is rolled back on app1 and stays so") and "Not a directory" in warning
    assert not ran(res, "Rescue | remember the failed component and step")
    result = task(res, "Publish what the full system rollback did")["ansible_facts"]["rollback_full_system_result"]
    assert result["done"] == ["files"] and result["failed_component"] == "" and result["message"] == ""
    assert archives.tree(pathlib.Path(result["files"]["safety_copy"])) == site.bad["files"]
    assert blocker.is_file() and not journal.exists()
