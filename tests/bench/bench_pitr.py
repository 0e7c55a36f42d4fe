"""PITR of a ~1 GB pgbench database: role rollback_database against a raw pgBackRest restore (figures, not asserts).

One PostgreSQL 15 cluster with pgBackRest (services.PostgresCluster, posix repo, no compression, process-max 2) on
127.0.0.1, in a temporary directory under /tmp:
  1. database ``bench`` filled by ``pgbench -i -s SCALE`` (about 15 MB per scale unit; size from pg_database_size)
  2. full backup; ``pgbackrest expire --repo1-retention-full=1`` then drops the empty cluster's backup from
     PostgresCluster.up() and the WAL of the data load, so the repository is what a production one holds: one
     full backup and the WAL since (its size is a figure: the role's 'pgbackrest verify' reads all of it)
  3. GOOD pgbench transactions (replayed by the PITR), then the ledger restore point (failsafe.recovery.
     pg_restore_point through ansible-playbook, switch_wal + wait_archived); pgbench_history read at the point
  4. BAD pgbench transactions after the point
  5. role failsafe.recovery.rollback_database, method pitr, target_name the point, defaults otherwise (repository
     verify, safety point, amcheck of every database) plus one assertion, through a generated playbook; its wall
     time (ansible-playbook process) and the per-task times from the json callback
  6. on the same repository and data, the raw restore: ``pgbackrest restore --type=name --target=<point>
     --target-action=promote`` (plus --set and --target-timeline, as the role passes them) into a fresh data
     directory (PostgresCluster.restore_copy: own port, archive_mode off), start, and poll until promoted
  7. N archived restore points (pg_restore_point via ansible-playbook, switch_wal + wait_archived, poll 0.2 s) on
     the rolled-back cluster: min / median / max
Correctness is checked (the bench fails, exit 1, when it is wrong): the rolled-back cluster and the raw copy both
hold pgbench_history exactly as at the point (row count and sum of deltas), sum(abalance) of pgbench_accounts equals
that sum, and the bad transactions are gone. Timings are printed as FIGURE lines, never asserted.

Run: .venv/bin/python tests/bench/bench_pitr.py   (2-4 minutes; 5.7 GB peak in /tmp: data, WAL archive, backup, the
data directory the role moves aside, the restored one and the raw copy)
Scale: BENCH_PITR_SCALE (pgbench scale, default 68 = about 1 GB), BENCH_PITR_GOOD / BENCH_PITR_BAD (pgbench
transactions per client, 2 clients, before / after the point, default 1000 / 1500), BENCH_PITR_POINTS (restore point
samples, default 5). `make bench` runs it with the others (tests/bench/run.py picks up every bench_*.py).

Measured 2026-11-23, defaults (scale 68: pg_database_size 1.074 GB; repository 1.18 GB), on a 2-core machine with
23 GB RAM (the just-written repository stays in the page cache for both restores) LOADED by other helpers' test and
Molecule runs at the same time; two runs, load average (1 min) 1.4 -> 6.4 in the first, 5.3 -> 11.4 in the second:
                                                    run 1      run 2
  data load (pgbench -i -s 68) / full backup        9.3 / 7.9  22.9 / 11.3 s
  ROLE rollback_database pitr, wall time            42.1       54.2 s   (42 / 47 tasks: the role was being edited)
    pgbackrest restore (task / pgBackRest's log)    8.8 / 7.7  12.2 / 10.6 s
    start + wait until promoted                     1.5 + 0.9  1.6 + 1.7 s
    preflight pgbackrest verify (whole repository)  3.3        4.5 s
    safety restore point (archived)                 2.9        2.5 s
    amcheck of every btree index                    3.1        3.5 s
    the other tasks (reads, checks, mv, ledger...)  16.5       22.4 s   (~1-1.5 s per command task under this load)
    ansible-playbook start-up and between tasks     2.5        4.0 s
  RAW restore + start + promoted                    8.8        12.2 s   (pgBackRest's log: restore 7.8 / 10.4 s)
  RATIO role / raw                                  4.8x       4.5x
  archived restore point, module via ansible-playbook, n=5, min / median / max:
                                                    2.55 / 2.73 / 3.65 s    5.95 / 6.35 / 8.09 s
At 1 GB the role's cost is mostly per-task overhead that does not grow with the database (~30 s here); what grows
with it is the restore (as raw), the verify (reads the whole repository, ~0.4x the restore here) and amcheck.
"""

