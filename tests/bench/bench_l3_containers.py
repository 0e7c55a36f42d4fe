"""Level 3 (rollback_code, symlink) from start to verified over 1, 5 and 10 systemd containers (figures, not asserts).

For each fleet size N (BENCH_L3_HOSTS, default "1,5,10"), on a podman network of its own:
  1. N app containers + 1 lb container from the shared offline image (scripts/build_image.sh), booted with systemd
     as extensions/molecule/resources/create.yml does (``--systemd=always ... /sbin/init``, ``--stop-timeout=1``,
     wait for ``systemctl is-system-running --wait``); names ``fsr-bench-l3-<run id>-app<k>`` / ``-lb``, label
     ``failsafe.recovery.bench=l3`` (not the Molecule label: Molecule runs of other people remove those). The lb's
     :80 and every app's :8080 are published on 127.0.0.1 (free ports), so the health gates stay on 127.0.0.0/8.
  2. the rollback level Molecule scenarios' own prepare.yml (molecule/resources/rollback_levels, not a copy) with
     ansible-playbook against an inventory of these containers (groups app and lb, connection
     containers.podman.podman): demoapp v1 on every app host, HAProxy over every host of group app,
     failsafe.recovery.deploy_snapshot records v1, then the bad v2 (code, HAProxy configuration v2, flag on). Checked: through the lb every app host answers v2.
  3. LEVEL 3, timed from ansible-playbook start to its exit (every batch verified): playbooks/rollback_code.yml
     (serial = rollback_code_batch_size, any_errors_fatal) with the role vars of the rollback_code scenario's
     level-3 play (strategy symlink, deploy_to /opt/demoapp, the deployment records, service demoapp), batch size 1 for
     N=1 and ceil(N/3) otherwise (BENCH_L3_BATCH overrides), rollback_code_batch_delay BENCH_L3_DELAY (default 0 s),
     health gate per host (so per batch): that host's own published port answers version v1 and the lb's /health is
     200 (timeout BENCH_L3_GATE_TIMEOUT, default 30 s; interval 1 s, the role default). The scenario gates on
     "version v1 through the lb", which with N > 1 round-robin servers passes as soon as ANY server answers v1.
     Per-batch times come from the json callback (one play entry per batch).
  4. verified after the run (the bench fails, exit 1, when wrong): 4N requests through the lb (round robin) reach
     every app host and every answer is v1; every host's ``current`` links to releases/v1; the role changed every
     host.
  5. for N=1 only: the converge.yml plays "Level 1 - ..." of the rollback_feature_flag scenario and "Level 2 - ..."
     of the rollback_config scenario, loaded from those files and run one by one, each timed; checked: the flag file has
     new-checkout defaultVariant off with no targeting, and the lb answers with X-Config v1 (v2 before).
Containers and network are removed by name after each N and at exit. Timings are FIGURE lines, never asserted.

Run: .venv/bin/python tests/bench/bench_l3_containers.py   (about 20 minutes on 2 loaded cores, mostly
prepare.yml; needs root podman and the image of scripts/build_image.sh). BENCH_L3_HOSTS="1,5,10", BENCH_L3_BATCH
(fixed batch size), BENCH_L3_DELAY (seconds between batches), BENCH_L3_GATE_TIMEOUT.
`make bench` runs it with the others (tests/bench/run.py).

Measured 2026-11-23 04:24-04:43 UTC, defaults (batch sizes 1 / 2 / 4, no delay, gate timeout 30 s, forks 5), on a
2-core machine with 23 GB RAM, HEAVILY LOADED: other helpers' Molecule scenarios (database, dr_rebuild: 1-3 more
systemd containers) and tests ran at the same time, load average (1 min) 6.8 -> 15.5 during the run:
                                             N=1          N=5                  N=10
  containers start + systemd boot            1.9 s        5.2 s                10.7 s
  rollback_levels prepare.yml                94.3 s       197.3 s              358.6 s
  LEVEL 3, ansible-playbook start->verified  24.8 s       87.2 s               120.2 s
    batches (json callback)                  23.1         24.4 / 36.0 / 25.6   48.6 / 46.5 / 23.6 s
    health gates, summed over the batches    3.9 s        12.3 s               13.5 s
    ansible-playbook outside the batches     1.8 s        1.2 s                1.5 s
  load average (1 min) at L3 start / end     7.3 / 7.3    12.5 / 9.8           12.5 / 9.5
  LEVEL 1 rollback_feature_flag (converge)   16.8 s       -                    -
  LEVEL 2 rollback_config (converge)         23.6 s       -                    -
A batch costs about one sequence of the role's ~8 remote tasks, each a podman exec of 2-5 s at this load (restart
handler, rollback marker, start-limit reset, preflight reads); wider batches cost more per task on 2 cores (4 hosts
at a time: 47-49 s per batch, 2 at a time: 24-36 s). Level 3 grows with the number of batches, i.e. with N / batch size.
Two earlier N=1 runs at load 6-7: level 3 31.7 / 28.6 s, level 1 21.7 / 15.7 s, level 2 18.3 s.
N=1 alone at 04:44, load 3.1, no other container running: prepare 39.1 s, level 3 14.7 s (gate 2.9 s), level 1
9.5 s, level 2 10.1 s: the load above roughly doubles every figure.
"""

