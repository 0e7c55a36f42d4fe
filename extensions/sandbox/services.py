"""Real services on 127.0.0.1 for the integration tests and the local sandbox.

Each service is one subprocess started here and stopped by its PID (a polite
signal, a bounded wait, then SIGKILL of that PID only). Ports are free ports
(bind to port 0) unless a fixed one is given. Everything a service writes lives
under its own directory inside one base directory.

Services:
  PostgresCluster  PostgreSQL 15 as user ``postgres``, WAL archived by pgBackRest (posix repo)
  MotoServer       moto (S3, ELBv2, CloudWatch ...) on plain HTTP, or HTTPS (tls=True, via stunnel4)
  DemoApp          extensions/sandbox/demoapp.py (or a release directory of it)
  HAProxy          master-worker, one frontend, be_blue / be_green chosen by a map file
  Prometheus       scraping the demo apps every second
  WebhookReceiver  extensions/sandbox/statuspage.py: records every POST (the incident role's webhooks)

Every service can be described as a dict (``to_state()``) and re-attached from
it (``from_state()``) so ``python -m sandbox down`` stops exactly what ``up``
started.
"""

import ctypes
import json
import os
import pathlib
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
DEMOAPP = pathlib.Path(__file__).resolve().with_name("demoapp.py")
STATUSPAGE = pathlib.Path(__file__).resolve().with_name("statuspage.py")
PG_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")

# The two releases the rollback roles move between: v1 is good, v2 fails 30 % of requests.
RELEASES = {
    "v1": {"version": "v1"},
    "v2": {"version": "v2", "error_rate": 30},
}


class ServiceError(RuntimeError):
    """A service failed to start or to answer; the message names it and its log file."""


# --------------------------------------------------------------------------- helpers