import datetime
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for extra in (str(HERE), str(ROOT / "extensions"), str(ROOT / ".collections")):
    if extra not in sys.path:
        sys.path.insert(0, extra)

import yaml  # noqa: E402  pylint: disable=wrong-import-position

from figures import figure  # noqa: E402  pylint: disable=wrong-import-position
from sandbox import services  # noqa: E402  pylint: disable=wrong-import-position
from sandbox.runner import run_module, run_playbook  # noqa: E402  pylint: disable=wrong-import-position

BENCH = "pitr"
PY = str(ROOT / ".venv" / "bin" / "python")
SCALE = int(os.environ.get("BENCH_PITR_SCALE", "68"))
GOOD = int(os.environ.get("BENCH_PITR_GOOD", "1000"))
BAD = int(os.environ.get("BENCH_PITR_BAD", "1500"))
POINTS = int(os.environ.get("BENCH_PITR_POINTS", "5"))
DB = "bench"
PROMOTE_TIMEOUT = 600
HISTORY_SQL = "SELECT count(*) || ':' || coalesce(sum(delta), 0) FROM pgbench_history"
BALANCE_SQL = "SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts"
# role tasks reported one by one (name without the role prefix); the rest is summed as 'other tasks'
ROLE_STEPS = ("Preflight | verify the pgBackRest repository", "Create the safety restore point", "Stop PostgreSQL",
              "Move the data directory aside", "Restore with pgBackRest", "Start PostgreSQL",
              "Wait until recovery stopped and the server is promoted", "Amcheck | check every btree index of the "
              "user schemas")


def pgbench(cluster, *args, timeout=1800):
    """Run pgbench (the cluster's binaries) on the private socket as the postgres user; returns stdout."""
    cmd = [os.path.join(cluster.bin_dir, "pgbench"), "-h", cluster.socket_dir, "-p", str(cluster.port),
           "-U", cluster.user] + [str(a) for a in args] + [DB]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise SystemExit("pgbench %s failed (rc=%d): %s" % (" ".join(str(a) for a in args), proc.returncode,
                                                            (proc.stderr or proc.stdout)[-2000:]))
    return proc.stdout + proc.stderr


def timed(func, *args, **kwargs):
    start = time.monotonic()
    value = func(*args, **kwargs)
    return time.monotonic() - start, value


def restore_log_durations(cluster):
    """Durations (s) pgBackRest logged for every completed restore of the stanza, in order."""
    log = pathlib.Path(cluster.pgbackrest_dir, "log", "%s-restore.log" % cluster.stanza)
    text = log.read_text(errors="replace") if log.exists() else ""
    return [int(ms) / 1000.0 for ms in re.findall(r"restore command end: completed successfully \((\d+)ms\)", text)]


def task_times(res):
    """[(task name without the role prefix, seconds)] from the json callback's per-task start/end."""
    out = []
    for play in res.data.get("plays", []):
        for task in play.get("tasks", []):
            duration = task["task"].get("duration", {})
            if "start" in duration and "end" in duration:
                start, end = (datetime.datetime.fromisoformat(duration[k].rstrip("Z")) for k in ("start", "end"))
                out.append((task["task"]["name"].split(" : ", 1)[-1], (end - start).total_seconds()))
    return out


def check(what, got, expected):
    if got != expected:
        raise SystemExit("WRONG: %s is %r, expected %r" % (what, got, expected))
    print("ok: %s = %s" % (what, got), flush=True)


def create_point(cluster, name):
    """pg_restore_point through ansible-playbook, switch_wal + wait_archived; (seconds, point record)."""
    seconds, result = timed(run_module, "pg_restore_point", dict(cluster.module_params, name=name, switch_wal=True,
                                                                 wait_archived=True, archive_timeout=120))
    if result.get("failed") or not result["point"]["archived"]:
        raise SystemExit("pg_restore_point %s failed: %s" % (name, result.get("msg", result)))
    return seconds, result["point"]


