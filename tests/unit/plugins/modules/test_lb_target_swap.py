# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""main() of lb_target_swap: argument constraints and errors raised before anything is touched,
and one full map-mode run against a stateful fake of the HAProxy runtime API."""

from __future__ import annotations

import json
import socket
import threading

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.failsafe.recovery.plugins.modules import lb_target_swap


def run_main(args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            lb_target_swap.main()
    return json.loads(capsys.readouterr().out)


def test_target_group_and_weights_are_mutually_exclusive(capsys):
    out = run_main(dict(provider="elbv2", listener_arn="arn:x", target_group="green",
                        weights=[dict(target_group="blue", weight=1)]), capsys)
    assert out["failed"] and "mutually exclusive" in out["msg"]


def test_elbv2_needs_a_listener(capsys):
    out = run_main(dict(provider="elbv2", target_group="green"), capsys)
    assert out["failed"] and "listener_arn" in out["msg"]


def test_weights_summing_to_zero_fail_before_any_call(capsys):
    out = run_main(dict(provider="elbv2", listener_arn="arn:x", region="us-east-1", endpoint_url="http://127.0.0.1:1",
                        weights=[dict(target_group="blue", weight=0), dict(target_group="green", weight=0)]), capsys)
    assert out["failed"] and "weights sum to 0" in out["msg"]


def test_no_region_is_a_clear_error(capsys, monkeypatch):
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    out = run_main(dict(provider="elbv2", listener_arn="arn:x", target_group="green", access_key="a", secret_key="b"),
                   capsys)
    assert out["failed"] and "Cannot create an ELBv2 client" in out["msg"]


def test_options_of_the_other_provider_are_refused(capsys):
    out = run_main(dict(provider="haproxy", haproxy_socket="/nope.sock", backend="be_green", map_file="/m",
                        map_key="default", target_group="green"), capsys)
    assert out["failed"] and "target_group do not apply to provider=haproxy" in out["msg"]


def test_missing_socket(capsys, tmp_path):
    out = run_main(dict(provider="haproxy", haproxy_socket=str(tmp_path / "nope.sock"), backend="be_green",
                        map_file="/m", map_key="default"), capsys)
    assert out["failed"] and "does not exist" in out["msg"] and out["haproxy_socket"].endswith("nope.sock")


@pytest.fixture
def fake_haproxy(tmp_path):
    """A Unix socket answering the runtime API commands the module uses, with a live map."""
    path = str(tmp_path / "admin.sock")
    map_file = str(tmp_path / "route.map")
    with open(map_file, "w") as handle:
        handle.write("default be_blue\n")
    state = {"default": "be_blue"}
    stat = ("# pxname,svname,scur,status,check_status,weight,check_desc,\n"
            "be_blue,blue,0,UP,L7OK,1,ok,\nbe_green,green,0,UP,L7OK,1,ok,\n")

    def reply(cmd):
        if cmd == "show cli level":
            return "admin\n"
        if cmd == "show backend":
            return "# name\nbe_blue\nbe_green\n"
        if cmd == "show map " + map_file:
            return "".join("0x1 %s %s\n" % kv for kv in state.items())
        if cmd.startswith("set map %s default " % map_file):
            state["default"] = cmd.rsplit(" ", 1)[1]
            return "\n"
        if cmd == "show stat":
            return stat
        if cmd.startswith("show servers state"):
            return "1\n# be_id be_name srv_id srv_name srv_op_state srv_admin_state srv_uweight\n"
        return "Unknown command.\n"

    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(5)

    def serve():
        while True:
            try:
                conn, _addr = srv.accept()
            except OSError:
                return
            with conn:
                conn.sendall(reply(conn.recv(4096).decode().strip()).encode())

    threading.Thread(target=serve, daemon=True).start()
    yield dict(socket=path, map_file=map_file, state=state)
    srv.close()


def test_haproxy_map_swap_then_unchanged(capsys, fake_haproxy):
    args = dict(provider="haproxy", haproxy_socket=fake_haproxy["socket"], backend="be_green",
                map_file=fake_haproxy["map_file"], map_key="default", poll_interval=0.1)
    out = run_main(args, capsys)
    assert out["changed"] and not out.get("failed")
    assert out["previous"]["backend"] == "be_blue" and out["current"]["backend"] == "be_green"
    assert fake_haproxy["state"]["default"] == "be_green"
    with open(fake_haproxy["map_file"]) as handle:
        assert handle.read() == "default be_green\n"
    again = run_main(args, capsys)
    assert again["changed"] is False
