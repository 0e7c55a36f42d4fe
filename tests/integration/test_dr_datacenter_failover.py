"""dr_datacenter_failover (DR tier 2) for real: a PostgreSQL 15 primary (site_a) and its streaming standby (site_b).

Each test gets its own primary + standby pair (a failover consumes the pair), the shared HAProxy (be_blue = site_a,
be_green = site_b) and the moto server for Route 53. The role runs through ansible-playbook; the tests then read
the clusters, HAProxy (a real request through the frontend), moto and the files the role wrote.
"""

import datetime
import pathlib
import time
import uuid

import pytest
import yaml

from sandbox import services
from sandbox.runner import ROOT, run_playbook

SITE_A_ADDRESS = "127.0.0.10"
SITE_B_ADDRESS = "127.0.0.20"


@pytest.fixture
def pair(services_dir):
    """A fresh primary (with its pgBackRest stanza) and a streaming standby of it."""
    uid = uuid.uuid4().hex[:6]
    primary = services.PostgresCluster(services_dir, stanza="dr" + uid, name="pg_site_a_" + uid)
    primary.die_with_parent = True
    standby = None
    try:
        primary.up()
        standby = primary.make_standby("pg_site_b_" + uid)
        yield primary, standby
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()


@pytest.fixture
def zone(moto):
    """A hosted zone whose db record points to site_a."""
    name = "dr-%s.example.com" % uuid.uuid4().hex[:8]
    client = moto.client("route53")
    zone_id = client.create_hosted_zone(Name=name, CallerReference=name)["HostedZone"]["Id"]
    client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [{
        "Action": "CREATE", "ResourceRecordSet": {"Name": "db." + name, "Type": "A", "TTL": 60,
                                                  "ResourceRecords": [{"Value": SITE_A_ADDRESS}]}}]})
    return {"name": name, "id": zone_id, "client": client}


@pytest.fixture
def proxy(haproxy):
    haproxy.reset()
    yield haproxy
    haproxy.reset()


def _dns_value(zone):
    records = zone["client"].list_resource_record_sets(HostedZoneId=zone["id"])["ResourceRecordSets"]
    found = [r for r in records if r["Name"].rstrip(".") == "db." + zone["name"] and r["Type"] == "A"]
    assert len(found) == 1, records
    return [v["Value"] for v in found[0]["ResourceRecords"]]


def _login(cluster):
    return dict(cluster.module_params)


def _site_vars(primary, standby):
    """The pair's connections, paths and bounded waits for the role."""
    return {
        "ansible_python_interpreter": str(ROOT / ".venv" / "bin" / "python"),
        "dr_datacenter_failover_primary_login": _login(primary),
        "dr_datacenter_failover_standby_login": _login(standby),
        "dr_datacenter_failover_primary_data_dir": primary.data_dir,
        "dr_datacenter_failover_standby_data_dir": standby.data_dir,
        "dr_datacenter_failover_primary_server_log": str(pathlib.Path(primary.data_dir).parent / "restart.log"),
        "dr_datacenter_failover_standby_server_log": str(pathlib.Path(standby.data_dir).parent / "restart.log"),
        "dr_datacenter_failover_bin_dir": primary.bin_dir,
        "dr_datacenter_failover_promote_timeout": 60,
        "dr_datacenter_failover_catchup_timeout": 60,
    }


def _run(tmp_path, primary, standby, check=False, tasks_from="main", **role_vars):
    play_vars = dict(_site_vars(primary, standby), **role_vars)
    play = [{"name": "data-center failover", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": play_vars,
             "tasks": [{"name": "failover",
                        "ansible.builtin.include_role": {"name": "failsafe.recovery.dr_datacenter_failover",
                                                         "tasks_from": tasks_from}}]}]
    path = tmp_path / ("%s.yml" % tasks_from)
    path.write_text(yaml.safe_dump(play))
    return run_playbook(path, inventory="localhost,", check=check)


