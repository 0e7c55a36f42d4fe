"""Role deploy_snapshot / playbooks/pre_deploy.yml for real on localhost: config and flag files
fetched with checksums, a real PostgreSQL restore point, a real pre-deploy health gate against the
demo app, the index, pruning to deploy_snapshot_keep, check mode and the preflight refusal.
"""

import hashlib
import json
import uuid

import pytest
import yaml

from sandbox import runner

PY = str(runner.ROOT / ".venv" / "bin" / "python")
PRE_DEPLOY = runner.ROOT / "playbooks" / "pre_deploy.yml"


def task(res, name, host="app1"):
    """The result of the last task ``name`` (role tasks are reported as ``<role> : <name>``)."""
    found = [r for n, r in res.task_results(host) if n == name or n.endswith(" : " + name)]
    assert found, "task %r did not run; rc=%s\n%s" % (name, res.rc, res.stdout[-3000:])
    return found[-1]


@pytest.fixture
def site(tmp_path):
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"children": {"app": {"hosts": {"app1": {
        "ansible_connection": "local", "ansible_python_interpreter": PY}}}}}}))
    etc = tmp_path / "etc"
    etc.mkdir()
    cfg = etc / "app.json"
    cfg.write_text('{"version": "v1"}\n')
    cfg.chmod(0o640)
    flags = etc / "flags.json"
    flags.write_text(json.dumps({"flags": {"new-checkout": {"state": "ENABLED", "variants": {"on": True, "off": False},
                                                            "defaultVariant": "on"}}}))
    return {"inv": inv, "records": tmp_path / "deployments", "cfg": cfg, "flags": flags}


def pre_deploy(site, release, check=False, **extra):
    extra_vars = {"deploy_snapshot_release": release, "deploy_snapshot_records_dir": str(site["records"]),
                  "deploy_snapshot_config_files": [str(site["cfg"])],
                  "deploy_snapshot_flag_files": [str(site["flags"])]}
    extra_vars.update(extra)
    return runner.run_playbook(PRE_DEPLOY, inventory=site["inv"], extra_vars=extra_vars, check=check,
                               env={"ANSIBLE_SHOW_CUSTOM_STATS": "true"})


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_record_with_restore_point_and_health(site, postgres, demo_apps):
    res = pre_deploy(site, "v2", deploy_snapshot_git_hash="0123abc", deploy_snapshot_previous_release="v1",
                     deploy_snapshot_lb_state={"backend": "be_blue"},
                     deploy_snapshot_restore_point=dict(postgres.module_params, wait_archived=True),
                     deploy_snapshot_health_checks=[{"name": "blue", "type": "http",
                                                     "url": demo_apps.blue.url + "/health"}],
                     deploy_snapshot_health_interval=0.3)
    assert res.rc == 0, res.stdout[-3000:]
    index = json.loads((site["records"] / "index.json").read_text())
    assert len(index) == 1
    dep_id = index[0]["deployment_id"]
    assert dep_id.endswith("_v2")
    record = json.loads((site["records"] / dep_id / "record.json").read_text())
    assert record["deployment_id"] == dep_id == record["config_snapshot_id"]
    assert res.data["global_custom_stats"] == {"deployment_id": dep_id,
                                               "deployment_record": str(site["records"] / dep_id / "record.json")}
    assert record["release"] == "v2" and record["git_hash"] == "0123abc" and record["previous_release"] == "v1"
    assert record["time"].endswith("Z") and record["time"] == index[0]["time"]
    assert record["lb_state"] == {"backend": "be_blue"}
    assert record["health"]["verdict"] == "pass" and "blue" in record["health"]["checks"]

    # the restore point really exists in PostgreSQL's ledger
    assert record["restore_point_name"] == "pre_" + dep_id
    assert record["restore_point"]["lsn"]
    ledger = postgres.psql("SELECT count(*) FROM failsafe_recovery.restore_points WHERE name = '%s'"
                           % record["restore_point_name"])
    assert ledger.strip() == "1"

    files = {f["path"]: f for f in record["files"]["app1"]}
    for path, kind in ((site["cfg"], "config"), (site["flags"], "flags")):
        entry = files[str(path)]
        assert entry["kind"] == kind
        assert entry["sha256"] == sha256(path)
        snap = site["records"] / dep_id / entry["snapshot"]
        assert snap.read_bytes() == path.read_bytes()
    assert files[str(site["cfg"])]["mode"] == "0640"


def test_index_previous_release_and_pruning(site):
    ids = []
    for release in ("r1", "r2", "r3"):
        res = pre_deploy(site, release, deploy_snapshot_keep=2)
        assert res.rc == 0, res.stdout[-3000:]
        ids.append(task(res, "Publish the deployment record")["ansible_facts"]["deploy_snapshot_record_id"])
    index = json.loads((site["records"] / "index.json").read_text())
    assert [e["release"] for e in index] == ["r2", "r3"]
    assert [e["previous_release"] for e in index] == ["r1", "r2"]
    assert not (site["records"] / ids[0]).exists(), "the oldest record beyond keep must be pruned"
    assert (site["records"] / ids[1] / "record.json").is_file()
    assert (site["records"] / ids[2] / "record.json").is_file()


