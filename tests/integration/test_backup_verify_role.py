"""Role backup_verify, for real: dumps in S3 (moto server), test restore into a real PostgreSQL 15.

One playbook run with a good newest dump (passes, reports written, scratch database gone) and one
with a newest "dump" that does not restore (the role fails, says why in the report, and still drops
the scratch database).
"""

import datetime
import hashlib
import json
import os
import random
import subprocess

import pytest

from sandbox.runner import run_playbook, ROOT

KEY_REGEX = r"shop-(?P<time>\d{8}T\d{6}Z)\.dump$"


def _stamp(when):
    return when.strftime("%Y%m%dT%H%M%SZ")


@pytest.fixture(scope="module")
def dump_file(postgres, tmp_path_factory):
    postgres.psql("DROP DATABASE IF EXISTS shop")
    postgres.psql("CREATE DATABASE shop")
    postgres.psql("CREATE TABLE orders (id int PRIMARY KEY, total numeric); "
                  "INSERT INTO orders SELECT g, g * 1.5 FROM generate_series(1, 500) g;", db="shop")
    path = tmp_path_factory.mktemp("dump") / "shop.dump"
    env = dict(os.environ, PGPASSWORD=postgres.password)
    subprocess.run([os.path.join(postgres.bin_dir, "pg_dump"), "-Fc", "-h", postgres.host, "-p", str(postgres.port),
                    "-U", postgres.user, "-f", str(path), "shop"], env=env, check=True, timeout=60)
    return path.read_bytes()


def _upload_series(s3, bucket, newest_body, older_body):
    now = datetime.datetime.now(datetime.timezone.utc)
    keys = []
    for days, body in ((2, older_body), (1, older_body), (0, newest_body)):
        key = "dumps/shop-%s.dump" % _stamp(now - datetime.timedelta(days=days, minutes=30))
        s3.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256")
        s3.put_object(Bucket=bucket, Key=key + ".sha256", Body=("%s  x\n" % hashlib.sha256(body).hexdigest()).encode())
        keys.append(key)
    s3.put_object(Bucket=bucket, Key="config/etc-%s.tar" % _stamp(now), Body=b"config" * 100)
    return keys


def _run(moto, postgres, bucket, report_dir):
    extra = {
        "backup_verify_aws": moto.aws_params,
        "backup_verify_report_dir": str(report_dir),
        "backup_verify_pg_bin_dir": postgres.bin_dir,
        "backup_verify_sets": [
            {"name": "database dumps", "bucket": bucket, "prefix": "dumps/", "key_regex": KEY_REGEX,
             "max_age": "26h", "checksum": ["sidecar", "deep"], "expected_interval": "1d"},
            {"name": "configuration", "bucket": bucket, "prefix": "config/", "max_age": "7d", "min_size": 100},
        ],
        "backup_verify_restore_test": dict(
            postgres.module_params, set="database dumps", scratch_db="bv_scratch",
            assertions=[{"name": "orders restored", "query": "SELECT count(*) = 500 FROM orders"},
                        {"name": "totals sane", "query": "SELECT sum(total) > 0 FROM orders"}]),
    }
    return run_playbook(ROOT / "playbooks" / "backup_verify.yml", inventory="localhost,", extra_vars=extra,
                        env={"ANSIBLE_PYTHON_INTERPRETER": str(ROOT / ".venv" / "bin" / "python")}, timeout=600,
                        extra_args=["-c", "local"])


def _scratch_exists(postgres):
    return postgres.psql("SELECT count(*) FROM pg_database WHERE datname = 'bv_scratch'").strip() != "0"


def test_good_dump_restores_and_report_says_passed(moto, postgres, dump_file, tmp_path):
    s3 = moto.client("s3")
    bucket = "bv-good-%06d" % random.randrange(10 ** 6)
    s3.create_bucket(Bucket=bucket)
    keys = _upload_series(s3, bucket, dump_file, dump_file)
    res = _run(moto, postgres, bucket, tmp_path)
    assert res.rc == 0, res.stdout[-3000:]
    report = json.loads((tmp_path / "backup_verify.json").read_text())
    assert report["passed"] is True
    assert [s["name"] for s in report["sets"]] == ["database dumps", "configuration"]
    assert report["sets"][0]["latest_key"] == keys[-1] and report["sets"][0]["backups_count"] == 3
    assert report["restore_test"]["passed"] is True and report["restore_test"]["key"] == keys[-1]
    markdown = (tmp_path / "backup_verify.md").read_text()
    assert "overall: **PASSED**" in markdown and "orders restored" in markdown
    assert not _scratch_exists(postgres)


def test_dump_that_does_not_restore_fails_the_role(moto, postgres, dump_file, tmp_path):
    s3 = moto.client("s3")
    bucket = "bv-bad-%06d" % random.randrange(10 ** 6)
    s3.create_bucket(Bucket=bucket)
    broken = dump_file[: len(dump_file) // 2]  # truncated: sidecar and checksum match, pg_restore does not
    keys = _upload_series(s3, bucket, broken, dump_file)
    res = _run(moto, postgres, bucket, tmp_path)
    assert res.rc != 0
    report = json.loads((tmp_path / "backup_verify.json").read_text())
    assert report["passed"] is False
    assert report["restore_test"]["passed"] is False and report["restore_test"]["key"] == keys[-1]
    assert "pg_restore" in report["restore_test"]["error"]
    assert "pg_restore: error" in report["restore_test"]["error"]  # pg_restore's own words
    assert "FAILED" in (tmp_path / "backup_verify.md").read_text()
    assert not _scratch_exists(postgres)
    verdict = res.result("failsafe.recovery.backup_verify : Verdict | every set meets its objectives and the test restore worked")
    assert verdict.get("failed") is True
