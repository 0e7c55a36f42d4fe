"""Run failsafe.recovery modules and playbooks for real from Python (tests, benchmarks, drills).

Everything goes through ansible-playbook with the project's ansible.cfg and the
json stdout callback, so what is exercised is exactly what an operator runs.
"""

import json
import os
import pathlib
import subprocess
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def ansible_env(extra=None):
    """Environment for ansible-* commands run from the checkout."""
    env = dict(os.environ)
    venv_bin = ROOT / ".venv" / "bin"
    env["PATH"] = "%s:%s" % (venv_bin, env.get("PATH", ""))
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT / ".collections")
    env.setdefault("ANSIBLE_LOCAL_TEMP", str(ROOT / ".cache" / "ansible-tmp"))
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env.update(extra or {})
    return env


class PlaybookResult:
    """Outcome of one ansible-playbook run with the json callback."""

    def __init__(self, proc):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        try:
            self.data = json.loads(proc.stdout)
        except ValueError:
            self.data = {}

    def task_results(self, host="localhost"):
        """[(task name, result dict)] for every task run on ``host``, in order."""
        out = []
        for play in self.data.get("plays", []):
            for task in play.get("tasks", []):
                result = task.get("hosts", {}).get(host)
                if result is not None:
                    out.append((task["task"]["name"], result))
        return out

    def result(self, name, host="localhost"):
        """The result of the last task called ``name`` (role tasks: ``<role> : name`` matches too)."""
        found = [r for n, r in self.task_results(host) if n == name or n.endswith(" : " + name)]
        if not found:
            raise AssertionError("task %r did not run on %s; rc=%s\n%s\n%s"
                                 % (name, host, self.rc, self.stdout[-4000:], self.stderr[-4000:]))
        return found[-1]

    @property
    def stats(self):
        return self.data.get("stats", {})


def run_playbook(playbook, inventory=None, extra_vars=None, check=False, diff=False,
                 limit=None, env=None, timeout=900, extra_args=()):
    """Run ``playbook`` (path or FQCN) and return a PlaybookResult."""
    cmd = ["ansible-playbook", str(playbook)]
    if inventory:
        cmd += ["-i", str(inventory)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if limit:
        cmd += ["--limit", limit]
    cmd += list(extra_args)
    run_env = ansible_env({"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
                           "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"})
    run_env.update(env or {})
    proc = subprocess.run(cmd, cwd=str(ROOT), env=run_env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    return PlaybookResult(proc)


def _run_local_play(play, check=False, diff=False, env=None, timeout=900):
    """Run a play (a list) on localhost from a temporary file under .cache; a PlaybookResult."""
    tmpdir = ROOT / ".cache"
    tmpdir.mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=str(tmpdir), delete=False) as handle:
        yaml.safe_dump(play, handle)
        path = handle.name
    try:
        return run_playbook(path, inventory="localhost,", check=check, diff=diff, env=env, timeout=timeout)
    finally:
        os.unlink(path)


def _local_play(name, tasks, play_vars=None):
    return [{
        "name": name,
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": dict(play_vars or {}, ansible_python_interpreter=str(ROOT / ".venv" / "bin" / "python")),
        "tasks": tasks,
    }]


def run_module(module, args=None, check=False, diff=False, env=None, timeout=600, vars=None):
    """Run one module on localhost and return its result dict.

    ``module`` is a short name of this collection (``health_gate``) or an FQCN.
    The result carries ``failed``/``changed`` as Ansible reports them, plus
    ``_rc`` (the ansible-playbook exit code).
    """
    fqcn = module if "." in module else "failsafe.recovery." + module
    play = _local_play("run " + fqcn, [{"name": "module under test", fqcn: args or {}}], vars)
    res = _run_local_play(play, check=check, diff=diff, env=env, timeout=timeout)
    result = dict(res.result("module under test"))
    result["_rc"] = res.rc
    return result


def run_role(role, role_vars=None, show=None, check=False, env=None, timeout=900):
    """Run one role on localhost inside a block whose ``always`` shows ``show`` (a dict of Jinja expressions, such
    as the role's result fact, read even when the role failed). Returns (PlaybookResult, the dict shown).

    ``role`` is a short name of this collection (``dr_complete_rebuild``) or an FQCN.
    """
    fqcn = role if "." in role else "failsafe.recovery." + role
    play = _local_play("run " + fqcn, [{
        "name": "role under test",
        "block": [{"name": "run the role", "ansible.builtin.include_role": {"name": fqcn}, "vars": role_vars or {}}],
        "always": [{"name": "show the outcome", "ansible.builtin.debug": {"msg": show or {}}}],
    }])
    res = _run_local_play(play, check=check, env=env, timeout=timeout)
    return res, res.result("show the outcome")["msg"]