def _run_dr_playbook(tmp_path, primary, standby, **role_vars):
    """playbooks/dr_failover.yml, tier 2, with the incident around it (lock, journal, re-verify, report)."""
    host_vars = dict(_site_vars(primary, standby), **{
        "ansible_connection": "local",
        "dr_environment": "dr-" + uuid.uuid4().hex[:8],
        "incident_dir": str(tmp_path / "incidents"),
        "incident_service": "database",
        "incident_title": "site_a lost",
        # the monitoring's detection time: the report measures the RTO from it
        "incident_detected_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    })
    host_vars.update(role_vars)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": host_vars}}}))
    return run_playbook(ROOT / "playbooks" / "dr_failover.yml", inventory=str(inventory),
                        extra_vars={"dr_tier": 2, "auto_confirm": True})


def _full_vars(tmp_path, standby, proxy, moto, zone, demo_apps, tables):
    return dict(
        dr_datacenter_failover_critical_tables=tables,
        dr_datacenter_failover_stop_writes_commands=[["touch", str(tmp_path / "writes_stopped")]],
        dr_datacenter_failover_repoint_commands=[["touch", str(tmp_path / "repointed")]],
        dr_datacenter_failover_dsn_file=str(tmp_path / "app.dsn"),
        dr_datacenter_failover_dsn={"host": standby.host, "port": standby.port, "dbname": "postgres"},
        dr_datacenter_failover_lb=dict(provider="haproxy", haproxy_socket=proxy.socket, map_file=proxy.map_file,
                                       map_key=proxy.map_key, backend="be_green", wait_timeout=20, poll_interval=0.2),
        dr_datacenter_failover_dns=dict(moto.aws_params, zone=zone["name"], record="db." + zone["name"], type="A",
                                        value=SITE_B_ADDRESS, ttl=30),
        dr_datacenter_failover_health_checks=[
            dict(name="site_b app", type="http", url=demo_apps.green.url + "/health", timeout=2),
            dict(name="frontend", type="http", url=proxy.url + "/health", timeout=2)],
        dr_datacenter_failover_gate=dict(mode="until_healthy", interval=0.5, timeout=30),
    )


def _tasks(result):
    return [name.split(" : ", 1)[-1] for name, dummy in result.task_results()]


def _task(result, name):
    found = [r for n, r in result.task_results() if n.split(" : ", 1)[-1] == name]
    assert found, "task %r did not run: %s\n%s" % (name, _tasks(result), result.stdout[-3000:])
    return found[-1]


def _make_tables(primary, uid, rows=50):
    orders, accounts = "orders_" + uid, "accounts_" + uid
    primary.psql("CREATE TABLE %s (id int PRIMARY KEY, amount numeric, note text);"
                 "CREATE TABLE %s (id int PRIMARY KEY, balance int);"
                 "INSERT INTO %s SELECT g, g * 1.5, md5(g::text) FROM generate_series(1, %d) g;"
                 "INSERT INTO %s SELECT g, g * 10 FROM generate_series(1, 10) g"
                 % (orders, accounts, orders, rows, accounts))
    return [orders, accounts]


def _wait_replayed(primary, standby):
    # the insert position: with synchronous_commit=off the write position can lag behind a commit
    lsn = primary.psql("SELECT pg_current_wal_insert_lsn()")
    services.wait_until(lambda: standby.psql("SELECT pg_last_wal_replay_lsn() >= '%s'" % lsn) == "t", 30,
                        "standby replay of %s" % lsn, interval=0.1)


def _checksum(cluster, table):
    return cluster.psql("SELECT count(*) || ':' || md5(string_agg(r::text, E'\\n' ORDER BY r::text COLLATE \"C\"))"
                        " FROM %s AS r" % table)


def _frontend_version(proxy):
    status, body = services.http_get(proxy.url + "/health")
    assert status == 200, body
    return yaml.safe_load(body.decode())["version"]


def test_failover_with_primary_up(pair, proxy, moto, zone, demo_apps, tmp_path):
    primary, standby = pair
    uid = uuid.uuid4().hex[:8]
    tables = _make_tables(primary, uid)
    # writes committed right before the failover, not waited for: the role must catch the standby up
    primary.psql("INSERT INTO %s SELECT g, 0, 'late' FROM generate_series(1001, 1100) g" % tables[0])
    before = {t: _checksum(primary, t) for t in tables}
    assert _frontend_version(proxy) == "v1"
    assert _dns_value(zone) == [SITE_A_ADDRESS]

    # through playbooks/dr_failover.yml: the incident's lock, journal, re-verification and report around the role
    full = _full_vars(tmp_path, standby, proxy, moto, zone, demo_apps, tables)
    result = _run_dr_playbook(tmp_path, primary, standby, dr_verify_checks=full["dr_datacenter_failover_health_checks"],
                              **full)
    assert result.rc == 0, result.stdout[-5000:]
    record = _task(result, "Record the result")["ansible_facts"]["dr_datacenter_failover_result"]
    reports = sorted((tmp_path / "incidents" / "reports").glob("*.json"))
    assert len(reports) == 1
    report = yaml.safe_load(reports[0].read_text())
    assert report["level"] == "DR tier 2" and report["outcome"] == "restored"
    # nothing committed before the catch-up was lost: the report's data loss window is 0
    assert report["measures"]["data_loss_window"] == 0 and report["measures"]["recovery_time"] > 0
    assert not list((tmp_path / "incidents").glob("*.lock"))

    # every write committed before the failover is on the new primary, which accepts writes
    assert standby.psql("SELECT pg_is_in_recovery()") == "f"
    assert {t: _checksum(standby, t) for t in tables} == before
    assert standby.psql("SELECT count(*) FROM %s WHERE note = 'late'" % tables[0]) == "100"
    standby.psql("INSERT INTO %s VALUES (9999, 1, 'after failover')" % tables[0])
    # the old primary is stopped, refuses connections and carries the fence marker
    assert primary.postmaster_pid() is None and not primary.answers()
    assert pathlib.Path(primary.data_dir, "standby.signal").is_file()
    # traffic: HAProxy sends the frontend to site_b (a real request through it), Route 53 points to site_b
    assert proxy.current_backend() == "be_green"
    assert _frontend_version(proxy) == "v2"
    assert _dns_value(zone) == [SITE_B_ADDRESS]
    # applications repointed
    assert (tmp_path / "writes_stopped").exists() and (tmp_path / "repointed").exists()
    dsn = (tmp_path / "app.dsn").read_text().splitlines()
    assert dsn == ["dbname=postgres", "host=%s" % standby.host, "port=%d" % standby.port]
    # the record for the incident report
    assert record["primary_was_up"] is True and int(record["rpo_bytes"]) == 0 and float(record["rpo_seconds"]) == 0
    assert int(record["timeline"]) == int(record["timeline_before"]) + 1 == 2
    assert int(standby.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), 16) == int(record["timeline"])
    assert record["checksums_compared"] is True
    assert sorted(record["checksums"]) == sorted("%s|%s" % (t, c) for t, c in before.items())
    assert record["old_primary_stopped"] is True and record["fence_marker"].endswith("standby.signal")
    assert record["gate_verdict"] == "pass"
    assert {"started", "caught_up", "fenced", "promoted", "verified", "traffic_moved", "finished"} <= set(record["times"])


def test_failover_with_primary_down(pair, tmp_path):
    primary, standby = pair
    uid = uuid.uuid4().hex[:8]
    tables = _make_tables(primary, uid, rows=200)
    primary.psql("UPDATE %s SET balance = balance + 1 WHERE id <= 5" % tables[1])
    _wait_replayed(primary, standby)
    replicated = {t: _checksum(primary, t) for t in tables}
    # the site dies: immediate stop, no shutdown checkpoint, no goodbye to the standby
    primary.run_as([pathlib.Path(primary.bin_dir, "pg_ctl"), "stop", "-D", primary.data_dir, "-m", "immediate"])
    assert not primary.answers()

    result = _run(tmp_path, primary, standby, dr_datacenter_failover_critical_tables=tables)
    assert result.rc == 0, result.stdout[-5000:]
    record = _task(result, "Record the result")["ansible_facts"]["dr_datacenter_failover_result"]

    assert standby.psql("SELECT pg_is_in_recovery()") == "f"
    assert {t: _checksum(standby, t) for t in tables} == replicated
    assert record["primary_was_up"] is False and record["old_primary_stopped"] is False
    assert record["checksums_compared"] is False
    assert record["last_replayed_lsn"] and record["last_replayed_transaction"]
    assert float(record["rpo_seconds"]) >= 0 and int(record["rpo_bytes"]) >= 0
    assert int(record["timeline"]) == 2
    marker = pathlib.Path(primary.data_dir, "standby.signal")
    assert marker.is_file() and record["fence_marker"] == str(marker)

    # the fenced old primary, started by someone, comes back as a standby, never as a primary
    log = pathlib.Path(primary.data_dir).parent / "fenced_start.log"
    primary.run_as([pathlib.Path(primary.bin_dir, "pg_ctl"), "start", "-D", primary.data_dir, "-l", log, "-W"])
    try:
        services.wait_until(lambda: "entering standby mode" in log.read_text(), 30, "fenced server in standby mode",
                            interval=0.1, log=log)
        services.wait_until(primary.answers, 30, "fenced server accepting read-only connections", interval=0.1, log=log)
        assert primary.psql("SELECT pg_is_in_recovery()") == "t"
        refused = primary.psql("INSERT INTO %s VALUES (5000, 0)" % tables[1], check=False)
        assert refused == "" and primary.psql("SELECT count(*) FROM %s WHERE id = 5000" % tables[1]) == "0"
    finally:
        primary.stop()


def test_network_split_stops_the_still_running_primary(pair, tmp_path):
    """A network split: from where the role runs the primary's port does not answer, but the server still runs on
    its host. The role takes the primary-down path, finds the server running on its host and stops it, writes the
    marker and runs the fence command (delegated) before it promotes: never two primaries."""
    primary, standby = pair
    uid = uuid.uuid4().hex[:8]
    tables = _make_tables(primary, uid)
    _wait_replayed(primary, standby)
    replicated = {t: _checksum(primary, t) for t in tables}
    # the partition, as the role sees it: nothing answers at the primary's address
    partitioned = dict(_login(primary), login_port=services.free_port())
    fenced = tmp_path / "fenced_by_the_controller"
    result = _run(tmp_path, primary, standby, dr_datacenter_failover_primary_login=partitioned,
                  dr_datacenter_failover_critical_tables=tables,
                  dr_datacenter_failover_fence_delegate_to="localhost",
                  dr_datacenter_failover_fence_commands=[["touch", str(fenced)]])
    assert result.rc == 0, result.stdout[-5000:]
    record = _task(result, "Record the result")["ansible_facts"]["dr_datacenter_failover_result"]
    assert record["primary_was_up"] is False and record["old_primary_stopped"] is True
    assert _task(result, "Fence | is a server running on the old primary's data directory")["rc"] == 0
    assert not primary.answers(), "the old primary still runs beside the promoted standby"
    assert pathlib.Path(primary.data_dir, "standby.signal").is_file() and fenced.exists()
    assert standby.psql("SELECT pg_is_in_recovery()") == "f"
    assert {t: _checksum(standby, t) for t in tables} == replicated


def test_lag_above_objective_refused(pair, proxy, tmp_path):
    primary, standby = pair
    uid = uuid.uuid4().hex[:8]
    tables = _make_tables(primary, uid)
    _wait_replayed(primary, standby)
    standby.psql("SELECT pg_wal_replay_pause()")
    try:
        time.sleep(3)  # the next commit is 3 s newer than the last one the standby replayed
        primary.psql("INSERT INTO %s VALUES (777, 1, 'not replayed')" % tables[0])
        result = _run(tmp_path, primary, standby, dr_datacenter_failover_rpo_objective_seconds=1,
                      dr_datacenter_failover_critical_tables=tables,
                      dr_datacenter_failover_stop_writes_commands=[["touch", str(tmp_path / "writes_stopped")]],
                      dr_datacenter_failover_lb=dict(provider="haproxy", haproxy_socket=proxy.socket,
                                                     map_file=proxy.map_file, map_key=proxy.map_key, backend="be_green"))
    finally:
        standby.psql("SELECT pg_wal_replay_resume()")
    assert result.rc != 0
    refusal = _task(result, "Preflight | the standby can take over and the RPO is within the objective")
    assert refusal["failed"]
    assert "dr_datacenter_failover_force" in refusal["msg"] and "dr_datacenter_failover_rpo_objective_seconds=1" in refusal["msg"]
    assert "nothing was changed" in refusal["msg"]
    assert not any(name.startswith("Fence") or name == "Promote the standby" for name in _tasks(result))
    # nothing changed: standby still replaying, primary running and writable, traffic and files untouched
    assert standby.psql("SELECT pg_is_in_recovery()") == "t"
    assert primary.psql("SELECT pg_is_in_recovery()") == "f"
    primary.psql("INSERT INTO %s VALUES (778, 1, 'still writable')" % tables[0])
    assert primary.psql("SHOW default_transaction_read_only") == "off"
    assert not pathlib.Path(primary.data_dir, "standby.signal").exists()
    assert not (tmp_path / "writes_stopped").exists()
    assert proxy.current_backend() == "be_blue"


def test_check_mode_changes_nothing(pair, proxy, moto, zone, demo_apps, tmp_path):
    primary, standby = pair
    uid = uuid.uuid4().hex[:8]
    tables = _make_tables(primary, uid)
    _wait_replayed(primary, standby)
    result = _run(tmp_path, primary, standby, check=True,
                  **_full_vars(tmp_path, standby, proxy, moto, zone, demo_apps, tables))
    assert result.rc == 0, result.stdout[-5000:]
    plan = _task(result, "Preflight | report the plan")
    assert plan["msg"].startswith("Check mode, nothing changes")
    assert not any(r.get("changed") for dummy, r in result.task_results())
    assert standby.psql("SELECT pg_is_in_recovery()") == "t"
    assert primary.psql("SELECT pg_is_in_recovery()") == "f"
    assert primary.psql("SHOW default_transaction_read_only") == "off"
    assert not pathlib.Path(primary.data_dir, "standby.signal").exists()
    assert not (tmp_path / "writes_stopped").exists() and not (tmp_path / "app.dsn").exists()
    assert proxy.current_backend() == "be_blue" and _frontend_version(proxy) == "v1"
    assert _dns_value(zone) == [SITE_A_ADDRESS]


def test_failback_after_failover(pair, proxy, moto, zone, demo_apps, tmp_path):
    primary, standby = pair
    uid = uuid.uuid4().hex[:8]
    tables = _make_tables(primary, uid)
    failover_vars = _full_vars(tmp_path, standby, proxy, moto, zone, demo_apps, tables)
    result = _run(tmp_path, primary, standby, **failover_vars)
    assert result.rc == 0, result.stdout[-5000:]
    assert standby.psql("SELECT pg_is_in_recovery()") == "f" and proxy.current_backend() == "be_green"
    # site_b takes writes while site_a is repaired
    standby.psql("INSERT INTO %s SELECT g, 2, 'on site_b' FROM generate_series(2001, 2050) g" % tables[0])
    standby.psql("UPDATE %s SET balance = -balance" % tables[1])
    on_site_b = {t: _checksum(standby, t) for t in tables}

    failback_vars = dict(
        failover_vars,
        dr_datacenter_failover_failback_settings={"port": primary.port, "unix_socket_directories": primary.socket_dir},
        dr_datacenter_failover_standby_settings={"port": standby.port, "unix_socket_directories": standby.socket_dir},
        dr_datacenter_failover_failback_dsn={"host": primary.host, "port": primary.port, "dbname": "postgres"},
        dr_datacenter_failover_failback_lb=dict(failover_vars["dr_datacenter_failover_lb"], backend="be_blue"),
        dr_datacenter_failover_failback_dns=dict(failover_vars["dr_datacenter_failover_dns"], value=SITE_A_ADDRESS),
        dr_datacenter_failover_failback_health_checks=[
            dict(name="site_a app", type="http", url=demo_apps.blue.url + "/health", timeout=2)],
    )
    result = _run(tmp_path, primary, standby, tasks_from="failback", **failback_vars)
    assert result.rc == 0, result.stdout[-5000:]
    record = _task(result, "Record the result")["ansible_facts"]["dr_datacenter_failover_result"]

    # site_a is the primary again with every write made on site_b; site_b streams from it
    assert primary.psql("SELECT pg_is_in_recovery()") == "f"
    assert {t: _checksum(primary, t) for t in tables} == on_site_b
    assert record["primary_was_up"] is True and record["checksums_compared"] is True and int(record["rpo_bytes"]) == 0
    assert int(record["timeline"]) == 3
    primary.psql("INSERT INTO %s VALUES (3001, 3, 'back on site_a')" % tables[0])
    _wait_replayed(primary, standby)
    assert standby.psql("SELECT pg_is_in_recovery()") == "t"
    assert standby.psql("SELECT status FROM pg_stat_wal_receiver") == "streaming"
    assert standby.psql("SELECT note FROM %s WHERE id = 3001" % tables[0]) == "back on site_a"
    # the data directories that were replaced are kept aside
    for cluster in (primary, standby):
        data = pathlib.Path(cluster.data_dir)
        assert [p.name for p in data.parent.iterdir() if p.name.startswith(data.name + ".pre_failback_")]
    # traffic, DNS and the DSN file are back on site_a
    assert proxy.current_backend() == "be_blue" and _frontend_version(proxy) == "v1"
    assert _dns_value(zone) == [SITE_A_ADDRESS]
    assert (tmp_path / "app.dsn").read_text().splitlines() == [
        "dbname=postgres", "host=%s" % primary.host, "port=%d" % primary.port]


def test_failure_before_promotion_unfences(pair, tmp_path):
    primary, standby = pair
    uid = uuid.uuid4().hex[:8]
    tables = _make_tables(primary, uid)
    result = _run(tmp_path, primary, standby, dr_datacenter_failover_critical_tables=tables,
                  dr_datacenter_failover_fence_commands=[["false"]],
                  dr_datacenter_failover_resume_writes_commands=[["touch", str(tmp_path / "writes_resumed")]])
    assert result.rc != 0
    final = _task(result, "Rescue | fail naming the step")
    assert "Fence | run the fence commands" in final["msg"] and "Nothing was promoted" in final["msg"]
    # the old primary was stopped and fenced, then put back: running, a primary, writable, no marker
    assert _task(result, "Fence | stop the old primary")["changed"]
    assert primary.psql("SELECT pg_is_in_recovery()") == "f"
    assert primary.psql("SHOW default_transaction_read_only") == "off"
    primary.psql("INSERT INTO %s VALUES (4001, 1, 'after the rescue')" % tables[0])
    assert not pathlib.Path(primary.data_dir, "standby.signal").exists()
    assert (tmp_path / "writes_resumed").exists()
    # the standby was never promoted and still follows the primary
    _wait_replayed(primary, standby)
    assert standby.psql("SELECT pg_is_in_recovery()") == "t"
    assert standby.psql("SELECT note FROM %s WHERE id = 4001" % tables[0]) == "after the rescue"


def test_failure_after_promotion_keeps_fence(pair, tmp_path):
    primary, standby = pair
    uid = uuid.uuid4().hex[:8]
    tables = _make_tables(primary, uid)
    dead = "http://127.0.0.1:%d/health" % services.free_port()
    result = _run(tmp_path, primary, standby, dr_datacenter_failover_critical_tables=tables,
                  dr_datacenter_failover_resume_writes_commands=[["touch", str(tmp_path / "writes_resumed")]],
                  dr_datacenter_failover_health_checks=[dict(name="site_b app", type="http", url=dead, timeout=1)],
                  dr_datacenter_failover_gate=dict(mode="until_healthy", interval=0.5, timeout=3))
    assert result.rc != 0
    final = _task(result, "Rescue | fail naming the step")
    assert "Health gate on site_b" in final["msg"] and "WAS promoted" in final["msg"] and "timeline 2" in final["msg"]
    assert "split brain" in final["msg"]
    # never unfenced: the old primary stays down with its marker, the new primary keeps serving, writes not resumed
    assert primary.postmaster_pid() is None and not primary.answers()
    assert pathlib.Path(primary.data_dir, "standby.signal").is_file()
    assert standby.psql("SELECT pg_is_in_recovery()") == "f"
    assert not (tmp_path / "writes_resumed").exists()