import datetime
import json
import math
import os
import pathlib
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
import uuid

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for extra in (str(HERE), str(ROOT / "extensions"), str(ROOT / ".collections")):
    if extra not in sys.path:
        sys.path.insert(0, extra)

import yaml  # noqa: E402  pylint: disable=wrong-import-position

from containers import CONTAINERS_CONF, image, load, podman  # noqa: E402  pylint: disable=wrong-import-position
from figures import figure  # noqa: E402  pylint: disable=wrong-import-position
from sandbox import services  # noqa: E402  pylint: disable=wrong-import-position
from sandbox.runner import run_playbook  # noqa: E402  pylint: disable=wrong-import-position

BENCH = "l3_containers"
MOLECULE = ROOT / "extensions" / "molecule"
SCENARIO = MOLECULE / "rollback_code"  # its vars/scenario.yml: nothing broken
PREPARE = MOLECULE / "resources" / "rollback_levels" / "prepare.yml"
HOSTS = [int(n) for n in os.environ.get("BENCH_L3_HOSTS", "1,5,10").split(",") if n.strip()]
FIXED_BATCH = int(os.environ.get("BENCH_L3_BATCH", "0"))
DELAY = int(os.environ.get("BENCH_L3_DELAY", "0"))
GATE_TIMEOUT = int(os.environ.get("BENCH_L3_GATE_TIMEOUT", "30"))
LABEL = "failsafe.recovery.bench=l3"
BOOT_TIMEOUT = 300
APP_ROOT = "/opt/demoapp"


def other_containers(mine):
    names = podman("ps", "--format", "{{.Names}}").stdout.split()
    return len([n for n in names if n not in mine])


def check(what, ok, detail=""):
    if not ok:
        raise SystemExit("WRONG: %s %s" % (what, detail))
    print("ok: %s" % what, flush=True)


