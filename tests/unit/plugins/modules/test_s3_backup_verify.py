# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""main() of s3_backup_verify: option errors before any connection, a failed check fails the task
with the whole result, fail_on_error=false reports without failing, secrets stay out of the result."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json

import pytest

from ansible_collections.failsafe.recovery.plugins.modules import s3_backup_verify


class _Body:
    def __init__(self, data):
        self.data = data

    def read(self, limit=None):
        return self.data

    def close(self):
        pass


class FakeS3:
    """List, head and ranged get over an in-memory dict {key: dict(body, checksum=(alg, value))}."""

    def __init__(self, objects):
        self.objects = objects
        self.modified = datetime.datetime.now(datetime.timezone.utc)

    def get_paginator(self, name):
        fake = self

        class Paginator:
            def paginate(self, Bucket, Prefix):
                yield {"Contents": [dict(Key=k, Size=len(o["body"]), ETag='"x"', LastModified=fake.modified)
                                    for k, o in sorted(fake.objects.items()) if k.startswith(Prefix)]}
        return Paginator()

    def head_object(self, Bucket, Key, ChecksumMode=None):
        obj = self.objects[Key]
        return {"ContentLength": len(obj["body"]), "ETag": '"x"', "LastModified": self.modified,
                "Checksum" + obj["checksum"][0]: obj["checksum"][1]}

    def get_object(self, Bucket, Key, Range, **kwargs):
        first, last = (int(x) for x in Range[len("bytes="):].split("-"))
        return {"Body": _Body(self.objects[Key]["body"][first:last + 1])}


@pytest.fixture
def fake_s3(monkeypatch):
    """Replace the boto3 client factory with an in-memory bucket of two daily dumps."""
    now = datetime.datetime.now(datetime.timezone.utc)
    objects = {}
    for days, size in ((1, 1000), (0, 400)):
        when = now - datetime.timedelta(days=days, hours=1)
        body = b"d" * size
        objects["pg/db-%s.dump" % when.strftime("%Y%m%dT%H%M%SZ")] = dict(
            body=body, checksum=("SHA256", base64.b64encode(hashlib.sha256(body).digest()).decode()))
    fake = FakeS3(objects)
    monkeypatch.setattr(s3_backup_verify, "aws_client", lambda params, service, **kw: fake)
    return fake


def args(**extra):
    base = dict(bucket="bk", prefix="pg/", key_regex=r"db-(?P<time>\d{8}T\d{6}Z)\.dump$",
                region="us-east-1", access_key="AKIDEXAMPLE", secret_key="Sekr1tValue")
    base.update(extra)
    return base


@pytest.mark.parametrize("extra, needle", [
    (dict(max_age="3 days"), "max_age: cannot parse '3 days'"),
    (dict(key_regex="db-(?P<time>[0-9+"), "key_regex: "),
    (dict(checksum=["deep"], deep_subset="9/3"), "deep_subset: '9/3'"),
    (dict(kms_key_id="alias/x"), "missing parameter(s) required by 'kms_key_id': require_encryption"),
    (dict(checksum=["md5"]), "checksum"),
])
def test_bad_options_fail_before_connecting(run_main, monkeypatch, extra, needle):
    def no_client(*a, **k):
        raise AssertionError("must not connect")
    monkeypatch.setattr(s3_backup_verify, "aws_client", no_client)
    result, failed = run_main(s3_backup_verify.main, args(**extra))
    assert failed and needle in result["msg"], result["msg"]


def test_passing_series_exits_unchanged(run_main, fake_s3):
    result, failed = run_main(s3_backup_verify.main, args(max_age="26h", checksum=["s3", "deep"], scope="all"))
    assert not failed, result.get("msg")
    assert result["changed"] is False and result["passed"] is True
    assert result["backups_count"] == 2 and result["deep"]["objects"] == 2
    assert "Sekr1tValue" not in json.dumps(result, default=str)


def test_failed_check_fails_the_task_with_the_result(run_main, fake_s3):
    result, failed = run_main(s3_backup_verify.main, args(max_size_change_percent=25))
    assert failed
    assert result["msg"].startswith("1 backup check(s) failed on s3://bk/pg/ (max_size_change_percent); first: size 400")
    assert result["passed"] is False and result["failures"][0]["check"] == "max_size_change_percent"


def test_fail_on_error_false_reports_only(run_main, fake_s3):
    result, failed = run_main(s3_backup_verify.main, args(max_size_change_percent=25, fail_on_error=False))
    assert not failed and result["passed"] is False and len(result["failures"]) == 1
