#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: incident_lock
short_description: Take or release the one-rollback-per-environment incident lock
version_added: 0.1.0
description:
  - Takes an exclusive lock file (created with C(O_CREAT|O_EXCL), mode C(0600)) so that only one rollback or
    failover runs per environment at a time. The file records the holder (incident id), the actor, the host, the pid
    of the C(ansible-playbook) process, since when, and the TTL.
  - A second run is refused with a message naming the holder, its actor and since when.
  - A stale lock is recovered with a warning and taken when its TTL has passed, or it was taken on this host by an
    C(ansible-playbook) process that no longer exists. A lock file that is not a lock record is stale too.
  - Taking a lock the same holder already holds is C(changed=false). Only the holder releases the lock, unless
    O(force=true).
author:
  - failsafe.recovery contributors (@failsafe-recovery)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Reads the lock and predicts whether it would be taken, recovered or released; nothing is written.
        A live lock held by someone else still fails the task, as it would for real.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details:
      - The holder pid check needs C(/proc) (Linux). Elsewhere, and on hosts other than the controller, only the TTL
        makes a lock stale.
  idempotent:
    description: When run again with the same arguments, the module changes nothing and returns C(changed=false).
    support: full
    details:
      - Keyed on O(holder). Taking a lock you hold, or releasing a lock that is gone, changes nothing.
options:
  path:
    description:
      - Path of the lock file. Its directory is created (mode C(0700)) when missing.
      - Use one path per environment, for example C(/var/lib/failsafe/incidents/production.lock).
    type: path
    required: true
  state:
    description:
      - V(present) takes the lock, V(absent) releases it.
    type: str
    choices: [present, absent]
    default: present
  holder:
    description:
      - Who holds the lock, normally the incident id. Releasing needs the same value.
    type: str
    required: true
  actor:
    description:
      - The person or system behind the run, written into the lock so a refused run can name them.
    type: str
    default: unknown
  ttl:
    description:
      - Seconds after which the lock is stale whatever its holder's state. V(0) means no TTL (only a vanished holder
        process makes it stale).
    type: int
    default: 7200
  pid:
    description:
      - Process id to record as the holder's process.
      - By default the module looks up the C(ansible-playbook) process it runs under (on the controller); when there
        is none the lock records no pid and only the TTL applies.
    type: int
  force:
    description:
      - With O(state=absent), release the lock even if someone else holds it (a warning names them).
    type: bool
    default: false
notes:
  - The role C(failsafe.recovery.incident) takes and releases this lock for you; call the module directly only when
    you build your own orchestration.
seealso:
  - module: failsafe.recovery.incident_journal
  - module: failsafe.recovery.incident_report
"""

EXAMPLES = r"""
- name: Take the production incident lock
  failsafe.recovery.incident_lock:
    path: /var/lib/failsafe/incidents/production.lock
    holder: "{{ incident_id }}"
    actor: "{{ awx_user_name | default('operator') }}"
    ttl: 7200

- name: Release it
  failsafe.recovery.incident_lock:
    path: /var/lib/failsafe/incidents/production.lock
    holder: "{{ incident_id }}"
    state: absent
"""

RETURN = r"""
lock:
  description: The lock record now in place (state=present) or the one released (state=absent; null when none).
  returned: always
  type: dict
  sample:
    holder: production-20261122T215339Z
    actor: alice
    host: bastion1
    pid: 4242
    since: "2026-11-22T21:53:39.120000+00:00"
    since_epoch: 1795384419.12
    ttl: 7200
    expires: "2026-11-22T23:53:39.120000+00:00"
    version: 1
recovered:
  description: The stale lock record that was recovered, if any.
  returned: when state=present and a stale lock was recovered
  type: dict
holder:
  description: On refusal, the holder of the live lock.
  returned: failure
  type: str
since:
  description: On refusal, since when the live lock is held.
  returned: failure
  type: str
"""

from ansible_collections.failsafe.recovery.plugins.module_utils._base import FailsafeModule
from ansible_collections.failsafe.recovery.plugins.module_utils import _lock


def main():
    module = FailsafeModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            holder=dict(type="str", required=True),
            actor=dict(type="str", default="unknown"),
            ttl=dict(type="int", default=7200),
            pid=dict(type="int"),
            force=dict(type="bool", default=False),
        ),
    )
    params = module.params
    if params["ttl"] < 0:
        module.fail("ttl must be 0 (no TTL) or a positive number of seconds, not %d." % params["ttl"])
    try:
        if params["state"] == "present":
            pid = params["pid"] if params["pid"] is not None else _lock.controller_pid()
            result = _lock.acquire(params["path"], params["holder"], params["actor"], params["ttl"],
                                   check_mode=module.check_mode, pid=pid)
        else:
            result = _lock.release(params["path"], params["holder"], check_mode=module.check_mode,
                                   force=params["force"])
    except _lock.LockError as exc:
        module.fail(str(exc), **exc.facts)
    except (IOError, OSError) as exc:
        module.fail("Cannot use lock file %s: %s. Check that its directory exists and is writable."
                    % (params["path"], exc))
    for warning in result.pop("warnings"):
        module.warn(warning)
    if result.get("recovered") is None:
        result.pop("recovered", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
