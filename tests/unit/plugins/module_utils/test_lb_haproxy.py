# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the HAProxy driver: parsers of runtime API output (captured from
HAProxy 2.6), the map file rewrite, the waits, and the socket client against a
canned Unix socket server."""

from __future__ import annotations

import os
import socket
import stat
import threading

import pytest

from ansible_collections.failsafe.recovery.plugins.module_utils import _lb_haproxy as hap
from ansible_collections.failsafe.recovery.tests.unit.fake_clock import FakeClock

SERVERS_STATE_FIELDS = ("be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
                        "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
                        "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl "
                        "srv_check_port srv_check_addr srv_agent_addr srv_agent_port")
SERVERS_STATE = """1
# %s
3 be_blue 1 blue 127.0.0.1 2 0 1 1 10 6 3 4 6 0 0 0 - 18556 - 0 0 - - 0
4 be_green 1 green 127.0.0.1 0 8 5 1 1 8 2 0 6 0 0 0 - 18557 - 0 0 - - 0
4 be_green 2 green2 127.0.0.1 2 1 1 1 1 8 2 0 6 0 0 0 - 18558 - 0 0 - - 0

""" % SERVERS_STATE_FIELDS

STAT_HEADER = ("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,"
               "weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,"
               "rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,"
               "hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,"
               "lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,")


def stat_line(px, sv, scur, status, check="L7OK", weight=1, desc="Layer7 check passed"):
    fields = {name: "" for name in STAT_HEADER.lstrip("# ").rstrip(",").split(",")}
    fields.update(pxname=px, svname=sv, scur=str(scur), status=status, check_status=check, weight=str(weight),
                  check_desc=desc)
    return ",".join(fields.values()) + ","


def stat_text(*rows):
    return "\n".join([STAT_HEADER] + [stat_line(*r) for r in rows]) + "\n\n"


def test_parse_servers_state_types_and_admin_names():
    rows = hap.parse_servers_state(SERVERS_STATE)
    assert [(r["be_name"], r["srv_name"]) for r in rows] == [("be_blue", "blue"), ("be_green", "green"), ("be_green", "green2")]
    assert rows[0]["srv_op_state"] == 2 and rows[0]["op_state"] == "running" and rows[0]["admin"] == "ready"
    assert rows[1]["admin"] == "drain" and rows[1]["srv_uweight"] == 5 and rows[1]["op_state"] == "stopped"
    assert rows[2]["admin"] == "maint"


def test_admin_state_name_bits():
    assert hap.admin_state_name(0) == "ready"
    assert hap.admin_state_name(0x08) == "drain"
    assert hap.admin_state_name(0x10) == "drain"
    assert hap.admin_state_name(0x01 | 0x08) == "maint"
    assert hap.admin_state_name(0x20) == "maint"


def test_parse_map_and_backends():
    assert hap.parse_map("0x55588b8ab1a0 default be_blue\n0x55588b8ab1b0 api be_green\n\n") == {
        "default": "be_blue", "api": "be_green"}
    assert hap.parse_map("\n") == {}
    assert hap.parse_backends("# name\nbe_blue\nbe_green\n\n") == ["be_blue", "be_green"]


def test_parse_stat_and_server_stats():
    text = stat_text(("fe", "FRONTEND", 3, "OPEN"), ("be_blue", "blue", 2, "UP"),
                     ("be_blue", "BACKEND", 2, "UP"), ("be_green", "green", 0, "DOWN", "L4CON", 1, "Connection refused"))
    rows = hap.parse_stat(text)
    assert len(rows) == 4
    assert hap.server_stats(rows, "be_blue") == {"blue": dict(status="UP", scur=2, check_status="L7OK",
                                                              check_desc="Layer7 check passed", weight=1)}
    assert hap.server_stats(rows, "be_green")["green"]["status"] == "DOWN"
    assert hap.parse_stat("Unknown command\n") == []


@pytest.mark.parametrize("status,up", [("UP", True), ("no check", True), ("DOWN", False), ("UP 1/3", False),
                                       ("DOWN 1/2", False), ("MAINT", False), ("DRAIN", False), ("NOLB", False)])
def test_is_up(status, up):
    assert hap.is_up(status) is up


def test_rewrite_map_text_keeps_comments_and_other_keys():
    text = "# routes\ndefault be_blue\napi   be_blue\n"
    assert hap.rewrite_map_text(text, "default", "be_green") == "# routes\ndefault be_green\napi   be_blue\n"
    assert hap.rewrite_map_text("a b\n", "default", "be_green") == "a b\ndefault be_green\n"
    assert hap.rewrite_map_text("default x\ndefault y\n", "default", "z") == "default z\n"
    assert hap.map_file_value(text, "api") == "be_blue"
    assert hap.map_file_value(text, "nope") is None


def test_write_atomic_keeps_mode(tmp_path):
    path = tmp_path / "route.map"
    path.write_text("default be_blue\n")
    os.chmod(path, 0o640)
    inode = path.stat().st_ino
    hap.write_atomic(str(path), "default be_green\n")
    assert path.read_text() == "default be_green\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # renamed into place, not rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["route.map"]


class FakeAPI:
    """Runtime API double: a script of `show stat` replies, recorded writes."""

    address = "/fake.sock"

    def __init__(self, stats, states=SERVERS_STATE, maps=None, level="admin", backends=("be_blue", "be_green")):
        self.stats = list(stats)
        self.states = states
        self.maps = maps or {}
        self.level = level
        self._backends = list(backends)
        self.writes = []

    def check_admin(self):
        if self.level != "admin":
            raise hap.HAProxyError("level %s" % self.level)

    def backends(self):
        return self._backends

    def stat(self):
        text = self.stats.pop(0) if len(self.stats) > 1 else self.stats[0]
        return hap.parse_stat(text)

    def servers_state(self, backend=None):
        return hap.parse_servers_state(self.states)

    def map_entries(self, map_file):
        return dict(self.maps.get(map_file, {}))

    def set_map(self, map_file, key, value):
        self.writes.append(("set map", map_file, key, value))
        self.maps[map_file][key] = value

    def set_server_state(self, backend, server, state):
        self.writes.append(("state", backend, server, state))

    def set_server_weight(self, backend, server, weight):
        self.writes.append(("weight", backend, server, weight))

    def command(self, cmd):
        return SERVERS_STATE


def test_wait_healthy_down_then_up():
    clock = FakeClock()
    api = FakeAPI([stat_text(("be_green", "green", 0, "DOWN")), stat_text(("be_green", "green", 0, "DOWN 1/2")),
                   stat_text(("be_green", "green", 0, "UP"))])
    out = hap.wait_healthy(api, "be_green", None, 1, 10, 1.0, clock=clock, sleep=clock.sleep)
    assert out["healthy"] and out["waited"] == 2.0 and out["targets"][0]["status"] == "UP"


def test_wait_healthy_timeout_reports_every_server():
    clock = FakeClock()
    api = FakeAPI([stat_text(("be_green", "green", 0, "UP"), ("be_green", "green2", 0, "DOWN", "L4CON", 1, "refused"))])
    with pytest.raises(hap.HAProxyError) as info:
        hap.wait_healthy(api, "be_green", None, 1, 3, 1.0, clock=clock, sleep=clock.sleep)
    assert "1 of 2 servers UP" in info.value.msg and "green=UP" in info.value.msg and "green2=DOWN" in info.value.msg
    assert [t["server"] for t in info.value.facts["targets"]] == ["green", "green2"]


def test_wait_healthy_minimum():
    clock = FakeClock()
    api = FakeAPI([stat_text(("be_green", "green", 0, "UP"))])
    with pytest.raises(hap.HAProxyError, match="at least 2"):
        hap.wait_healthy(api, "be_green", None, 2, 1, 1.0, clock=clock, sleep=clock.sleep)


def test_drain_completes_or_honours_timeout():
    clock = FakeClock()
    api = FakeAPI([stat_text(("be_blue", "blue", 3, "UP")), stat_text(("be_blue", "blue", 1, "UP")),
                   stat_text(("be_blue", "blue", 0, "UP"))])
    out = hap.drain_wait(api, "be_blue", None, 10, 0.5, clock=clock, sleep=clock.sleep)
    assert out["completed"] and out["waited"] == 1.0 and out["sessions_left"] == {"blue": 0}
    clock = FakeClock()
    api = FakeAPI([stat_text(("be_blue", "blue", 4, "UP"))])
    out = hap.drain_wait(api, "be_blue", None, 2, 0.5, clock=clock, sleep=clock.sleep)
    assert not out["completed"] and out["waited"] == 2.0 and out["sessions_left"] == {"blue": 4}


def swap_params(**kw):
    base = dict(haproxy_socket="/fake.sock", backend="be_green", map_file=None, map_key=None, servers=None,
                server_state_file=None, wait=True, wait_timeout=5, poll_interval=0.01, min_healthy_targets=1,
                drain=False, drain_timeout=1)
    base.update(kw)
    return base


def test_map_mode_key_absent_is_refused(tmp_path):
    api = FakeAPI([stat_text(("be_green", "green", 0, "UP"))], maps={"/m": {"other": "be_blue"}})
    with pytest.raises(hap.HAProxyError, match="Key 'default' is absent from map /m"):
        hap.HAProxySwap(swap_params(map_file="/m", map_key="default"), api=api).run()
    assert api.writes == []


def test_unknown_backend_and_non_admin_are_refused():
    api = FakeAPI([stat_text()], maps={})
    with pytest.raises(hap.HAProxyError, match="Backend 'be_nope' is not defined"):
        hap.HAProxySwap(swap_params(backend="be_nope", map_file="/m", map_key="default"), api=api).run()
    api = FakeAPI([stat_text()], level="operator")
    with pytest.raises(hap.HAProxyError, match="level operator"):
        hap.HAProxySwap(swap_params(map_file="/m", map_key="default"), api=api).run()


def test_map_mode_check_apply_idempotent(tmp_path):
    path = tmp_path / "route.map"
    path.write_text("# managed\ndefault be_blue\n")
    up = stat_text(("be_green", "green", 0, "UP"), ("be_blue", "blue", 0, "UP"))
    api = FakeAPI([up], maps={str(path): {"default": "be_blue"}})
    p = swap_params(map_file=str(path), map_key="default")
    out = hap.HAProxySwap(p, api=api, check_mode=True).run()
    assert out["changed"] and api.writes == [] and "be_blue" in path.read_text()
    assert out["diff"]["after"]["split"] == {"be_green": 100.0}
    assert [t["server"] for t in out["health"]["targets"]] == ["green"] and "waited" not in out["health"]
    out = hap.HAProxySwap(p, api=api).run()
    assert out["health"]["healthy"] is True and out["health"]["waited"] < 1
    assert out["changed"] and api.writes == [("set map", str(path), "default", "be_green")]
    assert path.read_text() == "# managed\ndefault be_green\n"
    assert out["previous"]["backend"] == "be_blue" and out["persisted"]
    again = hap.HAProxySwap(p, api=api).run()
    assert not again["changed"] and len(api.writes) == 1


def test_map_mode_repairs_a_file_that_lags_the_runtime(tmp_path):
    path = tmp_path / "route.map"
    path.write_text("default be_blue\n")
    api = FakeAPI([stat_text(("be_green", "green", 0, "UP"))], maps={str(path): {"default": "be_green"}})
    out = hap.HAProxySwap(swap_params(map_file=str(path), map_key="default"), api=api).run()
    assert out["changed"] and api.writes == [] and path.read_text() == "default be_green\n"


def test_servers_mode_orders_incoming_first():
    up = stat_text(("be_green", "green", 0, "UP"), ("be_green", "green2", 0, "UP"))
    api = FakeAPI([up])
    p = swap_params(servers=[dict(name="green", state="maint", weight=None), dict(name="green2", state="ready", weight=10)])
    out = hap.HAProxySwap(p, api=api).run()
    assert api.writes == [("state", "be_green", "green2", "ready"), ("weight", "be_green", "green2", 10),
                          ("state", "be_green", "green", "maint")]
    assert out["previous"]["servers"] == [dict(name="green", state="drain", weight=5), dict(name="green2", state="maint", weight=1)]
    assert out["diff"]["after"]["split"] == {"green": 0.0, "green2": 100.0}


def test_servers_mode_unknown_server():
    api = FakeAPI([stat_text()])
    with pytest.raises(hap.HAProxyError, match="Server\\(s\\) nope not found in backend be_green"):
        hap.HAProxySwap(swap_params(servers=[dict(name="nope", state="ready", weight=None)]), api=api).run()


# -- the socket client against a canned server --------------------------------

@pytest.fixture
def canned_socket(tmp_path):
    path = str(tmp_path / "admin.sock")
    replies = {"show cli level": "operator\n", "set server be_blue/blue state drain": "Permission denied\n\n",
               "show backend": "# name\nbe_blue\n\n"}
    received = []
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(5)
    srv.settimeout(5)

    def serve():
        while True:
            try:
                conn, _addr = srv.accept()
            except OSError:
                return
            with conn:
                cmd = conn.recv(4096).decode().strip()
                received.append(cmd)
                conn.sendall(replies.get(cmd, "Unknown command.\n").encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, received
    srv.close()


def test_runtime_api_client_and_level_errors(canned_socket):
    path, received = canned_socket
    api = hap.RuntimeAPI(path)
    assert api.backends() == ["be_blue"]
    with pytest.raises(hap.HAProxyError, match="level operator; lb_target_swap needs level admin"):
        api.check_admin()
    with pytest.raises(hap.HAProxyError, match="Permission denied. The socket must be at level admin"):
        api.set_server_state("be_blue", "blue", "drain")
    assert received == ["show backend", "show cli level", "set server be_blue/blue state drain"]


def test_missing_socket_is_a_clear_error(tmp_path):
    with pytest.raises(hap.HAProxyError, match="admin socket .* does not exist"):
        hap.RuntimeAPI(str(tmp_path / "nope.sock")).command("show info")
    with pytest.raises(hap.HAProxyError, match="Cannot connect"):
        hap.RuntimeAPI("127.0.0.1:1").command("show info")


def test_runtime_api_over_tcp():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(5)
    port = srv.getsockname()[1]

    def serve():
        conn, _addr = srv.accept()
        with conn:
            if conn.recv(4096).decode().strip() == "show cli level":
                conn.sendall(b"admin\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        hap.RuntimeAPI("127.0.0.1:%d" % port).check_admin()
    finally:
        thread.join(5)
        srv.close()
