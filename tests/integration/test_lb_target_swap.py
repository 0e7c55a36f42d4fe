"""lb_target_swap for real: ELBv2 against the moto server, HAProxy with the blue (v1) / green (v2) demo apps.

Every module call goes through ansible-playbook (sandbox.runner.run_module); the
state is then read back from the service itself (boto3 describe calls, the
HAProxy runtime API and map file, requests through the frontend).
The shared HAProxy is put back on be_blue after every test.
"""

import http.client
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid

import pytest

import yaml

from sandbox import services
from sandbox.runner import ROOT, run_module, run_playbook


def run_many(calls):
    """Run several lb_target_swap calls in ONE ansible-playbook (saves its start-up time per call).

    ``calls`` is a list of (name, args). Each task may fail (that is what the error cases check); the
    result dicts come back by name.
    """
    play = [{"name": "lb_target_swap cases", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": str(ROOT / ".venv" / "bin" / "python")},
             "tasks": [{"name": name, "failsafe.recovery.lb_target_swap": args, "ignore_errors": True}
                       for name, args in calls]}]
    (ROOT / ".cache").mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=str(ROOT / ".cache"), delete=False) as handle:
        yaml.safe_dump(play, handle)
    try:
        res = run_playbook(handle.name, inventory="localhost,")
    finally:
        os.unlink(handle.name)
    return {name: res.result(name) for name, _args in calls}

# --------------------------------------------------------------------------- ELBv2


