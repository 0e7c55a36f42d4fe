# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: the PostgreSQL restore-point ledger behind failsafe.recovery.pg_restore_point.

A restore point is only useful when three things hold: it exists once (recovery
stops at the FIRST point of a name), the WAL segment holding it has reached the
archive (else a lost primary loses the point), and someone can find it again.
The ledger is a table in the cluster itself; its row for a point is committed
BEFORE pg_create_restore_point() runs, so a restore to the point still holds
the row that describes it (with status ``pending``: the LSN is only known after
the point exists and is written by a later transaction).

The pure helpers (name validation, WAL file names, record shaping) are tested
without a server; ``RestorePointLedger`` talks to one through psycopg 3.
"""

from __future__ import annotations

import datetime
import json
import re
import time

from ansible_collections.failsafe.recovery.plugins.module_utils import _imports
from ansible_collections.failsafe.recovery.plugins.module_utils._pgconn import connect, describe_target

LEDGER_TABLE = "restore_points"
# PostgreSQL keeps restore point names in a MAXFNAMELEN (64) buffer.
MAX_NAME_LENGTH = 63
# Names travel into recovery_target_name and pgBackRest's --target: keep them shell- and conf-safe.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]*$")
_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
# Advisory lock namespace (first key of the two-key form): "fsrp".
_LOCK_NAMESPACE = 0x66737270

STATUS_PENDING = "pending"
STATUS_CREATED = "created"
STATUS_ARCHIVED = "archived"

_COLUMNS = ("name", "status", "lsn", "timeline", "wal_file", "labels", "created_at", "created_by",
            "archived_at", "system_identifier", "database")


class LedgerError(Exception):
    """A failure with a message fit for the user and structured facts."""

    def __init__(self, msg, **facts):
        super().__init__(msg)
        self.msg = msg
        self.facts = facts


# ---------------------------------------------------------------- pure helpers

def validate_name(name):
    """Return None when ``name`` is a usable restore point name, else the reason."""
    if not name:
        return "a restore point name must not be empty"
    if len(name) > MAX_NAME_LENGTH:
        return "restore point name %r is %d characters long; PostgreSQL allows at most %d" % (
            name, len(name), MAX_NAME_LENGTH)
    if not _NAME_RE.match(name):
        return ("restore point name %r may only hold letters, digits and _ . : @ + - and must start "
                "with a letter or digit (it is passed to recovery_target_name and pgBackRest --target)" % name)
    return None


def validate_identifier(kind, value):
    """Return None when ``value`` can name a database or schema, else the reason."""
    if not value:
        return "%s must not be empty" % kind
    if len(value.encode("utf-8")) > 63:
        return "%s %r is longer than 63 bytes (PostgreSQL's identifier limit)" % (kind, value)
    if "\x00" in value:
        return "%s %r contains a NUL character" % (kind, value)
    return None


def parse_wal_segment(wal_name):
    """(timeline, log, seg) of a plain WAL segment file name, or None for anything else
    (timeline history files, backup labels, .partial segments, empty values)."""
    if not wal_name:
        return None
    match = _SEGMENT_RE.match(wal_name.upper())
    if not match:
        return None
    return tuple(int(part, 16) for part in match.groups())


def timeline_of(wal_name):
    """Timeline id encoded in a WAL segment file name, or None."""
    parsed = parse_wal_segment(wal_name)
    return parsed[0] if parsed else None


def segment_archived(point_wal, last_archived_wal):
    """True when ``last_archived_wal`` proves that ``point_wal`` reached the archive.

    The archiver ships completed segments in order, so a plain segment at or after
    the point's segment (same or later timeline) proves it. History files, backup
    labels and .partial segments prove nothing; the caller keeps waiting.
    """
    point = parse_wal_segment(point_wal)
    last = parse_wal_segment(last_archived_wal)
    if point is None or last is None:
        return False
    if last[0] < point[0]:
        return False
    return (last[1], last[2]) >= (point[1], point[2])


def _iso(value):
    if value is None:
        return None
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return str(value)


def shape_record(row):
    """The module's view of one ledger row (a mapping with the ledger's columns)."""
    labels = row.get("labels")
    if isinstance(labels, str):
        labels = json.loads(labels)
    timeline = row.get("timeline")
    record = dict(
        name=row.get("name"),
        status=row.get("status"),
        lsn=None if row.get("lsn") is None else str(row["lsn"]),
        timeline=None if timeline is None else int(timeline),
        wal_file=row.get("wal_file"),
        labels=labels or {},
        created_at=_iso(row.get("created_at")),
        created_by=row.get("created_by"),
        archived_at=_iso(row.get("archived_at")),
        system_identifier=None if row.get("system_identifier") is None else str(row["system_identifier"]),
        database=row.get("database"),
    )
    record["archived"] = record["status"] == STATUS_ARCHIVED
    return record


def shape_archiver(row):
    """pg_stat_archiver as plain JSON-friendly values."""
    if not row:
        return {}
    return dict((key, _iso(value) if isinstance(value, datetime.datetime) else value) for key, value in row.items())


def archiver_failed_since(archiver, since):
    """True when the archiver reports a failure at or after ``since`` (an aware datetime)."""
    failed = archiver.get("last_failed_time")
    if failed is None:
        return False
    if isinstance(failed, str):
        failed = datetime.datetime.fromisoformat(failed)
    archived = archiver.get("last_archived_time")
    if isinstance(archived, str):
        archived = datetime.datetime.fromisoformat(archived)
    if archived is not None and archived > failed:
        return False
    return failed >= since


# ---------------------------------------------------------------- the ledger

class RestorePointLedger:
    """One connection to the ledger database and the operations of pg_restore_point."""

    def __init__(self, params, ledger_db, ledger_schema, check_mode=False):
        self.params = params
        self.ledger_db = ledger_db
        self.schema = ledger_schema
        self.check_mode = check_mode
        self.target = describe_target(params, ledger_db)
        self.conn = None
        self.warnings = []
        self.can_read_control = False
        self.can_list_archive_status = False

    # -- connection and helpers

    def open(self):
        psycopg = _imports.psycopg
        try:
            self.conn = connect(self.params, dbname=self.ledger_db, autocommit=True)
        except psycopg.Error as exc:
            raise LedgerError("Cannot connect to %s as role %r: %s. Check login_host/login_port, login_user "
                              "and login_password, and that the server accepts the connection (pg_hba.conf)."
                              % (self.target, self.params.get("login_user") or "postgres", _reason(exc)),
                              target=self.target)
        return self

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def _sql(self):
        return _imports.psycopg.sql

    def _table(self):
        sql = self._sql()
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(LEDGER_TABLE))

    def _one(self, query, args=None):
        with self.conn.cursor(row_factory=_imports.psycopg.rows.dict_row) as cur:
            cur.execute(query, args)
            return cur.fetchone()

    def _all(self, query, args=None):
        with self.conn.cursor(row_factory=_imports.psycopg.rows.dict_row) as cur:
            cur.execute(query, args)
            return cur.fetchall()

    def _run(self, what, query, args=None, fetch=True):
        """Execute ``query``; a server error becomes a LedgerError naming ``what`` and the target."""
        psycopg = _imports.psycopg
        try:
            if fetch:
                return self._one(query, args)
            with self.conn.cursor() as cur:
                cur.execute(query, args)
            return None
        except psycopg.Error as exc:
            raise LedgerError("Failed to %s on %s: %s" % (what, self.target, _reason(exc)), target=self.target)

    # -- facts about the server

    def server_facts(self):
        row = self._run("read the server state", """
            SELECT pg_is_in_recovery() AS in_recovery,
                   current_user AS role,
                   current_setting('archive_mode') AS archive_mode,
                   current_setting('server_version_num')::int AS server_version_num,
                   has_function_privilege('pg_catalog.pg_create_restore_point(text)', 'EXECUTE') AS can_create,
                   has_function_privilege('pg_catalog.pg_switch_wal()', 'EXECUTE') AS can_switch,
                   has_function_privilege('pg_catalog.pg_control_system()', 'EXECUTE') AS can_read_control,
                   has_function_privilege('pg_catalog.pg_ls_archive_statusdir()', 'EXECUTE') AS can_list_archive_status,
                   has_database_privilege(current_database(), 'CREATE') AS can_create_schema""")
        return row

    def archiver(self):
        row = self._run("read pg_stat_archiver", """
            SELECT archived_count, last_archived_wal, last_archived_time,
                   failed_count, last_failed_wal, last_failed_time, stats_reset
              FROM pg_stat_archiver""")
        return row or {}

    def ledger_exists(self):
        # From the catalog, not to_regclass(): that fails without USAGE on the schema.
        row = self._run("look for the ledger table", """
            SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                            WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')) AS present""",
                        (self.schema, LEDGER_TABLE))
        return bool(row["present"])

    def ensure_ledger(self):
        sql = self._sql()
        self._run("create the ledger schema %r" % self.schema,
                  sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)), fetch=False)
        self._run("create the ledger table %s.%s" % (self.schema, LEDGER_TABLE), sql.SQL("""
            CREATE TABLE IF NOT EXISTS {} (
                name text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 63),
                status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'created', 'archived')),
                lsn pg_lsn,
                timeline integer,
                wal_file text,
                labels jsonb NOT NULL DEFAULT '{{}}'::jsonb,
                created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                created_by text NOT NULL DEFAULT current_user,
                archived_at timestamptz,
                system_identifier text,
                database text NOT NULL DEFAULT current_database()
            )""").format(self._table()), fetch=False)

    def _select(self):
        sql = self._sql()
        return sql.SQL("SELECT name, status, lsn::text AS lsn, timeline, wal_file, labels, created_at, created_by, "
                       "archived_at, system_identifier, database FROM {}").format(self._table())

    def get(self, name):
        sql = self._sql()
        row = self._run("read restore point %r from the ledger" % name,
                        sql.SQL("{} WHERE name = %s").format(self._select()), (name,))
        return shape_record(row) if row else None

    def list(self):
        psycopg = _imports.psycopg
        sql = self._sql()
        try:
            rows = self._all(sql.SQL("{} ORDER BY created_at, name").format(self._select()))
        except psycopg.Error as exc:
            raise LedgerError("Failed to read the ledger %s.%s on %s: %s"
                              % (self.schema, LEDGER_TABLE, self.target, _reason(exc)), target=self.target)
        return [shape_record(row) for row in rows]

    # -- preflight

    def preflight(self, switch_wal, wait_archived):
        """Refuse before anything is written: standby, missing privilege, archiving off."""
        facts = self.server_facts()
        self.can_read_control = facts["can_read_control"]
        self.can_list_archive_status = facts["can_list_archive_status"]
        role = facts["role"]
        if facts["in_recovery"]:
            raise LedgerError("Refusing to create a restore point on %s: the server is a standby (pg_is_in_recovery() "
                              "is true). Restore points can only be created on the primary; point login_host at it."
                              % self.target, target=self.target, in_recovery=True)
        if not facts["can_create"]:
            raise LedgerError("Role %r lacks EXECUTE on function pg_create_restore_point(text) on %s. Connect as a "
                              "superuser or run: GRANT EXECUTE ON FUNCTION pg_catalog.pg_create_restore_point(text) TO %s;"
                              % (role, self.target, _quote_ident(role)), target=self.target, role=role,
                              missing_privilege="EXECUTE on pg_create_restore_point(text)")
        if switch_wal and not facts["can_switch"]:
            raise LedgerError("Role %r lacks EXECUTE on function pg_switch_wal() on %s (needed by switch_wal=true). "
                              "Connect as a superuser, run: GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO %s; "
                              "or set switch_wal=false." % (role, self.target, _quote_ident(role)),
                              target=self.target, role=role, missing_privilege="EXECUTE on pg_switch_wal()")
        if wait_archived and facts["archive_mode"] == "off":
            raise LedgerError("wait_archived=true but archive_mode is off on %s: the restore point could never reach "
                              "a WAL archive. Enable archiving (archive_mode, archive_command) or set wait_archived=false."
                              % self.target, target=self.target, archive_mode="off")
        return facts

    def preflight_ledger(self, facts):
        """True when the ledger exists; refuses when it cannot be read and written, or created."""
        if self.ledger_exists():
            qualified = self._sql().Identifier(self.schema, LEDGER_TABLE).as_string(self.conn)
            row = self._run("check the privileges on the ledger",
                            "SELECT has_schema_privilege(%s, 'USAGE') AS usage", (self.schema,))
            if row["usage"]:
                # only now: resolving the table's name needs USAGE on its schema
                row = self._run("check the privileges on the ledger", """
                    SELECT true AS usage,
                           has_table_privilege(%s, 'SELECT') AND has_table_privilege(%s, 'INSERT')
                           AND has_table_privilege(%s, 'UPDATE') AND has_table_privilege(%s, 'DELETE') AS rw""",
                                (qualified,) * 4)
            else:
                row["rw"] = False
            if not (row["usage"] and row["rw"]):
                raise LedgerError(
                    "Role %r may not write the ledger %s on %s. As its owner run: GRANT USAGE ON SCHEMA %s TO %s; "
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %s; or choose another ledger_schema."
                    % (facts["role"], qualified, self.target, _quote_ident(self.schema), _quote_ident(facts["role"]),
                       qualified, _quote_ident(facts["role"])), target=self.target, role=facts["role"],
                    missing_privilege="SELECT, INSERT, UPDATE, DELETE on %s" % qualified)
            return True
        if not facts["can_create_schema"]:
            raise LedgerError("The ledger %s.%s does not exist in database %r on %s and role %r may not create it. "
                              "Create it as its owner, GRANT CREATE ON DATABASE %s TO %s, or choose another ledger_db."
                              % (self.schema, LEDGER_TABLE, self.ledger_db, self.target, facts["role"],
                                 _quote_ident(self.ledger_db), _quote_ident(facts["role"])),
                              target=self.target)
        return False

    # -- create

    def _lock(self, name):
        self._run("take the restore point lock", "SELECT pg_advisory_lock(%s, hashtext(%s))",
                  (_LOCK_NAMESPACE, name))

    def _unlock(self, name):
        self._run("release the restore point lock", "SELECT pg_advisory_unlock(%s, hashtext(%s))",
                  (_LOCK_NAMESPACE, name))

    def create(self, name, labels):
        """Insert the ledger row (committed), then create the point and record its position.

        Returns (record, created). An existing ``created``/``archived`` row is returned
        untouched; a ``pending`` row (a run that stopped between the commit and
        pg_create_restore_point) is completed: recovery stops at the first point of a
        name and every such point lies after the row's commit, so completing it is safe.
        """
        sql = self._sql()
        self._lock(name)
        try:
            self.ensure_ledger()
            inserted = self._run("record restore point %r in the ledger" % name, sql.SQL(
                "INSERT INTO {} (name, labels) VALUES (%s, %s::jsonb) ON CONFLICT (name) DO NOTHING RETURNING name"
            ).format(self._table()), (name, json.dumps(labels or {}, sort_keys=True)))
            existing = self.get(name)
            if not inserted and existing["status"] != STATUS_PENDING:
                return existing, False
            try:
                # Alone in its statement: the WAL record is not transactional, so nothing that could
                # fail afterwards may share the statement (the row would be removed, the point would stay).
                lsn = self._run("create restore point %r" % name,
                                "SELECT pg_create_restore_point(%s)::text AS lsn", (name,))["lsn"]
            except LedgerError:
                if inserted:
                    self._run("remove the ledger row of restore point %r" % name,
                              sql.SQL("DELETE FROM {} WHERE name = %s AND status = 'pending'").format(self._table()),
                              (name,), fetch=False)
                raise
            wal_file = self._run("read the WAL file of restore point %r" % name,
                                 "SELECT pg_walfile_name(%s::pg_lsn) AS wal_file", (lsn,))["wal_file"]
            system_identifier = None
            if self.can_read_control:
                system_identifier = self._run("read the system identifier",
                                              "SELECT system_identifier::text AS id FROM pg_control_system()")["id"]
            self._run("record the position of restore point %r" % name, sql.SQL(
                "UPDATE {} SET status = 'created', lsn = %s::pg_lsn, wal_file = %s, timeline = %s, "
                "system_identifier = %s WHERE name = %s").format(self._table()),
                (lsn, wal_file, timeline_of(wal_file), system_identifier, name), fetch=False)
            return self.get(name), True
        finally:
            self._unlock(name)

    def current_wal_file(self):
        """The segment the next WAL record goes to.

        The insert position, not pg_current_wal_lsn(): that is the write position, which lags
        behind a record not flushed yet (synchronous_commit=off, a busy WAL writer) and would
        make the point's unfinished segment look complete, so it would never be switched.
        """
        return self._run("read the current WAL position",
                         "SELECT pg_walfile_name(pg_current_wal_insert_lsn()) AS wal_file")["wal_file"]

    def switch_wal(self):
        return self._run("switch to a new WAL segment", "SELECT pg_switch_wal()::text AS lsn")["lsn"]

    def mark_archived(self, name):
        sql = self._sql()
        self._run("mark restore point %r archived" % name, sql.SQL(
            "UPDATE {} SET status = 'archived', archived_at = clock_timestamp() WHERE name = %s AND status <> 'archived'"
        ).format(self._table()), (name,), fetch=False)
        return self.get(name)

    def archive_status(self, wal_file):
        """The segment's state in pg_wal/archive_status plus the archiver's backlog.

        ``state`` is 'done' (archived), 'ready' (waiting for the archiver) or None (no
        status file, or the role may not list the directory); ``waiting`` counts the
        .ready files and ``oldest`` names the first of them.
        """
        if not self.can_list_archive_status:
            return dict(state=None, waiting=None, oldest=None)
        row = self._run("list pg_wal/archive_status", """
            SELECT max(CASE WHEN name = %s THEN 'done' WHEN name = %s THEN 'ready' END) AS state,
                   count(*) FILTER (WHERE name LIKE '%%.ready') AS waiting,
                   min(name) FILTER (WHERE name LIKE '%%.ready') AS oldest
              FROM pg_catalog.pg_ls_archive_statusdir()""", (wal_file + ".done", wal_file + ".ready"))
        return row

    def is_archived(self, wal_file, archiver):
        """Proof that ``wal_file`` reached the archive: pg_stat_archiver or its .done status file."""
        if segment_archived(wal_file, archiver.get("last_archived_wal")):
            return True
        # pg_stat_archiver names only the LAST file archived: a history, backup or .partial file
        # archived after the segment hides it, so ask the status directory too.
        return self.archive_status(wal_file)["state"] == "done"

    def wait_archived(self, record, timeout, poll_interval, clock=time.monotonic, sleep=time.sleep):
        """Poll until the point's segment is archived; return the last archiver row.

        Raises LedgerError with the archiver's last failure or its backlog when the timeout passes.
        """
        started_at = self._run("read the server clock", "SELECT clock_timestamp() AS now")["now"]
        deadline = clock() + timeout
        while True:
            archiver = self.archiver()
            if self.is_archived(record["wal_file"], archiver):
                return archiver
            if clock() >= deadline:
                break
            sleep(max(0.05, min(poll_interval, deadline - clock())))
        shaped = shape_archiver(archiver)
        if archiver_failed_since(archiver, started_at):
            why = ("the archiver is failing: last failed WAL %s at %s (%s failures so far)"
                   % (archiver.get("last_failed_wal"), shaped.get("last_failed_time"), archiver.get("failed_count")))
        else:
            why = ("the archiver is stalled: last archived WAL %s at %s, no failure reported since the wait began"
                   % (archiver.get("last_archived_wal"), shaped.get("last_archived_time")))
        status = self.archive_status(record["wal_file"])
        if status["waiting"] is not None:
            why += "; %s file(s) wait in pg_wal/archive_status (oldest %s), the point's segment is %s" % (
                status["waiting"], status["oldest"] or "none",
                {"ready": "among them", "done": "archived"}.get(status["state"], "not complete yet"))
        raise LedgerError(
            "Restore point %r exists on %s (LSN %s, WAL file %s) but is NOT durable yet: its WAL segment was not "
            "archived within %s s; %s. Fix archive_command / the archive repository (see the server log), then run "
            "the task again to wait for it." % (record["name"], self.target, record["lsn"], record["wal_file"],
                                                timeout, why),
            target=self.target, point=record, archiver=shaped)


