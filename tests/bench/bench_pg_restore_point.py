"""Time to create an ARCHIVED restore point (pgBackRest archiving, PostgreSQL 15 on 127.0.0.1).

Three ways, each the median of N runs on one fresh cluster:
  raw SQL      pg_create_restore_point + pg_switch_wal + poll pg_stat_archiver (psycopg, no ledger)
  ledger       the module's logic in-process (ledger row, point, switch, wait, mark archived)
  module       failsafe.recovery.pg_restore_point through ansible-playbook (what an operator runs)
Prints a table and FIGURE lines; asserts nothing.
"""

import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
import types
import uuid

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for extra in (str(HERE), str(ROOT / "extensions"), str(ROOT / ".collections")):
    if extra not in sys.path:
        sys.path.insert(0, extra)

import psycopg  # noqa: E402  pylint: disable=wrong-import-position

from figures import figure  # noqa: E402  pylint: disable=wrong-import-position
from sandbox import services  # noqa: E402  pylint: disable=wrong-import-position
from sandbox.runner import run_module  # noqa: E402  pylint: disable=wrong-import-position
from ansible_collections.failsafe.recovery.plugins.module_utils import _postgres  # noqa: E402  pylint: disable=wrong-import-position

BENCH = "pg_restore_point"
N_FAST = int(os.environ.get("BENCH_PG_RESTORE_POINT_N", "10"))
N_MODULE = int(os.environ.get("BENCH_PG_RESTORE_POINT_N_MODULE", "5"))


def _name(prefix):
    return "%s_%s" % (prefix, uuid.uuid4().hex[:10])


def raw_sql(params):
    with psycopg.connect(autocommit=True, **_conninfo(params)) as conn:
        start = time.perf_counter()
        wal = conn.execute("SELECT pg_walfile_name(pg_create_restore_point(%s))", (_name("raw"),)).fetchone()[0]
        conn.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            last = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]
            if _postgres.segment_archived(wal, last):
                return time.perf_counter() - start
            time.sleep(0.01)
    raise RuntimeError("segment %s not archived within 60 s" % wal)


def ledger(params):
    module_params = dict(params, labels={"bench": "1"}, switch_wal=True, wait_archived=True,
                         archive_timeout=60, poll_interval=0.01)
    start = time.perf_counter()
    with _postgres.RestorePointLedger(module_params, "postgres", "failsafe_recovery") as led:
        result = _postgres._present(led, types.SimpleNamespace(check_mode=False), _name("ledger"),  # pylint: disable=protected-access
                                    module_params)
    elapsed = time.perf_counter() - start
    if not result["point"]["archived"]:
        raise RuntimeError("point not archived: %r" % result)
    return elapsed


def module(params, poll_interval=0.2):
    start = time.perf_counter()
    result = run_module("pg_restore_point", dict(params, name=_name("module"), poll_interval=poll_interval))
    elapsed = time.perf_counter() - start
    if result.get("failed") or not result["point"]["archived"]:
        raise RuntimeError("module failed: %s" % result.get("msg"))
    return elapsed


def module_noop(params):
    """Ansible's own cost: pg_restore_point_info (one connection, two reads)."""
    start = time.perf_counter()
    result = run_module("pg_restore_point_info", dict(params, name="absent"))
    elapsed = time.perf_counter() - start
    if result.get("failed"):
        raise RuntimeError(result.get("msg"))
    return elapsed


def _conninfo(params):
    return dict(host=params["login_host"], port=params["login_port"], user=params["login_user"],
                password=params["login_password"], dbname="postgres")


def main():
    base = pathlib.Path(tempfile.mkdtemp(prefix="bench-pg-rp-", dir="/tmp"))
    os.chmod(base, 0o755)
    cluster = services.PostgresCluster(base, stanza="bench")
    try:
        started = time.perf_counter()
        cluster.up()
        print("cluster + stanza + full backup ready in %.1f s" % (time.perf_counter() - started))
        params = cluster.module_params
        rows = []
        for label, func, runs in (("raw SQL (create + switch + archived)", raw_sql, N_FAST),
                                  ("ledger logic in-process", ledger, N_FAST),
                                  ("module via ansible-playbook", module, N_MODULE),
                                  ("pg_restore_point_info via ansible-playbook", module_noop, N_MODULE)):
            func(params)  # warm-up, not counted
            samples = [func(params) for dummy in range(runs)]
            rows.append((label, runs, statistics.median(samples) * 1000, min(samples) * 1000, max(samples) * 1000))
        print("\n%-45s %4s %12s %10s %10s" % ("way", "n", "median ms", "min ms", "max ms"))
        for label, runs, med, low, high in rows:
            print("%-45s %4d %12.1f %10.1f %10.1f" % (label, runs, med, low, high))
        figure(BENCH, "archived restore point, raw SQL, median", round(rows[0][2], 1), "ms")
        figure(BENCH, "archived restore point, ledger logic, median", round(rows[1][2], 1), "ms")
        figure(BENCH, "archived restore point, module end to end, median", round(rows[2][2], 1), "ms")
        figure(BENCH, "ansible-playbook floor (info module), median", round(rows[3][2], 1), "ms")
        figure(BENCH, "load average (1 min) during the run", round(os.getloadavg()[0], 2), "")
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
