"""Measured RTO and RPO of DR tiers 1-3 in podman containers, against the objectives (figures, never asserted).

The bench runs the project's own Molecule scenarios, unchanged, one after the other:
  tier 1  extensions/molecule/rollback_code    (dr_service_disruption; its verify.yml kills demoapp, the role
          restarts it; then a release v3 that crashes at start, the role escalates to rollback_code -> v1)
  tier 2  extensions/molecule/dr_sites         (dr_datacenter_failover; site_a is podman-stopped while a writer
          commits one row per transaction, the role fails over to site_b on its primary-down path)
  dr_sites_kill the same with DR_SITES_DISRUPTION=kill: site_a is podman-killed (SIGKILL to every process, a
          power cut of the site; PostgreSQL restarts with "database system was not properly shut down")
  tier 3  extensions/molecule/dr_rebuild       (dr_complete_rebuild of a fresh container from the off-site S3
          backups served by moto in a second container)
each as ``molecule test --scenario-name <s> --destroy never`` (then ``molecule destroy``, also after a failure),
FAILSAFE_IMAGE from scripts/build_image.sh, MOLECULE_EPHEMERAL_DIRECTORY a directory of the bench's own. What
it measures comes from what the scenarios leave, with no change to them:
  - the project's callback failsafe.recovery.journal (ANSIBLE_CALLBACKS_ENABLED, FAILSAFE_INCIDENT_JOURNAL = a
    file of the bench): start and end of every task of every ansible-playbook run molecule makes;
  - tier 2 only: the json stdout callback (MOLECULE_COMMAND_BORDERS=false), for dr_datacenter_failover_result
    (rpo_seconds, rpo_bytes, the role's step times); only there, as dr_sites has no idempotence step (molecule
    reads the default callback's recap in it);
  - tier 2: the stopped site_a container is started again after verify (--destroy never) and its live_writes
    read: rows committed on site_a (durable after its restart) minus the writer's rows on site_b = rows lost;
    the time between the last commit on site_a and the last one on site_b = the measured RPO (column ``at``,
    clock_timestamp() at insert; both containers share the host clock);
  - tier 3: dr_rebuild/result.json and source.json in the ephemeral directory (the role's result and recovery
    point, the dump's time).
RTO figures start at the disruption the scenario makes (the task that kills demoapp, points current at the
crashing v3, podman-stops site_a; tier 3: container creation of the fresh host) and end when the role has
verified the service; detection and decision by people (example_production: detect 2 min + decide 3 min) are
not in them. The scenarios' own asserts check the recovered state (molecule fails otherwise); the bench also
checks what it reads (the role runs it times did restart, escalate, promote as the scenario says; rows without
gaps, none on site_b that site_a lacks) and exits 1 when it could not measure. Timings are FIGURE lines, never
asserted; the slowest tasks of each timed role run are printed to explain them.

Objectives (verdict: the strictest bound met, or MISS):
  inventories/example_production/group_vars/all.yml: incident_service_objectives (core_api RTO 5 min RPO 0,
  database RTO 10 min, complete_system RTO 30 min) and incident_level_objectives (DR tier 1: 5, DR tier 2: 15,
  DR tier 3: 60 min); group_vars/bastion.yml: dr_datacenter_failover_rpo_objective_seconds (300, user data).
  Seeds (/work/shared/seeds): DR tier 1 service disruption -> API 5 min; tier 2 data-center failover -> database
  10-15 min, API 5 min; tier 3 complete rebuild -> 30-60 min; RPO critical data 0 min (seed 000) - 15 min
  (seed 002).

Run: .venv/bin/python tests/bench/bench_dr_containers.py   (about 8 minutes on 2 quiet cores, more under load;
root podman and the image of scripts/build_image.sh).
BENCH_DR_CONTAINERS_SCENARIOS="rollback_code,dr_sites,dr_sites_kill,dr_rebuild" selects the tiers. It uses the scenarios'
fixed container names: never run it while someone else runs those scenarios (a CI rehearsal, make molecule).
Molecule logs: .cache/bench_dr_containers/<scenario>.log. `make bench` runs it with the others (tests/bench/run.py).

Measured 2026-11-23 on a 2-core machine with 23 GB RAM, QUIET (no other container running, load average 1.1-2.4):
two whole runs, 05:20 (7 min 50 s) and 05:34 (7 min 3 s, the final code), given as "first / second"; dr_sites
also alone at 05:28 and 05:31, given in brackets (load 1.2-4.2):
  molecule test wall time        rollback_levels (levels 1-3 and tier 1, since split) 233.7 / 218.7 s,
                                 dr_sites 130.9 / 102.8 s (97.4, 114.0),
                                 dr_rebuild 74.5 / 72.5 s
  T1 killed demoapp              kill -> restarted and verified 18.1 / 16.1 s (restart task done 10.6 / 9.0 s after
                                 the kill; role run 15.6 / 13.9 s, no task over 3.1 s) - PASS vs API 5 min;
                                 converge's restart role run 15.1 / 16.6 s; the role on a healthy host 5.7 / 5.5 s
  T1 crash-looping v3            v3 started -> v1 back and verified 34.5 / 31.6 s (scenario waits 3.3 / 3.1 s for 2
                                 systemd restarts; role 30.0 / 27.3 s = detect + restart attempt + gate 11.2 / 10.2,
                                 rollback_code 11.2 / 10.4, gate 7.6 / 6.8) - PASS vs API 5 min; RPO: no data at risk
  T2 site_a podman-stopped       stop -> site_b primary takes writes 44.4 / 33.1 s (18.3, 19.9) - PASS vs database
                                 10 min; stop -> traffic on site_b, gate passed 51.8 / 40.2 s (26.2, 27.7) - PASS vs
                                 API 5 min; role run 49.6 / 38.4 s (24.2, 25.4): its first real step, the probe of the
                                 dead primary (pg_isready -t 5 on the stopped container's name), took 37.3 / 25.8 s
                                 (11.0, 11.1) - the -t 5 does not bound it (since then the role bounds the probe to
                                 8 s with timeout(1): not re-measured); fence 2.0-2.4, promote 2.0-2.5, verify 1.1,
                                 traffic 2.8-3.3, gate 3.2-3.5 s
                                 rows committed on site_a 83 / 105 (75, 85), all on site_b: 0 lost, measured RPO 0 s -
                                 PASS vs critical 0 min. But site_a's PostgreSQL log says "database system was shut
                                 down": podman stop gives systemd a clean (fast) shutdown, whose walsender ships all WAL
                                 before it exits - NOT a power cut (bench_dr_tiers.py's immediate stop on the host lost
                                 18 of 299 rows). The role reports rpo_seconds 38.9 / 28.4 (13.5, 14.2) - PASS of the
                                 5 min user data bound only - and rpo_bytes 0: rpo_seconds is now - the last replayed
                                 commit when the role reads the standby, after the dead-primary probe (an upper bound;
                                 the real loss was 0)
  T2 site_a podman-killed        (one run, 07:26, load 1.2-2.1) kill -> site_b primary takes writes 27.0 s, traffic
  (power cut)                    on site_b and gate passed 35.4 s (role run 33.2 s) - PASS vs database 10 min / API
                                 5 min; 98 writer rows committed on site_a (read after its crash recovery), 98 on
                                 site_b: 0 lost, measured RPO 0 s - PASS vs critical 0 min; the role reported
                                 rpo_seconds 12.3 and rpo_bytes 0. A container kill loses the processes, not the host's
                                 page cache: the walsender had streamed every WAL record site_a's crash recovery
                                 found. A real power cut (or a network split before the loss) can lose what was
                                 never sent, as the host bench's immediate stop did (18 of 299 rows).
  T3 fresh container rebuilt     role run 39.8 / 38.8 s (verify 18.3 / 17.3, database 4.5 / 4.2, release 5.5 / 5.8,
                                 config 3.2 / 3.3, start 2.3, health 2.4 / 2.3) - PASS vs complete system 30 min; with
                                 container creation (2.8 / 3.0 s) and the fresh host's provisioning (12.1 / 11.1 s)
                                 54.6 / 52.9 s - PASS; 500 rows restored; RPO = rebuild start - dump time 15.5 / 14.0 s
                                 - PASS of the 5 min user data bound only (the scenario dumps just before; in
                                 production it is the off-site backup interval: daily in seed 000)
Every figure is far below its objective; the RTO figures leave out detection and decision by people
(example_production budgets detect 2 + decide 3 = 5 min of them), and they come from a quiet machine: under load
(bench_l3_containers.py) the same role runs take about twice as long.
"""