def run_role(cluster, base, point, history):
    role_vars = {
        "rollback_database_method": "pitr",
        "rollback_database_target_name": point["name"],
        "rollback_database_login": cluster.module_params,
        "rollback_database_data_dir": cluster.data_dir,
        "rollback_database_bin_dir": cluster.bin_dir,
        "rollback_database_server_log": str(pathlib.Path(cluster.data_dir).parent / "rollback.log"),
        "rollback_database_pgbackrest_config": cluster.pgbackrest_config,
        "rollback_database_stanza": cluster.stanza,
        "rollback_database_promote_timeout": PROMOTE_TIMEOUT,
        "rollback_database_assertions": [{"name": "pgbench_history as at the point", "database": DB,
                                          "sql": HISTORY_SQL, "expect": history}],
    }
    play = [{"name": "PITR rollback", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": PY},
             "tasks": [{"name": "rollback", "ansible.builtin.include_role": {
                 "name": "failsafe.recovery.rollback_database"}, "vars": role_vars}]}]
    path = base / "rollback.yml"
    path.write_text(yaml.safe_dump(play))
    seconds, res = timed(run_playbook, path, inventory="localhost,", timeout=1800)
    if res.rc != 0:
        raise SystemExit("rollback_database failed (rc=%s):\n%s\n%s" % (res.rc, res.stdout[-4000:], res.stderr[-2000:]))
    return seconds, res


def raw_restore(cluster, point, label):
    """pgbackrest restore into a fresh data directory, start, wait until promoted; (seconds, copy, ready seconds)."""
    start = time.monotonic()
    copy = cluster.restore_copy("pg_pitr_raw", target=point["name"], target_type="name",
                                extra_args=["--set=%s" % label, "--target-timeline=%d" % int(point["timeline"])])
    ready = time.monotonic() - start
    services.wait_until(lambda: copy.psql("SELECT pg_is_in_recovery()") == "f", PROMOTE_TIMEOUT,
                        "the raw copy promoted", interval=0.05, log=copy.log)
    return time.monotonic() - start, copy, ready


def du(path):
    proc = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=False)
    return int(proc.stdout.split()[0]) if proc.returncode == 0 and proc.stdout else 0