@pytest.fixture(scope="module")
def elb(moto):
    """VPC, two subnets, an ALB, target groups blue and green with one target each, listener :80 -> blue."""
    ec2 = moto.client("ec2")
    client = moto.client("elbv2")
    tag = uuid.uuid4().hex[:6]
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.%d.0/24" % i, AvailabilityZone="us-east-1" + az)
               ["Subnet"]["SubnetId"] for i, az in ((1, "a"), (2, "b"))]
    lb_name = "shop-" + tag
    lb = client.create_load_balancer(Name=lb_name, Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
    tgs = {}
    for color, ip in (("blue", "10.20.1.10"), ("green", "10.20.2.10"), ("canary", "10.20.1.20")):
        name = "%s-%s" % (color, tag)
        arn = client.create_target_group(Name=name, Protocol="HTTP", Port=80, VpcId=vpc,
                                         TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
        client.register_targets(TargetGroupArn=arn, Targets=[{"Id": ip, "Port": 80}])
        tgs[color] = dict(name=name, arn=arn)
    listener = client.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80, DefaultActions=[
        {"Type": "forward", "TargetGroupArn": tgs["blue"]["arn"]}])["Listeners"][0]["ListenerArn"]
    return dict(client=client, lb_name=lb_name, listener=listener, tgs=tgs, aws=moto.aws_params)


def listener_split(env):
    """{target group name: weight} of the listener's forward action, read from the API."""
    action = env["client"].describe_listeners(ListenerArns=[env["listener"]])["Listeners"][0]["DefaultActions"][0]
    names = {v["arn"]: v["name"] for v in env["tgs"].values()}
    groups = (action.get("ForwardConfig") or {}).get("TargetGroups")
    if groups:
        return {names[g["TargetGroupArn"]]: g.get("Weight", 1) for g in groups}
    return {names[action["TargetGroupArn"]]: 1}


def share(split, name):
    total = sum(split.values())
    return split.get(name, 0) / total


def swap(env, check=False, diff=False, **args):
    return run_module("lb_target_swap", dict(env["aws"], provider="elbv2", poll_interval=0.2, **args),
                      check=check, diff=diff)


def test_elbv2_check_swap_idempotence_and_revert(elb):
    blue, green = elb["tgs"]["blue"]["name"], elb["tgs"]["green"]["name"]
    before = listener_split(elb)
    assert share(before, blue) == 1

    predicted = swap(elb, check=True, diff=True, listener_arn=elb["listener"], target_group=green)
    assert not predicted.get("failed"), predicted.get("msg")
    assert predicted["changed"] is True
    assert predicted["diff"]["before"]["split"] == {blue: 100.0}
    assert predicted["diff"]["after"]["split"][green] == 100.0
    assert listener_split(elb) == before, "check mode changed the listener"

    applied = swap(elb, listener_arn=elb["listener"], target_group=green)
    assert applied["changed"] is True and applied["mutating_calls"] == 1
    after = listener_split(elb)
    assert share(after, green) == 1 and after.get(blue) == 0, after  # blue stays attached at weight 0
    assert {t["state"] for t in applied["health"]["targets"]} == {"healthy"}

    again = swap(elb, listener_arn=elb["listener"], target_group=green)
    assert again["changed"] is False and again["mutating_calls"] == 0
    assert listener_split(elb) == after

    previous = applied["previous"]
    reverted = swap(elb, listener_arn=previous["listener_arn"], weights=previous["weights"])
    assert reverted["changed"] is True
    assert share(listener_split(elb), blue) == 1


def test_elbv2_weighted_split_by_name_and_port(elb):
    blue, canary = elb["tgs"]["blue"]["name"], elb["tgs"]["canary"]["name"]
    start = listener_split(elb)
    target = dict(load_balancer_name=elb["lb_name"], listener_port=80)
    step = swap(elb, weights=[dict(target_group=blue, weight=90), dict(target_group=canary, weight=10)], **target)
    assert step["changed"] is True
    split = listener_split(elb)
    assert split[blue] == 90 and split[canary] == 10
    assert step["diff"]["after"]["split"][canary] == 10.0
    # the canary's targets were the ones waited on
    assert {t["target_group"] for t in step["health"]["targets"]} == {canary}

    same = swap(elb, weights=[dict(target_group=blue, weight=9), dict(target_group=canary, weight=1)], **target)
    assert same["changed"] is False, "9:1 is the same split as 90:10"

    back = swap(elb, weights=step["previous"]["weights"], **target)
    assert back["changed"] is True
    assert share(listener_split(elb), blue) == share(start, blue) == 1


def test_elbv2_rule(elb):
    client = elb["client"]
    blue, green = elb["tgs"]["blue"], elb["tgs"]["green"]
    rule = client.create_rule(ListenerArn=elb["listener"], Priority=10,
                              Conditions=[{"Field": "path-pattern", "Values": ["/api/*"]}],
                              Actions=[{"Type": "forward", "TargetGroupArn": blue["arn"]}])["Rules"][0]["RuleArn"]
    try:
        listener_before = listener_split(elb)
        res = swap(elb, rule_arn=rule, target_group=green["arn"])
        assert res["changed"] is True and res["rule_arn"] == rule
        action = client.describe_rules(RuleArns=[rule])["Rules"][0]["Actions"][0]
        weights = {g["TargetGroupArn"]: g["Weight"] for g in action["ForwardConfig"]["TargetGroups"]}
        assert weights == {green["arn"]: 1, blue["arn"]: 0}
        assert listener_split(elb) == listener_before, "the default action must not move"
        assert swap(elb, rule_arn=rule, weights=res["previous"]["weights"])["changed"] is True
        action = client.describe_rules(RuleArns=[rule])["Rules"][0]["Actions"][0]
        weights = {g["TargetGroupArn"]: g["Weight"] for g in action["ForwardConfig"]["TargetGroups"]}
        assert weights[blue["arn"]] > 0 and weights[green["arn"]] == 0
    finally:
        client.delete_rule(RuleArn=rule)


def test_elbv2_bad_input_changes_nothing(elb):
    green = elb["tgs"]["green"]["name"]
    conn = dict(elb["aws"], provider="elbv2")
    on_listener = dict(conn, listener_arn=elb["listener"])
    cases = {
        "unknown target group": (dict(on_listener, target_group="no-such-group"),
                                 "Target group 'no-such-group' not found"),
        "weights sum to 0": (dict(on_listener, weights=[dict(target_group="x", weight=0), dict(target_group="y", weight=0)]),
                             "weights sum to 0"),
        "negative weight": (dict(on_listener, weights=[dict(target_group="x", weight=-5), dict(target_group="y", weight=10)]),
                            "must be 0 or more"),
        "listener not found": (dict(conn, listener_arn=elb["listener"][:-4] + "0000", target_group=green),
                               "not found: check listener_arn"),
        "no such port": (dict(conn, load_balancer_name=elb["lb_name"], listener_port=8443, target_group=green),
                         "no listener on port 8443"),
        "unknown load balancer": (dict(conn, load_balancer_name="nope-" + elb["lb_name"], listener_port=80,
                                       target_group=green), "Load balancer 'nope-"),
    }
    before = listener_split(elb)
    results = run_many([(name, args) for name, (args, _msg) in cases.items()])
    for name, (_args, message) in cases.items():
        assert results[name].get("failed") and message in results[name]["msg"], (name, results[name].get("msg"))
    assert listener_split(elb) == before


# --------------------------------------------------------------------------- HAProxy


class Load:
    """A bounded load generator: ``threads`` workers send GET / through HAProxy until stopped,
    at most ``max_requests`` in all or ``max_seconds``; counts failures and versions seen."""

    def __init__(self, url, threads=4, max_requests=20000, max_seconds=30.0):
        parsed = urllib.parse.urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.threads = threads
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.sent = 0
        self.failed = []
        self.versions = []  # (time, version)
        self.workers = []

    def _one(self):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                return None, "HTTP %d" % resp.status
            return json.loads(body).get("version"), None
        except (OSError, ValueError, http.client.HTTPException) as exc:
            return None, repr(exc)
        finally:
            conn.close()

    def _work(self, deadline):
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            with self.lock:
                if self.sent >= self.max_requests:
                    return
                self.sent += 1
            version, error = self._one()
            with self.lock:
                if error:
                    self.failed.append(error)
                else:
                    self.versions.append((time.monotonic(), version))

    def __enter__(self):
        deadline = time.monotonic() + self.max_seconds
        self.workers = [threading.Thread(target=self._work, args=(deadline,), daemon=True) for _worker in range(self.threads)]
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        for worker in self.workers:
            worker.join(15)


def frontend_version(haproxy):
    conn = http.client.HTTPConnection("127.0.0.1", haproxy.port, timeout=5)
    try:
        conn.request("GET", "/")
        return json.loads(conn.getresponse().read())["version"]
    finally:
        conn.close()


@pytest.fixture
def hap(haproxy, demo_apps):
    """The shared HAProxy, put back on be_blue (runtime and map file, servers ready) after the test."""
    haproxy.reset()
    yield haproxy
    demo_apps.reset()
    haproxy.reset()


def hswap(proxy, check=False, diff=False, **args):
    base = dict(provider="haproxy", haproxy_socket=proxy.socket, map_file=proxy.map_file, map_key=proxy.map_key,
                poll_interval=0.2, wait_timeout=20)
    base.update(args)
    return run_module("lb_target_swap", base, check=check, diff=diff)


def test_haproxy_swap_under_load_revert_and_reload(hap):
    assert hap.current_backend() == "be_blue" and frontend_version(hap) == "v1"
    predicted = hswap(hap, check=True, diff=True, backend="be_green")
    assert predicted["changed"] is True and not predicted.get("failed"), predicted.get("msg")
    assert predicted["diff"]["before"]["split"] == {"be_blue": 100.0}
    assert predicted["diff"]["after"]["split"] == {"be_green": 100.0}
    assert hap.current_backend() == "be_blue"
    with open(hap.map_file) as handle:
        assert handle.read().split() == ["default", "be_blue"]

    # Bounded load: stops 1 s after the swap returned (hard bounds: 120 s, 200 000 requests).
    with Load(hap.url, threads=3, max_seconds=120, max_requests=200000) as load:
        time.sleep(0.3)
        swapped = hswap(hap, backend="be_green")
        t_swap = time.monotonic()
        time.sleep(1.0)
    assert swapped["changed"] is True, swapped.get("msg")
    assert swapped["previous"]["backend"] == "be_blue" and swapped["persisted"] is True
    assert all(s["healthy"] for s in swapped["health"]["targets"])
    assert load.sent > 100
    assert load.failed == [], load.failed[:5]
    late = [v for t, v in load.versions if t > t_swap + 0.2]
    assert late and set(late) == {"v2"}, "traffic after the swap must all reach green"
    assert {v for _t, v in load.versions} == {"v1", "v2"}
    assert hswap(hap, backend="be_green")["changed"] is False
    assert hap.current_backend() == "be_green"
    with open(hap.map_file) as handle:
        assert handle.read().split() == ["default", "be_green"]

    # the choice survives a reload (the map file was rewritten)
    hap.reload()
    assert hap.current_backend() == "be_green" and frontend_version(hap) == "v2"

    # revert from `previous`, under load again
    prev = swapped["previous"]
    with Load(hap.url, threads=3, max_seconds=120, max_requests=200000) as load:
        time.sleep(0.2)
        reverted = hswap(hap, haproxy_socket=prev["haproxy_socket"], map_file=prev["map_file"],
                         map_key=prev["map_key"], backend=prev["backend"])
        time.sleep(0.5)
    assert reverted["changed"] is True and load.failed == []
    assert hap.current_backend() == "be_blue" and frontend_version(hap) == "v1"


@pytest.fixture(scope="module")
def slow_proxy(demo_apps, tmp_path_factory):
    """A private HAProxy in front of the demo apps with 120 s server timeouts, so requests held by a
    hanging blue stay in flight while the module drains (the shared one gives up after 10 s)."""
    base = tmp_path_factory.mktemp("slowproxy")
    os.chmod(base, 0o755)
    port = services.free_port()
    sock, map_file = base / "admin.sock", base / "route.map"
    map_file.write_text("default be_blue\n")
    config = base / "haproxy.cfg"
    config.write_text("""global
    stats socket %(sock)s mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
frontend fe
    bind 127.0.0.1:%(port)d
    use_backend %%[str(default),map(%(map)s,be_blue)]
backend be_blue
    server blue 127.0.0.1:%(blue)d
backend be_green
    server green 127.0.0.1:%(green)d
""" % dict(sock=sock, port=port, map=map_file, blue=demo_apps.blue.port, green=demo_apps.green.port))
    with open(base / "haproxy.log", "w") as log:
        proc = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        services.wait_until(lambda: sock.exists() and services.port_open(port), 15, "private haproxy")
        yield dict(port=port, socket=str(sock), map_file=str(map_file))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_haproxy_drain_honours_timeout(slow_proxy, demo_apps):
    demo_apps.blue.set_fault(hang=True)
    slow = []

    def slow_request():
        conn = http.client.HTTPConnection("127.0.0.1", slow_proxy["port"], timeout=120)
        try:
            conn.request("GET", "/")
            slow.append(conn.getresponse().status)
        finally:
            conn.close()

    threads = [threading.Thread(target=slow_request, daemon=True) for _n in range(3)]
    for thread in threads:
        thread.start()
    args = dict(provider="haproxy", haproxy_socket=slow_proxy["socket"], map_file=slow_proxy["map_file"],
                map_key="default", poll_interval=0.2)
    try:
        time.sleep(0.5)  # the three requests now hang on blue
        res = run_module("lb_target_swap", dict(args, backend="be_green", drain=True, drain_timeout=1))
        in_flight_after = 3 - len(slow)
    finally:
        demo_apps.blue.set_fault(hang=False)
        for thread in threads:
            thread.join(30)
    assert res["changed"] is True and not res.get("failed"), res.get("msg")
    drain = res["drain"]
    assert drain["backend"] == "be_blue" and drain["completed"] is False and drain["timeout"] == 1
    assert 1.0 <= drain["waited"] < 2.0
    assert drain["sessions_left"] == {"blue": 3}
    assert any("drain_timeout=1" in w for w in res.get("warnings", []))
    assert in_flight_after == 3, "the module must return after drain_timeout, not when blue's requests end"
    assert slow == [200, 200, 200], "the drain must not cut in-flight requests"

    # with time enough the drain completes: nothing is in flight on green
    back = run_module("lb_target_swap", dict(args, backend="be_blue", drain=True, drain_timeout=10))
    assert back["changed"] is True and back["drain"]["completed"] is True
    assert back["drain"]["sessions_left"] == {"green": 0}


def test_haproxy_servers_mode(hap):
    state = green_state(hap)
    res = run_module("lb_target_swap", dict(provider="haproxy", haproxy_socket=hap.socket, backend="be_green",
                                            servers=[dict(name="green", state="drain", weight=50)]))
    assert res["changed"] is True, res.get("msg")
    assert res["previous"]["servers"] == [dict(name="green", state="ready", weight=state[1])]
    admin, weight = green_state(hap)
    assert admin & 0x08 and weight == 50  # FDRAIN bit set, user weight 50
    again = run_module("lb_target_swap", dict(provider="haproxy", haproxy_socket=hap.socket, backend="be_green",
                                              servers=[dict(name="green", state="drain", weight=50)]))
    assert again["changed"] is False
    back = run_module("lb_target_swap", dict(provider="haproxy", haproxy_socket=hap.socket, backend="be_green",
                                             servers=res["previous"]["servers"]))
    assert back["changed"] is True
    assert green_state(hap) == state


def test_haproxy_bad_input_and_unhealthy_green_change_nothing(hap, demo_apps, tmp_path):
    demo_apps.green.set_fault(fail_health=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not green_down(hap):
        time.sleep(0.2)
    assert green_down(hap)
    base = dict(provider="haproxy", haproxy_socket=hap.socket, map_file=hap.map_file, map_key=hap.map_key)
    cases = {
        "green unhealthy": (dict(base, backend="be_green", wait_timeout=2, poll_interval=0.2), "not healthy after 2s"),
        "key absent": (dict(base, map_key="nokey", backend="be_green"), "Key 'nokey' is absent from map"),
        "unknown backend": (dict(base, backend="be_nope"), "Backend 'be_nope' is not defined"),
        "missing socket": (dict(base, haproxy_socket=str(tmp_path / "missing.sock"), backend="be_green"), "does not exist"),
        "map not loaded": (dict(base, map_file=str(tmp_path / "other.map"), backend="be_green"), "is not loaded by HAProxy"),
        "unknown server": (dict(provider="haproxy", haproxy_socket=hap.socket, backend="be_green",
                                servers=[dict(name="nope", state="ready")]), "nope not found in backend be_green"),
        "server weight": (dict(provider="haproxy", haproxy_socket=hap.socket, backend="be_green",
                               servers=[dict(name="green", weight=300)]), "from 0 to 256"),
    }
    results = run_many([(name, args) for name, (args, _msg) in cases.items()])
    for name, (_args, message) in cases.items():
        assert results[name].get("failed") and message in results[name]["msg"], (name, results[name].get("msg"))
    assert hap.current_backend() == "be_blue"
    with open(hap.map_file) as handle:
        assert handle.read().split() == ["default", "be_blue"]
    assert green_state(hap)[0] == 0
    timeout = results["green unhealthy"]
    assert timeout["targets"][0]["server"] == "green" and timeout["targets"][0]["healthy"] is False
    assert "green=DOWN" in timeout["msg"]
    assert frontend_version(hap) == "v1"


def green_down(proxy):
    return any(line.startswith("be_green,green,") and ",DOWN," in line for line in proxy.admin("show stat").splitlines())


def green_state(proxy):
    """(srv_admin_state, srv_uweight) of be_green/green."""
    row = [line.split() for line in proxy.admin("show servers state be_green").splitlines() if " green " in line][0]
    return int(row[6]), int(row[7])