import datetime
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for extra in (str(HERE), str(ROOT / "extensions"), str(ROOT / ".collections")):
    if extra not in sys.path:
        sys.path.insert(0, extra)

import yaml  # noqa: E402  pylint: disable=wrong-import-position

from containers import CONTAINERS_CONF, image, load, podman  # noqa: E402  pylint: disable=wrong-import-position
from figures import figure  # noqa: E402  pylint: disable=wrong-import-position

BENCH = "dr_containers"
SCENARIOS = [s.strip() for s in os.environ.get("BENCH_DR_CONTAINERS_SCENARIOS",
                                               "rollback_code,dr_sites,dr_sites_kill,dr_rebuild").split(",") if s.strip()]
MOLECULE = str(ROOT / ".venv" / "bin" / "molecule")
INVENTORY = ROOT / "inventories" / "example_production" / "group_vars"
LOGS = ROOT / ".cache" / "bench_dr_containers"
MOLECULE_TIMEOUT = 3600
BOOT_TIMEOUT = 300
SEED_002_RPO_CRITICAL = 900  # seed 002: "Critical Data: 15 minutes"
PSQL = ["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/psql", "-X", "-A", "-t", "-q",
        "-v", "ON_ERROR_STOP=1", "-d", "postgres"]
# the writer's rows of dr_sites; verify.yml inserts id 1000000 on the new primary afterwards
LIVE_SQL = ("SELECT count(*), coalesce(max(id), 0), coalesce(extract(epoch FROM max(at)), 0) "
            "FROM live_writes WHERE id < 1000000")


