"""rollback_code (level 3): time from start to verified over 1, 5 and 10 local hosts.

Each "host" is an inventory alias on localhost (``ansible_connection: local``) with its own
ansistrano-style releases directory (v1 good, v2 bad, ``current`` -> v2) and its own demo app
started from ``current``. The figure is the wall time of ``playbooks/rollback_code.yml`` (symlink
strategy, restart by SIGHUP, a health gate per host; batch size BENCH_RC_BATCH, default 5, no delay)
plus the check, after the run, that every app serves v1. The issue's sandbox target is <= 60 s for
10 hosts. Prints FIGURE lines; asserts nothing.
"""

import os
import pathlib
import shutil
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for extra in (str(HERE), str(ROOT / "extensions"), str(ROOT / ".collections")):
    if extra not in sys.path:
        sys.path.insert(0, extra)

import yaml  # noqa: E402  pylint: disable=wrong-import-position

from figures import figure  # noqa: E402  pylint: disable=wrong-import-position
from sandbox import runner, services  # noqa: E402  pylint: disable=wrong-import-position

BENCH = "rollback_code"
BATCH = int(os.environ.get("BENCH_RC_BATCH", "5"))
PY = str(ROOT / ".venv" / "bin" / "python")


def one_run(base, count):
    apps, hosts = [], {}
    try:
        for num in range(1, count + 1):
            name = "app%d" % num
            root = base / name
            services.layout_releases(root, current="v2")
            app = services.DemoApp(base / "run", name, release_dir=root / "current")
            app.up()
            apps.append(app)
            hosts[name] = {"ansible_connection": "local", "ansible_python_interpreter": PY, "ansible_pipelining": True,
                           "rollback_code_deploy_to": str(root),
                           "rollback_code_restart_command": "kill -HUP %d" % app.running_pid(),
                           "rollback_code_health_checks": [{"name": name, "type": "http", "url": app.url + "/health",
                                                            "json_query": "version", "expected": "v1"}]}
        inventory = base / "inventory.yml"
        inventory.write_text(yaml.safe_dump({"all": {"children": {"app": {"hosts": hosts}}}}))
        start = time.monotonic()
        res = runner.run_playbook(ROOT / "playbooks" / "rollback_code.yml", inventory=inventory, extra_vars={
            "rollback_code_batch_size": BATCH, "rollback_code_records_dir": "",
            "rollback_code_health_interval": 0.2, "rollback_code_health_timeout": 30})
        if res.rc != 0:
            raise RuntimeError("rollback over %d hosts failed:\n%s" % (count, res.stdout[-3000:]))
        for app in apps:
            services.wait_until(lambda a=app: a.current_version() == "v1", 10, "%s serving v1" % app.name)
        return time.monotonic() - start
    finally:
        for app in apps:
            app.stop()


def main():
    print("load average before: %.2f %.2f %.2f" % os.getloadavg())
    for count in (1, 5, 10):
        base = pathlib.Path(tempfile.mkdtemp(prefix="bench-rollback-code-"))
        try:
            seconds = one_run(base, count)
        finally:
            shutil.rmtree(base, ignore_errors=True)
        print("%2d hosts, batch %d: %.1f s from start to verified" % (count, BATCH, seconds))
        figure(BENCH, "start_to_verified_%d_hosts" % count, round(seconds, 2), "s")


if __name__ == "__main__":
    main()
