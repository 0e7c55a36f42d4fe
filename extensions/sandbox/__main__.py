"""Local sandbox: ``python -m sandbox up|down|status|restart|demo`` (run from the checkout with PYTHONPATH=extensions).

``up`` starts every service of the test harness on the fixed ports declared in
inventories/sandbox/group_vars/all.yml, plus a webhook receiver / status-page stub on a free port
(its URL, a credential, goes to the 0600 file .cache/sandbox/webhook/hook.url, which the sandbox
inventory reads into ``incident_webhooks``), lays out the demo app releases (v1 good, v2 bad)
and records PIDs, ports and paths in .cache/sandbox/state.json. ``down`` stops exactly
those PIDs and removes the state file (data stays for the next ``up``; ``down --purge``
removes it too). ``status`` says whether each recorded service answers (``status blue`` only that
one: exit 0 when it runs and answers). ``restart blue`` (or green) stops the demo app, if it still
runs, and starts it again on its port with its release's config file, recording the new PID.
"""

import argparse
import datetime
import json
import os
import pathlib
import secrets
import shutil
import sys

import yaml

from sandbox import services

ROOT = services.ROOT
INVENTORY = ROOT / "inventories" / "sandbox"
GROUP_VARS = INVENTORY / "group_vars" / "all.yml"
STATE_DIR = ROOT / ".cache" / "sandbox"
STATE_FILE = STATE_DIR / "state.json"
PASSWORD_FILE = STATE_DIR / "postgres.password"
ORDER = ("postgres", "moto", "blue", "green", "haproxy", "prometheus", "webhook")
FREE_PORT = ("webhook",)  # picked at ``up`` (services.free_port); every other port is fixed in GROUP_VARS


def settings():
    """Ports and stanza from the sandbox inventory (the one place they are declared)."""
    data = yaml.safe_load(GROUP_VARS.read_text()) or {}
    ports = {}
    for name in ORDER:
        if name in FREE_PORT:
            continue
        key = "sandbox_%s_port" % name
        if not isinstance(data.get(key), int):
            raise SystemExit("sandbox: %s must set %s to a port number" % (GROUP_VARS, key))
        ports[name] = data[key]
    return ports, str(data.get("sandbox_pgbackrest_stanza", "sandbox"))


def load_state():
    if not STATE_FILE.exists():
        return None
    return json.loads(STATE_FILE.read_text())


def attached(state):
    """[(name, service object)] in start order, re-attached from the state file."""
    return [(name, services.from_state(state["services"][name])) for name in ORDER if name in state["services"]]


def password():
    if PASSWORD_FILE.exists():
        return PASSWORD_FILE.read_text().strip()
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(18)
    fd = os.open(PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def describe(name, service):
    extra = {
        "postgres": lambda s: "data %s, stanza %s, pgbackrest config %s" % (s.data_dir, s.stanza, s.pgbackrest_config),
        "moto": lambda s: "endpoint %s (region us-east-1, keys testing/testing)" % s.url,
        "blue": lambda s: "release %s" % s.release_dir,
        "green": lambda s: "release %s" % s.release_dir,
        "haproxy": lambda s: "admin socket %s, map %s" % (s.socket, s.map_file),
        "prometheus": lambda s: "scraping blue and green every 1s",
        "webhook": lambda s: "status page stub; webhook URL in %s, POSTs recorded in %s" % (s.url_file, s.record_file),
    }[name](service)
    return "%-10s %s  (%s)" % (name, service.url, extra)


def write_state(started):
    state = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "base_dir": str(STATE_DIR), "inventory": str(INVENTORY),
             "services": {name: svc.to_state() for name, svc in started}}
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, STATE_FILE)


