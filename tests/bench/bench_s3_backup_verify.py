"""Benchmark s3_backup_verify (figures are printed, never asserted).

1. Deep verify of one large multipart backup (default 128 MiB; S3V_BENCH_MIB=1024 for the 1 GiB of the
   issue) on the moto S3 server: s3_backup_verify checksum=deep (parallel ranged GETs, in-order hashing,
   compared with the sidecar, the composite SHA256 and the multipart ETag) versus the usual
   amazon.aws.s3_object mode=get + sha256sum, both through ansible-playbook in the same run.
   Task time (module only) and playbook wall time of each, and the ratio. Then the verifier in-process
   at concurrency 1 and 8 (no Ansible start-up) to show what the parallel reads buy.
2. Listing and checking a series of S3V_BENCH_SERIES (default 10 000) hourly backups: max_age, min_size,
   size change, gaps over the retention window; module task time and playbook wall time. This series is
   served by a moto server running in this process (ThreadedMotoServer) and filled through its S3 backend
   directly: 10 000 PUTs over HTTP would take minutes and measure moto, not the verifier. The module
   still lists and checks over HTTP.

moto serves from one local process: absolute MiB/s say little about AWS, ratios on the same run do.
Run: .venv/bin/python tests/bench/bench_s3_backup_verify.py   (about 2-3 minutes)
"""

import datetime
import hashlib
import logging
import os
import pathlib
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "extensions"), str(ROOT / ".collections"), str(pathlib.Path(__file__).resolve().parent)]

import yaml  # noqa: E402  pylint: disable=wrong-import-position

from figures import figure  # noqa: E402  pylint: disable=wrong-import-position
from sandbox import services  # noqa: E402  pylint: disable=wrong-import-position
from sandbox.runner import run_playbook  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.failsafe.recovery.plugins.module_utils import _aws, _s3  # noqa: E402  pylint: disable=wrong-import-position

BENCH = "s3_backup_verify"
MIB = 1024 * 1024
SIZE_MIB = int(os.environ.get("S3V_BENCH_MIB", "128"))
SERIES = int(os.environ.get("S3V_BENCH_SERIES", "10000"))
UPLOAD_PART = 64 * MIB


def play(path, tasks):
    doc = [{"name": "bench", "hosts": "localhost", "connection": "local", "gather_facts": False,
            "vars": {"ansible_python_interpreter": str(ROOT / ".venv" / "bin" / "python")}, "tasks": tasks}]
    path.write_text(yaml.safe_dump(doc))
    started = time.monotonic()
    res = run_playbook(path, inventory="localhost,", timeout=1200)
    wall = time.monotonic() - started
    task_seconds = 0.0
    for p in res.data.get("plays", []):
        for task in p.get("tasks", []):
            d = task["task"]["duration"]
            start = datetime.datetime.fromisoformat(d["start"].replace("Z", "+00:00"))
            end = datetime.datetime.fromisoformat(d["end"].replace("Z", "+00:00"))
            task_seconds += (end - start).total_seconds()
    if res.rc != 0:
        print("  ! %s exited %s: %s %s" % (path.name, res.rc, res.stdout[-1500:], res.stderr[-800:]))
    return wall, task_seconds, res


def upload_large(s3, bucket, key):
    """Multipart upload with SHA256 checksums; returns the sha256 hex of the bytes."""
    whole = hashlib.sha256()
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")
    parts, remaining, number = [], SIZE_MIB * MIB, 1
    while remaining:
        data = os.urandom(min(UPLOAD_PART, remaining))
        whole.update(data)
        resp = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number, Body=data,
                              ChecksumAlgorithm="SHA256")
        parts.append({"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": resp["ChecksumSHA256"]})
        remaining -= len(data)
        number += 1
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts})
    digest = whole.hexdigest()
    s3.put_object(Bucket=bucket, Key=key + ".sha256", Body=("%s  %s\n" % (digest, key)).encode())
    return digest