# --------------------------------------------------------------------------- objectives

def objectives():
    """{name: [(seconds or rows, label), ...] strictest first} from example_production and the seeds."""
    common = yaml.safe_load((INVENTORY / "all.yml").read_text())
    bastion = yaml.safe_load((INVENTORY / "bastion.yml").read_text())
    try:
        service = common["incident_service_objectives"]
        level = common["incident_level_objectives"]
        api, database, system = service["core_api"], service["database"], service["complete_system"]
        rpo_user = int(bastion["dr_datacenter_failover_rpo_objective_seconds"])
        out = {
            "T1 RTO": [(api["rto_minutes"] * 60, "API %s min" % api["rto_minutes"]),
                       (level["DR tier 1"] * 60, "DR tier 1 %s min" % level["DR tier 1"])],
            "T2 RTO database": [(database["rto_minutes"] * 60, "database %s min" % database["rto_minutes"]),
                                (level["DR tier 2"] * 60, "DR tier 2 %s min" % level["DR tier 2"])],
            "T2 RTO API": [(api["rto_minutes"] * 60, "API %s min" % api["rto_minutes"])],
            "T3 RTO": [(system["rto_minutes"] * 60, "complete system %s min" % system["rto_minutes"]),
                       (level["DR tier 3"] * 60, "DR tier 3 %s min" % level["DR tier 3"])],
            "RPO": [(api["rpo_minutes"] * 60, "critical %s min" % api["rpo_minutes"]),
                    (rpo_user, "user data %g min" % (rpo_user / 60.0)),
                    (SEED_002_RPO_CRITICAL, "seed 002 critical 15 min")],
        }
    except (KeyError, TypeError) as exc:
        raise SystemExit("example_production lacks the DR objectives: %r" % exc) from exc
    return out


def verdict(value, bounds):
    for index, (bound, label) in enumerate(bounds):
        if value <= bound:
            return "PASS (%s)" % label if index == 0 else "PASS %s only" % label
    return "MISS (%s)" % ", ".join(label for dummy, label in bounds)


def objective(metric, value, unit, bounds):
    """One figure plus its comparison with the objective (text, never an assertion)."""
    figure(BENCH, metric, value, unit)
    figure(BENCH, metric + " vs objective", verdict(value, bounds))