def cmd_up(_args):
    state = load_state()
    if state:
        objs = attached(state)
        answering = [name for name, svc in objs if svc.answers()]
        if len(answering) == len(ORDER):
            print("sandbox is already up (started %s):" % state["started"])
            for name, svc in objs:
                print("  " + describe(name, svc))
            return 0
        print("sandbox state found but only %d of %d services answer (%s; not: %s); run `down` first, then `up`."
              % (len(answering), len(ORDER), ", ".join(answering) or "none",
                 ", ".join(name for name in ORDER if name not in answering)), file=sys.stderr)
        return 1

    ports, stanza = settings()
    busy = [("%s:%d" % (name, port)) for name, port in ports.items() if services.port_open(port)]
    if busy:
        print("sandbox: fixed ports already in use: %s. Free them or change the ports in %s."
              % (", ".join(busy), GROUP_VARS.relative_to(ROOT)), file=sys.stderr)
        return 1

    STATE_DIR.mkdir(parents=True, exist_ok=True)
    app_dir = STATE_DIR / "app"
    services.layout_releases(app_dir, current=None)
    if not (app_dir / "current").is_symlink():
        services.switch_current(app_dir, "v1")
    releases = app_dir / "releases"

    started = []
    plan = [
        ("postgres", lambda: services.PostgresCluster(STATE_DIR, port=ports["postgres"], password=password(),
                                                      stanza=stanza)),
        ("moto", lambda: services.MotoServer(STATE_DIR, port=ports["moto"])),
        ("blue", lambda: services.DemoApp(STATE_DIR, "blue", port=ports["blue"], release_dir=releases / "v1")),
        ("green", lambda: services.DemoApp(STATE_DIR, "green", port=ports["green"], release_dir=releases / "v2")),
        ("haproxy", lambda: services.HAProxy(STATE_DIR, ports["blue"], ports["green"], port=ports["haproxy"])),
        ("prometheus", lambda: services.Prometheus(STATE_DIR, {"blue": ports["blue"], "green": ports["green"]},
                                                   port=ports["prometheus"])),
        ("webhook", lambda: services.WebhookReceiver(STATE_DIR)),
    ]
    try:
        for name, make in plan:
            print("starting %s ..." % name, flush=True)
            svc = make()
            started.append((name, svc))
            svc.up()
            write_state(started)
    except (services.ServiceError, OSError, KeyboardInterrupt) as exc:
        print("sandbox: %s failed to start: %s" % (started[-1][0] if started else "?", exc), file=sys.stderr)
        for _name, svc in reversed(started):
            svc.stop()
        STATE_FILE.unlink(missing_ok=True)
        return 1
    print("sandbox is up:")
    for name, svc in started:
        print("  " + describe(name, svc))
    print("inventory: %s   (e.g. ansible-playbook -i inventories/sandbox playbooks/<playbook>.yml)"
          % INVENTORY.relative_to(ROOT))
    print("stop with: make sandbox-down")
    return 0


def cmd_down(args):
    state = load_state()
    if not state:
        print("sandbox is not up (no %s)" % STATE_FILE.relative_to(ROOT))
    else:
        for name, svc in reversed(attached(state)):
            was = svc.running_pid()
            svc.stop()
            print("stopped %-10s %s" % (name, "(pid %s)" % was if was else "(was not running)"))
        STATE_FILE.unlink(missing_ok=True)
    if args.purge and STATE_DIR.exists():
        shutil.rmtree(STATE_DIR)
        print("removed %s" % STATE_DIR.relative_to(ROOT))
    return 0


def cmd_status(args):
    state = load_state()
    if not state:
        print("sandbox is not up (no %s)" % STATE_FILE.relative_to(ROOT))
        return 1
    names = getattr(args, "names", None) or []
    unknown = [name for name in names if name not in state["services"]]
    if unknown:
        print("sandbox: no service %s (known: %s)" % (", ".join(unknown), ", ".join(state["services"])),
              file=sys.stderr)
        return 2
    ok = True
    print("sandbox started %s" % state["started"])
    for name, svc in attached(state):
        if names and name not in names:
            continue
        answers = svc.answers()
        ok = ok and answers
        pid = svc.running_pid()
        ok = ok and (pid is not None or not names)
        print("  %-10s %-8s pid %-8s %s" % (name, "answers" if answers else "DOWN", pid or "-", svc.url))
    return 0 if ok else 1


RESTARTABLE = ("blue", "green")


def cmd_restart(args):
    """Restart one demo app (stopped or killed): same port, same release and config file; new PID recorded."""
    state = load_state()
    if not state or args.name not in state["services"]:
        print("sandbox: %s is not recorded (is the sandbox up? make sandbox-up)" % args.name, file=sys.stderr)
        return 1
    svc = services.from_state(state["services"][args.name])
    was = svc.running_pid()
    try:
        svc.restart()
    except (services.ServiceError, OSError) as exc:
        print("sandbox: %s failed to restart: %s" % (args.name, exc), file=sys.stderr)
        return 1
    state["services"][args.name] = svc.to_state()
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, STATE_FILE)
    print("restarted %s (pid %s, was %s)  %s" % (args.name, svc.running_pid(), was or "not running", svc.url))
    return 0


