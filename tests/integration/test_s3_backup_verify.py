"""s3_backup_verify against a real S3 API (the moto server fixture), run for real through ansible-playbook.

All S3 state is built first (one bucket per scenario), then ONE playbook runs every scenario as a task
(ansible-playbook start-up dominates the cost on a loaded 2-core runner); each test asserts on its
scenario's result and on the real objects.

moto does not validate checksums on upload, so corruption is made here: the object's bytes are
replaced after upload while the sidecar (the reference) keeps the digest of the original backup.
"""

import datetime
import hashlib
import os
import random
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from sandbox.runner import ROOT, run_playbook

DAY = datetime.timedelta(days=1)
KEY_REGEX = r"db-(?P<time>\d{8}T\d{6}Z)\.dump$"
MIB = 1024 * 1024
HOSTS = ("s3v_a", "s3v_b")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def _iso(when):
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(prefix, when):
    return "%sdb-%s.dump" % (prefix, when.strftime("%Y%m%dT%H%M%SZ"))


def _body(seed, size):
    return random.Random(seed).randbytes(size)


def make_series(s3, bucket, prefix="pg/", days=30, newest_age=datetime.timedelta(hours=1), skip=(),
                size=4096, sidecar=True, extra=None, sizes=None):
    """Upload a daily series; returns [(key, time, body)] oldest first."""
    newest = _now() - newest_age
    out = []
    for k in reversed(range(days)):
        if k in skip:
            continue
        when = newest - k * DAY
        key = _key(prefix, when)
        out.append((key, when, _body(key, (sizes or {}).get(k, size + (k % 5)))))

    def upload(item):
        key, _when, body = item
        s3.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256", **(extra or {}))
        if sidecar:
            s3.put_object(Bucket=bucket, Key=key + ".sha256",
                          Body=("%s  %s\n" % (hashlib.sha256(body).hexdigest(), key.rsplit("/", 1)[-1])).encode())

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(upload, out))
    return out


class World:
    """The buckets of every scenario, and the module result of each scenario after the run."""

    def __init__(self, moto):
        self.moto = moto
        self.s3 = moto.client("s3")
        self.tag = "%06d" % random.randrange(10 ** 6)
        self.tasks = []
        self.data = {}
        self.results = {}
        self.hosts = {}

    def bucket(self, name, **kwargs):
        full = "%s-%s" % (name, self.tag)
        self.s3.create_bucket(Bucket=full, **kwargs)
        return full

    def scenario(self, name, bucket, check=False, **args):
        params = dict(self.moto.aws_params, bucket=bucket, prefix="pg/", key_regex=KEY_REGEX)
        params.update(args)
        params = {k: v for k, v in params.items() if v is not None}
        host = HOSTS[len(self.tasks) % len(HOSTS)]
        self.hosts[name] = host
        task = {"name": name, "failsafe.recovery.s3_backup_verify": params, "ignore_errors": True,
                "when": "inventory_hostname == %r" % host}
        if check:
            task["check_mode"] = True
        self.tasks.append(task)

    def run(self):
        # Scenarios are spread over HOSTS (all local) run with the free strategy, so module runs overlap.
        play = [{"name": "s3_backup_verify scenarios", "hosts": ",".join(HOSTS), "connection": "local",
                 "gather_facts": False, "strategy": "free",
                 "vars": {"ansible_python_interpreter": str(ROOT / ".venv" / "bin" / "python")},
                 "tasks": self.tasks}]
        (ROOT / ".cache").mkdir(exist_ok=True)
        with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=str(ROOT / ".cache"), delete=False) as handle:
            yaml.safe_dump(play, handle)
        try:
            res = run_playbook(handle.name, inventory=",".join(HOSTS) + ",", timeout=600)
        finally:
            os.unlink(handle.name)
        for task in self.tasks:
            self.results[task["name"]] = res.result(task["name"], host=self.hosts[task["name"]])
        if os.environ.get("S3V_PROFILE"):  # S3V_PROFILE=1 pytest -s ...: when each scenario ran
            for play in res.data.get("plays", []):
                for task in play["tasks"]:
                    for host, result in task["hosts"].items():
                        if not result.get("skipped"):
                            duration = task["task"]["duration"]
                            print("%-28s %s %s .. %s" % (task["task"]["name"], host, duration["start"], duration["end"]))

    def __getitem__(self, name):
        return self.results[name]


