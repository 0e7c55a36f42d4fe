"""Prove each harness fixture against the real service it starts."""

import base64
import hashlib
import json
import shutil
import time
import uuid

import psycopg
import pytest

from sandbox import services


def _get(url, timeout=5.0):
    status, body = services.http_get(url, timeout=timeout)
    return status, json.loads(body.decode() or "null")


def _wait(predicate, timeout, what):
    return services.wait_until(predicate, timeout, what, interval=0.1)


# --------------------------------------------------------------------------- PostgreSQL + pgBackRest

def test_postgres_pitr_to_restore_point(postgres):
    """Rows written before a restore point survive a pgBackRest PITR, rows after it are gone."""
    point = "harness_%s" % uuid.uuid4().hex[:10]
    table = "pitr_%s" % uuid.uuid4().hex[:8]
    postgres.psql("CREATE TABLE %s (id int PRIMARY KEY, note text);"
                  "INSERT INTO %s VALUES (1, 'before'), (2, 'before');" % (table, table))
    postgres.psql("SELECT pg_create_restore_point('%s')" % point)
    postgres.switch_wal_and_wait()
    postgres.psql("INSERT INTO %s VALUES (3, 'after'); DELETE FROM %s WHERE id = 1;" % (table, table))
    postgres.switch_wal_and_wait()
    source_timeline = int(postgres.psql("SELECT timeline_id FROM pg_control_checkpoint()"))

    copy = postgres.restore_copy("pitr-%s" % point, target=point)
    try:
        _wait(lambda: copy.psql("SELECT pg_is_in_recovery()") == "f", 30, "the restored copy to promote")
        rows = copy.psql("SELECT id, note FROM %s ORDER BY id" % table).splitlines()
        assert rows == ["1|before", "2|before"]
        timeline = int(copy.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16)
        assert timeline == source_timeline + 1
    finally:
        copy.stop()
        shutil.rmtree(copy.dir, ignore_errors=True)

    # The fixture cluster itself is untouched and still archiving.
    assert postgres.psql("SELECT count(*) FROM %s" % table) == "2"
    assert postgres.psql("SELECT note FROM %s WHERE id = 3" % table) == "after"
    assert postgres.psql("SELECT failed_count FROM pg_stat_archiver") == "0"
    postgres.psql("DROP TABLE %s" % table)


def test_postgres_password_over_tcp(postgres):
    """module_params log in over TCP with scram; a wrong password is refused."""
    params = postgres.module_params
    assert params["login_host"] == "127.0.0.1" and params["login_port"] == postgres.port
    with psycopg.connect(host=params["login_host"], port=params["login_port"], user=params["login_user"],
                         password=params["login_password"], dbname="postgres", connect_timeout=5) as conn:
        assert conn.execute("SHOW archive_mode").fetchone()[0] == "on"
        assert conn.execute("SHOW wal_level").fetchone()[0] == "replica"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host=params["login_host"], port=params["login_port"], user="postgres",
                        password="not-the-password", dbname="postgres", connect_timeout=5).close()


def test_postgres_stop_start_keeps_data(postgres):
    postgres.psql("CREATE TABLE IF NOT EXISTS harness_restart (x int); INSERT INTO harness_restart VALUES (7);")
    postgres.stop()
    assert not services.port_open(postgres.port)
    postgres.start()
    assert postgres.psql("SELECT sum(x) FROM harness_restart") == "7"
    postgres.psql("DROP TABLE harness_restart")


# --------------------------------------------------------------------------- moto

def test_moto_s3_put_head_sha256(moto):
    s3 = moto.client("s3")
    bucket = "harness-%s" % uuid.uuid4().hex[:8]
    body = b"backup bytes " * 1000
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="base/backup.tar", Body=body, ChecksumAlgorithm="SHA256")
    head = s3.head_object(Bucket=bucket, Key="base/backup.tar", ChecksumMode="ENABLED")
    assert head["ContentLength"] == len(body)
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert set(moto.aws_params) == {"endpoint_url", "region", "access_key", "secret_key"}

    moto.reset()
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


# --------------------------------------------------------------------------- HAProxy

def _server_up(haproxy, backend, server):
    for line in haproxy.admin("show stat").splitlines():
        fields = line.split(",")
        if len(fields) > 17 and fields[0] == backend and fields[1] == server:
            return fields[17] == "UP"
    return False