def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on right now (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_get(url, timeout=5.0, data=None, headers=None, method=None):
    """(status, body bytes) of a request; HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(predicate, timeout, what, interval=0.05, log=None):
    """Poll ``predicate`` until truthy or ``timeout`` seconds pass; raise ServiceError then."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # pylint: disable=broad-except
            last_exc = exc
        time.sleep(interval)
    tail = ""
    if log and pathlib.Path(log).exists():
        lines = pathlib.Path(log).read_text(errors="replace").splitlines(True)[-20:]
        tail = "\n--- last lines of %s ---\n%s" % (log, "".join(lines))
    raise ServiceError("timed out after %ss waiting for %s%s%s"
                       % (timeout, what, " (last error: %s)" % last_exc if last_exc else "", tail))


def proc_start_time(pid):
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        stat = pathlib.Path("/proc/%d/stat" % pid).read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def ensure_traversable(path, owner=None):
    """Make ``path`` and its parents searchable by other users (o+x), so ``postgres`` can reach it.

    Only directories that are not already searchable are changed; the change is printed.
    """
    path = pathlib.Path(path).resolve()
    for parent in [path] + list(path.parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            os.chmod(parent, mode | 0o005)
            sys.stderr.write("sandbox: made %s searchable (o+rx) so the postgres user can reach it\n" % parent)
    if owner:
        shutil.chown(path, *owner)


def _parent_death(signum, parent):
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec():
        libc.prctl(1, int(signum), 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signum)
    return preexec


class Process:
    """One child process, known by its PID (and start time, against PID reuse)."""

    def __init__(self, popen=None, pid=None, start_time=None):
        self.popen = popen
        self.pid = popen.pid if popen else pid
        self.start_time = start_time if start_time is not None else proc_start_time(self.pid)

    @classmethod
    def spawn(cls, cmd, log, user=None, env=None, cwd=None, parent_death_signal=None):
        """Start ``cmd`` in its own session, stdout/stderr appended to ``log``.

        ``parent_death_signal``: the kernel sends this signal to the child if the process
        that started it dies (Linux prctl PR_SET_PDEATHSIG), so a test run killed with
        SIGKILL leaves nothing behind. The sandbox CLI does not use it: its services must
        outlive ``python -m sandbox up``.
        """
        kwargs = {}
        if parent_death_signal:
            kwargs["preexec_fn"] = _parent_death(parent_death_signal, os.getpid())
        if user and os.geteuid() == 0 and pwd.getpwuid(0).pw_name != user:
            entry = pwd.getpwnam(user)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
            env = dict(env or os.environ, HOME=entry.pw_dir, USER=user, LOGNAME=user)
        with open(log, "ab") as handle:
            popen = subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=handle,
                                     stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True,
                                     close_fds=True, **kwargs)
        return cls(popen)

    def alive(self):
        if self.pid is None:
            return False
        if self.popen is not None:
            return self.popen.poll() is None
        return self.start_time is not None and proc_start_time(self.pid) == self.start_time

    def returncode(self):
        return self.popen.poll() if self.popen is not None else None

    def send_signal(self, signum):
        if self.alive():
            os.kill(self.pid, signum)

    def wait_gone(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.02)
        return not self.alive()

    def stop(self, first=signal.SIGTERM, timeout=10.0):
        """``first`` signal, wait up to ``timeout`` s, then SIGKILL this PID only. True if it was running."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, first)
        except ProcessLookupError:
            return False
        if not self.wait_gone(timeout):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait_gone(5.0)
        return True

    def to_state(self):
        return {"pid": self.pid, "start_time": self.start_time}


class Service:
    """Common parts: a directory, a log, a process, a port, a readiness check."""

    name = "service"
    stop_signal = signal.SIGTERM
    stop_timeout = 10.0
    ready_timeout = 30.0
    die_with_parent = False  # the test fixtures set True (see Process.spawn)

    def __init__(self, base_dir, port=None, host="127.0.0.1"):
        self.base_dir = pathlib.Path(base_dir).resolve()
        self.dir = self.base_dir / self.name
        self.host = host
        self.port = port or free_port(host)
        self.process = None

    @property
    def log(self):
        return self.dir / ("%s.log" % self.name)

    @property
    def pid(self):
        return self.process.pid if self.process and self.process.alive() else None

    @property
    def url(self):
        return "http://%s:%d" % (self.host, self.port)

    def running_pid(self):
        """PID of the running service: ours, or one restarted behind our back (see subclasses)."""
        return self.pid

    def command(self):
        raise NotImplementedError

    def ready(self):
        raise NotImplementedError

    def prepare(self):
        """Write configuration; called once before the first start."""
        self.dir.mkdir(parents=True, exist_ok=True)

    def start(self):
        if self.process and self.process.alive():
            return self
        if port_open(self.port, self.host):
            raise ServiceError("%s: port %s:%d is already in use by another process" % (self.name, self.host, self.port))
        self.process = Process.spawn(self.command(), self.log,
                                     parent_death_signal=self.stop_signal if self.die_with_parent else None,
                                     **self.spawn_kwargs())
        self.wait_ready()
        return self

    def spawn_kwargs(self):
        return {"cwd": str(self.dir)}

    def wait_ready(self, timeout=None):
        def check():
            if self.process and not self.process.alive():
                raise ServiceError("%s exited with code %s before it was ready; see %s"
                                   % (self.name, self.process.returncode(), self.log))
            return self.ready()
        try:
            wait_until(check, timeout or self.ready_timeout, "%s on port %d" % (self.name, self.port), log=self.log)
        except ServiceError:
            self.stop()
            raise

    def up(self):
        """Prepare and start (the usual first call)."""
        self.prepare()
        return self.start()

    def stop(self):
        if self.process:
            self.process.stop(self.stop_signal, self.stop_timeout)

    def answers(self):
        try:
            return bool(self.ready())
        except Exception:  # pylint: disable=broad-except
            return False

    def to_state(self):
        state = {"class": type(self).__name__, "name": self.name, "base_dir": str(self.base_dir), "host": self.host,
                 "port": self.port, "url": self.url, "log": str(self.log)}
        if self.process:
            state.update(self.process.to_state())
        return state

    @classmethod
    def from_state(cls, state):
        obj = cls.__new__(cls)
        obj.name = state.get("name", cls.name)
        obj.base_dir = pathlib.Path(state["base_dir"])
        obj.dir = obj.base_dir / obj.name
        obj.host = state["host"]
        obj.port = state["port"]
        obj.process = Process(pid=state.get("pid"), start_time=state.get("start_time")) if state.get("pid") else None
        obj._restore(state)
        return obj

    def _restore(self, state):
        """Subclasses copy their extra attributes back from ``state``."""


# --------------------------------------------------------------------------- PostgreSQL

class PostgresCluster(Service):
    """PostgreSQL 15 run as ``postgres`` with WAL archived by pgBackRest into a posix repo.

    Attributes: host, port, user, password, socket_dir, data_dir, bin_dir, pgbackrest_config,
    stanza, repo_path, module_params. Methods: psql(), backup(), stop(), start(), restore_copy().
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: disconnect clients, checkpoint, exit
    stop_timeout = 20.0
    ready_timeout = 30.0

    def __init__(self, base_dir, port=None, host="127.0.0.1", password=None, stanza="main",
                 os_user="postgres", bin_dir=PG_BIN, name=None):
        if name:
            self.name = name
        super().__init__(base_dir, port, host)
        self.user = "postgres"
        self.password = password or secrets.token_urlsafe(18)
        self.stanza = stanza
        self.os_user = os_user if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self._bin_dir = pathlib.Path(bin_dir)
        self.fresh = False  # True once prepare() ran initdb
        self._paths()

    def _paths(self):
        self._data_dir = self.dir / "data"
        self._socket_dir = self.dir / "run"
        self.pgbackrest_dir = self.dir / "pgbackrest"
        self._pgbackrest_config = self.pgbackrest_dir / "pgbackrest.conf"
        self._repo_path = self.pgbackrest_dir / "repo"

    # Public paths are plain strings (they go into module arguments and JSON).
    data_dir = property(lambda self: str(self._data_dir))
    socket_dir = property(lambda self: str(self._socket_dir))
    pgbackrest_config = property(lambda self: str(self._pgbackrest_config))
    repo_path = property(lambda self: str(self._repo_path))
    bin_dir = property(lambda self: str(self._bin_dir))

    @property
    def url(self):
        return "postgresql://%s@%s:%d/postgres" % (self.user, self.host, self.port)

    @property
    def module_params(self):
        """login_* options for failsafe.recovery / community.postgresql modules (TCP, scram)."""
        return {"login_host": self.host, "login_port": self.port, "login_user": self.user,
                "login_password": self.password}

    @property
    def archive_command(self):
        return "pgbackrest --config=%s --stanza=%s archive-push %%p" % (self._pgbackrest_config, self.stanza)

    def _owner(self):
        entry = pwd.getpwnam(self.os_user)
        return entry.pw_uid, entry.pw_gid

    def _chown(self, path):
        uid, gid = self._owner()
        os.chown(path, uid, gid)

    def run_as(self, cmd, check=True, timeout=120, input=None):  # pylint: disable=redefined-builtin
        """Run a command as the cluster's OS user; returns CompletedProcess (text)."""
        kwargs = {}
        env = dict(os.environ)
        if os.geteuid() == 0 and self.os_user != "root":
            entry = pwd.getpwnam(self.os_user)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
            env.update(HOME=entry.pw_dir, USER=self.os_user, LOGNAME=self.os_user)
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=str(self.dir), input=input, check=False, **kwargs)
        if check and proc.returncode != 0:
            raise ServiceError("%s failed (rc=%d): %s" % (" ".join(str(c) for c in cmd[:3]), proc.returncode,
                                                          (proc.stderr or proc.stdout).strip()[-2000:]))
        return proc

    def pgbackrest(self, *args, check=True, timeout=300):
        return self.run_as(["pgbackrest", "--config=%s" % self._pgbackrest_config, "--stanza=%s" % self.stanza]
                           + list(args), check=check, timeout=timeout)

    def prepare(self):
        ensure_traversable(self.base_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self._chown(self.dir)
        for path in (self._socket_dir, self.pgbackrest_dir, self._repo_path, self.pgbackrest_dir / "log",
                     self.pgbackrest_dir / "lock", self.pgbackrest_dir / "spool"):
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o750 if path != self._socket_dir else 0o755)
            self._chown(path)
        self._pgbackrest_config.write_text(
            "[global]\n"
            "repo1-path=%(repo)s\n"
            "repo1-retention-full=2\n"
            "log-path=%(dir)s/log\n"
            "lock-path=%(dir)s/lock\n"
            "spool-path=%(dir)s/spool\n"
            "log-level-console=warn\n"
            "log-level-file=info\n"
            "compress-type=none\n"
            "process-max=2\n"
            "start-fast=y\n"
            "\n"
            "[%(stanza)s]\n"
            "pg1-path=%(data)s\n"
            "pg1-port=%(port)d\n"
            "pg1-socket-path=%(socket)s\n"
            "pg1-user=postgres\n"
            % {"repo": self._repo_path, "dir": self.pgbackrest_dir, "stanza": self.stanza, "data": self._data_dir,
               "port": self.port, "socket": self._socket_dir})
        os.chmod(self._pgbackrest_config, 0o640)
        self._chown(self._pgbackrest_config)
        if not (self._data_dir / "PG_VERSION").exists():
            pwfile = self.dir / ".pwfile"
            pwfile.write_text(self.password + "\n")
            os.chmod(pwfile, 0o600)
            self._chown(pwfile)
            try:
                self.run_as([self._bin_dir / "initdb", "-D", self._data_dir, "-U", "postgres", "--pwfile", pwfile,
                             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8",
                             "--no-instructions", "--no-sync"])
            finally:
                pwfile.unlink()
            with open(self._data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
                conf.write(
                    "\n# failsafe.recovery test harness\n"
                    "listen_addresses = '127.0.0.1'\n"
                    "port = %d\n"
                    "unix_socket_directories = '%s'\n"
                    "wal_level = replica\n"
                    "archive_mode = on\n"
                    "archive_command = '%s'\n"
                    "archive_timeout = 60\n"
                    "max_wal_senders = 4\n"
                    "fsync = off\n"
                    "synchronous_commit = off\n"
                    "full_page_writes = on\n"
                    "shared_buffers = 32MB\n"
                    "max_connections = 50\n"
                    "log_min_messages = warning\n"
                    % (self.port, self._socket_dir, self.archive_command))
            self.fresh = True
        else:
            self.fresh = False

    def command(self):
        return [self._bin_dir / "postgres", "-D", self._data_dir]

    def spawn_kwargs(self):
        return {"cwd": str(self.dir), "user": self.os_user}

    def postmaster_pid(self):
        """PID from data_dir/postmaster.pid if that process is alive (it may have been started by pg_ctl)."""
        try:
            pid = int((self._data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if proc_start_time(pid) is not None else None

    def running_pid(self):
        return self.pid or self.postmaster_pid()

    def ready(self):
        proc = subprocess.run([str(self._bin_dir / "pg_isready"), "-q", "-h", str(self._socket_dir), "-p",
                               str(self.port), "-t", "1"], check=False, timeout=10)
        return proc.returncode == 0

    def up(self):
        self.prepare()
        self.start()
        if self.fresh:
            self.pgbackrest("stanza-create")
            self.backup("full")
        return self

    def start(self):
        pid = self.postmaster_pid()
        if pid and (not self.process or self.process.pid != pid):
            # Started behind our back (pg_ctl, a role under test): adopt it.
            self.process = Process(pid=pid)
            self.wait_ready()
            return self
        return super().start()

    def stop(self):
        """Fast shutdown of the postmaster (ours, or whichever one owns data_dir now)."""
        super().stop()
        pid = self.postmaster_pid()
        if pid:
            Process(pid=pid).stop(self.stop_signal, self.stop_timeout)

    def psql(self, sql, db="postgres", check=True):
        """Run SQL through psql on the private socket; returns unaligned, tuples-only output."""
        proc = subprocess.run([str(self._bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-h", str(self._socket_dir), "-p", str(self.port), "-U", self.user, "-d", db,
                               "-f", "-"], input=sql, capture_output=True, text=True, timeout=120, check=False)
        if check and proc.returncode != 0:
            raise ServiceError("psql on %s:%d/%s failed: %s" % (self.host, self.port, db, proc.stderr.strip()))
        return proc.stdout.strip()

    def backup(self, type="full"):  # pylint: disable=redefined-builtin
        """pgBackRest backup of the given type (full, diff, incr); returns the backup label."""
        self.pgbackrest("--type=%s" % type, "backup")
        info = json.loads(self.pgbackrest("--output=json", "info").stdout)
        return info[0]["backup"][-1]["label"]

    def switch_wal_and_wait(self, timeout=30):
        """pg_switch_wal() and wait until that segment is archived; returns the WAL file name."""
        walfile = self.psql("SELECT pg_walfile_name(pg_switch_wal())")
        wait_until(lambda: self.psql("SELECT coalesce(last_archived_wal, '') >= '%s' FROM pg_stat_archiver"
                                     % walfile) == "t", timeout, "WAL %s archived" % walfile, interval=0.05)
        return walfile

    def restore_copy(self, name, target=None, target_type="name", port=None, extra_args=()):
        """Restore the stanza into a NEW data dir and start it there (archive_mode off).

        Returns a started PostgresCluster for the copy (stop() it when done). The fixture
        cluster itself is untouched.
        """
        copy = self._sibling(name, port)
        copy._data_dir.mkdir(mode=0o700)
        copy._chown(copy._data_dir)
        args = ["--pg1-path=%s" % copy._data_dir]
        if target is not None:
            args += ["--type=%s" % target_type, "--target=%s" % target, "--target-action=promote"]
        self.pgbackrest(*(args + list(extra_args) + ["restore"]))
        copy._start_as_sibling("restored copy")
        return copy

    def _sibling(self, name, port):
        """A cluster of the same owner, binaries and stanza in a new directory (no data directory yet)."""
        sibling = PostgresCluster(self.base_dir, port=port, password=self.password, stanza=self.stanza,
                                  os_user=self.os_user, bin_dir=self._bin_dir, name=name)
        sibling.die_with_parent = self.die_with_parent
        sibling.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(sibling.dir, 0o755)
        sibling._chown(sibling.dir)
        sibling._socket_dir.mkdir(exist_ok=True)
        sibling._chown(sibling._socket_dir)
        return sibling

    def _start_as_sibling(self, what):
        """Give a copied data directory its own port and socket, no archiving into the stanza, and start it."""
        with open(self._data_dir / "postgresql.auto.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# %s\nport = %d\nunix_socket_directories = '%s'\narchive_mode = off\n"
                       % (what, self.port, self._socket_dir))
        self.fresh = False
        self.start()

    def make_standby(self, name, port=None, timeout=60):
        """A streaming-replication standby of this (running) cluster, in a NEW data dir, started.

        ``pg_basebackup -R -X stream`` runs as the OS user over this cluster's private socket
        (initdb's pg_hba allows local replication with trust), so ``primary_conninfo`` carries no
        password. The standby's postgresql.auto.conf gets its own port and socket directory and
        ``archive_mode = off`` (it must not push WAL into this cluster's stanza once promoted).
        Returns a started PostgresCluster in recovery (stop() it when done); waits until it streams.
        This cluster is not changed (apart from the replication connection it serves).
        """
        standby = self._sibling(name, port)
        self.run_as([self._bin_dir / "pg_basebackup", "-D", standby._data_dir, "-h", self._socket_dir,
                     "-p", str(self.port), "-U", self.user, "-R", "-X", "stream", "-c", "fast", "--no-sync"],
                    timeout=300)
        standby._start_as_sibling("streaming standby")
        wait_until(lambda: standby.psql("SELECT pg_is_in_recovery() AND EXISTS "
                                        "(SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')") == "t",
                   timeout, "standby %s streaming from port %d" % (name, self.port), interval=0.1, log=standby.log)
        return standby

    def to_state(self):
        state = super().to_state()
        state.update(user=self.user, stanza=self.stanza, os_user=self.os_user, bin_dir=str(self._bin_dir),
                     data_dir=str(self._data_dir), socket_dir=str(self._socket_dir),
                     pgbackrest_config=str(self._pgbackrest_config), repo_path=str(self._repo_path))
        return state

    def _restore(self, state):
        self.user = state["user"]
        self.fresh = False
        self.stanza = state["stanza"]
        self.os_user = state["os_user"]
        self._bin_dir = pathlib.Path(state["bin_dir"])
        self.password = None
        self._paths()


# --------------------------------------------------------------------------- moto

class MotoServer(Service):
    """moto server for S3, ELBv2, CloudWatch ... ``aws_params`` feeds the modules.

    Plain HTTP by default. ``tls=True``: HTTPS on ``port`` with a self-signed certificate for 127.0.0.1
    (``ca_file``, written into the service directory; give it to clients as their CA: boto3
    ``verify=ca_file``, pgBackRest ``repo1-storage-ca-file``). moto itself then listens on plain HTTP on a
    second, internal port and stunnel4 terminates TLS in front of it: moto's own ``--ssl-cert`` server (werkzeug)
    answers every request with ``Connection: close`` and drops the socket without a TLS close_notify, which
    pgBackRest 2.45 (OpenSSL 3) fails on ("TLS error ... unexpected eof while reading").
    """

    name = "moto"
    ready_timeout = 30.0
    region = "us-east-1"
    access_key = "testing"
    secret_key = "testing"

    def __init__(self, base_dir, port=None, host="127.0.0.1", tls=False):
        super().__init__(base_dir, port, host)
        self.tls = tls
        self.backend_port = free_port(host) if tls else self.port
        self.tunnel = None  # stunnel4 in front of moto when tls

    @property
    def url(self):
        return "%s://%s:%d" % ("https" if self.tls else "http", self.host, self.port)

    @property
    def ca_file(self):
        """The self-signed certificate clients must trust (tls only), else None."""
        return str(self.dir / "tls" / "cert.pem") if self.tls else None

    @property
    def endpoint_url(self):
        return self.url

    @property
    def aws_params(self):
        return {"endpoint_url": self.endpoint_url, "region": self.region,
                "access_key": self.access_key, "secret_key": self.secret_key}

    def command(self):
        return [VENV_BIN / "moto_server", "-H", self.host, "-p", str(self.backend_port)]

    def spawn_kwargs(self):
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key,
                   AWS_DEFAULT_REGION=self.region)
        return {"cwd": str(self.dir), "env": env}

    def prepare(self):
        super().prepare()
        if self.tls:
            self._write_certificate()
            (self.dir / "tls" / "stunnel.conf").write_text(
                "foreground = yes\n"
                "pid =\n"
                "debug = 4\n"
                "[s3]\n"
                "accept = %(host)s:%(port)d\n"
                "connect = %(host)s:%(backend)d\n"
                "cert = %(cert)s\n"
                "key = %(key)s\n"
                % {"host": self.host, "port": self.port, "backend": self.backend_port, "cert": self.ca_file,
                   "key": self.dir / "tls" / "key.pem"})

    def _write_certificate(self):
        """A self-signed certificate (and its key) for the host, valid for two days; kept if already there."""
        # pylint: disable=import-outside-toplevel
        import datetime
        import ipaddress
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        tls_dir = self.dir / "tls"
        tls_dir.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
        if cert_path.exists() and key_path.exists():
            return
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.host)])
        now = datetime.datetime.now(datetime.timezone.utc)
        # pgBackRest matches the host name against DNS names only: the address is both an IP and a DNS entry
        names = [x509.DNSName(self.host), x509.DNSName("localhost")]
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(self.host)))
        except ValueError:
            pass
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        os.chmod(key_path, 0o600)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        os.chmod(cert_path, 0o644)
        os.chmod(tls_dir, 0o755)

    def start(self):
        if not self.tls:
            return super().start()
        if self.process and self.process.alive() and self.tunnel and self.tunnel.alive():
            return self
        for port in (self.port, self.backend_port):
            if port_open(port, self.host):
                raise ServiceError("%s: port %s:%d is already in use by another process" % (self.name, self.host, port))
        death = self.stop_signal if self.die_with_parent else None
        self.process = Process.spawn(self.command(), self.log, parent_death_signal=death, **self.spawn_kwargs())
        self.tunnel = Process.spawn(["stunnel4", self.dir / "tls" / "stunnel.conf"], self.dir / "stunnel.log",
                                    parent_death_signal=death, cwd=str(self.dir))
        self.wait_ready()
        return self

    def stop(self):
        if self.tunnel:
            self.tunnel.stop(signal.SIGTERM, self.stop_timeout)
        super().stop()

    def ready(self):
        if self.tunnel and not self.tunnel.alive():
            raise ServiceError("stunnel4 in front of moto exited; see %s" % (self.dir / "stunnel.log"))
        if self.tls:
            import ssl  # pylint: disable=import-outside-toplevel
            context = ssl.create_default_context(cafile=self.ca_file)
            try:
                with urllib.request.urlopen(self.url + "/moto-api/", timeout=1.0, context=context) as resp:
                    return resp.status < 500
            except urllib.error.HTTPError as exc:
                return exc.code < 500
        status = http_get(self.url + "/moto-api/", timeout=1.0)[0]
        return status < 500

    def reset(self):
        """Forget every resource (POST /moto-api/reset, on moto's own port)."""
        status, body = http_get("http://%s:%d/moto-api/reset" % (self.host, self.backend_port), data=b"", method="POST")
        if status != 200:
            raise ServiceError("moto reset failed: HTTP %d %s" % (status, body[:200]))

    def client(self, service):
        import boto3  # pylint: disable=import-outside-toplevel
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            **({"verify": self.ca_file} if self.tls else {}))

    def to_state(self):
        state = super().to_state()
        if self.tls:
            state.update(tls=True, backend_port=self.backend_port,
                         tunnel=self.tunnel.to_state() if self.tunnel else None)
        return state

    def _restore(self, state):
        self.tls = state.get("tls", False)
        self.backend_port = state.get("backend_port", self.port)
        tunnel = state.get("tunnel")
        self.tunnel = Process(pid=tunnel["pid"], start_time=tunnel.get("start_time")) if tunnel else None


