# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: journal
type: notification
short_description: Append one timing record per task result to the open incident journal
version_added: 0.1.0
description:
  - Once an incident journal is open, appends one JSON line per task result to it - task name, action, role,
    play, host (and delegated host), status (ok, failed, skipped, unreachable), changed, start, end, duration in
    seconds, actor and incident id. So every role run during an incident leaves its timings in the journal without
    writing them by hand.
  - It learns the journal from the facts C(incident_journal_path), C(incident_id) and C(incident_actor) that
    the C(failsafe.recovery.incident) role sets when it opens an incident (module
    M(failsafe.recovery.incident_journal) with C(action=open)), or from O(journal_path).
  - It never writes module arguments or results. Only a fixed set of fields is written; for a failed task the
    first 300 characters of C(msg), unless the task has C(no_log) (then the message is C(censored)).
  - The actor is C(awx_user_name) (or C(tower_user_name)) from the extra variables AWX passes, else the
    C(incident_actor) fact, else O(actor), else the local user.
  - Enable it in C(ansible.cfg) with C(callbacks_enabled = failsafe.recovery.journal) under C([defaults]), or with
    the environment variable C(ANSIBLE_CALLBACKS_ENABLED=failsafe.recovery.journal) (for AWX, set it in the job
    template's environment or the execution environment).
requirements:
  - Enabled in C(callbacks_enabled) (see the description).
options:
  journal_path:
    description:
      - Journal to write from the first task on, before any incident is opened. Normally unset - the incident role
        tells the plugin which journal to use.
    type: path
    env:
      - name: FAILSAFE_INCIDENT_JOURNAL
    ini:
      - section: callback_failsafe_journal
        key: journal_path
  actor:
    description:
      - Actor to record when neither AWX nor the incident role name one.
    type: str
    env:
      - name: FAILSAFE_INCIDENT_ACTOR
    ini:
      - section: callback_failsafe_journal
        key: actor
"""

import getpass
import os
import time

from ansible.plugins.callback import CallbackBase

from ansible_collections.failsafe.recovery.plugins.module_utils._journal import append, iso, make_record

MSG_LIMIT = 300


class CallbackModule(CallbackBase):
    """Write task timings (never arguments or results) into the incident journal."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "failsafe.recovery.journal"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None):
        super().__init__(display=display)
        self.path = None
        self.incident = None
        self.actor = None
        self.awx_actor = None
        self.play = None
        self.task_started = {}
        self.host_started = {}
        self.write_errors = 0

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        self.path = self.get_option("journal_path") or None
        self.actor = self.get_option("actor") or None

    # -- who -------------------------------------------------------------
    def _actor(self):
        if self.awx_actor:
            return self.awx_actor
        if self.actor:
            return self.actor
        try:
            return getpass.getuser()
        except Exception:  # pylint: disable=broad-except
            return "unknown"

    def v2_playbook_on_play_start(self, play):
        self.play = play.get_name()
        try:
            extra = play.get_variable_manager().extra_vars
        except AttributeError:
            extra = {}
        for name in ("awx_user_name", "tower_user_name"):
            if extra.get(name):
                self.awx_actor = str(extra[name])
                break

    # -- when ------------------------------------------------------------
    def v2_playbook_on_task_start(self, task, is_conditional):
        self.task_started[task._uuid] = time.time()

    def v2_playbook_on_handler_task_start(self, task):
        self.task_started[task._uuid] = time.time()

    def v2_runner_on_start(self, host, task):
        self.host_started[(host.get_name(), task._uuid)] = time.time()

    # -- what ------------------------------------------------------------
    def _learn(self, result):
        facts = result._result.get("ansible_facts") or {}
        if not isinstance(facts, dict):
            return
        path = facts.get("incident_journal_path")
        if path:
            self.path = str(path)
            self.incident = facts.get("incident_id") or self.incident
            if facts.get("incident_actor") and not self.actor:
                self.actor = str(facts["incident_actor"])

    def _record(self, result, status, ignored=False):
        self._learn(result)
        if not self.path or not os.path.exists(self.path):
            return  # no incident open (or a check-mode run that did not create the journal)
        task = result._task
        host = result._host.get_name()
        end = time.time()
        start = self.host_started.pop((host, task._uuid), None) or self.task_started.get(task._uuid) or end
        res = result._result if isinstance(result._result, dict) else {}
        no_log = bool(task.no_log) or bool(res.get("_ansible_no_log")) or "censored" in res
        fields = dict(
            task=task.get_name(),
            action=task.action,
            role=task._role.get_name() if task._role else None,
            play=self.play,
            host=host,
            status=status,
            changed=bool(res.get("changed", False)),
            start=iso(start),
            end=iso(end),
            duration=round(end - start, 3),
        )
        delegated = (res.get("_ansible_delegated_vars") or {}).get("ansible_delegated_host")
        if delegated and delegated != host:
            fields["delegated_to"] = delegated
        if ignored:
            fields["ignored"] = True
        if no_log:
            fields["no_log"] = True
        if status in ("failed", "unreachable"):
            if no_log:
                fields["msg"] = "censored (no_log)"
            elif isinstance(res.get("msg"), str):
                fields["msg"] = res["msg"][:MSG_LIMIT]
        record = make_record("task", incident=self.incident, actor=self._actor(), now=end, **fields)
        try:
            append(self.path, record)
        except (IOError, OSError) as exc:
            self.write_errors += 1
            if self.write_errors == 1:
                self._display.warning("failsafe.recovery.journal: cannot append to %s: %s" % (self.path, exc))

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed", ignored=ignore_errors)

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        if not self.path or not os.path.exists(self.path):
            return
        hosts = {}
        for host in sorted(stats.processed.keys()):
            hosts[host] = stats.summarize(host)
        try:
            append(self.path, make_record("recap", incident=self.incident, actor=self._actor(), hosts=hosts))
        except (IOError, OSError) as exc:
            self._display.warning("failsafe.recovery.journal: cannot append to %s: %s" % (self.path, exc))
