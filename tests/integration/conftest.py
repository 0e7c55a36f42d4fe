"""Session-scoped fixtures: real services on free ports of 127.0.0.1 (see sandbox/services.py).

Fixtures start lazily (a test that only asks for ``moto`` starts only moto) and
every process is stopped by its PID when the session ends.

  postgres     PostgresCluster: host, port, user, password, socket_dir, data_dir, bin_dir,
               module_params, pgbackrest_config, stanza, repo_path, url; psql(sql, db),
               backup(type), stop(), start(), switch_wal_and_wait(), restore_copy(name, target)
  moto         MotoServer: endpoint_url, url, port, aws_params, region, access_key, secret_key;
               reset(), client(service)
  moto_tls     MotoServer(tls=True): the same on https, ca_file (its self-signed certificate)
  demo_apps    DemoApps: .blue (v1), .green (v2): url, port, version, pid, config_file;
               set_fault(error_rate, latency_ms, hang, fail_health), reset(), crash(),
               get_json(path), metrics(), stop(), start(), restart(), current_version()
  haproxy      HAProxy: url, port, socket, map_file, map_key; admin(cmd), use_backend(be),
               current_backend(), reset(), reload(), worker_pid()
  prometheus   Prometheus: url, port; query(promql)
  webhook      WebhookReceiver (status page stub): url, port, hook_url (a credential: /hooks/<token>),
               token, record_file; received(), received_via_http(), notifications(incident, event)
  services_dir the session's base directory (mode 0755, removed at the end)
  demo_releases function scope: a fresh dir with releases/v1 (good), releases/v2 (bad:
               error_rate 30) and current -> releases/v1

Demo app faults are reset after every test that used the demo apps. A SIGTERM to pytest tears
the fixtures down like Ctrl-C; after a SIGKILL the kernel stops the services (PR_SET_PDEATHSIG).
Set FAILSAFE_KEEP_SERVICES=1 to keep the base directory (logs) after the run.
"""

import atexit
import os
import pathlib
import shutil
import signal
import tempfile

import pytest

from sandbox import services

_STARTED = []


def _stop_all():
    """Safety net: stop whatever is still running (fixture teardown normally did it already)."""
    while _STARTED:
        service = _STARTED.pop()
        try:
            service.stop()
        except Exception:  # pylint: disable=broad-except
            pass


atexit.register(_stop_all)


def _on_sigterm(signum, frame):
    """A terminated test run tears its fixtures down like Ctrl-C does."""
    raise KeyboardInterrupt("terminated by signal %d" % signum)


def _start(service):
    if not _STARTED and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    service.die_with_parent = True  # SIGKILL of pytest still stops it (PR_SET_PDEATHSIG)
    _STARTED.append(service)
    return service.up()


def _stop(service):
    try:
        service.stop()
    finally:
        if service in _STARTED:
            _STARTED.remove(service)


@pytest.fixture(scope="session")
def services_dir():
    base = pathlib.Path(tempfile.mkdtemp(prefix="failsafe-services-", dir="/tmp"))
    os.chmod(base, 0o755)  # the postgres user must be able to traverse it
    yield base
    _stop_all()
    if not os.environ.get("FAILSAFE_KEEP_SERVICES"):
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(services_dir):
    cluster = services.PostgresCluster(services_dir, stanza="harness")
    try:
        _start(cluster)
        yield cluster
    finally:
        _stop(cluster)


@pytest.fixture(scope="session")
def moto(services_dir):
    server = services.MotoServer(services_dir)
    try:
        _start(server)
        yield server
    finally:
        _stop(server)


@pytest.fixture(scope="session")
def moto_tls(services_dir):
    """A second moto on HTTPS (self-signed certificate for 127.0.0.1 in ``ca_file``), for pgBackRest S3 repos."""
    server = services.MotoServer(services_dir, tls=True)
    server.name = "moto_tls"
    server.dir = server.base_dir / server.name
    try:
        _start(server)
        yield server
    finally:
        _stop(server)


@pytest.fixture(scope="session")
def demo_apps(services_dir):
    blue = services.DemoApp(services_dir, "blue", "v1")
    green = services.DemoApp(services_dir, "green", "v2")
    try:
        _start(blue)
        _start(green)
        yield services.DemoApps(blue, green)
    finally:
        _stop(green)
        _stop(blue)


@pytest.fixture(scope="session")
def haproxy(services_dir, demo_apps):
    proxy = services.HAProxy(services_dir, demo_apps.blue.port, demo_apps.green.port)
    try:
        _start(proxy)
        yield proxy
    finally:
        _stop(proxy)


@pytest.fixture(scope="session")
def prometheus(services_dir, demo_apps):
    prom = services.Prometheus(services_dir, {"blue": demo_apps.blue.port, "green": demo_apps.green.port})
    try:
        _start(prom)
        yield prom
    finally:
        _stop(prom)


@pytest.fixture(scope="session")
def webhook(services_dir):
    receiver = services.WebhookReceiver(services_dir)
    try:
        _start(receiver)
        yield receiver
    finally:
        _stop(receiver)


@pytest.fixture
def demo_releases(tmp_path):
    """releases/v1 (good), releases/v2 (bad) and current -> releases/v1 under a fresh directory."""
    services.layout_releases(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def _reset_demo_faults(request):
    """After each test that used the demo apps: restart a crashed app and drop injected faults."""
    yield
    if "demo_apps" not in request.fixturenames:
        return
    apps = request.getfixturevalue("demo_apps")
    for app in apps:
        if not (app.process and app.process.alive()):
            app.start()
    apps.reset()