# --------------------------------------------------------------------------- demo app

def layout_release(releases_dir, release_id, version=None, **settings):
    """Create ``releases_dir/<release_id>/`` with demoapp.py and release.json; return the path.

    ``settings`` are demo app config fields (error_rate, latency_ms, hang, fail_health).
    """
    path = pathlib.Path(releases_dir) / release_id
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy2(DEMOAPP, path / "demoapp.py")
    config = {"version": version or release_id, "release": release_id}
    config.update(settings)
    (path / "release.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def layout_releases(base_dir, releases=None, current="v1"):
    """Lay out every release of ``releases`` (default RELEASES: good v1, bad v2) under
    ``base_dir/releases`` and point ``base_dir/current`` at ``current``. Returns base_dir/releases.
    """
    base_dir = pathlib.Path(base_dir)
    releases_dir = base_dir / "releases"
    for release_id, config in (releases or RELEASES).items():
        layout_release(releases_dir, release_id, **dict(config))
    if current:
        switch_current(base_dir, current)
    return releases_dir


def switch_current(base_dir, release_id):
    """Atomically point ``base_dir/current`` at ``releases/<release_id>`` (relative symlink)."""
    base_dir = pathlib.Path(base_dir)
    tmp = base_dir / (".current.%d" % os.getpid())
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(os.path.join("releases", release_id), tmp)
    os.replace(tmp, base_dir / "current")
    return base_dir / "current"


class DemoApp(Service):
    """One demo app process. With ``release_dir`` it runs ``<release_dir>/demoapp.py --config
    <release_dir>/release.json``; otherwise the checkout's demoapp.py with its own config file
    (``flag_faults`` goes into it). ``flags_file``: the flagd file the app evaluates (``--flags``).
    """

    ready_timeout = 15.0
    stop_timeout = 5.0

    def __init__(self, base_dir, name, version="v1", port=None, host="127.0.0.1", release_dir=None,
                 python=None, flags_file=None, flag_faults=None):
        self.name = name
        self.flags_file = flags_file
        self.flag_faults = flag_faults
        super().__init__(base_dir, port, host)
        self.release_dir = pathlib.Path(release_dir) if release_dir else None
        self.python = python or sys.executable
        self.config_file = (self.release_dir / "release.json") if self.release_dir else self.dir / "config.json"
        if self.release_dir and self.config_file.exists():
            version = json.loads(self.config_file.read_text(encoding="utf-8")).get("version", version)
        self.version = version  # as configured at start; current_version() asks the app

    def current_version(self):
        """The version the running app reports on /."""
        return self.get_json("/health")[1]["version"]

    def prepare(self):
        super().prepare()
        if not self.release_dir:
            config = {"version": self.version}
            if self.flag_faults:
                config["flag_faults"] = self.flag_faults
            self.config_file.write_text(json.dumps(config) + "\n")

    def command(self):
        script = (self.release_dir / "demoapp.py") if self.release_dir else DEMOAPP
        return [self.python, script, "--host", self.host, "--port", str(self.port), "--version", self.version,
                "--config", self.config_file, "--pidfile", self.pidfile] + (
                    ["--flags", self.flags_file] if self.flags_file else [])

    @property
    def pidfile(self):
        return self.dir / "demoapp.pid"

    def pidfile_pid(self):
        """PID from the pidfile if that process is alive and is a demo app (it may have been restarted
        by a role under test from another release)."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = pathlib.Path("/proc/%d/cmdline" % pid).read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"demoapp" in cmdline and proc_start_time(pid) is not None else None

    def running_pid(self):
        return self.pid or self.pidfile_pid()

    def stop(self):
        super().stop()
        pid = self.pidfile_pid()
        if pid:
            Process(pid=pid).stop(self.stop_signal, self.stop_timeout)

    def ready(self):
        status = http_get(self.url + "/metrics", timeout=1.0)[0]
        return status == 200

    def get_json(self, path, timeout=5.0):
        status, body = http_get(self.url + path, timeout=timeout)
        return status, json.loads(body.decode() or "null")

    def set_fault(self, error_rate=0, latency_ms=0, hang=False, fail_health=False):
        """Replace the runtime faults (every field given, so earlier ones do not linger)."""
        return self._admin({"error_rate": error_rate, "latency_ms": latency_ms, "hang": hang,
                            "fail_health": fail_health})

    def reset(self):
        """Drop runtime faults; the app is back to what its config file says."""
        return self._admin({"reset": True})

    def crash(self):
        """Make the app exit on purpose (POST /admin/fault {"exit": true})."""
        result = self._admin({"exit": True})
        if self.process:
            self.process.wait_gone(5.0)
        return result

    def reload(self):
        """SIGHUP: re-read the config file (e.g. after ``current`` moved to another release)."""
        if self.process:
            self.process.send_signal(signal.SIGHUP)

    def restart(self):
        self.stop()
        return self.start()

    def metrics(self):
        return http_get(self.url + "/metrics")[1].decode()

    def _admin(self, body):
        status, data = http_get(self.url + "/admin/fault", data=json.dumps(body).encode(),
                                headers={"Content-Type": "application/json"}, method="POST")
        if status != 200:
            raise ServiceError("demo app %s: /admin/fault answered %d: %s" % (self.name, status, data[:200]))
        return json.loads(data.decode())

    def to_state(self):
        state = super().to_state()
        state.update(name=self.name, version=self.version, python=self.python,
                     release_dir=str(self.release_dir) if self.release_dir else None,
                     config_file=str(self.config_file), flags_file=str(self.flags_file) if self.flags_file else None,
                     flag_faults=self.flag_faults)
        return state

    def _restore(self, state):
        self.version = state["version"]
        self.flags_file = state.get("flags_file")
        self.flag_faults = state.get("flag_faults")
        self.python = state["python"]
        self.release_dir = pathlib.Path(state["release_dir"]) if state.get("release_dir") else None
        self.config_file = pathlib.Path(state["config_file"])


class DemoApps:
    """The blue (v1) and green (v2) pair."""

    def __init__(self, blue, green):
        self.blue = blue
        self.green = green

    def __iter__(self):
        return iter((self.blue, self.green))

    def reset(self):
        for app in self:
            if app.process and app.process.alive():
                app.reset()

    def stop(self):
        for app in self:
            app.stop()


# --------------------------------------------------------------------------- HAProxy

class HAProxy(Service):
    """HAProxy 2.6 in master-worker mode: one frontend, backends be_blue / be_green picked by a map."""

    name = "haproxy"
    stop_signal = signal.SIGTERM
    ready_timeout = 15.0
    map_key = "default"

    def __init__(self, base_dir, blue_port, green_port, port=None, host="127.0.0.1", binary="haproxy"):
        super().__init__(base_dir, port, host)
        self.blue_port = blue_port
        self.green_port = green_port
        self.binary = binary
        self._paths()

    def _paths(self):
        self.config = self.dir / "haproxy.cfg"
        self._map_file = self.dir / "route.map"
        self._socket = self.dir / "admin.sock"
        self.master_socket = self.dir / "master.sock"

    map_file = property(lambda self: str(self._map_file))
    socket = property(lambda self: str(self._socket))

    def prepare(self):
        super().prepare()
        self._map_file.write_text("%s be_blue\n" % self.map_key)
        template = """# failsafe.recovery test harness
global
    master-worker
    stats socket %(socket)s mode 600 level admin expose-fd listeners
    stats timeout 30s
    maxconn 4096
    hard-stop-after 10s

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 10s
    timeout queue 5s
    timeout http-request 10s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend fe_main
    bind %(host)s:%(port)d
    use_backend %%[str(%(key)s),map(%(map)s,be_blue)]
    default_backend be_blue

backend be_blue
    option httpchk GET /health
    http-check expect status 200
    server blue 127.0.0.1:%(blue)d check inter 500ms fall 2 rise 2

backend be_green
    option httpchk GET /health
    http-check expect status 200
    server green 127.0.0.1:%(green)d check inter 500ms fall 2 rise 2
"""
        self.config.write_text(template % {"socket": self._socket, "host": self.host, "port": self.port,
                                           "map": self._map_file, "key": self.map_key, "blue": self.blue_port,
                                           "green": self.green_port})
        check = subprocess.run([self.binary, "-c", "-q", "-f", str(self.config)], capture_output=True, text=True,
                               check=False)
        if check.returncode != 0:
            raise ServiceError("haproxy rejected %s: %s" % (self.config, check.stderr.strip()))

    def command(self):
        return [self.binary, "-W", "-f", self.config, "-S", "%s,mode,600" % self.master_socket]

    def ready(self):
        return port_open(self.port, self.host) and "Pid:" in self.admin("show info")

    def admin(self, command, timeout=5.0):
        """Send one runtime API command over the admin socket; returns the answer text."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self._socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def worker_pid(self):
        for line in self.admin("show info").splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
        return None

    def reload(self, timeout=15.0):
        """SIGUSR2 to the master PID; wait until a new worker answers on the admin socket."""
        old = self.worker_pid()
        deadline = time.monotonic() + timeout
        # The master drops a SIGUSR2 that arrives while it is still finishing a previous start or
        # reload, so the signal is sent again if no new worker shows up within a few seconds.
        while True:
            self.process.send_signal(signal.SIGUSR2)
            try:
                wait_until(lambda: self.worker_pid() not in (None, old), min(3.0, max(0.1, deadline - time.monotonic())),
                           "haproxy reload", log=self.log)
                return
            except ServiceError:
                if time.monotonic() >= deadline:
                    raise

    def use_backend(self, backend, persist=True):
        """Send the frontend's traffic to ``backend`` (runtime map, and the map file if ``persist``)."""
        self.admin("set map %s %s %s" % (self._map_file, self.map_key, backend))
        if persist:
            self._map_file.write_text("%s %s\n" % (self.map_key, backend))

    def reset(self):
        """Back to the start: traffic to be_blue, both servers ready at their initial weight."""
        self.use_backend("be_blue")
        for backend, server in (("be_blue", "blue"), ("be_green", "green")):
            self.admin("set server %s/%s state ready" % (backend, server))
            self.admin("set weight %s/%s 100%%" % (backend, server))

    def current_backend(self):
        """The backend the map sends traffic to right now (runtime view)."""
        for line in self.admin("show map %s" % self._map_file).splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == self.map_key:
                return parts[2]
        return "be_blue"

    def to_state(self):
        state = super().to_state()
        state.update(blue_port=self.blue_port, green_port=self.green_port, binary=self.binary,
                     config=str(self.config), map_file=str(self._map_file), socket=str(self._socket),
                     map_key=self.map_key)
        return state

    def _restore(self, state):
        self.blue_port = state["blue_port"]
        self.green_port = state["green_port"]
        self.binary = state["binary"]
        self._paths()


# --------------------------------------------------------------------------- Prometheus

class Prometheus(Service):
    """Prometheus scraping the demo apps every second (job ``demoapp``, label ``color``)."""

    name = "prometheus"
    ready_timeout = 30.0
    stop_timeout = 10.0

    def __init__(self, base_dir, targets, port=None, host="127.0.0.1", binary="prometheus"):
        """``targets``: {color: port} of the demo apps."""
        super().__init__(base_dir, port, host)
        self.targets = dict(targets)
        self.binary = binary
        self.config = self.dir / "prometheus.yml"

    def prepare(self):
        super().prepare()
        (self.dir / "data").mkdir(exist_ok=True)
        lines = ["global:", "  scrape_interval: 1s", "  scrape_timeout: 1s", "  evaluation_interval: 1s",
                 "scrape_configs:", "  - job_name: demoapp", "    static_configs:"]
        for color, port in sorted(self.targets.items()):
            lines += ["      - targets: ['127.0.0.1:%d']" % port, "        labels:", "          color: %s" % color]
        self.config.write_text("\n".join(lines) + "\n")

    def command(self):
        return [self.binary, "--config.file=%s" % self.config, "--storage.tsdb.path=%s" % (self.dir / "data"),
                "--web.listen-address=%s:%d" % (self.host, self.port), "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d", "--log.level=warn"]

    def ready(self):
        return http_get(self.url + "/-/ready", timeout=1.0)[0] == 200

    def query(self, promql):
        """Instant query; returns the ``data.result`` list."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, body = http_get(url)
        data = json.loads(body.decode())
        if status != 200 or data.get("status") != "success":
            raise ServiceError("PromQL %r failed: HTTP %d %s" % (promql, status, data.get("error")))
        return data["data"]["result"]

    def to_state(self):
        state = super().to_state()
        state.update(targets=self.targets, binary=self.binary, config=str(self.config))
        return state

    def _restore(self, state):
        self.targets = state["targets"]
        self.binary = state["binary"]
        self.config = pathlib.Path(state["config"])


# --------------------------------------------------------------------------- webhook receiver

class WebhookReceiver(Service):
    """extensions/sandbox/statuspage.py: a webhook receiver and status-page stub on plain HTTP.

    ``hook_url`` (``url`` + /hooks/<token>) is what the incident role posts to; the token makes it a
    credential, so it lives only in 0600 files: ``token_file`` and ``url_file`` (the whole URL, for
    the sandbox inventory; written once the receiver answers, removed when it stops). Every POST is
    appended to ``record_file`` (JSON lines: seq, received_at, epoch, accepted, status,
    content_type, body); ``received()`` reads it, ``received_via_http()`` asks the receiver.
    """

    name = "webhook"
    ready_timeout = 15.0
    stop_timeout = 5.0

    def __init__(self, base_dir, port=None, host="127.0.0.1", python=None):
        super().__init__(base_dir, port, host)
        self.python = python or sys.executable

    token_file = property(lambda self: self.dir / "token")
    url_file = property(lambda self: self.dir / "hook.url")
    record_file = property(lambda self: self.dir / "received.jsonl")

    @property
    def token(self):
        return self.token_file.read_text().strip()

    @property
    def hook_url(self):
        return "%s/hooks/%s" % (self.url, self.token)

    @staticmethod
    def _write_secret(path, text):
        tmp = path.with_name(".%s.%d" % (path.name, os.getpid()))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
        os.replace(tmp, path)

    def prepare(self):
        """A fresh token for every start of the sandbox; earlier records are kept (they carry their incident)."""
        super().prepare()
        self._write_secret(self.token_file, secrets.token_urlsafe(24))

    def command(self):
        return [self.python, STATUSPAGE, "--host", self.host, "--port", str(self.port),
                "--token-file", self.token_file, "--record", self.record_file]

    def ready(self):
        return http_get(self.url + "/health", timeout=1.0)[0] == 200

    def start(self):
        super().start()
        self._write_secret(self.url_file, self.hook_url)
        return self

    def stop(self):
        super().stop()
        self.url_file.unlink(missing_ok=True)

    def received(self):
        """Every recorded POST, oldest first, from the record file."""
        if not self.record_file.exists():
            return []
        with open(self.record_file, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def received_via_http(self):
        """Every recorded POST as the running receiver lists it (GET on the webhook URL)."""
        status, body = http_get(self.hook_url, timeout=5.0)
        if status != 200:
            raise ServiceError("webhook receiver: GET on the webhook URL answered %d" % status)
        return json.loads(body.decode())

    def notifications(self, incident=None, event=None):
        """Bodies of the accepted POSTs, optionally only those of ``incident`` and/or ``event``."""
        out = []
        for record in self.received():
            body = record.get("body")
            if not record.get("accepted") or not isinstance(body, dict):
                continue
            if incident is not None and body.get("incident") != incident:
                continue
            if event is not None and body.get("event") != event:
                continue
            out.append(dict(body, received_at=record["received_at"], received_epoch=record["epoch"]))
        return out

    def to_state(self):
        state = super().to_state()
        state.update(python=self.python, url_file=str(self.url_file), record_file=str(self.record_file))
        return state

    def _restore(self, state):
        self.python = state["python"]


CLASSES = {cls.__name__: cls
           for cls in (PostgresCluster, MotoServer, DemoApp, HAProxy, Prometheus, WebhookReceiver)}


def from_state(state):
    """Re-attach a service described by ``to_state()``."""
    return CLASSES[state["class"]].from_state(state)