def get(url, timeout=5):
    """(status, headers, json body) of a GET on 127.0.0.1."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # nosec - 127.0.0.1 only
        return resp.status, resp.headers, json.loads(resp.read().decode())


class Fleet:
    """N app containers and one lb container on a network of their own, removed by name."""

    def __init__(self, count, img, base):
        self.count = count
        self.image = img
        self.run_id = uuid.uuid4().hex[:6]
        self.prefix = "fsr-bench-l3-%s" % self.run_id
        self.network = self.prefix
        self.apps = ["%s-app%d" % (self.prefix, k) for k in range(1, count + 1)]
        self.lb = "%s-lb" % self.prefix
        self.ports = {}
        self.base = base / ("n%d" % count)
        self.base.mkdir()
        self.created = False

    @property
    def names(self):
        return self.apps + [self.lb]

    @property
    def lb_url(self):
        return "http://127.0.0.1:%d" % self.ports[self.lb]

    def up(self):
        self.created = True
        podman("network", "create", "--label", LABEL, self.network)
        for name in self.names:
            inner = 80 if name == self.lb else 8080
            self.ports[name] = services.free_port()
            podman("run", "-d", "--name", name, "--hostname", name, "--network", self.network, "--systemd=always",
                   "--label", LABEL, "--stop-timeout=1", "-p", "127.0.0.1:%d:%d/tcp" % (self.ports[name], inner),
                   self.image, "/sbin/init")
        for name in self.names:
            state = podman("exec", name, "systemctl", "is-system-running", "--wait", timeout=BOOT_TIMEOUT,
                           check=False).stdout.strip()
            if state not in ("running", "degraded"):
                raise SystemExit("%s did not boot: systemd is %r" % (name, state))

    def down(self):
        if not self.created:
            return
        podman("rm", "--force", "--time", "0", "--ignore", *self.names, check=False)
        podman("network", "rm", "--force", self.network, check=False)
        self.created = False

    def inventory(self):
        common = {"ansible_connection": "containers.podman.podman", "ansible_python_interpreter": "/usr/bin/python3"}
        apps = {}
        for name in self.apps:
            apps[name] = dict(common, rollback_code_health_checks=[
                {"name": "own version", "type": "http", "url": "http://127.0.0.1:%d/" % self.ports[name],
                 "json_query": "version", "expected": "v1"},
                {"name": "lb health", "type": "http", "url": self.lb_url + "/health"}])
        path = self.base / "inventory.yml"
        path.write_text(yaml.safe_dump({"all": {"children": {"app": {"hosts": apps},
                                                             "lb": {"hosts": {self.lb: common}}}}}))
        return path

    def env(self):
        return {"MOLECULE_SCENARIO_DIRECTORY": str(SCENARIO), "MOLECULE_PROJECT_DIRECTORY": str(ROOT),
                "MOLECULE_EPHEMERAL_DIRECTORY": str(self.base), "CONTAINERS_CONF": CONTAINERS_CONF}

    def records_dir(self):
        return str(self.base / "deployments")

    def through_lb(self, path="/"):
        """4N answers through the lb: {hostname: set of versions}, set of X-Config values."""
        seen, configs = {}, set()
        for dummy in range(4 * self.count):
            status, headers, body = get(self.lb_url + path)
            if status != 200:
                raise SystemExit("WRONG: the lb answered %s" % status)
            seen.setdefault(body.get("hostname"), set()).add(body.get("version"))
            configs.add(headers.get("X-Config"))
        return seen, configs

    def current(self, name):
        return podman("exec", name, "readlink", "-f", APP_ROOT + "/current").stdout.strip()


def playbook(path, fleet, what, extra_vars=None, timeout=1800):
    """Run ``path`` against the fleet; (wall seconds, result); a failed run stops the bench."""
    start = time.monotonic()
    res = run_playbook(path, inventory=fleet.inventory(), extra_vars=extra_vars, env=fleet.env(), timeout=timeout)
    seconds = time.monotonic() - start
    if res.rc != 0:
        raise SystemExit("%s failed (rc=%s):\n%s\n%s" % (what, res.rc, res.stdout[-5000:], res.stderr[-2000:]))
    return seconds, res


def play_durations(res):
    """[(play name, seconds)] from the json callback; with serial, one entry per batch."""
    out = []
    for play in res.data.get("plays", []):
        duration = play["play"].get("duration", {})
        if "start" in duration and "end" in duration:
            start, end = (datetime.datetime.fromisoformat(duration[k].rstrip("Z")) for k in ("start", "end"))
            out.append((play["play"]["name"], (end - start).total_seconds()))
    return out


def task_durations(res):
    """{task name: (runs, total seconds)} from the json callback, summed over the batches."""
    out = {}
    for play in res.data.get("plays", []):
        for task in play.get("tasks", []):
            duration = task["task"].get("duration", {})
            if "start" in duration and "end" in duration:
                start, end = (datetime.datetime.fromisoformat(duration[k].rstrip("Z")) for k in ("start", "end"))
                runs, total = out.get(task["task"]["name"], (0, 0.0))
                out[task["task"]["name"]] = (runs + 1, total + (end - start).total_seconds())
    return out


def converge_play(scenario, prefix):
    """The play of ``scenario``'s converge.yml whose name starts with ``prefix``, as a one-play playbook."""
    plays = yaml.safe_load((MOLECULE / scenario / "converge.yml").read_text())
    found = [p for p in plays if p["name"].startswith(prefix)]
    if len(found) != 1:
        raise SystemExit("converge.yml has %d plays named %r..." % (len(found), prefix))
    return found


