"""Measured RTO and RPO of DR tiers 2 and 3 on real services on 127.0.0.1 (figures printed, never asserted).

Tier 2 (role dr_datacenter_failover): a PostgreSQL 15 primary and its streaming standby, a writer thread inserting
rows at a fixed rate (psycopg, autocommit, bounded in rows and seconds), and the role run through a generated
playbook while the writer runs.
  primary UP    the role's stop-writes command touches the file the writer watches; RTO component = wall time of
                the role run; RPO = rows the writer saw committed that are missing on the promoted standby.
  primary DOWN  pg_ctl stop -m immediate while the writer runs, then the role; rows lost (acknowledged by the
                primary, absent on the promoted standby), their time window, and the role's reported rpo_seconds.
                The harness clusters run with synchronous_commit = off (services.PostgresCluster), so a commit is
                acknowledged before its WAL is flushed or streamed: loss here is the real asynchronous-replication
                loss, not a bench artefact.
Tier 3 (role dr_complete_rebuild): an off-site backup set in S3 (moto) - pg_dump -Fc of a database of N rows, the
release tarball, the configuration tarball, each with a SHA256 checksum and sidecar - then the system is lost
(database dropped, releases and configuration deleted, app down, HAProxy on a dead backend) and rebuilt;
wall time of the role run and its per-step timings.

Objectives (seeds): DR plan 000 - RTO database services 10 min, database recovery 15 min, complete system 30 min,
complete data recovery 60 min, RPO critical data 0 min; DR plan 002 - RPO critical data 15 min. Each figure is
compared with the strict and the loose bound and printed as PASS / PASS (loose bound only) / MISS.

Run: .venv/bin/python tests/bench/bench_dr_tiers.py   (about 2-3 minutes)
Scale: BENCH_DR_TIERS_ROWS (tier 3 rows, default 100000), BENCH_DR_TIERS_RATE (writer rows/s, default 100),
BENCH_DR_TIERS_WARMUP (seconds of writes before the failover, default 3). `make bench` runs it with the others
(tests/bench/run.py picks up every bench_*.py).

Measured 2026-11-23, defaults (100 rows/s, 3 s warm-up, 100k rows), on a 2-core machine loaded by other work (a CI
rehearsal ran at the same time), whole bench 2 min 2 s:
  T2 primary up    role run 16.6 s (catch-up 5.9, fence 5.0, promote 1.7, verify 0.7) - PASS vs 10 min;
                   898 rows committed, 0 lost, RPO 0 s (role reports 0) - PASS
  T2 primary down  role run 14.4 s (fence 5.8, promote 2.1) - PASS vs 10 min; 299 rows acknowledged, 18 lost
                   (0.18 s of commits: asynchronous replication, synchronous_commit = off) - MISS of the 0 min bound,
                   PASS of 15 min; the role reports rpo_seconds 3.9 (now - last replayed commit, so it includes the
                   1.7 s from the crash to the role's start: an upper bound) and rpo_bytes 0 (it cannot see the
                   dead primary's WAL, so bytes understate the loss)
  T3 rebuild       100k rows (2.9 MB dump): role run 46.6 s (verify 16.5, database 3.4, release 7.2, config 5.0,
                   start 1.5, traffic 2.7, health 4.3) - PASS vs 30 min; RPO here is only the bench's dump age
                   (1.3 s); in production it is the off-site backup interval
"""

import datetime
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for extra in (str(HERE), str(ROOT / "extensions"), str(ROOT / ".collections")):
    if extra not in sys.path:
        sys.path.insert(0, extra)

import psycopg  # noqa: E402  pylint: disable=wrong-import-position
import yaml  # noqa: E402  pylint: disable=wrong-import-position

from figures import figure  # noqa: E402  pylint: disable=wrong-import-position
from sandbox import archives, services  # noqa: E402  pylint: disable=wrong-import-position
from sandbox.runner import run_playbook  # noqa: E402  pylint: disable=wrong-import-position