# --------------------------------------------------------------------------- helpers

def check(what, ok, detail=""):
    if not ok:
        raise SystemExit("WRONG: %s %s" % (what, detail))
    print("ok: %s" % what, flush=True)


def truthy(value):
    """A boolean of a role result, whether the templating kept it a bool or made it a string."""
    return str(value).strip().lower() in ("true", "yes", "1")


def epoch(text):
    """Epoch seconds of an ISO 8601 time (naive = UTC)."""
    when = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when.timestamp()


class Scenario:
    """One Molecule scenario run by the bench: its environment, journal, ephemeral directory and log."""

    def __init__(self, name, img, base, json_stdout=False, label=None, env=None):
        self.name = name
        self.label = label or name  # a variant of a scenario (dr_sites_kill) keeps its own files
        self.ephemeral = base / self.label
        self.ephemeral.mkdir()
        self.journal = base / ("%s.journal.jsonl" % self.label)
        self.journal.touch()
        self.json_stdout = json_stdout
        self.stdout = ""
        self.env = dict(os.environ)
        self.env.update({
            "PATH": "%s:%s" % (ROOT / ".venv" / "bin", os.environ.get("PATH", "")),
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
            "CONTAINERS_CONF": CONTAINERS_CONF,
            "FAILSAFE_IMAGE": img,
            "MOLECULE_EPHEMERAL_DIRECTORY": str(self.ephemeral),
            "ANSIBLE_CALLBACKS_ENABLED": "failsafe.recovery.journal",
            "FAILSAFE_INCIDENT_JOURNAL": str(self.journal),
            "ANSIBLE_NOCOLOR": "1",
            "NO_COLOR": "1",
        }, **(env or {}))
        self.created = False

    def molecule(self, *args, env=None, timeout=MOLECULE_TIMEOUT):
        LOGS.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([MOLECULE] + list(args) + ["--scenario-name", self.name], cwd=str(ROOT),
                              env=dict(self.env, **(env or {})), capture_output=True, text=True, timeout=timeout,
                              check=False)
        with open(LOGS / ("%s.log" % self.label), "a", encoding="utf-8") as log:
            log.write("=== molecule %s (rc=%d)\n%s\n--- stderr\n%s\n"
                      % (" ".join(args), proc.returncode, proc.stdout, proc.stderr))
        return proc

    def test(self):
        """``molecule test`` without its destroys (the bench reads the containers afterwards); wall seconds."""
        (LOGS / ("%s.log" % self.label)).unlink(missing_ok=True)
        self.molecule("destroy")  # what the sequence's first destroy would do
        self.created = True
        callback = {}
        if self.json_stdout:
            callback = {"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
                        "MOLECULE_COMMAND_BORDERS": "false"}
        figure(BENCH, "%s: load average (1 min) at the start" % self.label, load())
        start = time.monotonic()
        proc = self.molecule("test", "--destroy", "never", env=callback)
        seconds = round(time.monotonic() - start, 1)
        if proc.returncode != 0:
            raise SystemExit("molecule test %s failed (rc=%d), log %s:\n%s\n%s"
                             % (self.label, proc.returncode, LOGS / ("%s.log" % self.label), proc.stdout[-6000:],
                                proc.stderr[-3000:]))
        self.stdout = proc.stdout + "\n" + proc.stderr  # where molecule tees ansible-playbook's output
        figure(BENCH, "%s: molecule test (without the last destroy), wall time" % self.label, seconds, "s")
        figure(BENCH, "%s: load average (1 min) at the end" % self.label, load())
        return seconds

    def destroy(self):
        if self.created:
            self.molecule("destroy", timeout=600)
            self.created = False

    def runs(self):
        """The task records of the journal, one list per ansible-playbook run (a recap closes a run)."""
        runs, current = [], []
        for line in self.journal.read_text().splitlines():
            record = json.loads(line)
            if record.get("kind") == "recap":
                runs.append(current)
                current = []
            elif record.get("kind") == "task":
                record["t0"], record["t1"] = epoch(record["start"]), epoch(record["end"])
                current.append(record)
        if current:
            runs.append(current)
        return runs

    def state(self, *parts):
        return json.loads(self.ephemeral.joinpath(*parts).read_text())


