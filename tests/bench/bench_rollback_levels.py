"""Benchmark rollback levels 1 and 2 in the sandbox (figures are printed, never asserted).

Level 1: playbooks/rollback_feature_flag.yml switching two flags off in a flagd file on localhost,
with a health gate against a real demo app, from ansible-playbook start to verified (exit).
Level 2: playbooks/rollback_config.yml restoring the demo app's JSON config from a
playbooks/pre_deploy.yml snapshot, validating it, reloading the app (SIGHUP) and gating until the
app serves the restored version. Targets from the issue: L1 <= 10 s, L2 <= 30 s.

Run: .venv/bin/python tests/bench/bench_rollback_levels.py   (about 1-2 minutes)
"""

import json
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "extensions"), str(ROOT / ".collections"), str(ROOT / "tests" / "bench")]

import yaml  # noqa: E402  pylint: disable=wrong-import-position

from figures import figure  # noqa: E402  pylint: disable=wrong-import-position
from sandbox import services  # noqa: E402  pylint: disable=wrong-import-position
from sandbox.runner import run_playbook  # noqa: E402  pylint: disable=wrong-import-position

PY = str(ROOT / ".venv" / "bin" / "python")
REPEATS = 3
BENCH = "rollback_levels"


def timed(playbook, inventory, extra_vars):
    start = time.monotonic()
    res = run_playbook(ROOT / "playbooks" / playbook, inventory=inventory, extra_vars=extra_vars)
    seconds = time.monotonic() - start
    if res.rc != 0:
        raise SystemExit("%s failed (rc=%s):\n%s" % (playbook, res.rc, res.stdout[-3000:]))
    return seconds


def main():
    base = pathlib.Path(tempfile.mkdtemp(prefix="bench-rollback-levels-"))
    app = services.DemoApp(base, "benchapp", "v1")
    try:
        app.up()
        inv = base / "inventory.yml"
        inv.write_text(yaml.safe_dump({"all": {"children": {"app": {"hosts": {"app1": {
            "ansible_connection": "local", "ansible_python_interpreter": PY}}}}}}))
        gate = [{"name": "app", "type": "http", "url": app.url + "/health"}]

        # level 1
        flag_file = base / "flags.json"
        level1 = []
        for _repeat in range(REPEATS):
            flag_file.write_text(json.dumps({"flags": {
                "new-checkout": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
                "banner": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on",
                           "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "on", "off"]}}}}))
            level1.append(timed("rollback_feature_flag.yml", inv, {
                "rollback_feature_flag_flags": ["new-checkout", "banner"],
                "rollback_feature_flag_flagd_file": str(flag_file),
                "rollback_feature_flag_health_checks": gate, "rollback_feature_flag_health_interval": 0.2}))
        figure(BENCH, "L1 flag rollback, start to verified (median of %d)" % REPEATS,
               round(statistics.median(level1), 2), "s")
        figure(BENCH, "L1 target", 10, "s")

        # level 2
        records = base / "deployments"
        cfg = pathlib.Path(app.config_file)
        level2, snapshots = [], []
        for n in range(REPEATS):
            cfg.write_text(json.dumps({"version": "good%d" % n}) + "\n")
            snapshots.append(timed("pre_deploy.yml", inv, {
                "deploy_snapshot_release": "bad%d" % n, "deploy_snapshot_records_dir": str(records),
                "deploy_snapshot_config_files": [str(cfg)]}))
            cfg.write_text(json.dumps({"version": "bad%d" % n, "error_rate": 50}) + "\n")
            app.reload()
            level2.append(timed("rollback_config.yml", inv, {
                "rollback_config_records_dir": str(records),
                "rollback_config_validate": {str(cfg): PY + " -m json.tool %s"},
                "rollback_config_reload_command": "kill -HUP %d" % app.pid,
                "rollback_config_health_checks": [dict(gate[0], json_query="version", expected="good%d" % n)],
                "rollback_config_health_interval": 0.2}))
            if app.current_version() != "good%d" % n:
                raise SystemExit("level 2 rollback did not restore good%d" % n)
        figure(BENCH, "pre_deploy snapshot of one host (median of %d)" % REPEATS,
               round(statistics.median(snapshots), 2), "s")
        figure(BENCH, "L2 config rollback, start to verified (median of %d)" % REPEATS,
               round(statistics.median(level2), 2), "s")
        figure(BENCH, "L2 target", 30, "s")
    finally:
        app.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