BENCH = "dr_tiers"
PY = str(ROOT / ".venv" / "bin" / "python")
ROWS = int(os.environ.get("BENCH_DR_TIERS_ROWS", "100000"))
RATE = float(os.environ.get("BENCH_DR_TIERS_RATE", "100"))
WARMUP = float(os.environ.get("BENCH_DR_TIERS_WARMUP", "3"))
WRITER_MAX_SECONDS = 120
WRITER_MAX_ROWS = 100000
TABLE = "bench_writes"
# (strict, loose) bounds in seconds, from the seeds
RTO_TIER2 = (600, 900)
RTO_TIER3 = (1800, 3600)
RPO_CRITICAL = (0, 900)
ISO = "%Y-%m-%dT%H:%M:%S.%fZ"


def verdict(value, bounds):
    strict, loose = bounds
    if value <= strict:
        return "PASS"
    if value <= loose:
        return "PASS (loose bound only)"
    return "MISS"


def objective(metric, value, unit, bounds):
    """One figure plus its comparison with the seeds' objective (text, never an assertion)."""
    figure(BENCH, metric, value, unit)
    figure(BENCH, metric + " vs objective <= %s / %s %s" % (bounds[0], bounds[1], unit), verdict(value, bounds))


class Writer(threading.Thread):
    """Inserts (id, client time) at a fixed rate until told to stop, the stop file exists, an error, or the bounds."""

    def __init__(self, login, stop_file=None):
        super().__init__(daemon=True)
        self.conninfo = {"host": login["login_host"], "port": login["login_port"], "user": login["login_user"],
                         "password": login["login_password"], "dbname": "postgres", "connect_timeout": 5}
        self.stop_file = stop_file
        self.stopped = threading.Event()
        self.acked = {}  # id -> client time the commit returned
        self.error = None

    def run(self):
        with psycopg.connect(autocommit=True, **self.conninfo) as conn:
            start = time.monotonic()
            for row_id in range(1, WRITER_MAX_ROWS + 1):
                due = start + row_id / RATE
                if self.stopped.is_set() or due - start > WRITER_MAX_SECONDS:
                    return
                if self.stop_file is not None and self.stop_file.exists():
                    return
                time.sleep(max(0.0, due - time.monotonic()))
                now = time.time()
                try:
                    conn.execute("INSERT INTO %s (id, ts, pad) VALUES (%%s, %%s, md5(%%s::text))" % TABLE,
                                 (row_id, now, row_id))
                except psycopg.Error as exc:
                    self.error = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0])
                    return
                self.acked[row_id] = time.time()

    def finish(self, timeout=30):
        self.stopped.set()
        self.join(timeout)
        if self.is_alive():
            raise SystemExit("the writer did not stop within %d s" % timeout)


def make_pair(base, tag):
    uid = uuid.uuid4().hex[:6]
    primary = services.PostgresCluster(base, stanza="bench%s%s" % (tag, uid), name="pg_a_%s_%s" % (tag, uid))
    primary.die_with_parent = True
    primary.up()
    standby = primary.make_standby("pg_b_%s_%s" % (tag, uid))
    standby.die_with_parent = True
    primary.psql("CREATE TABLE %s (id int PRIMARY KEY, ts double precision NOT NULL, pad text)" % TABLE)
    return primary, standby


def run_failover(base, primary, standby, **role_vars):
    play_vars = {
        "ansible_python_interpreter": PY,
        "dr_datacenter_failover_primary_login": dict(primary.module_params),
        "dr_datacenter_failover_standby_login": dict(standby.module_params),
        "dr_datacenter_failover_primary_data_dir": primary.data_dir,
        "dr_datacenter_failover_standby_data_dir": standby.data_dir,
        "dr_datacenter_failover_primary_server_log": str(pathlib.Path(primary.data_dir).parent / "restart.log"),
        "dr_datacenter_failover_standby_server_log": str(pathlib.Path(standby.data_dir).parent / "restart.log"),
        "dr_datacenter_failover_bin_dir": primary.bin_dir,
        "dr_datacenter_failover_promote_timeout": 60,
        "dr_datacenter_failover_catchup_timeout": 60,
        "dr_datacenter_failover_critical_tables": [TABLE],
    }
    play_vars.update(role_vars)
    play = [{"name": "data-center failover", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": play_vars,
             "tasks": [{"name": "failover",
                        "ansible.builtin.include_role": {"name": "failsafe.recovery.dr_datacenter_failover"}}]}]
    seconds, res = timed_play(base / ("failover-%s.yml" % uuid.uuid4().hex[:6]), play, "dr_datacenter_failover", 600)
    return seconds, res.result("Record the result")["ansible_facts"]["dr_datacenter_failover_result"]


