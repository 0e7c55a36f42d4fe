# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the deploy_snapshot, rollback_feature_flag and rollback_config roles.

The logic lives in module_utils/_deploy_records.py and module_utils/_deploy_flagd.py
(unit tested there); these wrappers turn ValueError into AnsibleFilterError.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.failsafe.recovery.plugins.module_utils import _deploy_flagd
from ansible_collections.failsafe.recovery.plugins.module_utils import _deploy_records


def _wrap(func, name):
    def filter_func(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (ValueError, TypeError) as exc:
            raise AnsibleFilterError("failsafe.recovery.%s: %s" % (name, exc)) from exc
    filter_func.__name__ = name
    filter_func.__doc__ = func.__doc__
    return filter_func


class FilterModule:
    """Deployment record index and flagd helpers."""

    def filters(self):
        return {
            "deploy_id": _wrap(_deploy_records.deployment_id, "deploy_id"),
            "deploy_index_update": _wrap(_deploy_records.update_index, "deploy_index_update"),
            "deploy_record_select": _wrap(_deploy_records.select_record, "deploy_record_select"),
            "deploy_previous_release": _wrap(_deploy_records.previous_release, "deploy_previous_release"),
            "flagd_disable": _wrap(_deploy_flagd.disable, "flagd_disable"),
            "flagd_evaluate": _wrap(_deploy_flagd.evaluate, "flagd_evaluate"),
            "flagd_not_off": _wrap(_deploy_flagd.not_off, "flagd_not_off"),
        }