def level3(fleet, tag):
    batch = FIXED_BATCH or (1 if fleet.count == 1 else math.ceil(fleet.count / 3))
    extra = {"target_hosts": "app", "rollback_code_batch_size": batch, "rollback_code_batch_delay": DELAY,
             "rollback_code_strategy": "symlink", "rollback_code_deploy_to": APP_ROOT,
             "rollback_code_records_dir": fleet.records_dir(), "rollback_code_service": "demoapp",
             "rollback_code_health_timeout": GATE_TIMEOUT}
    figure(BENCH, "%s: batch size / delay" % tag, "%d / %d s" % (batch, DELAY))
    figure(BENCH, "%s: load average (1 min) at L3 start, other containers running" % tag,
           "%s, %d" % (load(), other_containers(fleet.names)))
    seconds, res = playbook(ROOT / "playbooks" / "rollback_code.yml", fleet, "rollback_code", extra)
    figure(BENCH, "%s: LEVEL 3 rollback_code, ansible-playbook start to verified" % tag, round(seconds, 2), "s")
    batches = play_durations(res)
    figure(BENCH, "%s: batches (s, json callback)" % tag, " ".join("%.1f" % s for dummy, s in batches))
    figure(BENCH, "%s: ansible-playbook outside the batches (start-up, stats)" % tag,
           round(seconds - sum(s for dummy, s in batches), 2), "s")
    figure(BENCH, "%s: load average (1 min) at L3 end" % tag, load())
    tasks = task_durations(res)
    gates = [v for k, v in tasks.items() if k.endswith("Run the health gate of this host")]
    if gates:
        figure(BENCH, "%s: of which health gates (sum over batches)" % tag, round(sum(t for dummy, t in gates), 2), "s")
    print("%s level 3 tasks, slowest first (runs, total s over all batches):" % tag)
    for name, (runs, total) in sorted(tasks.items(), key=lambda kv: -kv[1][1])[:12]:
        print("  %7.2f s  x%d  %s" % (total, runs, name))

    for name in fleet.apps:
        check("%s: the role changed %s" % (tag, name), res.stats.get(name, {}).get("changed", 0) > 0,
              str(res.stats.get(name)))
        current = fleet.current(name)
        check("%s: %s current -> releases/v1" % (tag, name), current == APP_ROOT + "/releases/v1", current)
    seen, dummy = fleet.through_lb()
    check("%s: through the lb every app host answered" % tag, sorted(seen) == sorted(fleet.apps), str(seen))
    check("%s: through the lb every answer is v1" % tag, all(v == {"v1"} for v in seen.values()), str(seen))


def level1_2(fleet, tag):
    extra = {"rollback_levels_lb_port": fleet.ports[fleet.lb]}
    path = fleet.base / "level1.yml"
    path.write_text(yaml.safe_dump(converge_play("rollback_feature_flag", "Level 1 ")))
    seconds, dummy = playbook(path, fleet, "level 1", extra)
    figure(BENCH, "%s: LEVEL 1 rollback_feature_flag (converge play), start to verified" % tag, round(seconds, 2),
           "s")
    doc = json.loads(podman("exec", fleet.apps[0], "cat", "/etc/flagd/flags.json").stdout)
    flag = doc["flags"]["new-checkout"]
    check("%s: new-checkout defaultVariant off, no targeting" % tag,
          flag.get("defaultVariant") == "off" and "targeting" not in flag, json.dumps(flag))

    dummy, configs = fleet.through_lb()
    check("%s: before level 2 the lb answers with configuration v2" % tag, configs == {"v2"}, str(configs))
    path = fleet.base / "level2.yml"
    path.write_text(yaml.safe_dump(converge_play("rollback_config", "Level 2 ")))
    seconds, dummy = playbook(path, fleet, "level 2", extra)
    figure(BENCH, "%s: LEVEL 2 rollback_config (converge play), start to verified" % tag, round(seconds, 2), "s")
    seen, configs = fleet.through_lb()
    check("%s: after level 2 the lb answers with configuration v1" % tag, configs == {"v1"}, str(configs))
    check("%s: and still v1 code" % tag, all(v == {"v1"} for v in seen.values()), str(seen))


def one_fleet(fleet):
    tag = "N=%d" % fleet.count
    start = time.monotonic()
    fleet.up()
    figure(BENCH, "%s: %d containers started and booted (systemd)" % (tag, fleet.count + 1),
           round(time.monotonic() - start, 1), "s")
    figure(BENCH, "%s: load average (1 min) before prepare" % tag, load())
    seconds, dummy = playbook(PREPARE, fleet, "rollback_levels/prepare.yml")
    figure(BENCH, "%s: rollback_levels prepare.yml (v1, record, bad v2)" % tag, round(seconds, 1), "s")
    seen, dummy = fleet.through_lb()
    check("%s: before the rollback every app host answers v2 through the lb" % tag,
          sorted(seen) == sorted(fleet.apps) and all(v == {"v2"} for v in seen.values()), str(seen))
    level3(fleet, tag)
    if fleet.count == 1:
        level1_2(fleet, tag)


def main():
    def stop(signum, dummy):
        raise SystemExit("stopped by signal %d" % signum)

    signal.signal(signal.SIGTERM, stop)
    img = image()
    base = pathlib.Path(tempfile.mkdtemp(prefix="bench-l3-containers-", dir="/tmp"))
    fleets = []
    try:
        for count in HOSTS:
            fleet = Fleet(count, img, base)
            fleets.append(fleet)
            try:
                one_fleet(fleet)
            finally:
                fleet.down()
    finally:
        for fleet in fleets:
            fleet.down()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