def test_haproxy_map_switch_and_reload(haproxy):
    _wait(lambda: _server_up(haproxy, "be_green", "green") and _server_up(haproxy, "be_blue", "blue"), 10,
          "both HAProxy servers UP")
    try:
        assert _get(haproxy.url)[1]["version"] == "v1"
        answer = haproxy.admin("set map %s %s be_green" % (haproxy.map_file, haproxy.map_key))
        assert answer.strip() == ""
        assert haproxy.current_backend() == "be_green"
        versions = {_get(haproxy.url)[1]["version"] for dummy in range(20)}
        assert versions == {"v2"}

        # A reload re-reads the map file: a runtime-only change is lost, a persisted one is kept.
        haproxy.reload()
        assert _get(haproxy.url)[1]["version"] == "v1"
        haproxy.use_backend("be_green", persist=True)
        haproxy.reload()
        assert _get(haproxy.url)[1]["version"] == "v2"
    finally:
        haproxy.reset()
    assert _get(haproxy.url)[1]["version"] == "v1"


def test_haproxy_health_check_follows_demo_app(haproxy, demo_apps):
    _wait(lambda: _server_up(haproxy, "be_blue", "blue"), 10, "blue UP")
    demo_apps.blue.set_fault(fail_health=True)
    _wait(lambda: not _server_up(haproxy, "be_blue", "blue"), 10, "blue marked DOWN by the health check")
    demo_apps.blue.reset()
    _wait(lambda: _server_up(haproxy, "be_blue", "blue"), 10, "blue UP again")


# --------------------------------------------------------------------------- Prometheus

def test_prometheus_request_rate(prometheus, demo_apps):
    query = 'sum(rate(demoapp_requests_total{color="blue"}[5s]))'

    def rate():
        for dummy in range(20):
            services.http_get(demo_apps.blue.url + "/")
        result = prometheus.query(query)
        return result and float(result[0]["value"][1]) > 0 and result

    result = _wait(rate, 20, "a non-zero request rate from Prometheus")
    assert float(result[0]["value"][1]) > 0
    info = prometheus.query('demoapp_info{color="green"}')
    assert info[0]["metric"]["version"] == "v2"


# --------------------------------------------------------------------------- demo app

def test_demo_app_error_rate(demo_apps):
    app = demo_apps.blue
    app.set_fault(error_rate=30)
    statuses = [services.http_get(app.url + "/")[0] for dummy in range(100)]
    assert statuses.count(500) == 30 and statuses.count(200) == 70
    assert 'demoapp_requests_total{status="500"}' in app.metrics()
    app.reset()
    assert {services.http_get(app.url + "/")[0] for dummy in range(10)} == {200}


def test_demo_app_latency_health_and_hang(demo_apps):
    app = demo_apps.green
    app.set_fault(latency_ms=300)
    start = time.monotonic()
    assert _get(app.url + "/")[0] == 200
    assert time.monotonic() - start >= 0.3
    app.set_fault(fail_health=True)
    status, body = _get(app.url + "/health")
    assert status == 503 and body["version"] == "v2"
    app.set_fault(hang=True)
    with pytest.raises(OSError):
        services.http_get(app.url + "/", timeout=0.5)
    app.reset()
    assert _get(app.url + "/health") == (200, {"status": "ok", "version": "v2"})
    metrics = app.metrics()
    assert "demoapp_request_duration_seconds_bucket{le=\"0.5\"}" in metrics
    assert 'demoapp_info{version="v2"} 1' in metrics


def test_demo_app_exit(demo_apps):
    app = demo_apps.green
    pid = app.pid
    assert app.crash()["exiting"] is True
    assert not services.port_open(app.port)
    app.start()
    assert app.pid != pid and _get(app.url + "/health")[0] == 200


def test_demo_release_switch(services_dir, demo_releases):
    app = services.DemoApp(services_dir, "release-app", release_dir=demo_releases / "current")
    try:
        app.up()
        assert app.version == "v1"
        assert {services.http_get(app.url + "/")[0] for dummy in range(10)} == {200}
        services.switch_current(demo_releases, "v2")
        app.reload()
        _wait(lambda: app.current_version() == "v2", 5, "the app to report v2")
        statuses = [services.http_get(app.url + "/")[0] for dummy in range(10)]
        assert statuses.count(500) == 3
    finally:
        app.stop()
    assert not services.port_open(app.port)
