#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_restore_point
short_description: Create PostgreSQL restore points once, record them in a ledger and wait until they are archived
version_added: 0.1.0
description:
  - Creates a named PostgreSQL restore point with C(pg_create_restore_point()) and records it in a ledger table
    (name, LSN, timeline, WAL file, time, labels) inside the cluster, so a later point-in-time recovery can target it
    by name (for example pgBackRest C(restore --type=name)).
  - The ledger row is committed B(before) the point is created, so a cluster restored to the point still holds the
    row that describes it. In such a restored cluster the row has RV(point.status=pending), because the LSN is written
    by a later transaction.
  - PostgreSQL recovery stops at the B(first) restore point of a given name. A name already in the ledger is therefore
    never created again; the module returns the existing record with C(changed=false).
  - With O(switch_wal) and O(wait_archived) the module switches to a new WAL segment and waits until
    C(pg_stat_archiver) shows the point's segment archived; only then is the point durable off the server.
    A failing or stalled archiver fails the task with the archiver's last error.
  - M(failsafe.recovery.pg_restore_point_info) lists the ledger without changing anything.
  - Refuses on a standby, when the login role lacks EXECUTE on C(pg_create_restore_point) (or C(pg_switch_wal) with
    O(switch_wal=true)), and when archiving is off but O(wait_archived=true). All of this is checked before anything
    is written.
author:
  - failsafe.recovery contributors (@failsafe-recovery)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - failsafe.recovery.postgres
attributes:
  check_mode:
    support: full
    details:
      - Runs every preflight check (standby, privileges, archiving, ledger) and predicts whether the point would be
        created, without writing to the server.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details:
      - Connects to PostgreSQL over the network or a Unix socket from the host the task runs on.
  idempotent:
    description: When run again with the same arguments, the module changes nothing and returns C(changed=false).
    support: full
    details:
      - Keyed on O(name). A point that exists is never created again.
options:
  name:
    description:
      - Name of the restore point, 1 to 63 characters of letters, digits and the characters C(_), C(.), C(:), C(@),
        C(+) and C(-), starting with a letter or digit.
      - The point is created unless the ledger already holds this name.
    type: str
    required: true
  labels:
    description:
      - Free-form facts stored with the point, for example the deployment id and the git commit.
      - Only stored when the point is created; labels of an existing point are never changed (a warning says so
        when they differ).
    type: dict
    default: {}
  ledger_db:
    description:
      - Database holding the ledger table. Defaults to O(login_db), else C(postgres).
    type: str
  ledger_schema:
    description:
      - Schema of the ledger table C(restore_points). Schema and table are created when missing, which needs the
        CREATE privilege on O(ledger_db).
    type: str
    default: failsafe_recovery
  switch_wal:
    description:
      - Switch to a new WAL segment with C(pg_switch_wal()) after creating the point, so its segment is complete and
        can be archived at once instead of when it fills up or C(archive_timeout) of the server passes.
    type: bool
    default: true
  wait_archived:
    description:
      - Wait until C(pg_stat_archiver) shows the point's WAL segment (or a later one) archived.
      - When the wait times out the task fails, reporting the archiver's C(last_failed_wal) and C(last_failed_time).
        The point and its ledger row exist then; running the task again waits again without creating a second point.
    type: bool
    default: true
  archive_timeout:
    description:
      - Seconds to wait at most for the archiving with O(wait_archived=true).
    type: int
    default: 60
  poll_interval:
    description:
      - Seconds between two reads of C(pg_stat_archiver) while waiting.
    type: float
    default: 0.2
notes:
  - Creating a restore point needs a superuser, or EXECUTE on C(pg_catalog.pg_create_restore_point(text)) and, with
    O(switch_wal=true), on C(pg_catalog.pg_switch_wal()).
  - A ledger row with status C(pending) left by an interrupted run is completed by the next run with the same name.
    This is safe because every point of that name lies after the row's commit.
seealso:
  - module: failsafe.recovery.pg_restore_point_info
  - name: PostgreSQL backup control functions
    description: pg_create_restore_point, pg_switch_wal and pg_walfile_name.
    link: https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADMIN-BACKUP
  - name: pg_stat_archiver
    description: The archiver statistics this module waits on.
    link: https://www.postgresql.org/docs/current/monitoring-stats.html#MONITORING-PG-STAT-ARCHIVER-VIEW
