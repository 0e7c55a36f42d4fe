# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of the S3 backup verifier: durations, times, gaps, subset slices, checksum arithmetic,
ordered parallel reads; and the verifier on an in-memory S3 double (what moto cannot simulate:
a stored checksum that no longer matches the bytes, access denied)."""

from __future__ import annotations

import base64
import datetime
import hashlib
import io
import threading
import time
import zlib

import pytest

from botocore.exceptions import ClientError

from ansible_collections.failsafe.recovery.plugins.module_utils import _s3

UTC = datetime.timezone.utc
T0 = datetime.datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
DAY = datetime.timedelta(days=1)


# ------------------------------------------------------------- durations and times

@pytest.mark.parametrize("text, seconds", [
    ("15m", 900), ("26h", 93600), ("7d", 604800), ("1h30m", 5400), ("2w", 1209600), ("90", 90),
    ("45s", 45), ("1.5h", 5400), (" 1d 12h ", 129600), (3600, 3600),
])
def test_parse_duration(text, seconds):
    assert _s3.parse_duration(text, "max_age") == seconds


@pytest.mark.parametrize("text", ["", "3x", "fortnight", "15 minutes", "-5m", "0", "h", "5m garbage"])
def test_parse_duration_rejects_and_names_the_option(text):
    with pytest.raises(_s3.VerifyError) as info:
        _s3.parse_duration(text, "expected_interval")
    assert info.value.msg.startswith("expected_interval: cannot parse")
    assert info.value.facts["option"] == "expected_interval"


def test_parse_duration_none_is_none():
    assert _s3.parse_duration(None, "max_age") is None


@pytest.mark.parametrize("text", [
    "2026-11-22T02:00:00Z", "2026-11-22T02:00:00+00:00", "2026-11-22T03:00:00+01:00", "20261122T020000Z",
    "20261122-020000", "2026-11-22_02-00-00", "202611220200", "2026-11-22 02:00:00", "1795312800",
])
def test_parse_backup_time_forms(text):
    assert _s3.parse_backup_time(text) == T0


def test_parse_backup_time_date_format_and_garbage():
    assert _s3.parse_backup_time("20261122") == T0.replace(hour=0)
    assert _s3.parse_backup_time("22.11.2026 02h00", "%d.%m.%Y %Hh%M") == T0
    assert _s3.parse_backup_time("22.11.2026", "%Y%m%d") is None
    assert _s3.parse_backup_time("not-a-time") is None


# ------------------------------------------------------------- gaps

def _daily(days, skip=(), jitter=None):
    out = []
    for k in range(days):
        if k in skip:
            continue
        out.append(T0 - k * DAY + (jitter(k) if jitter else datetime.timedelta()))
    return out


def test_no_gap_in_a_complete_series_even_with_jitter():
    times = _daily(30, jitter=lambda k: datetime.timedelta(minutes=(k * 37) % 300))
    assert _s3.compute_gaps(times, 86400, T0 + datetime.timedelta(hours=1)) == []


def test_missing_days_are_listed_with_their_slot_time():
    gaps = _s3.compute_gaps(_daily(30, skip=(3, 10, 11)), 86400, T0 + datetime.timedelta(hours=1))
    assert gaps == [T0 - 11 * DAY, T0 - 10 * DAY, T0 - 3 * DAY]


def test_retention_window_counts_slots_before_the_oldest_backup():
    now = T0 + datetime.timedelta(hours=1)
    gaps = _s3.compute_gaps(_daily(5), 86400, now, window_start=now - 7 * DAY)
    assert gaps == [T0 - 6 * DAY, T0 - 5 * DAY]


def test_slots_after_the_newest_backup_are_missing_only_after_half_an_interval():
    times = _daily(3)
    assert _s3.compute_gaps(times, 86400, T0 + datetime.timedelta(hours=30)) == []
    assert _s3.compute_gaps(times, 86400, T0 + datetime.timedelta(hours=37)) == [T0 + DAY]
    assert _s3.compute_gaps(times, 86400, T0 + datetime.timedelta(hours=61)) == [T0 + DAY, T0 + 2 * DAY]


def test_fifteen_minute_wal_series_gap():
    times = [T0 - k * datetime.timedelta(minutes=15) for k in range(96) if k != 40]
    assert _s3.compute_gaps(times, 900, T0) == [T0 - 40 * datetime.timedelta(minutes=15)]
    assert _s3.compute_gaps([], 900, T0) == []


# ------------------------------------------------------------- subset slices

def test_subset_slices_partition_every_series():
    keys = ["pg/db-%04d.dump" % i for i in range(500)]
    for t in (1, 3, 7):
        slices = [{k for k in keys if _s3.in_subset(k, n, t)} for n in range(1, t + 1)]
        assert set().union(*slices) == set(keys)
        assert sum(len(s) for s in slices) == len(keys)
        assert all(len(s) > len(keys) / t / 2 for s in slices)  # roughly even


def test_subset_is_stable_across_runs_and_listing_order():
    keys = ["k%d" % i for i in range(50)]
    first = [k for k in keys if _s3.in_subset(k, 2, 5)]
    second = [k for k in reversed(keys) if _s3.in_subset(k, 2, 5)]
    assert sorted(first) == sorted(second)


@pytest.mark.parametrize("text, parsed", [("1/7", (1, 7)), ("7/7", (7, 7)), (" 2 / 3 ", (2, 3))])
def test_parse_subset(text, parsed):
    assert _s3.parse_subset(text) == parsed


@pytest.mark.parametrize("text", ["0/3", "4/3", "1/0", "half", "1-3", ""])
def test_parse_subset_rejects(text):
    with pytest.raises(_s3.VerifyError, match="^deep_subset: "):
        _s3.parse_subset(text)


# ------------------------------------------------------------- checksum arithmetic

def test_crc32c_known_vectors():
    assert _s3.crc32c(b"123456789") == 0xE3069283
    assert _s3.crc32c(b"") == 0
    assert _s3.crc32c(b"6789", _s3.crc32c(b"12345")) == 0xE3069283  # continues across chunks


def test_crc_hashers_give_s3_base64_form():
    hasher = _s3.new_hasher("CRC32")
    hasher.update(b"hello ")
    hasher.update(b"world")
    assert hasher.digest() == zlib.crc32(b"hello world").to_bytes(4, "big")
    assert _s3.b64(_s3.new_hasher("CRC32C").digest()) == "AAAAAA=="


def test_composite_sha256_is_the_hash_of_the_part_hashes():
    parts = [b"a" * 100, b"b" * 100, b"c" * 7]
    expected = base64.b64encode(hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest())
    assert _s3.composite_checksum("SHA256", [hashlib.sha256(p).digest() for p in parts]) == expected.decode() + "-3"


def test_composite_crc32c_and_multipart_etag():
    parts = [b"x" * 10, b"y" * 3]
    crcs = [_s3.crc32c(p).to_bytes(4, "big") for p in parts]
    assert _s3.composite_checksum("CRC32C", crcs) == _s3.b64(_s3.crc32c(b"".join(crcs)).to_bytes(4, "big")) + "-2"
    md5s = [hashlib.md5(p).digest() for p in parts]
    assert _s3.multipart_etag(md5s) == hashlib.md5(b"".join(md5s)).hexdigest() + "-2"


def test_strip_part_count_and_hex_to_b64():
    assert _s3.strip_part_count("abc==-12") == ("abc==", 12)
    assert _s3.strip_part_count("abc==") == ("abc==", None)
    digest = hashlib.sha256(b"x").digest()
    assert _s3.hex_to_b64(digest.hex()) == base64.b64encode(digest).decode()


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_stream_hasher_splits_parts_whatever_the_chunking(chunk):
    parts = [bytes([i]) * size for i, size in enumerate((100, 100, 37))]
    data = b"".join(parts)
    hasher = _s3.StreamHasher(whole=["SHA256"], per_part=["SHA256", "MD5"], part_sizes=[100, 100, 37])
    for start in range(0, len(data), chunk):
        hasher.update(data[start:start + chunk])
    whole = hasher.finish()
    assert whole["SHA256"] == hashlib.sha256(data).digest()
    assert hasher.part_digests["SHA256"] == [hashlib.sha256(p).digest() for p in parts]
    assert hasher.part_digests["MD5"] == [hashlib.md5(p).digest() for p in parts]


def test_stream_hasher_extra_bytes_make_an_extra_part():
    hasher = _s3.StreamHasher(per_part=["SHA256"], part_sizes=[4])
    hasher.update(b"abcdef")
    hasher.finish()
    assert len(hasher.part_digests["SHA256"]) == 2


# ------------------------------------------------------------- ordered parallel reads

def test_ranged_chunks_in_order_with_bounded_buffers():
    data = bytes(range(256)) * 40
    state = {"live": 0, "peak": 0}
    lock = threading.Lock()

    def fetch(first, last):
        with lock:
            state["live"] += 1
            state["peak"] = max(state["peak"], state["live"])
        time.sleep(0.002 * ((first // 100) % 3))  # finish out of order
        with lock:
            state["live"] -= 1
        return data[first:last + 1]

    produced = []
    for chunk in _s3.ranged_chunks(fetch, len(data), 100, 4):
        produced.append(chunk)
    assert b"".join(produced) == data
    assert state["peak"] <= 4
    assert [len(c) for c in produced[:-1]] == [100] * (len(produced) - 1)


def test_ranged_chunks_empty_object_and_error():
    assert list(_s3.ranged_chunks(lambda a, b: b"", 0, 10, 4)) == []

    def broken(first, last):
        if first >= 20:
            raise IOError("boom")
        return b"x" * (last - first + 1)

    with pytest.raises(IOError):
        list(_s3.ranged_chunks(broken, 100, 10, 3))


# ------------------------------------------------------------- the verifier on an in-memory S3

class Body(io.BytesIO):
    pass


class FakeS3:
    """Just enough of an S3 client: objects {key: dict(body, checksum=(alg, value), etag, ...)}."""

    def __init__(self, objects, versioning=None, deny=False):
        self.objects = objects
        self.versioning = versioning
        self.deny = deny
        self.calls = []

    def _error(self, code, op, status=400):
        return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, op)

    def get_paginator(self, name):
        assert name == "list_objects_v2"
        fake = self

        class Paginator:
            def paginate(self, Bucket, Prefix):
                if fake.deny:
                    raise fake._error("AccessDenied", "ListObjectsV2", 403)
                yield {"Contents": [dict(Key=k, Size=len(o["body"]), ETag='"%s"' % o.get("etag", ""),
                                         LastModified=o.get("last_modified", T0))
                                    for k, o in sorted(fake.objects.items()) if k.startswith(Prefix)]}
        return Paginator()

    def head_object(self, Bucket, Key, ChecksumMode=None, PartNumber=None):
        self.calls.append(("head", Key, PartNumber))
        obj = self.objects[Key]
        head = dict(ContentLength=len(obj["body"]), ETag='"%s"' % obj.get("etag", ""),
                    LastModified=obj.get("last_modified", T0), Metadata=obj.get("metadata", {}))
        if PartNumber:
            head["ContentLength"] = obj["parts"][PartNumber - 1]
            head["PartsCount"] = len(obj["parts"])
        if obj.get("checksum"):
            head["Checksum" + obj["checksum"][0]] = obj["checksum"][1]
        head.update(obj.get("head", {}))
        return head

    def get_object_attributes(self, **kwargs):
        raise self._error("NotImplemented", "GetObjectAttributes", 501)

    def get_object(self, Bucket, Key, Range=None, IfMatch=None, VersionId=None):
        self.calls.append(("get", Key, Range))
        body = self.objects[Key]["body"]
        if Range:
            first, last = (int(x) for x in Range[len("bytes="):].split("-"))
            body = body[first:last + 1]
        return {"Body": Body(body)}

    def get_bucket_versioning(self, Bucket):
        return {"Status": self.versioning} if self.versioning else {}


def _sha(body):
    return ("SHA256", base64.b64encode(hashlib.sha256(body).digest()).decode())


def _verifier(objects, **params):
    fake = FakeS3(objects)
    base = dict(bucket="bk", prefix="", key_regex=r"db-(?P<time>\d{8}T\d{6}Z)\.dump$", scope="latest", checksum=[],
                sidecar_suffix=".sha256", concurrency=4, part_size=7)
    base.update(params)
    warnings = []
    verifier = _s3.BackupVerifier(base, client_factory=lambda p: fake, warn=warnings.append,
                                  now=T0 + datetime.timedelta(hours=1))
    return verifier, fake, warnings


def _key(when):
    return "db-%s.dump" % when.strftime("%Y%m%dT%H%M%SZ")


def test_deep_catches_bytes_that_no_longer_match_the_stored_s3_checksum():
    good = b"backup bytes " * 10
    bad = bytearray(good)
    bad[5] ^= 1
    objects = {_key(T0 - DAY): dict(body=good, checksum=_sha(good)),
               _key(T0): dict(body=bytes(bad), checksum=_sha(good))}  # bit rot: S3 still claims the old checksum
    verifier, fake, _w = _verifier(objects, checksum=["s3", "deep"], scope="all")
    result = verifier.run()
    assert result["passed"] is False
    assert [(f["check"], f["key"]) for f in result["failures"]] == [("checksum_deep", _key(T0))]
    assert "S3 recorded" in result["failures"][0]["message"]
    ranges = [c[2] for c in fake.calls if c[0] == "get" and c[1] == _key(T0)]
    assert ranges[0] == "bytes=0-6" and len(ranges) == -(-len(good) // 7)


def test_deep_checks_composite_checksum_and_multipart_etag_from_part_sizes():
    parts = [b"A" * 10, b"B" * 10, b"C" * 3]
    body = b"".join(parts)
    composite = _s3.composite_checksum("SHA256", [hashlib.sha256(p).digest() for p in parts])
    etag = _s3.multipart_etag([hashlib.md5(p).digest() for p in parts])
    objects = {_key(T0): dict(body=body, checksum=("SHA256", composite), etag=etag, parts=[10, 10, 3])}
    verifier, fake, _w = _verifier(objects, checksum=["s3", "deep"])
    result = verifier.run()
    assert result["passed"] is True, result["failures"]
    assert result["deep"]["results"][0]["compared_with"] == ["s3 SHA256 composite", "etag md5"]
    assert [c[2] for c in fake.calls if c[0] == "head" and c[2]] == [1, 2, 3]  # part sizes via PartNumber
    # a different split of the same bytes does not give the same composite
    objects[_key(T0)]["parts"] = [12, 8, 3]
    verifier, _fake, _w = _verifier(objects, checksum=["deep"])
    assert verifier.run()["passed"] is False


def test_deep_without_any_reference_fails_honestly():
    objects = {_key(T0): dict(body=b"x" * 20, etag="not-an-md5", head={"ServerSideEncryption": "aws:kms"})}
    verifier, _fake, _w = _verifier(objects, checksum=["deep"])
    result = verifier.run()
    assert result["failures"][0]["check"] == "checksum_deep"
    assert "no reference" in result["failures"][0]["message"]


def test_sidecar_from_manifest_with_size():
    import json
    body = b"dump" * 50
    manifest = json.dumps({"backups": [{"key": _key(T0), "sha256": hashlib.sha256(body).hexdigest(), "size": 999}]})
    objects = {_key(T0): dict(body=body), "manifest.json": dict(body=manifest.encode())}
    verifier, _fake, _w = _verifier(objects, checksum=["sidecar"], manifest_key="manifest.json")
    result = verifier.run()
    assert result["backups_count"] == 1  # the manifest is not a backup
    assert result["failures"][0]["check"] == "checksum_sidecar" and "999" in result["failures"][0]["message"]


def test_missing_sidecar_and_lastmodified_warning():
    objects = {"a.dump": dict(body=b"1", last_modified=T0 - DAY), "b.dump": dict(body=b"2")}
    verifier, _fake, warnings = _verifier(objects, key_regex=None, checksum=["sidecar"])
    result = verifier.run()
    assert result["latest"]["key"] == "b.dump" and result["latest"]["time_source"] == "last_modified"
    assert len(warnings) == 1 and "LastModified" in warnings[0]
    assert result["failures"] == [{"check": "checksum_sidecar", "key": "b.dump", "message": "no sidecar 'b.dump.sha256'"}]


def test_empty_series_fails():
    verifier, _fake, _w = _verifier({"other.txt": dict(body=b"")})
    result = verifier.run()
    assert result["passed"] is False and result["failures"][0]["check"] == "backups"
    assert result["latest"] is None


def test_access_denied_names_the_bucket():
    fake = FakeS3({}, deny=True)
    verifier = _s3.BackupVerifier(dict(bucket="locked-away", prefix="", checksum=[]), client_factory=lambda p: fake)
    with pytest.raises(_s3.VerifyError) as info:
        verifier.run()
    assert info.value.msg.startswith("bucket: access denied to list bucket 'locked-away'")


@pytest.mark.parametrize("params, option", [
    (dict(key_regex="(?P<time>"), "key_regex"),
    (dict(max_age="soon"), "max_age"),
    (dict(deep_subset="1/2"), "deep_subset"),
    (dict(kms_key_id="k", require_encryption="AES256"), "kms_key_id"),
    (dict(retention_days=30), "retention_days"),
    (dict(concurrency=0), "concurrency"),
])
def test_validation_before_any_connection(params, option):
    def no_client(p):
        raise AssertionError("must not connect")
    base = dict(bucket="b", checksum=[])
    base.update(params)
    with pytest.raises(_s3.VerifyError) as info:
        _s3.BackupVerifier(base, client_factory=no_client)
    assert info.value.msg.startswith(option)


def test_same_kms_key_forms():
    arn = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab"
    assert _s3._same_kms_key(arn, "1234abcd-12ab")
    assert _s3._same_kms_key("1234abcd-12ab", arn)
    assert not _s3._same_kms_key(arn, "ffff")
    assert not _s3._same_kms_key(None, arn)