def timed_play(path, play, what, timeout):
    """Write ``play`` to ``path``, run it and return (wall seconds, result); a failed run stops the bench."""
    path.write_text(yaml.safe_dump(play))
    start = time.monotonic()
    res = run_playbook(path, inventory="localhost,", timeout=timeout)
    seconds = time.monotonic() - start
    if res.rc != 0:
        raise SystemExit("%s failed (rc=%s):\n%s" % (what, res.rc, res.stdout[-4000:]))
    return seconds, res


def loss(writer, new_primary):
    """(rows acknowledged, rows lost, seconds of acknowledged commits lost) against the promoted standby."""
    present = {int(i) for i in new_primary.psql("SELECT id FROM %s" % TABLE).split()}
    lost = sorted(set(writer.acked) - present)
    window = 0.0
    if lost:
        kept = [t for i, t in writer.acked.items() if i in present]
        window = max(writer.acked[i] for i in lost) - (max(kept) if kept else min(writer.acked[i] for i in lost))
    return len(writer.acked), len(lost), round(window, 3)


def step_times(record):
    times = {k: datetime.datetime.strptime(v, ISO) for k, v in record["times"].items()}
    order = [k for k in ("started", "caught_up", "fenced", "promoted", "verified", "traffic_moved", "finished")
             if k in times]
    return [(b, round((times[b] - times[a]).total_seconds(), 2)) for a, b in zip(order, order[1:])]


def tier2_primary_up(base):
    primary, standby = make_pair(base, "up")
    try:
        stop_file = base / "writes_stopped_up"
        writer = Writer(primary.module_params, stop_file)
        writer.start()
        time.sleep(WARMUP)
        seconds, record = run_failover(base, primary, standby,
                                       dr_datacenter_failover_stop_writes_commands=[["touch", str(stop_file)]])
        writer.finish()
        acked, lost, window = loss(writer, standby)
        figure(BENCH, "T2 primary up: rows committed by the writer (%g rows/s)" % RATE, acked, "rows")
        objective("T2 primary up: role run, start to verified (RTO component)", round(seconds, 2), "s", RTO_TIER2)
        for step, secs in step_times(record):
            figure(BENCH, "T2 primary up: role step -> %s" % step, secs, "s")
        objective("T2 primary up: rows lost on the new primary", lost, "rows", (0, 0))
        objective("T2 primary up: RPO measured (lost commit window)", window, "s", RPO_CRITICAL)
        figure(BENCH, "T2 primary up: RPO reported by the role", float(record["rpo_seconds"]), "s")
        figure(BENCH, "T2 primary up: writer ended with", writer.error or "stop file", "")
    finally:
        standby.stop()
        primary.stop()