@pytest.fixture(scope="module")
def world(moto):
    w = World(moto)
    s3 = w.s3
    full_args = dict(max_age="26h", min_size=1024, max_size_change_percent=10, checksum=["s3", "sidecar", "deep"],
                     expected_interval="1d", retention_days=30, scope="all", part_size=1000, concurrency=4)

    # fresh 30-day series: passes, in check mode and for real
    b = w.bucket("fresh")
    w.data["fresh"] = make_series(s3, b)
    w.scenario("fresh check mode", b, check=True, **full_args)
    w.scenario("fresh", b, **full_args)

    # stale newest: fails the task; with fail_on_error=false only reports
    b = w.bucket("stale")
    w.data["stale"] = make_series(s3, b, days=5, newest_age=datetime.timedelta(days=3))
    w.scenario("stale", b, max_age="26h")
    w.scenario("stale report only", b, max_age="26h", fail_on_error=False)

    # truncated newest (1500 bytes after ~4 KiB)
    b = w.bucket("trunc")
    w.data["trunc"] = make_series(s3, b, days=4, sizes={0: 1500})
    w.scenario("truncated", b, max_size_change_percent=20, min_size=1000)

    # bytes changed after upload (same size); the sidecar keeps the original digest
    b = w.bucket("corrupt")
    series = make_series(s3, b, days=3)
    key, _when, body = series[-1]
    corrupted = bytearray(body)
    corrupted[100] ^= 0xFF
    s3.put_object(Bucket=b, Key=key, Body=bytes(corrupted), ChecksumAlgorithm="SHA256")
    w.data["corrupt"] = (b, series, bytes(corrupted))
    w.scenario("corrupted", b, checksum=["sidecar", "deep"], scope="all", part_size=512)

    # multipart upload with SHA256 composite checksum
    b = w.bucket("multipart")
    key = _key("pg/", _now())
    parts = [_body("p1", 5 * MIB), _body("p2", 5 * MIB), _body("p3", 12345)]
    upload = s3.create_multipart_upload(Bucket=b, Key=key, ChecksumAlgorithm="SHA256")
    done = []
    for number, data in enumerate(parts, 1):
        resp = s3.upload_part(Bucket=b, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=data,
                              ChecksumAlgorithm="SHA256")
        done.append({"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": resp["ChecksumSHA256"]})
    s3.complete_multipart_upload(Bucket=b, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": done})
    w.data["multipart"] = (key, parts)
    w.scenario("multipart", b, checksum=["s3", "deep"], part_size=3 * MIB, concurrency=3)

    # a missing day in a 30-day series
    b = w.bucket("gap")
    w.data["gap"] = make_series(s3, b, days=30, skip=(10,), sidecar=False)
    w.scenario("gap", b, expected_interval="1d", retention_days=30, fail_on_error=False)

    # encryption: none, the expected KMS key (named by alias), another KMS key; bucket not versioned
    kms = moto.client("kms")
    good = kms.create_key()["KeyMetadata"]["KeyId"]
    other = kms.create_key()["KeyMetadata"]["KeyId"]
    alias = "alias/backups-%s" % w.tag
    kms.create_alias(AliasName=alias, TargetKeyId=good)
    b = w.bucket("enc")
    w.data["enc"] = {
        "plain": make_series(s3, b, prefix="pg/plain-", days=1, sidecar=False),
        "good": make_series(s3, b, prefix="pg/good-", days=2, sidecar=False,
                            extra=dict(ServerSideEncryption="aws:kms", SSEKMSKeyId=good)),
        "other": make_series(s3, b, prefix="pg/other-", days=1, sidecar=False,
                             extra=dict(ServerSideEncryption="aws:kms", SSEKMSKeyId=other)),
        "good_id": good,
    }
    w.scenario("encryption", b, require_encryption="aws:kms", kms_key_id=alias, require_versioning=True,
               scope="all", fail_on_error=False)

    # object lock (bucket with lock, so versioned): long enough, too short, none
    b = w.bucket("locked", ObjectLockEnabledForBucket=True)
    w.data["lock"] = {
        "long": make_series(s3, b, prefix="pg/long-", days=2, sidecar=False,
                            extra=dict(ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=_now() + 10 * DAY)),
        "short": make_series(s3, b, prefix="pg/short-", days=1, sidecar=False,
                             extra=dict(ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=_now() + 2 * DAY)),
        "none": make_series(s3, b, prefix="pg/none-", days=1, sidecar=False),
    }
    w.scenario("object lock", b, require_object_lock={"mode": "COMPLIANCE", "min_retention_days": 7},
               require_versioning=True, scope="all")

    # replica with its own endpoint option: first key missing, second with other bytes of the same size
    b = w.bucket("src")
    series = make_series(s3, b, days=5, sidecar=False)
    replica = w.bucket("replica")
    for i, (key, _when, body) in enumerate(series):
        if i == 0:
            continue
        if i == 1:
            body = _body("other", len(body))
        s3.put_object(Bucket=replica, Key=key, Body=body, ChecksumAlgorithm="SHA256")
    w.data["replica"] = series
    w.scenario("replica", b, replica_bucket=replica, replica_endpoint_url=moto.endpoint_url,
               replica_region=moto.region, scope="all")

    # deep_subset over t = 3 runs
    b = w.bucket("subset")
    w.data["subset"] = make_series(s3, b, days=30, sidecar=False)
    for n in (1, 2, 3):
        w.scenario("subset %d/3" % n, b, checksum=["deep"], deep_subset="%d/3" % n)

    # backup time from object metadata, then from LastModified with a warning
    b = w.bucket("meta")
    w.data["meta_time"] = _now() - datetime.timedelta(hours=30)
    s3.put_object(Bucket=b, Key="wal/seg-1", Body=b"x" * 10, Metadata={"backup-time": w.data["meta_time"].isoformat()})
    s3.put_object(Bucket=b, Key="wal/seg-2", Body=b"y" * 10)
    w.scenario("time sources", b, prefix="wal/", key_regex=None, metadata_time_key="backup-time", max_age="26h")

    # bad input (the others fail before any connection: see the unit tests)
    w.scenario("bad bucket", "no-such-bucket-%s" % w.tag)
    w.scenario("bad duration", b, max_age="3 fortnights")
    w.run()
    return w


def failed_checks(result):
    return sorted({f["check"] for f in result.get("failures", [])})


def failures_by_key(result):
    out = {}
    for failure in result.get("failures", []):
        out.setdefault(failure["key"], set()).add(failure["check"])
    return out


def test_fresh_series_passes_in_check_mode_and_for_real(world):
    series = world.data["fresh"]
    for name in ("fresh check mode", "fresh"):
        result = world[name]
        assert not result.get("failed"), result.get("msg")
        assert result["changed"] is False
        assert result["passed"] is True and result["failures"] == []
        assert result["backups_count"] == 30
        assert result["gaps"] == [] and result["kept_count"] == 30
        assert result["latest"]["key"] == series[-1][0]
        assert result["latest"]["time"] == _iso(series[-1][1])
        assert result["latest"]["time_source"] == "key"
        assert result["latest"]["checksum"]["deep"] == "ok"
        assert result["latest"]["checksum"]["sidecar"] == "matches_s3_checksum"
        assert result["deep"]["objects"] == 30
        assert result["deep"]["bytes"] == sum(len(b) for _k, _t, b in series)
        passed = {check for check, status in result["checks"].items() if status["status"] == "passed"}
        assert passed == {"backups", "max_age", "min_size", "max_size_change_percent", "expected_interval",
                          "checksum_s3", "checksum_sidecar", "checksum_deep"}
        latest = [r for r in result["deep"]["results"] if r["key"] == series[-1][0]][0]
        assert latest["sha256"] == hashlib.sha256(series[-1][2]).hexdigest()
        assert series[-1][0] + ".sha256" in latest["compared_with"]


def test_stale_newest_fails_on_age(world):
    series = world.data["stale"]
    result = world["stale"]
    assert result["failed"] is True
    assert failed_checks(result) == ["max_age"]
    assert result["failures"][0]["key"] == series[-1][0]
    assert "max_age" in result["msg"]
    assert 3 * 86400 - 300 <= result["checks"]["max_age"]["age_seconds"] <= 3 * 86400 + 300
    report = world["stale report only"]
    assert not report.get("failed") and report["passed"] is False and failed_checks(report) == ["max_age"]


def test_truncated_newest_fails_on_size_change(world):
    series = world.data["trunc"]
    result = world["truncated"]
    assert result["failed"] is True
    assert failed_checks(result) == ["max_size_change_percent"]
    assert result["failures"][0]["key"] == series[-1][0]
    assert result["checks"]["max_size_change_percent"]["last_change_percent"] < -60


def test_corrupted_bytes_fail_deep_and_sidecar(world):
    bucket, series, corrupted = world.data["corrupt"]
    key = series[-1][0]
    head = world.s3.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(series[-1][2])  # same size: only the hashes can tell
    result = world["corrupted"]
    assert result["failed"] is True
    assert failures_by_key(result) == {key: {"checksum_deep", "checksum_sidecar"}}  # the older two are intact
    deep_msgs = [f["message"] for f in result["failures"] if f["check"] == "checksum_deep"]
    assert any(hashlib.sha256(corrupted).hexdigest() in m for m in deep_msgs)
    assert result["deep"]["objects"] == 3


def test_multipart_object_verified_part_by_part(world):
    key, parts = world.data["multipart"]
    result = world["multipart"]
    assert not result.get("failed"), result.get("msg")
    deep = result["deep"]["results"][0]
    assert deep["key"] == key and deep["ok"]
    assert deep["bytes"] == sum(len(p) for p in parts)
    assert deep["sha256"] == hashlib.sha256(b"".join(parts)).hexdigest()
    assert "s3 SHA256 composite" in deep["compared_with"] and "etag md5" in deep["compared_with"]
    assert result["latest"]["checksum"]["s3_algorithm"] == "SHA256-composite"


def test_missing_day_listed_in_gaps(world):
    series = world.data["gap"]
    result = world["gap"]
    assert result["passed"] is False
    assert result["gaps"] == [_iso(series[-1][1] - 10 * DAY)]
    assert result["kept_count"] == 29 and result["backups_count"] == 29
    assert failed_checks(result) == ["expected_interval"]


def test_unencrypted_or_wrong_kms_key_fails(world):
    enc = world.data["enc"]
    result = world["encryption"]
    assert result["passed"] is False
    assert failures_by_key(result) == {
        enc["plain"][0][0]: {"require_encryption"},
        enc["other"][0][0]: {"kms_key_id"},
        None: {"require_versioning"},
    }
    assert result["backups_count"] == 4  # the two good backups raised nothing
    if result["latest"]["key"] in {k for k, _t, _b in enc["good"]}:
        assert enc["good_id"] in result["latest"]["encryption"]["kms_key_id"]


def test_missing_object_lock_fails(world):
    lock = world.data["lock"]
    result = world["object lock"]
    assert result["failed"] is True
    assert failures_by_key(result) == {lock["short"][0][0]: {"require_object_lock"},
                                       lock["none"][0][0]: {"require_object_lock"}}
    assert result["checks"]["require_versioning"]["status"] == "passed"
    assert result["backups_count"] == 4


def test_replica_missing_a_key_fails(world):
    series = world.data["replica"]
    result = world["replica"]
    assert result["failed"] and failed_checks(result) == ["replica"]
    assert result["replica"]["missing"] == [series[0][0]]
    assert result["replica"]["mismatched"] == [series[1][0]]
    assert result["replica"]["checksums_compared"] == 4
    assert failures_by_key(result) == {series[0][0]: {"replica"}, series[1][0]: {"replica"}}


def test_deep_subset_covers_every_object_over_t_runs(world):
    keys = {k for k, _t, _b in world.data["subset"]}
    seen = []
    for n in (1, 2, 3):
        result = world["subset %d/3" % n]
        assert not result.get("failed"), result.get("msg")
        assert result["deep"]["subset"] == "%d/3" % n
        seen.append(set(result["deep"]["keys"]))
    assert set().union(*seen) == keys
    assert sum(len(s) for s in seen) == len(keys) == 30  # each object read exactly once over t runs
    assert all(seen)


def test_backup_time_from_metadata_then_last_modified(world):
    result = world["time sources"]
    assert not result.get("failed"), result.get("msg")
    assert result["oldest"]["key"] == "wal/seg-1"
    assert result["oldest"]["time_source"] == "metadata"
    assert result["oldest"]["time"] == _iso(world.data["meta_time"])
    assert result["latest"]["key"] == "wal/seg-2" and result["latest"]["time_source"] == "last_modified"
    assert any("LastModified" in w for w in result.get("warnings", []))


@pytest.mark.parametrize("name, needle", [
    ("bad bucket", "bucket 'no-such-bucket-"),
    ("bad duration", "max_age: cannot parse '3 fortnights'"),
])
def test_bad_input_fails_naming_the_option(world, name, needle):
    result = world[name]
    assert result["failed"] is True
    assert needle in result["msg"], result["msg"]
