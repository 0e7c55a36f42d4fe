#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_restore_point_info
short_description: Read the PostgreSQL restore-point ledger written by pg_restore_point
version_added: 0.1.0
description:
  - Returns the restore points recorded by M(failsafe.recovery.pg_restore_point) (all of them, or only O(name)),
    with LSN, timeline, WAL file, labels and whether the point's WAL segment is known to be archived, plus the
    server's C(pg_stat_archiver) row.
  - Read-only. A missing ledger is not an error; RV(ledger_exists) is then V(false) and RV(points) empty.
  - Works on a primary and on a standby (the ledger replicates with the cluster).
author:
  - failsafe.recovery contributors (@failsafe-recovery)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - failsafe.recovery.postgres
attributes:
  check_mode:
    support: full
    details:
      - The module never writes; it runs the same in check mode.
  diff_mode:
    support: N/A
    details:
      - The module never changes anything.
  platform:
    platforms: posix
    details:
      - Connects to PostgreSQL over the network or a Unix socket from the host the task runs on.
options:
  name:
    description:
      - Only return the restore point of this name. RV(point) is V(null) when the ledger does not hold it.
    type: str
  ledger_db:
    description:
      - Database holding the ledger table. Defaults to O(login_db), else C(postgres).
    type: str
  ledger_schema:
    description:
      - Schema of the ledger table C(restore_points).
    type: str
    default: failsafe_recovery
seealso:
  - module: failsafe.recovery.pg_restore_point
"""

EXAMPLES = r"""
- name: Read the ledger
  failsafe.recovery.pg_restore_point_info:
    login_host: db1.example.com
  register: ledger

- name: Fail unless the point of this deployment is archived
  failsafe.recovery.pg_restore_point_info:
    name: "pre_deploy_{{ deployment_id }}"
    login_host: db1.example.com
  register: pre_deploy
  failed_when: not (pre_deploy.point and pre_deploy.point.archived)

- name: Names of every archived point
  ansible.builtin.debug:
    msg: "{{ ledger.points | selectattr('archived') | map(attribute='name') | list }}"
"""

RETURN = r"""
points:
  description: Ledger records, oldest first. With O(name), at most that one record.
  returned: always
  type: list
  elements: dict
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
      description: WAL location of the point, or V(null) while V(pending).
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
      sample: {"deployment_id": "42"}
    created_at:
      description: When the ledger row was written (server time, ISO 8601).
      type: str
      sample: "2026-11-22T21:55:03.120211+00:00"
    created_by:
      description: Role that created the point.
      type: str
      sample: postgres
    archived_at:
      description: When the segment was seen archived, or V(null).
      type: str
      sample: "2026-11-22T21:55:03.301532+00:00"
    system_identifier:
      description: Database system identifier of the cluster the point was created on.
      type: str
      sample: "7440123456789012345"
    database:
      description: Database that holds the ledger row.
      type: str
      sample: postgres
point:
  description: With O(name), the record of that point (same fields as RV(points)) or V(null); without O(name), V(null).
  returned: always
  type: dict
  sample: {"name": "pre_deploy_42", "status": "archived", "lsn": "0/3000090", "timeline": 1}
ledger_exists:
  description: Whether the ledger table exists.
  returned: always
  type: bool
  sample: true
ledger:
  description: Where the ledger lives.
  returned: always
  type: dict
  sample: {"database": "postgres", "schema": "failsafe_recovery", "table": "restore_points"}
archiver:
  description: The server's C(pg_stat_archiver) row.
  returned: always
  type: dict
  sample: {"archived_count": 12, "last_archived_wal": "000000010000000000000003", "failed_count": 0}
target:
  description: The server and database spoken to, as C(db@host:port).
  returned: always
  type: str
  sample: postgres@db1.example.com:5432
"""

from ansible_collections.failsafe.recovery.plugins.module_utils._base import FailsafeModule, postgres_argument_spec
from ansible_collections.failsafe.recovery.plugins.module_utils._postgres import run_info


def main():
    argument_spec = postgres_argument_spec()
    argument_spec.update(
        name=dict(type="str"),
        ledger_db=dict(type="str"),
        ledger_schema=dict(type="str", default="failsafe_recovery"),
    )
    module = FailsafeModule(argument_spec=argument_spec, requires=("psycopg",))
    run_info(module)


if __name__ == "__main__":
    main()
