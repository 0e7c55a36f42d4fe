# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The journal callback writes only whitelisted fields, and nothing before an incident is open."""

from __future__ import annotations

import json

from ansible_collections.failsafe.recovery.plugins.callback.journal import CallbackModule


class _Host:
    def __init__(self, name):
        self.name = name

    def get_name(self):
        return self.name


class _Task:
    def __init__(self, name, action, no_log=False):
        self._uuid = name
        self._role = None
        self.name = name
        self.action = action
        self.no_log = no_log

    def get_name(self):
        return self.name


class _Result:
    def __init__(self, task, result, host="web1"):
        self._task = task
        self._host = _Host(host)
        self._result = result


def _plugin(journal_path=None):
    # set_options() needs the plugin loader's config; the options are set as it would set them.
    plugin = CallbackModule()
    plugin.path = journal_path
    return plugin


def test_writes_only_after_open_and_only_whitelisted_fields(tmp_path):
    journal = tmp_path / "inc.jsonl"
    plugin = _plugin()
    secret = "pw-123-secret"
    before = _Task("before open", "ansible.builtin.command")
    plugin.v2_playbook_on_task_start(before, False)
    plugin.v2_runner_on_ok(_Result(before, {"changed": True, "cmd": "echo " + secret}))
    assert not journal.exists()

    journal.write_text("")
    opener = _Task("open", "failsafe.recovery.incident_journal")
    plugin.v2_runner_on_ok(_Result(opener, {"changed": True, "ansible_facts": {
        "incident_journal_path": str(journal), "incident_id": "inc-1", "incident_actor": "alice"}}))
    task = _Task("deploy", "ansible.builtin.shell")
    plugin.v2_playbook_on_task_start(task, False)
    plugin.v2_runner_on_failed(_Result(task, {"changed": False, "msg": "boom", "stdout": secret,
                                              "invocation": {"module_args": {"password": secret}}}))
    hidden = _Task("hidden", "ansible.builtin.uri", no_log=True)
    plugin.v2_runner_on_failed(_Result(hidden, {"censored": "the output has been hidden", "msg": secret}),
                               ignore_errors=True)
    skipped = _Task("skipped", "ansible.builtin.debug")
    plugin.v2_runner_on_skipped(_Result(skipped, {"skipped": True}))

    text = journal.read_text()
    assert secret not in text
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["task"] for r in records] == ["open", "deploy", "hidden", "skipped"]
    assert [r["status"] for r in records] == ["ok", "failed", "failed", "skipped"]
    assert records[1]["msg"] == "boom" and records[1]["actor"] == "alice" and records[1]["incident"] == "inc-1"
    assert records[2]["msg"] == "censored (no_log)" and records[2]["ignored"] is True and records[2]["no_log"] is True
    for record in records:
        assert set(record) <= {"ts", "epoch", "kind", "incident", "actor", "task", "action", "role", "play", "host",
                               "status", "changed", "start", "end", "duration", "delegated_to", "ignored", "no_log",
                               "msg"}
        assert record["duration"] >= 0


def test_awx_user_wins(tmp_path):
    journal = tmp_path / "inc.jsonl"
    journal.write_text("")
    plugin = _plugin(str(journal))

    class _Vars:
        extra_vars = {"awx_user_name": "awx-admin"}

    class _Play:
        def get_name(self):
            return "rollback"

        def get_variable_manager(self):
            return _Vars()

    plugin.v2_playbook_on_play_start(_Play())
    task = _Task("t", "ansible.builtin.ping")
    plugin.v2_runner_on_ok(_Result(task, {"changed": False}))
    record = json.loads(journal.read_text())
    assert record["actor"] == "awx-admin" and record["play"] == "rollback"