def check_status_updates(receiver, report, secret_files):
    """What the webhook receiver got for the drill's incident, checked against its report.

    Returns (lines to print, problems). A problem: no ``start`` (or closing ``done``/``failed``)
    notification of this incident was received, the report did not measure the first status update or
    missed its objective, or the webhook URL (a credential) shows in one of ``secret_files``.
    """
    incident = report["incident"]
    problems = []
    bodies = receiver.notifications(incident=incident)
    received = ["%s at %s" % (body["event"], body["received_at"][11:23]) for body in bodies]
    lines = ["## Status page (webhook receiver %s)" % receiver.url,
             "received for %s: %s" % (incident, ", ".join(received) or "nothing")]
    starts = [body for body in bodies if body.get("event") == "start"]
    if not starts:
        problems.append("the webhook receiver got no 'start' notification of %s" % incident)
    elif starts[0].get("environment") != report["environment"] or starts[0].get("title") != report["title"]:
        problems.append("the 'start' notification does not describe %s: %r" % (incident, starts[0]))
    closing = "done" if report["outcome"] != "failed" else "failed"
    if not any(body.get("event") == closing for body in bodies):
        problems.append("the webhook receiver got no %r notification of %s" % (closing, incident))
    # the report is written before the closing notification is posted: what it lists must have arrived first
    reported = [n["event"] for n in report["notifications"] if n["ok"]]
    if [body.get("event") for body in bodies][:len(reported)] != reported:
        problems.append("the report lists delivered notifications %s, the receiver got %s"
                        % (reported, [body.get("event") for body in bodies]))
    measured = report["measures"].get("first_status_update")
    objective = next((o for o in report["objectives"] if o["name"] == "first_status_update"), None)
    if not isinstance(measured, (int, float)):
        problems.append("the report did not measure the first status update")
    elif objective is None or objective["status"] != "pass":
        problems.append("first status update %s: objective %s" % (measured, objective))
    else:
        lines.append("first status update %.1f s after detection (objective %.0f s): PASS"
                     % (measured, objective["objective_seconds"]))
    token = receiver.token
    leaked = [str(path) for path in secret_files if path.is_file() and token in path.read_text(errors="replace")]
    if leaked:
        problems.append("the webhook URL's token shows in %s" % ", ".join(leaked))
    else:
        lines.append("the webhook URL (a credential) shows in none of: demo log, journal, report")
    status = services.http_get(receiver.url + "/", timeout=5)[1].decode()
    page = json.loads(status)
    lines.append("status page now: %s (%s of %s)" % (page.get("status"), page.get("event"), page.get("incident")))
    return lines, problems


def cmd_demo(args):
    """Bring the sandbox up and run playbooks/drill.yml end to end; print the report's summary and path."""
    import subprocess  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel

    began = time.monotonic()
    rc = cmd_up(args)
    if rc != 0:
        return rc
    up_seconds = time.monotonic() - began
    print()
    print("running the drill: snapshot (restore point), deploy bad v2 (traffic to green) + bad writes,")
    print("detect (trigger-mode health gate), roll back code (blue_green) and database (PITR), verify ...", flush=True)
    env = dict(os.environ)
    env.update({"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".collections"),
                "ANSIBLE_CALLBACKS_ENABLED": "failsafe.recovery.journal", "ANSIBLE_PIPELINING": "True",
                "PATH": "%s:%s" % (services.VENV_BIN, env.get("PATH", ""))})
    log = STATE_DIR / "demo.log"
    drill_began = time.monotonic()
    with open(log, "w") as handle:
        proc = subprocess.run([str(services.VENV_BIN / "ansible-playbook"), "-i", str(INVENTORY),
                               str(ROOT / "playbooks" / "drill.yml")],
                              cwd=str(ROOT), env=env, stdout=handle, stderr=subprocess.STDOUT, check=False)
    drill_seconds = time.monotonic() - drill_began
    reports = sorted((STATE_DIR / "drills" / "incidents" / "reports").glob("*.md"), key=lambda p: p.stat().st_mtime)
    report = reports[-1] if reports and reports[-1].stat().st_mtime >= time.time() - drill_seconds - 1 else None
    print()
    problems = []
    if report:
        text = report.read_text()
        for section in ("## Summary", "## Metrics", "## Objectives"):
            if section in text:
                print(section)
                print(text.split(section, 1)[1].split("\n## ", 1)[0].strip())
                print()
        data = json.loads(report.with_suffix(".json").read_text())
        receiver = services.from_state(load_state()["services"]["webhook"])
        lines, problems = check_status_updates(
            receiver, data, [log, pathlib.Path(data["journal"]["path"])]
            + [report.with_suffix(suffix) for suffix in (".md", ".json", ".xml")])
        print("\n".join(lines))
        print()
        print("report: %s (+ .json, .xml)" % report)
    else:
        print("no report was written")
    print("log:    %s" % log)
    print("timing: sandbox up %.0f s, drill %.0f s, total %.0f s"
          % (up_seconds, drill_seconds, time.monotonic() - began))
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        print("\nthe drill FAILED (exit %d); last lines of the log:\n%s" % (proc.returncode, "\n".join(tail)),
              file=sys.stderr)
        return 1
    if problems:
        print("\nthe demo FAILED: %s" % "; ".join(problems), file=sys.stderr)
        return 1
    print("demo passed: v1 serves again, the bad writes are gone, every measured objective was met,")
    print("the status page received the incident's notifications.")
    print("the sandbox stays up (make sandbox-status); stop it with: make sandbox-down")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start every sandbox service on its fixed port")
    down = sub.add_parser("down", help="stop exactly the recorded processes and remove the state file")
    down.add_argument("--purge", action="store_true", help="also remove .cache/sandbox (data, logs, releases)")
    status = sub.add_parser("status", help="show each recorded service and whether it answers")
    status.add_argument("names", nargs="*", help="only these services (exit 0 when each runs and answers)")
    restart = sub.add_parser("restart", help="restart a demo app (also after it was killed); records the new PID")
    restart.add_argument("name", choices=RESTARTABLE)
    sub.add_parser("demo", help="bring the sandbox up and run the rollback drill end to end (playbooks/drill.yml)")
    args = parser.parse_args(argv)
    return {"up": cmd_up, "down": cmd_down, "status": cmd_status, "restart": cmd_restart,
            "demo": cmd_demo}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