def tier2_primary_down(base):
    primary, standby = make_pair(base, "down")
    try:
        writer = Writer(primary.module_params)
        writer.start()
        time.sleep(WARMUP)
        primary.run_as([pathlib.Path(primary.bin_dir, "pg_ctl"), "stop", "-D", primary.data_dir, "-m", "immediate"])
        killed = time.time()
        writer.finish()
        seconds, record = run_failover(base, primary, standby)
        acked, lost, window = loss(writer, standby)
        figure(BENCH, "T2 primary down: rows committed by the writer (%g rows/s)" % RATE, acked, "rows")
        objective("T2 primary down: role run, start to verified (RTO component)", round(seconds, 2), "s", RTO_TIER2)
        for step, secs in step_times(record):
            figure(BENCH, "T2 primary down: role step -> %s" % step, secs, "s")
        figure(BENCH, "T2 primary down: rows lost (acknowledged, not on the new primary)", lost, "rows")
        objective("T2 primary down: RPO measured (lost commit window)", window, "s", RPO_CRITICAL)
        objective("T2 primary down: RPO reported by the role (rpo_seconds)", round(float(record["rpo_seconds"]), 3),
                  "s", RPO_CRITICAL)
        figure(BENCH, "T2 primary down: rpo_bytes reported by the role", int(record["rpo_bytes"]), "B")
        figure(BENCH, "T2 primary down: crash to role start", round(record_start(record) - killed, 2), "s")
    finally:
        standby.stop()
        primary.stop()


def record_start(record):
    started = datetime.datetime.strptime(record["times"]["started"], ISO)
    return started.replace(tzinfo=datetime.timezone.utc).timestamp()


# --------------------------------------------------------------------------- tier 3