def _reason(exc):
    """The server's reason of a psycopg error, on one line."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = primary or str(exc) or exc.__class__.__name__
    return " ".join(text.split())


def _quote_ident(name):
    if re.match(r"^[a-z_][a-z0-9_$]*$", name or ""):
        return name
    return '"%s"' % (name or "").replace('"', '""')


# ---------------------------------------------------------------- module drivers

def _options(module):
    """Validate the options shared by both modules before any connection; return (name, ledger_db, schema)."""
    params = module.params
    name = params.get("name")
    ledger_db = params.get("ledger_db") or params.get("login_db") or "postgres"
    schema = params["ledger_schema"]
    for problem in (validate_identifier("ledger_db", ledger_db), validate_identifier("ledger_schema", schema),
                    validate_name(name) if name is not None else None):
        if problem:
            module.fail_json(msg="Invalid option: %s." % problem)
    return name, ledger_db, schema


def _execute(module, ledger, action):
    try:
        with ledger:
            result = action()
    except LedgerError as exc:
        module.fail_json(msg=exc.msg, **exc.facts)
    if ledger.warnings:
        result["warnings"] = ledger.warnings
    module.exit_json(**result)


def run(module):
    """Everything pg_restore_point does, given its AnsibleModule; exits through the module."""
    params = module.params
    name, ledger_db, schema = _options(module)
    if params["archive_timeout"] <= 0:
        module.fail_json(msg="archive_timeout must be a positive number of seconds, got %s." % params["archive_timeout"])
    if params["poll_interval"] <= 0:
        module.fail_json(msg="poll_interval must be positive, got %s." % params["poll_interval"])
    ledger = RestorePointLedger(params, ledger_db, schema, check_mode=module.check_mode)
    _execute(module, ledger, lambda: _present(ledger, module, name, params))


def run_info(module):
    """Everything pg_restore_point_info does; read-only, exits through the module."""
    name, ledger_db, schema = _options(module)
    ledger = RestorePointLedger(module.params, ledger_db, schema, check_mode=module.check_mode)
    _execute(module, ledger, lambda: _info(ledger, name))


def _info(ledger, name):
    exists = ledger.ledger_exists()
    points = []
    if exists:
        points = [ledger.get(name)] if name else ledger.list()
        points = [p for p in points if p]
    return dict(changed=False, ledger_exists=exists, points=points,
                point=points[0] if name and points else None,
                archiver=shape_archiver(ledger.archiver()), target=ledger.target,
                ledger=dict(database=ledger.ledger_db, schema=ledger.schema, table=LEDGER_TABLE))


def _present(ledger, module, name, params):
    labels = params.get("labels") or {}
    facts = ledger.preflight(params["switch_wal"], params["wait_archived"])
    ledger_exists = ledger.preflight_ledger(facts)
    existing = ledger.get(name) if ledger_exists else None
    base = dict(target=ledger.target, ledger=dict(database=ledger.ledger_db, schema=ledger.schema, table=LEDGER_TABLE))

    if existing and labels and existing["labels"] != labels:
        ledger.warnings.append(
            "Restore point %r already exists with labels %s; the requested labels %s were not applied "
            "(a point is never recreated)." % (name, json.dumps(existing["labels"], sort_keys=True), json.dumps(labels, sort_keys=True)))

    if module.check_mode:
        if existing and existing["status"] != STATUS_PENDING:
            will_archive = params["wait_archived"] and not existing["archived"]
            return dict(base, changed=will_archive, point=existing, created=False,
                        msg="restore point %r exists%s" % (name, "; would wait for its archiving" if will_archive else ""))
        predicted = dict(shape_record(dict(name=name, status=STATUS_PENDING, labels=labels)), database=ledger.ledger_db)
        return dict(base, changed=True, created=True, point=predicted,
                    msg="would %screate restore point %r%s" % (
                        "create the ledger %s.%s and " % (ledger.schema, LEDGER_TABLE) if not ledger_exists else "",
                        name, " and wait for its WAL segment to be archived" if params["wait_archived"] else ""))

    record, created = ledger.create(name, labels)
    changed = created
    wal_switched = False
    archiver = None
    if params["wait_archived"] and not record["archived"]:
        archiver = ledger.archiver()
        if not ledger.is_archived(record["wal_file"], archiver):
            if params["switch_wal"] and ledger.current_wal_file() == record["wal_file"]:
                ledger.switch_wal()
                wal_switched = True
            try:
                archiver = ledger.wait_archived(record, params["archive_timeout"], params["poll_interval"])
            except LedgerError as exc:
                exc.facts["changed"] = changed
                raise
        record = ledger.mark_archived(name)
        changed = True
    elif params["switch_wal"] and created:
        if ledger.current_wal_file() == record["wal_file"]:
            ledger.switch_wal()
            wal_switched = True
    if archiver is None:
        archiver = ledger.archiver()
    if created:
        msg = "created restore point %r at %s" % (name, record["lsn"])
    elif changed:
        msg = "restore point %r existed; its WAL segment is now archived" % name
    else:
        msg = "restore point %r already exists (created %s); not created again" % (name, record["created_at"])
    return dict(base, changed=changed, created=created, point=record, wal_switched=wal_switched,
                archiver=shape_archiver(archiver), msg=msg)