def short_role(record):
    return (record.get("role") or "").split(".")[-1]


def named(records, name):
    """The records of the task called ``name`` (role tasks: ``<role> : name``)."""
    return [r for r in records if r["task"] == name or r["task"].endswith(" : " + name)]


def one(records, name, what):
    found = named(records, name)
    check("%s: task %r ran once" % (what, name), len(found) == 1, "(%d records)" % len(found))
    return found[0]


def segments(records, roles):
    """Maximal runs of consecutive records whose role is one of ``roles``: one per role run."""
    out, current = [], []
    for record in records:
        if short_role(record) in roles:
            current.append(record)
        elif current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def span(records):
    return min(r["t0"] for r in records), max(r["t1"] for r in records)


def slowest(records, what, count=8):
    """Print (no figures) the slowest tasks of ``records``, to explain a figure."""
    print("%s, slowest tasks:" % what)
    for record in sorted(records, key=lambda r: r["t0"] - r["t1"])[:count]:
        print("  %7.2f s  %-11s %s" % (record["t1"] - record["t0"], record["status"], record["task"]))


def runs_with(runs, key, value):
    return [run for run in runs if any(r.get(key) == value or r["task"].endswith(" : " + value) for r in run)]


def json_documents(text):
    """Every JSON document that starts at the beginning of a line of ``text`` (json stdout callback)."""
    decoder, docs, pos = json.JSONDecoder(), [], 0
    for match in re.finditer(r"^\{", text, re.M):
        if match.start() < pos:
            continue
        try:
            doc, pos = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        docs.append(doc)
    return docs


def task_result(docs, name, host):
    """The last result of task ``name`` on ``host`` in the json callback documents."""
    found = []
    for doc in docs:
        for play in doc.get("plays", []):
            for task in play.get("tasks", []):
                task_name = task["task"]["name"]
                if (task_name == name or task_name.endswith(" : " + name)) and host in task.get("hosts", {}):
                    found.append(task["hosts"][host])
    if not found:
        raise SystemExit("no result of task %r on %s in the json output" % (name, host))
    return found[-1]


# --------------------------------------------------------------------------- tier 1