def test_check_mode_writes_nothing(site):
    res = pre_deploy(site, "v9", check=True)
    assert res.rc == 0, res.stdout[-3000:]
    assert res.stats["app1"]["failures"] == 0
    assert not site["records"].exists()


def test_missing_file_on_one_host_refuses_the_record(site):
    # app2 lists a file it does not have: its preflight fails, and app1's snapshot must not be recorded alone
    inv = site["inv"].parent / "two_hosts.yml"
    host = {"ansible_connection": "local", "ansible_python_interpreter": PY}
    inv.write_text(yaml.safe_dump({"all": {"children": {"app": {"hosts": {
        "app1": host, "app2": dict(host, deploy_snapshot_config_files=[str(site["cfg"]), "/nonexistent/app.conf"])}}}}}))
    res = runner.run_playbook(PRE_DEPLOY, inventory=inv, extra_vars={
        "deploy_snapshot_release": "v3", "deploy_snapshot_records_dir": str(site["records"])})
    assert res.rc != 0
    msg = task(res, "Preflight | every listed file exists on the host", host="app2")["msg"]
    assert "/nonexistent/app.conf" in msg and "deploy_snapshot_config_files" in msg
    loud = task(res, "Fail the snapshot loudly", host="app1")["msg"]
    assert "Every host of the play was snapshotted" in loud
    assert not (site["records"] / "index.json").exists()
    assert not site["records"].exists() or not any(p.is_dir() for p in site["records"].iterdir()), \
        "the incomplete snapshot directory must be removed"


def s3_objects(s3, bucket):
    """{key: (ETag, LastModified)} of every object in the bucket."""
    return {o["Key"]: (o["ETag"], o["LastModified"]) for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}


def test_records_copied_to_s3_and_pruned(site, moto):
    s3 = moto.client("s3")
    bucket = "deploy-records-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=bucket)
    s3_settings = dict(moto.aws_params, bucket=bucket, prefix="prod/deployments")
    prefix = "prod/deployments/"

    # check mode: no local record, nothing uploaded
    res = pre_deploy(site, "s0", check=True, deploy_snapshot_keep=1, deploy_snapshot_s3=s3_settings)
    assert res.rc == 0, res.stdout[-3000:]
    assert s3_objects(s3, bucket) == {}

    ids = []
    for release in ("s1", "s2"):
        res = pre_deploy(site, release, deploy_snapshot_keep=1, deploy_snapshot_s3=s3_settings)
        assert res.rc == 0, res.stdout[-3000:]
        ids.append(task(res, "Publish the deployment record")["ansible_facts"]["deploy_snapshot_record_id"])
        assert task(res, "S3 | upload the record")["changed"] is True
        assert task(res, "S3 | upload the index")["changed"] is True
    assert task(res, "S3 | remove the records the local index no longer holds (beyond deploy_snapshot_keep)")[
        "changed"] is True

    # keep=1: the bucket holds exactly the newest record and the index, each the local file byte for byte, AES256
    objects = s3_objects(s3, bucket)
    record_key = prefix + ids[1] + "/record.json"
    assert sorted(objects) == sorted([prefix + "index.json", record_key])
    for key, local in ((record_key, site["records"] / ids[1] / "record.json"),
                       (prefix + "index.json", site["records"] / "index.json")):
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == local.read_bytes()
        assert s3.head_object(Bucket=bucket, Key=key)["ServerSideEncryption"] == "AES256"
    assert not (site["records"] / ids[0]).exists()

    # the same record again (the s3 entry point, as after a failed upload): nothing uploaded, nothing changed
    playbook = site["inv"].parent / "s3_again.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Upload the record again", "hosts": "app", "gather_facts": False,
        "tasks": [{"name": "Upload", "ansible.builtin.include_role": {
            "name": "failsafe.recovery.deploy_snapshot", "tasks_from": "s3"}}]}]))
    again = runner.run_playbook(playbook, inventory=site["inv"], extra_vars={
        "deploy_snapshot_records_dir": str(site["records"]), "deploy_snapshot_s3": s3_settings})
    assert again.rc == 0, again.stdout[-3000:]
    assert task(again, "S3 | upload the record")["changed"] is False
    assert task(again, "S3 | upload the index")["changed"] is False
    assert again.stats["app1"]["changed"] == 0
    assert s3_objects(s3, bucket) == objects

    # check mode of the next deploy uploads and deletes nothing
    res = pre_deploy(site, "s3", check=True, deploy_snapshot_keep=1, deploy_snapshot_s3=s3_settings)
    assert res.rc == 0, res.stdout[-3000:]
    assert s3_objects(s3, bucket) == objects

    # a failed upload (no such bucket) fails naming the object, after the local record is written
    res = pre_deploy(site, "s4", deploy_snapshot_keep=1, deploy_snapshot_s3=dict(s3_settings, bucket=bucket + "-gone"))
    assert res.rc != 0
    index = json.loads((site["records"] / "index.json").read_text())
    assert [e["release"] for e in index] == ["s4"]
    new_id = index[0]["deployment_id"]
    assert (site["records"] / new_id / "record.json").is_file(), "the local record must survive a failed upload"
    msg = task(res, "S3 | fail naming the object and the fix")["msg"]
    assert "s3://%s-gone/%s%s/record.json" % (bucket, prefix, new_id) in msg
    assert "source of truth" in msg and "tasks_from s3" in msg
    assert s3_objects(s3, bucket) == objects