"""

EXAMPLES = r"""
- name: Mark the database before deploying release 42
  failsafe.recovery.pg_restore_point:
    name: "pre_deploy_{{ deployment_id }}"
    labels:
      deployment_id: "{{ deployment_id }}"
      git_commit: "{{ git_commit }}"
    login_host: db1.example.com
    login_user: postgres
    login_password: "{{ vault_pg_password }}"
  register: restore_point

- name: Create the point without waiting for the archive (archiving is watched elsewhere)
  failsafe.recovery.pg_restore_point:
    name: before_schema_change
    wait_archived: false
    login_unix_socket: /var/run/postgresql

- name: Show where the point is
  ansible.builtin.debug:
    msg: "{{ restore_point.point.name }} at {{ restore_point.point.lsn }} in {{ restore_point.point.wal_file }}"
"""

RETURN = r"""
point:
  description:
    - The ledger record of the point. In check mode, for a point that does not exist yet, the prediction (only name,
      labels and database are known).
  returned: always
  type: dict
  contains:
    name:
      description: Name of the restore point.
      type: str
      sample: pre_deploy_42
    status:
      description:
        - V(pending) (row committed, point not created yet, or the row as seen in a cluster restored to the point),
          V(created) (point exists, segment not known to be archived) or V(archived) (segment archived).
      type: str
      sample: archived
    archived:
      description: Whether the point's WAL segment is known to be archived.
      type: bool
      sample: true
    lsn:
      description: WAL location returned by C(pg_create_restore_point()).
      type: str
      sample: 0/3000090
    timeline:
      description: Timeline the point was created on.
      type: int
      sample: 1
    wal_file:
      description: WAL segment file holding the point.
      type: str
      sample: "000000010000000000000003"
    labels:
      description: The labels stored with the point.
      type: dict
      sample: {"deployment_id": "42", "git_commit": "1a2b3c4"}
    created_at:
      description: When the ledger row was written (server time, ISO 8601).
      type: str
      sample: "2026-11-22T21:55:03.120211+00:00"
    created_by:
      description: Role that created the point.
      type: str
      sample: postgres
    archived_at:
      description: When the module saw the segment archived, or V(null).
      type: str
      sample: "2026-11-22T21:55:03.301532+00:00"
    system_identifier:
      description: Database system identifier of the cluster (C(pg_control_system())), to tell clusters apart.
      type: str
      sample: "7440123456789012345"
    database:
      description: Database that holds the ledger row.
      type: str
      sample: postgres
created:
  description: Whether this run created the point (in check mode, whether it would).
  returned: always
  type: bool
  sample: true
wal_switched:
  description: Whether this run switched to a new WAL segment.
  returned: when not in check mode
  type: bool
  sample: true
archiver:
  description: The row of C(pg_stat_archiver) last read.
  returned: when not in check mode
  type: dict
  sample:
    archived_count: 12
    last_archived_wal: "000000010000000000000003"
    last_archived_time: "2026-11-22T21:55:03.290000+00:00"
    failed_count: 0
    last_failed_wal: null
    last_failed_time: null
ledger:
  description: Where the ledger lives.
  returned: always
  type: dict
  sample: {"database": "postgres", "schema": "failsafe_recovery", "table": "restore_points"}
target:
  description: The server and database spoken to, as C(db@host:port).
  returned: always
  type: str
  sample: postgres@db1.example.com:5432
msg:
  description: What was done or would be done.
  returned: always
  type: str
  sample: created restore point 'pre_deploy_42' at 0/3000090
"""

from ansible_collections.failsafe.recovery.plugins.module_utils._base import FailsafeModule, postgres_argument_spec
from ansible_collections.failsafe.recovery.plugins.module_utils._postgres import run


def main():
    argument_spec = postgres_argument_spec()
    argument_spec.update(
        name=dict(type="str", required=True),
        labels=dict(type="dict", default={}),
        ledger_db=dict(type="str"),
        ledger_schema=dict(type="str", default="failsafe_recovery"),
        switch_wal=dict(type="bool", default=True),
        wait_archived=dict(type="bool", default=True),
        archive_timeout=dict(type="int", default=60),
        poll_interval=dict(type="float", default=0.2),
    )
    module = FailsafeModule(
        argument_spec=argument_spec,
        requires=("psycopg",),
    )
    run(module)


if __name__ == "__main__":
    main()