def tier1(scn, obj):
    scn.test()
    runs = scn.runs()
    roles = {"dr_service_disruption", "rollback_code"}

    # converge: demoapp killed in prepare (check step in between), the role restarts it
    plays = runs_with(runs, "play", "DR tier 1 - restart the killed demoapp")
    check("T1: the converge play ran in check, converge and idempotence", len(plays) == 3, "(%d runs)" % len(plays))
    segs = segments([r for r in plays[1] if r["play"] == "DR tier 1 - restart the killed demoapp"], roles)
    check("T1 converge: one role run", len(segs) == 1, "(%d)" % len(segs))
    restarted = named(segs[0], "Restart | restart the services found failed or unhealthy")
    check("T1 converge: the role restarted demoapp", restarted and restarted[0]["changed"], str(restarted))
    start, end = span(segs[0])
    figure(BENCH, "T1 converge: restart of the demoapp prepare killed, role run", round(end - start, 2), "s")

    verify = runs_with(runs, "play", "DR tier 1 - a killed demoapp is restarted")
    check("T1: verify ran once", len(verify) == 1, "(%d runs)" % len(verify))
    verify = verify[0]

    # verify, case 1: demoapp killed, restarted by the role
    recs = [r for r in verify if r["play"] == "DR tier 1 - a killed demoapp is restarted"]
    kill = one(recs, "Kill demoapp with SIGKILL", "T1 kill")
    segs = segments(recs, roles)
    check("T1 kill: two role runs (restart, then a healthy host)", len(segs) == 2, "(%d)" % len(segs))
    restarted = one(segs[0], "Restart | restart the services found failed or unhealthy", "T1 kill")
    check("T1 kill: the first run restarted demoapp", restarted["status"] == "ok" and restarted["changed"],
          str(restarted))
    again = named(segs[1], "Restart | restart the services found failed or unhealthy")
    check("T1 kill: the second run restarted nothing", all(r["status"] == "skipped" for r in again), str(again))
    check("T1 kill: no escalation", not [r for r in segs[0] if short_role(r) == "rollback_code"])
    start, end = span(segs[0])
    figure(BENCH, "T1 kill: killed -> demoapp restarted (restart task done)", round(restarted["t1"] - kill["t0"], 2),
           "s")
    objective("T1 kill: killed -> restarted and verified (RTO without detection)", round(end - kill["t0"], 2), "s",
              obj["T1 RTO"])
    figure(BENCH, "T1 kill: of which the role run (detect, restart, verify)", round(end - start, 2), "s")
    slowest(segs[0], "T1 kill: role run")
    figure(BENCH, "T1 kill: of which the scenario's wait for 'failed' before the role", round(start - kill["t1"], 2),
           "s")
    start, end = span(segs[1])
    figure(BENCH, "T1 role run on a healthy host (nothing to do)", round(end - start, 2), "s")

    # verify, case 2: release v3 crashes at start, restart does not help, escalation to rollback_code
    recs = [r for r in verify if r["play"] == "DR tier 1 - a release that keeps crashing escalates to the last good "
                                              "release"]
    broken = one(recs, "Restart demoapp on v3", "T1 crash loop")
    segs = segments(recs, roles)
    check("T1 crash loop: one role run", len(segs) == 1, "(%d)" % len(segs))
    restarted = one(segs[0], "Restart | restart the services found failed or unhealthy", "T1 crash loop")
    code = [r for r in segs[0] if short_role(r) == "rollback_code"]
    check("T1 crash loop: the role escalated to rollback_code", bool(code))
    switched = [r for r in code if r["changed"]]
    check("T1 crash loop: rollback_code changed the host", bool(switched))
    start, end = span(segs[0])
    code_start, code_end = span(code)
    objective("T1 crash loop: v3 started -> v1 back and verified (RTO without detection)",
              round(end - broken["t0"], 2), "s", obj["T1 RTO"])
    figure(BENCH, "T1 crash loop: of which the scenario's wait for 2 systemd restarts", round(start - broken["t1"], 2),
           "s")
    figure(BENCH, "T1 crash loop: of which the role run", round(end - start, 2), "s")
    slowest(segs[0], "T1 crash loop: role run")
    figure(BENCH, "T1 crash loop: role: detect + restart attempt + its gate", round(code_start - start, 2), "s")
    figure(BENCH, "T1 crash loop: role: rollback_code (escalation)", round(code_end - code_start, 2), "s")
    figure(BENCH, "T1 crash loop: role: gate after the escalation", round(end - code_end, 2), "s")
    figure(BENCH, "T1 RPO", "none at risk (restart and release rollback; no data path)")


# --------------------------------------------------------------------------- tier 2

def live_writes(container):
    """(rows, max id, epoch of the newest row) of the writer's table in ``container``."""
    out = podman("exec", container, *(PSQL + ["-c", LIVE_SQL]), timeout=60).stdout.strip()
    rows, top, newest = out.split("|")
    return int(rows), int(top), float(newest)


def restart_site_a(name):
    """Start the stopped site_a container again; its PostgreSQL recovers what it had committed."""
    podman("start", name)
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:  # bounded: podman exec may fail while the container's init is still starting
        proc = podman("exec", name, "systemctl", "is-system-running", "--wait", timeout=BOOT_TIMEOUT, check=False)
        if proc.stdout.strip() in ("running", "degraded"):
            break
        if time.monotonic() > deadline:
            raise SystemExit("%s did not boot again: systemd is %r (%s)"
                             % (name, proc.stdout.strip(), proc.stderr.strip()[-500:]))
        time.sleep(1)
    podman("exec", name, "systemctl", "start", "postgresql@15-main.service", timeout=120)
    deadline = time.monotonic() + 120
    while podman("exec", name, "/usr/lib/postgresql/15/bin/pg_isready", "-t", "2", check=False).returncode:
        if time.monotonic() > deadline:
            raise SystemExit("PostgreSQL of %s did not accept connections within 120 s" % name)
        time.sleep(1)