def tier3_rebuild(base, moto):
    site = base / "t3"
    site.mkdir()
    os.chmod(site, 0o755)
    cluster = services.PostgresCluster(site, stanza="bench3" + uuid.uuid4().hex[:6], name="pg_t3")
    cluster.die_with_parent = True
    deploy_to, config_dir = site / "site", site / "etc" / "shop"
    app = services.DemoApp(site / "run", "shop", port=services.free_port(), release_dir=deploy_to / "current")
    proxy = services.HAProxy(site / "lb", services.free_port(), app.port)
    proxy.die_with_parent = True
    try:
        cluster.up()
        proxy.up()  # traffic on be_blue, the lost site (nothing listens there)
        db, bucket = "shop", "offsite-" + uuid.uuid4().hex[:8]
        cluster.psql("CREATE DATABASE %s" % db)
        start = time.monotonic()
        cluster.psql("CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, total numeric(10,2), note text); "
                     "INSERT INTO orders SELECT g, 'c' || (g %% 997), round((g * 1.37)::numeric, 2), md5(g::text) "
                     "FROM generate_series(1, %d) g; CREATE INDEX ON orders (customer);" % ROWS, db=db)
        digest_sql = "SELECT count(*) || '/' || md5(string_agg(id || ':' || customer || ':' || total, ',' ORDER BY id)) FROM orders"
        digest = cluster.psql(digest_sql, db=db)
        dump = site / "shop.dump"
        subprocess.run([os.path.join(cluster.bin_dir, "pg_dump"), "-Fc", "-h", cluster.host, "-p", str(cluster.port),
                        "-U", cluster.user, "-f", str(dump), db], env=dict(os.environ, PGPASSWORD=cluster.password),
                       check=True, timeout=300)
        when = datetime.datetime.now(datetime.timezone.utc)
        services.layout_releases(deploy_to)  # releases/v1 (good), releases/v2, current -> v1
        for name, body in {"app.ini": "[app]\nname = shop\n", "features/flags.json": '{"search": true}\n'}.items():
            (config_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (config_dir / name).write_text(body)
        s3 = moto.client("s3")
        s3.create_bucket(Bucket=bucket)
        dump_key = "db/shop-%s.dump" % when.strftime("%Y%m%dT%H%M%SZ")
        archives.put_with_sidecar(s3, bucket, dump_key, dump.read_bytes())
        release = archives.tar_gz(archives.tree(deploy_to / "releases" / "v1"))
        archives.put_with_sidecar(s3, bucket, "artifacts/shop/v1.tar.gz", release)
        config = archives.tar_gz(archives.tree(config_dir))
        archives.put_with_sidecar(s3, bucket, "config/shop-%s.tar.gz" % when.strftime("%Y%m%dT%H%M%SZ"), config)
        figure(BENCH, "T3 setup: seed %d rows, dump, upload" % ROWS, round(time.monotonic() - start, 2), "s")
        figure(BENCH, "T3 dump size", round(dump.stat().st_size / 1e6, 2), "MB")

        # the loss
        cluster.psql("DROP DATABASE %s" % db)
        shutil.rmtree(deploy_to / "releases")
        shutil.rmtree(config_dir)
        lost_at = time.time()

        app.prepare()
        script = site / "start_shop.py"
        script.write_text("import subprocess\nlog = open(%r, 'ab')\nsubprocess.Popen(%r, stdin=subprocess.DEVNULL, "
                          "stdout=log, stderr=log, start_new_session=True)\n"
                          % (str(app.log), [str(a) for a in app.command()]))
        backup = {"bucket": bucket, "checksum": ["s3", "sidecar", "deep"]}
        role_vars = {
            "dr_complete_rebuild_aws": moto.aws_params,
            "dr_complete_rebuild_database_backup": dict(
                backup, prefix="db/", key_regex=r"^db/shop-(?P<time>\d{8}T\d{6}Z)\.dump$", max_age="1h", min_size=1024),
            "dr_complete_rebuild_release_backup": dict(backup, key="artifacts/shop/v1.tar.gz"),
            "dr_complete_rebuild_config_backup": dict(backup, prefix="config/", max_age="1d"),
            "dr_complete_rebuild_postgres": cluster.module_params,
            "dr_complete_rebuild_pg_bin_dir": cluster.bin_dir,
            "dr_complete_rebuild_assertions": [{"name": "every order is back", "sql": "SELECT count(*) FROM orders",
                                                "expect": str(ROWS)}],
            "dr_complete_rebuild_deploy_to": str(deploy_to),
            "dr_complete_rebuild_config_dest": str(config_dir),
            "dr_complete_rebuild_restart_commands": [[sys.executable, str(script)]],
            "dr_complete_rebuild_lb": {"provider": "haproxy", "haproxy_socket": proxy.socket, "map_file": proxy.map_file,
                                       "map_key": proxy.map_key, "backend": "be_green", "wait_timeout": 30},
            "dr_complete_rebuild_checks": [{"name": "shop via the load balancer", "type": "http",
                                            "url": proxy.url + "/health", "json_query": "version", "expected": "v1"}],
            "dr_complete_rebuild_health_timeout": 60,
            "dr_complete_rebuild_health_interval": 0.5,
        }
        play = [{"name": "rebuild", "hosts": "localhost", "connection": "local", "gather_facts": False,
                 "vars": {"ansible_python_interpreter": PY},
                 "tasks": [{"name": "rebuild", "block": [{
                     "name": "run the role", "ansible.builtin.include_role": {"name": "failsafe.recovery.dr_complete_rebuild"},
                     "vars": role_vars}],
                     "always": [{"name": "show the result", "ansible.builtin.debug": {
                         "msg": "{{ dr_complete_rebuild_result | default(none) }}"}}]}]}]
        seconds, res = timed_play(site / "rebuild.yml", play, "dr_complete_rebuild", 900)
        result = res.result("show the result")["msg"]
        if cluster.psql(digest_sql, db=db) != digest:
            raise SystemExit("the rebuilt database differs from the dumped one")
        objective("T3 rebuild of %d rows, role run start to verified (RTO component)" % ROWS, round(seconds, 2), "s",
                  RTO_TIER3)
        for step in result["steps"]:
            figure(BENCH, "T3 role step %s" % step, round(float(result["timings"][step]), 2), "s")
        point = datetime.datetime.strptime(result["recovery_point"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        objective("T3 RPO, loss minus recovery point (dump taken just before the loss)", round(lost_at - point, 1),
                  "s", RPO_CRITICAL)
    finally:
        app.stop()
        proxy.stop()
        cluster.stop()


def main():
    base = pathlib.Path(tempfile.mkdtemp(prefix="bench-dr-tiers-", dir="/tmp"))
    os.chmod(base, 0o755)  # the postgres user must traverse it
    moto = services.MotoServer(base)
    moto.die_with_parent = True
    try:
        tier2_primary_up(base)
        tier2_primary_down(base)
        moto.up()
        tier3_rebuild(base, moto)
    finally:
        moto.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