def bench_deep(moto, work):
    s3 = moto.client("s3")
    s3.create_bucket(Bucket="bench-deep")
    key = "pg/db-%s.dump" % datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    t0 = time.monotonic()
    digest = upload_large(s3, "bench-deep", key)
    print("uploaded %d MiB in %.1f s" % (SIZE_MIB, time.monotonic() - t0))
    size = SIZE_MIB * MIB
    args = dict(moto.aws_params, bucket="bench-deep", prefix="pg/", key_regex=r"db-(?P<time>\d{8}T\d{6}Z)\.dump$",
                checksum=["deep"], concurrency=8, part_size=8 * MIB)
    wall_v, task_v, res = play(work / "verify.yml", [{"name": "verify", "failsafe.recovery.s3_backup_verify": args}])
    result = res.result("verify")
    deep = result.get("deep", {})
    ok = bool(deep.get("results")) and deep["results"][0]["ok"] and deep["results"][0]["sha256"] == digest
    print("s3_backup_verify deep: ok=%s compared with %s" % (ok, deep.get("results", [{}])[0].get("compared_with")))
    dest = work / "download.dump"
    tasks = [
        {"name": "get", "amazon.aws.s3_object": dict(moto.aws_params, bucket="bench-deep", object=key, mode="get",
                                                     dest=str(dest), overwrite="always")},
        {"name": "sha256sum", "ansible.builtin.command": "sha256sum %s" % dest, "register": "sum"},
        {"name": "compare", "ansible.builtin.assert": {"that": ["sum.stdout.split()[0] == %r" % digest]}},
    ]
    wall_g, task_g, res_g = play(work / "get.yml", tasks)
    dest.unlink(missing_ok=True)
    print("s3_object get + sha256sum: rc=%s" % res_g.rc)

    figure(BENCH, "deep object size", SIZE_MIB, "MiB")
    figure(BENCH, "s3_backup_verify deep: module throughput (in-module figure)", deep.get("mib_per_second"), "MiB/s")
    figure(BENCH, "s3_backup_verify deep: task time", round(task_v, 2), "s")
    figure(BENCH, "s3_backup_verify deep: playbook wall", round(wall_v, 2), "s")
    figure(BENCH, "s3_object get + sha256sum: task time (3 tasks)", round(task_g, 2), "s")
    figure(BENCH, "s3_object get + sha256sum: playbook wall", round(wall_g, 2), "s")
    figure(BENCH, "deep task throughput", round(SIZE_MIB / task_v, 1) if task_v else None, "MiB/s")
    figure(BENCH, "get+sha256sum task throughput", round(SIZE_MIB / task_g, 1) if task_g else None, "MiB/s")
    figure(BENCH, "speed-up deep vs get+sha256sum (task time)", round(task_g / task_v, 2) if task_v else None, "x")
    figure(BENCH, "deep result correct", "yes" if ok else "NO")

    # in-process: the verifier alone, by concurrency
    for concurrency in (1, 8):
        params = dict(args, scope="latest", sidecar_suffix=".sha256", concurrency=concurrency)
        verifier = _s3.BackupVerifier(params, client_factory=lambda p: _aws.aws_client(
            p, "s3", max_pool_connections=max(10, p["concurrency"])))
        t0 = time.monotonic()
        out = verifier.run()
        seconds = time.monotonic() - t0
        figure(BENCH, "in-process deep, concurrency %d" % concurrency, round(size / MIB / seconds, 1), "MiB/s")
        if not out["passed"]:
            print("  ! in-process verify failed: %s" % out["failures"])


def bench_series(work):
    from moto.server import ThreadedMotoServer  # pylint: disable=import-outside-toplevel
    from moto.s3.models import s3_backends  # pylint: disable=import-outside-toplevel

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = services.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        aws = dict(endpoint_url="http://127.0.0.1:%d" % port, region="us-east-1", access_key="testing",
                   secret_key="testing")
        s3 = _aws.aws_client(aws, "s3")
        s3.create_bucket(Bucket="bench-series")
        backend = s3_backends["123456789012"]["aws"]
        newest = datetime.datetime.now(datetime.timezone.utc).replace(minute=0, second=0, microsecond=0)
        t0 = time.monotonic()
        for k in range(SERIES):
            key = "wal/seg-%s.tar" % (newest - datetime.timedelta(hours=k)).strftime("%Y%m%dT%H%M%SZ")
            backend.put_object("bench-series", key, b"w" * 2048)
        print("stored %d objects in %.1f s" % (SERIES, time.monotonic() - t0))
        args = dict(aws, bucket="bench-series", prefix="wal/", key_regex=r"seg-(?P<time>\d{8}T\d{6}Z)\.tar$",
                    max_age="2h", min_size=1024, max_size_change_percent=50, expected_interval="1h",
                    retention_days=SERIES // 24, scope="all", fail_on_error=False)
        wall, task, res = play(work / "series.yml", [{"name": "series", "failsafe.recovery.s3_backup_verify": args}])
        result = res.result("series")
        print("series: passed=%s backups=%s gaps=%s failures=%d" % (
            result.get("passed"), result.get("backups_count"), len(result.get("gaps", [])),
            len(result.get("failures", []))))
        figure(BENCH, "series size", result.get("backups_count"), "backups")
        figure(BENCH, "series list+check: task time", round(task, 2), "s")
        figure(BENCH, "series list+check: playbook wall", round(wall, 2), "s")
        figure(BENCH, "series checks passed", "yes" if result.get("passed") else "no")
    finally:
        server.stop()


def main():
    base = pathlib.Path(tempfile.mkdtemp(prefix="bench-s3v-", dir="/tmp"))
    os.chmod(base, 0o755)
    work = base / "work"
    work.mkdir()
    moto = services.MotoServer(base)
    moto.up()
    try:
        bench_deep(moto, work)
    finally:
        moto.stop()
    try:
        bench_series(work)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