def tier2(scn, obj, tag="T2", disruption="stop"):
    scn.test()
    site_a, site_b = "fsr-dr-site-a", "fsr-dr-site-b"
    runs = scn.runs()
    converge = runs_with(runs, "task", "Stop the site_a container while the writer writes")
    check(tag + ": converge ran once", len(converge) == 1, "(%d runs)" % len(converge))
    recs = converge[0]
    stop = one(recs, "Stop the site_a container while the writer writes", tag)
    role = [r for r in recs if short_role(r) == "dr_datacenter_failover"]
    check(tag + ": the role ran", bool(role))
    start, end = span(role)
    promoted = one(role, "Wait until the new primary left recovery", tag)
    gate = one(role, "Health gate on site_b", tag)
    check(tag + ": promoted and the health gate passed", promoted["status"] == "ok" and gate["status"] == "ok",
          "%s %s" % (promoted["status"], gate["status"]))
    result = task_result(json_documents(scn.stdout), "Record the result", site_b)["ansible_facts"][
        "dr_datacenter_failover_result"]
    check(tag + ": primary-down path, promoted to timeline 2, gate pass",
          not truthy(result["primary_was_up"]) and int(result["timeline"]) == 2 and result["gate_verdict"] == "pass",
          json.dumps(result)[:1000])

    figure(BENCH, tag + " podman %s of site_a (the disruption itself)" % disruption, round(stop["t1"] - stop["t0"], 2),
           "s")
    objective(tag + " site_a stopped -> site_b primary takes writes (database RTO without detection)",
              round(promoted["t1"] - stop["t0"], 2), "s", obj["T2 RTO database"])
    objective(tag + " site_a stopped -> traffic on site_b, health gate passed (API RTO without detection)",
              round(gate["t1"] - stop["t0"], 2), "s", obj["T2 RTO API"])
    objective(tag + " role run, start to verified (RTO component)", round(end - start, 2), "s",
              obj["T2 RTO database"])
    figure(BENCH, tag + " scenario checks between the stop and the role", round(start - stop["t1"], 2), "s")
    slowest(role, tag + " role run")
    times = {k: epoch(v) for k, v in result["times"].items()}
    order = [k for k in ("started", "caught_up", "fenced", "promoted", "verified", "traffic_moved", "finished")
             if k in times]
    for first, second in zip(order, order[1:]):
        figure(BENCH, tag + " role step -> %s" % second, round(times[second] - times[first], 2), "s")

    before = scn.state("dr_sites", "before_stop.json")["live_writes_replayed"]
    b_rows, b_top, b_newest = live_writes(site_b)
    restart_site_a(site_a)
    a_rows, a_top, a_newest = live_writes(site_a)
    # how site_a went down: a clean (fast) shutdown lets the walsender ship all WAL before it exits
    how = podman("exec", site_a, "sh", "-c", "grep -oE 'database system (was shut down|was interrupted|was not "
                 "properly shut down)' /var/log/postgresql/postgresql-15-main.log | tail -n 1",
                 check=False).stdout.strip()
    figure(BENCH, tag + " site_a's PostgreSQL log at its restart", how or "not found")
    check(tag + ": site_a's writer rows have no gap", a_rows == a_top, "%d rows, max id %d" % (a_rows, a_top))
    check(tag + ": site_b's writer rows have no gap", b_rows == b_top, "%d rows, max id %d" % (b_rows, b_top))
    check(tag + ": site_b holds no row site_a lacks", b_rows <= a_rows, "site_a %d, site_b %d" % (a_rows, b_rows))
    figure(BENCH, tag + " writer rows committed on site_a (durable, read after restarting it)", a_rows, "rows")
    figure(BENCH, tag + " writer rows replayed on site_b before the stop (scenario)", before, "rows")
    figure(BENCH, tag + " writer rows on the new primary site_b", b_rows, "rows")
    figure(BENCH, tag + " rows lost (committed on site_a, not on site_b)", a_rows - b_rows, "rows")
    objective(tag + " RPO measured (last commit on site_a - last on site_b)",
              round(max(0.0, a_newest - b_newest), 3), "s", obj["RPO"])
    objective(tag + " RPO reported by the role (rpo_seconds)", round(float(result["rpo_seconds"]), 3), "s", obj["RPO"])
    figure(BENCH, tag + " rpo_bytes reported by the role", int(result["rpo_bytes"]), "B")
    figure(BENCH, tag + " site_a stop start -> role start (in rpo_seconds)",
           round(epoch(result["times"]["started"]) - stop["t0"], 2), "s")


