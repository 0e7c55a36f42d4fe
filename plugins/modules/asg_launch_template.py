#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: asg_launch_template
short_description: Point an Auto Scaling group at a launch template version and replace its instances
version_added: 0.1.0
description:
  - Points an EC2 Auto Scaling group at one numbered version of a launch template (by default the version
    before the one it runs, the code rollback of DR plan 002) and replaces the instances that do not run it,
    by terminating them in batches (O(replace=rolling_replace)) or with an instance refresh
    (O(replace=instance_refresh)).
  - Only the group's C(LaunchTemplate) changes (one C(UpdateAutoScalingGroup) call); sizes, health checks,
    suspended processes and tags are left as they are.
  - The version an instance runs is read from the C(aws:ec2launchtemplate:version) tag EC2 puts on instances
    launched from a template; C($Latest) and C($Default) are resolved to numbers. The group is pinned to the
    number, unless O(version) itself is C($Latest) or C($Default) (so feeding RV(before) back restores the group
    exactly).
  - Already on the target version with every instance on it is C(changed=false). After a successful
    replacement the group is tagged C(failsafe.recovery:rollback_code) (O(marker)), so that running
    O(version=previous) again is a no-op.
  - Check mode returns what would change (the version and the outdated instances) and changes nothing.
  - On failure the result names the O(name) and the C(step) that failed; the module does not point the group
    back itself (the caller does, with RV(before), O(replace=none)).
author:
  - failsafe.recovery contributors (@failsafe-recovery)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - failsafe.recovery.aws
  - failsafe.recovery.wait
attributes:
  check_mode:
    support: full
    details: Reads the group, the template and the instances, returns the prediction, changes nothing.
  diff_mode:
    support: full
    details: The launch template version of the group and the number of outdated instances, before and after.
  idempotent:
    description: When run again with the same arguments, the module changes nothing and returns C(changed=false).
    support: partial
    details:
      - A named O(version) is always idempotent. O(version=previous) is idempotent through the marker tag, which
        is written only after a verified replacement (O(wait=true), O(marker=true)); without it a second run
        goes one version further back.
  platform:
    platforms: aws
requirements:
  - boto3
options:
  name:
    description: Name of the Auto Scaling group.
    type: str
    required: true
  launch_template:
    description:
      - The launch template to point the group at, by C(id) or C(name). Empty means the group's own template.
      - With another template than the group's, O(version) must name a version.
    type: dict
    default: {}
    suboptions:
      id:
        description: Launch template id.
        type: str
      name:
        description: Launch template name.
        type: str
  version:
    description:
      - The version to point the group at, a number, C($Latest) or C($Default) (resolved to their number), or
        C(previous), the numbered version below the one the group runs (or the version of an earlier rollback
        when the group still runs it).
    type: str
    default: previous
  replace:
    description:
      - How instances not on the target version are replaced.
      - C(rolling_replace) terminates them O(batch_size) at a time without decrementing the desired capacity and
        waits until the group has its desired capacity of InService, Healthy instances again (the capacity is
        O(batch_size) lower during each batch).
      - C(instance_refresh) starts an instance refresh (C(SkipMatching), O(min_healthy_percentage)) and waits
        for it to succeed; on a timeout the refresh is cancelled.
      - C(none) only points the group.
    type: str
    choices: [rolling_replace, instance_refresh, none]
    default: rolling_replace
  batch_size:
    description: O(replace=rolling_replace), instances terminated at a time.
    type: int
    default: 1
  min_healthy_percentage:
    description: O(replace=instance_refresh), the C(MinHealthyPercentage) of the refresh.
    type: int
    default: 90
  default_version:
    description:
      - Also make this version the default version of the launch template, before the group moves; C(target)
        means the target version. Empty leaves the default version as it is.
      - Useful when other consumers (or the group itself, on C($Default)) launch the template's default version.
    type: str
    default: ""
  marker:
    description: After a successful replacement, tag the group with the rollback (see the description).
    type: bool
    default: true
notes:
  - Without O(wait) the replacement is only started; the final check and the marker tag are skipped.
  - Instances already replaced when a later batch fails keep the target version.
"""

EXAMPLES = r"""
- name: Roll the web group back to the previous launch template version
  failsafe.recovery.asg_launch_template:
    name: web
    replace: instance_refresh
    min_healthy_percentage: 90
    wait_timeout: 1800
  register: asg_rollback

- name: Point the group back where it was (no replacement)
  failsafe.recovery.asg_launch_template:
    name: web
    launch_template:
      id: "{{ asg_rollback.before.launch_template_id }}"
    version: "{{ asg_rollback.before.version }}"
    replace: none
"""

RETURN = r"""
name:
  description: The Auto Scaling group.
  returned: always
  type: str
before:
  description: The group's launch template before the run.
  returned: success
  type: dict
  contains:
    launch_template_id:
      description: Template id.
      type: str
    launch_template_name:
      description: Template name.
      type: str
    version:
      description: The version as the group named it (a number, C($Latest) or C($Default)).
      type: str
    version_number:
      description: That version as a number (null when the group used another template).
      type: int
    default_version:
      description: The default version of the template.
      type: int
after:
  description: The group's launch template after the run (or in check mode, what it would be).
  returned: success
  type: dict
target_version:
  description: The version rolled back to.
  returned: success
  type: int
  sample: 1
target_source:
  description: Where the target came from, C(named version), C(version before N) or C(rolled back already).
  returned: success
  type: str
versions:
  description: Version numbers of the template.
  returned: success
  type: list
  elements: int
group_changed:
  description: Whether the group was (or in check mode would be) pointed at another version.
  returned: success
  type: bool
default_changed:
  description: Whether the default version of the template was (or in check mode would be) changed.
  returned: success
  type: bool
outdated:
  description: Instances not on the target version when the run started (to be replaced).
  returned: success
  type: list
  elements: str
replaced:
  description: Instances terminated by O(replace=rolling_replace).
  returned: success
  type: list
  elements: str
instance_refresh_id:
  description: Id of the instance refresh started.
  returned: when an instance refresh was started
  type: str
instances:
  description: Every instance of the group at the end, with C(instance_id), C(launch_template_id), C(version),
    C(lifecycle_state), C(health_status). On a wait timeout, the last observed state.
  returned: success and on failure of a wait
  type: list
  elements: dict
step:
  description: On failure, what was being done.
  returned: failure
  type: str
  sample: replace batch 1 of 3 (i-0123)
"""

from ansible_collections.failsafe.recovery.plugins.module_utils._base import (
    FailsafeModule,
    aws_argument_spec,
    wait_argument_spec,
)
from ansible_collections.failsafe.recovery.plugins.module_utils import _asg


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        launch_template=dict(type="dict", default={}, options=dict(
            id=dict(type="str"),
            name=dict(type="str"),
        ), mutually_exclusive=[("id", "name")]),
        version=dict(type="str", default="previous"),
        replace=dict(type="str", choices=["rolling_replace", "instance_refresh", "none"], default="rolling_replace"),
        batch_size=dict(type="int", default=1),
        min_healthy_percentage=dict(type="int", default=90),
        default_version=dict(type="str", default=""),
        marker=dict(type="bool", default=True),
    )
    argument_spec.update(aws_argument_spec())
    argument_spec.update(wait_argument_spec())
    module = FailsafeModule(argument_spec, requires=["boto3"])
    _asg.run_module(module)


if __name__ == "__main__":
    main()