def main():
    base = pathlib.Path(tempfile.mkdtemp(prefix="bench-pitr-", dir="/tmp"))
    os.chmod(base, 0o755)  # the postgres user must traverse it
    uid = uuid.uuid4().hex[:6]
    cluster = services.PostgresCluster(base, stanza="benchpitr" + uid, name="pg_pitr")
    cluster.die_with_parent = True
    copy = None
    load = [os.getloadavg()[0]]
    try:
        cluster.up()
        cluster.psql("CREATE DATABASE %s" % DB)
        seconds, dummy = timed(pgbench, cluster, "-i", "-q", "-s", SCALE)
        size = int(cluster.psql("SELECT pg_database_size('%s')" % DB))
        figure(BENCH, "pgbench -i -s %d (data load)" % SCALE, round(seconds, 1), "s")
        figure(BENCH, "database size (pg_database_size)", round(size / 1e9, 3), "GB")

        seconds, label = timed(cluster.backup, "full")
        cluster.pgbackrest("--repo1-retention-full=1", "expire")
        figure(BENCH, "full backup (pgbackrest, process-max 2, no compression)", round(seconds, 1), "s")

        pgbench(cluster, "-n", "-c", 2, "-j", 2, "-t", GOOD)
        name = "bench_pitr_%s" % uid
        dummy, point = create_point(cluster, name)
        history = cluster.psql(HISTORY_SQL, db=DB)
        check("the point's pgbench_history (rows:sum of deltas) after %d good transactions" % (2 * GOOD),
              int(history.split(":")[0]), 2 * GOOD)
        load.append(os.getloadavg()[0])
        pgbench(cluster, "-n", "-c", 2, "-j", 2, "-t", BAD)
        after_bad = cluster.psql(HISTORY_SQL, db=DB)
        check("pgbench_history rows after %d bad transactions" % (2 * BAD), int(after_bad.split(":")[0]),
              2 * (GOOD + BAD))
        repo = du(cluster.repo_path)
        figure(BENCH, "pgBackRest repository before the rollback (backup + WAL)", round(repo / 1e9, 3), "GB")

        # --- the role
        load.append(os.getloadavg()[0])
        role_seconds, res = run_role(cluster, base, point, history)
        record = res.result("Record the result")["ansible_facts"]["rollback_database_result"]
        check("role: pgbench_history after the rollback", cluster.psql(HISTORY_SQL, db=DB), history)
        check("role: sum(abalance) = sum(delta)", cluster.psql(BALANCE_SQL, db=DB), history.split(":")[1])
        check("role: backup restored", record["backup"], label)
        check("role: server promoted", cluster.psql("SELECT pg_is_in_recovery()"), "f")
        times = task_times(res)
        tasks_total = sum(s for dummy, s in times)
        figure(BENCH, "ROLE rollback_database pitr, ansible-playbook wall time", round(role_seconds, 2), "s")
        steps = {}
        for task, secs in times:
            key = task if task in ROLE_STEPS else "other tasks (%d)" % len([t for t, d in times if t not in ROLE_STEPS])
            steps[key] = steps.get(key, 0.0) + secs
        for key in list(ROLE_STEPS) + sorted(k for k in steps if k not in ROLE_STEPS):
            if key in steps:
                figure(BENCH, "role task: %s" % key, round(steps[key], 2), "s")
        figure(BENCH, "role: ansible-playbook start-up and between tasks", round(role_seconds - tasks_total, 2), "s")
        core = sum(steps.get(k, 0.0) for k in ROLE_STEPS[4:7])
        figure(BENCH, "role: restore + start + wait promoted (the steps the raw path does)", round(core, 2), "s")
        print("role tasks, slowest first:")
        for task, secs in sorted(times, key=lambda t: -t[1]):
            print("  %7.2f s  %s" % (secs, task))
        role_restores = restore_log_durations(cluster)
        if role_restores:
            figure(BENCH, "role: pgbackrest restore as logged by pgBackRest", role_restores[-1], "s")

        # --- raw pgBackRest on the same repository and data
        load.append(os.getloadavg()[0])
        raw_seconds, copy, ready = raw_restore(cluster, point, label)
        check("raw: pgbench_history after the restore", copy.psql(HISTORY_SQL, db=DB), history)
        check("raw: sum(abalance) = sum(delta)", copy.psql(BALANCE_SQL, db=DB), history.split(":")[1])
        raw_restores = restore_log_durations(cluster)
        figure(BENCH, "RAW pgbackrest restore + start + promoted", round(raw_seconds, 2), "s")
        if len(raw_restores) > len(role_restores):
            figure(BENCH, "raw: pgbackrest restore as logged by pgBackRest", raw_restores[-1], "s")
        figure(BENCH, "raw: restore_copy returned (restore + start, accepting connections)", round(ready, 2), "s")
        figure(BENCH, "RATIO role / raw (wall time)", round(role_seconds / raw_seconds, 2), "x")
        peak = du(base)
        figure(BENCH, "disk used by the bench at its peak", round(peak / 1e9, 2), "GB")
        copy.stop()
        shutil.rmtree(copy.dir, ignore_errors=True)
        copy = None

        # --- archived restore points on the rolled-back cluster
        load.append(os.getloadavg()[0])
        samples = [create_point(cluster, "bench_pitr_%s_%d" % (uid, i))[0] for i in range(POINTS)]
        print("archived restore point samples (s): %s" % ", ".join("%.2f" % s for s in samples))
        for label_, value in (("min", min(samples)), ("median", statistics.median(samples)), ("max", max(samples))):
            figure(BENCH, "archived restore point (module via ansible-playbook, n=%d), %s" % (POINTS, label_),
                   round(value, 2), "s")
        load.append(os.getloadavg()[0])
        figure(BENCH, "load average (1 min) at the phases, max", round(max(load), 2), "")
        figure(BENCH, "load average (1 min) at the phases", " ".join("%.2f" % v for v in load), "")
    finally:
        if copy is not None:
            copy.stop()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