def tier2_power_cut(scn, obj):
    tier2(scn, obj, tag="T2 power cut", disruption="kill")


# --------------------------------------------------------------------------- tier 3

def tier3(scn, obj):
    scn.test()
    runs = scn.runs()
    created = runs_with(runs, "play", "Create")
    check("T3: create ran once", len(created) == 1, "(%d runs)" % len(created))
    fresh = [r for run in runs_with(runs, "play", "Prepare the fresh host") for r in run
             if r["play"] == "Prepare the fresh host"]
    check("T3: the fresh host was prepared", bool(fresh))
    role = [r for run in runs for r in run if short_role(r) == "dr_complete_rebuild"]
    check("T3: the role ran", bool(role))
    recorded = scn.state("dr_rebuild", "result.json")
    source = scn.state("dr_rebuild", "source.json")
    result = recorded["result"] or {}
    check("T3: the rebuild succeeded with a passing health gate",
          truthy(result.get("succeeded")) and result.get("health") == "pass", json.dumps(result)[:1000])
    check("T3: the recovery point is the dump's time", recorded["recovery_point"] == source["dump_time"],
          "%s / %s" % (recorded["recovery_point"], source["dump_time"]))

    c_start, c_end = span(created[0])
    f_start, f_end = span(fresh)
    start, end = span(role)
    objective("T3 role run, start to verified (RTO component)", round(end - start, 2), "s", obj["T3 RTO"])
    figure(BENCH, "T3 role total_seconds (reported)", round(float(result["total_seconds"]), 2), "s")
    slowest(role, "T3 role run")
    for step in result["steps"]:
        figure(BENCH, "T3 role step %s" % step, round(float(result["timings"][step]), 2), "s")
    figure(BENCH, "T3 containers created and booted (create, both)", round(c_end - c_start, 2), "s")
    figure(BENCH, "T3 fresh host provisioned (prepare play 'Prepare the fresh host')", round(f_end - f_start, 2), "s")
    objective("T3 create + provision + rebuild (RTO without detection, backup set building excluded)",
              round((c_end - c_start) + (f_end - f_start) + (end - start), 2), "s", obj["T3 RTO"])
    objective("T3 RPO: rebuild start - recovery point (dump time, 1 s resolution)",
              round(start - epoch(recorded["recovery_point"]), 1), "s", obj["RPO"])
    figure(BENCH, "T3 rows restored", int(source["orders"].split(":")[0]), "rows")


# label in BENCH_DR_CONTAINERS_SCENARIOS: (Molecule scenario, what the bench does with it, environment)
STEPS = {
    "rollback_code": ("rollback_code", tier1, {}),
    "dr_sites": ("dr_sites", tier2, {}),
    "dr_sites_kill": ("dr_sites", tier2_power_cut, {"DR_SITES_DISRUPTION": "kill"}),
    "dr_rebuild": ("dr_rebuild", tier3, {}),
}


def main():
    def stop(signum, dummy):
        raise SystemExit("stopped by signal %d" % signum)

    signal.signal(signal.SIGTERM, stop)
    unknown = set(SCENARIOS) - set(STEPS)
    if unknown:
        raise SystemExit("BENCH_DR_CONTAINERS_SCENARIOS: unknown %s (known: %s)"
                         % (", ".join(sorted(unknown)), ", ".join(STEPS)))
    obj = objectives()
    img = image()
    figure(BENCH, "cores / load average (1 min) at the start", "%d / %s" % (os.cpu_count(), load()))
    figure(BENCH, "other containers running at the start",
           len(podman("ps", "--format", "{{.Names}}").stdout.split()))
    base = pathlib.Path(tempfile.mkdtemp(prefix="bench-dr-containers-", dir="/tmp"))
    try:
        for label in SCENARIOS:
            name, step, env = STEPS[label]
            scn = Scenario(name, img, base, json_stdout=name == "dr_sites", label=label, env=env)
            try:
                step(scn, obj)
            finally:
                scn.destroy()
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
