# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the ELBv2 driver of lb_target_swap.

moto reports every target healthy, so the health wait (unhealthy -> healthy,
draining, not in use, timeout) is exercised here with botocore's Stubber: every
AWS call the driver makes must be one the test expects, in order.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from ansible_collections.failsafe.recovery.plugins.module_utils import _lb, _lb_elbv2 as elb
from ansible_collections.failsafe.recovery.tests.unit.fake_clock import FakeClock

ACCOUNT = "123456789012"
LB = "arn:aws:elasticloadbalancing:us-east-1:%s:loadbalancer/app/shop/50dc6c495c0c9188" % ACCOUNT
LISTENER = "arn:aws:elasticloadbalancing:us-east-1:%s:listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2" % ACCOUNT
RULE = "arn:aws:elasticloadbalancing:us-east-1:%s:listener-rule/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2/9683b2d02a6cabee" % ACCOUNT
BLUE = "arn:aws:elasticloadbalancing:us-east-1:%s:targetgroup/blue/6d0ecf831eec9f09" % ACCOUNT
GREEN = "arn:aws:elasticloadbalancing:us-east-1:%s:targetgroup/green/73e2d6bc24d8a067" % ACCOUNT


def params(**kw):
    base = dict(provider="elbv2", listener_arn=LISTENER, load_balancer_name=None, listener_port=None, rule_arn=None,
                target_group=None, weights=None, wait=True, wait_timeout=10, poll_interval=2.0, min_healthy_targets=1)
    base.update(kw)
    return base


def listener(actions):
    return {"Listeners": [{"ListenerArn": LISTENER, "LoadBalancerArn": LB, "Port": 80, "Protocol": "HTTP",
                           "DefaultActions": actions}]}


def forward(weights):
    return [{"Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": a, "Weight": w} for a, w in weights],
                                                  "TargetGroupStickinessConfig": {"Enabled": False}}}]


def tg(arn, name):
    return {"TargetGroups": [{"TargetGroupArn": arn, "TargetGroupName": name}]}


def health(*targets):
    out = []
    for ident, state, reason in targets:
        th = {"State": state}
        if reason:
            th["Reason"] = reason
            th["Description"] = "described " + reason
        out.append({"Target": {"Id": ident, "Port": 80}, "TargetHealth": th})
    return {"TargetHealthDescriptions": out}


@pytest.fixture
def stubbed():
    client = boto3.client("elbv2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def make(client, clock, check_mode=False, **kw):
    return elb.ElbSwap(client, params(**kw), check_mode=check_mode, clock=clock, sleep=clock.sleep)


def expect_lookup(stub, actions, wanted=("green", GREEN), other=("blue", BLUE)):
    stub.add_response("describe_listeners", listener(actions), {"ListenerArns": [LISTENER]})
    stub.add_response("describe_target_groups", tg(wanted[1], wanted[0]), {"Names": [wanted[0]]})
    stub.add_response("describe_target_groups", tg(other[1], other[0]), {"TargetGroupArns": [other[1]]})


# -- pure helpers ------------------------------------------------------------

def test_forward_weights_normalises_bare_arn_and_forward_config():
    assert elb.forward_weights({"Type": "forward", "TargetGroupArn": BLUE}) == {BLUE: 1}
    assert elb.forward_weights(forward([(BLUE, 90), (GREEN, 10)])[0]) == {BLUE: 90, GREEN: 10}
    both = {"Type": "forward", "TargetGroupArn": BLUE, "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": BLUE}]}}
    assert elb.forward_weights(both) == {BLUE: 1}


def test_same_split_is_exact_on_shares():
    assert _lb.same_split({BLUE: 1}, {BLUE: 100, GREEN: 0})
    assert _lb.same_split({BLUE: 90, GREEN: 10}, {BLUE: 9, GREEN: 1})
    assert not _lb.same_split({BLUE: 1, GREEN: 1}, {BLUE: 50, GREEN: 51})
    assert not _lb.same_split({BLUE: 1}, {GREEN: 1})


def test_plan_keeps_unnamed_groups_at_zero_and_incoming_is_growing_share():
    new = elb.plan_weights({BLUE: 1}, {GREEN: 1})
    assert new == {GREEN: 1, BLUE: 0}
    assert elb.incoming_groups({BLUE: 1}, new) == [GREEN]
    assert elb.incoming_groups({BLUE: 1}, {BLUE: 90, GREEN: 10}) == [GREEN]
    assert elb.incoming_groups({BLUE: 90, GREEN: 10}, {BLUE: 1, GREEN: 0}) == [BLUE]


def test_build_actions_keeps_other_actions_order_and_stickiness():
    auth = {"Type": "authenticate-oidc", "Order": 1, "AuthenticateOidcConfig": {"Issuer": "x"}}
    fwd = {"Type": "forward", "Order": 2, "TargetGroupArn": BLUE,
           "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": BLUE, "Weight": 1}],
                             "TargetGroupStickinessConfig": {"Enabled": True, "DurationSeconds": 60}}}
    new = elb.build_actions([auth, fwd], 1, {BLUE: 0, GREEN: 1})
    assert new[0] == auth
    assert new[1]["Order"] == 2 and "TargetGroupArn" not in new[1]
    assert new[1]["ForwardConfig"]["TargetGroupStickinessConfig"]["DurationSeconds"] == 60
    assert elb.forward_weights(new[1]) == {BLUE: 0, GREEN: 1}
    assert fwd["TargetGroupArn"] == BLUE  # input untouched


def test_group_verdict_requires_all_non_draining_and_minimum():
    rows = [dict(state="healthy"), dict(state="draining"), dict(state="healthy")]
    assert elb.group_verdict(rows, 2) == (True, 2, 2)
    assert elb.group_verdict(rows, 3) == (False, 2, 2)
    assert elb.group_verdict([dict(state="healthy"), dict(state="unhealthy")], 1) == (False, 1, 2)
    assert elb.group_verdict([], 1) == (False, 0, 0)
    assert elb.group_verdict([], 0) == (True, 0, 0)


def test_listener_of_rule():
    assert elb.listener_of_rule(RULE) == LISTENER


@pytest.mark.parametrize("weights,message", [
    ([], "empty"),
    ([dict(name="a", weight=0), dict(name="b", weight=0)], "sum to 0"),
    ([dict(name="a", weight=-1), dict(name="b", weight=5)], "0 or more"),
    ([dict(name="a", weight=1), dict(name="a", weight=5)], "more than once"),
    ([dict(name="a", weight=1000)], "maximum"),
])
def test_validate_weights_rejects_nonsense(weights, message):
    with pytest.raises(ValueError, match=message):
        _lb.validate_weights(weights, elb.MAX_WEIGHT)


# -- the swap with the health wait, stubbed ----------------------------------

def test_unhealthy_then_healthy_then_swap(stubbed):
    client, stub = stubbed
    clock = FakeClock()
    actions = forward([(BLUE, 1)])
    expect_lookup(stub, actions)
    initial = health(("10.0.1.5", "initial", "Elb.RegistrationInProgress"), ("10.0.2.5", "initial", "Elb.RegistrationInProgress"))
    stub.add_response("describe_target_health", initial, {"TargetGroupArn": GREEN})  # not-in-use probe
    stub.add_response("describe_target_health", initial, {"TargetGroupArn": GREEN})
    half = health(("10.0.1.5", "healthy", None), ("10.0.2.5", "unhealthy", "Target.FailedHealthChecks"))
    stub.add_response("describe_target_health", half, {"TargetGroupArn": GREEN})
    stub.add_response("describe_target_health", health(("10.0.1.5", "healthy", None), ("10.0.2.5", "healthy", None)), {"TargetGroupArn": GREEN})
    stub.add_response("modify_listener", {}, {"ListenerArn": LISTENER, "DefaultActions": elb.build_actions(actions, 0, {GREEN: 1, BLUE: 0})})
    stub.add_response("describe_listeners", listener(forward([(GREEN, 1), (BLUE, 0)])), {"ListenerArns": [LISTENER]})
    result = make(client, clock, target_group="green").run()
    assert result["changed"] is True
    assert result["mutating_calls"] == 1
    assert result["health"]["waited"] == 4.0
    assert {t["state"] for t in result["health"]["targets"]} == {"healthy"}
    assert result["previous"]["weights"] == [dict(target_group=BLUE, weight=1)]
    assert result["diff"]["before"]["split"] == {"blue": 100.0}
    assert result["diff"]["after"]["split"] == {"green": 100.0, "blue": 0.0}


def test_draining_target_does_not_block(stubbed):
    client, stub = stubbed
    clock = FakeClock()
    actions = forward([(BLUE, 1)])
    expect_lookup(stub, actions)
    rows = health(("10.0.1.5", "healthy", None), ("10.0.2.5", "draining", "Target.DeregistrationInProgress"))
    stub.add_response("describe_target_health", rows, {"TargetGroupArn": GREEN})
    stub.add_response("describe_target_health", rows, {"TargetGroupArn": GREEN})
    stub.add_response("modify_listener", {}, None)
    stub.add_response("describe_listeners", listener(forward([(GREEN, 1), (BLUE, 0)])), None)
    result = make(client, clock, target_group="green").run()
    assert result["changed"] and result["health"]["waited"] == 0.0
    assert [t["state"] for t in result["health"]["targets"]] == ["healthy", "draining"]


def test_timeout_lists_every_target_and_changes_nothing(stubbed):
    client, stub = stubbed
    clock = FakeClock()
    expect_lookup(stub, forward([(BLUE, 1)]))
    rows = health(("10.0.1.5", "healthy", None), ("10.0.2.5", "unhealthy", "Target.Timeout"),
                  ("10.0.3.5", "unhealthy", "Target.ResponseCodeMismatch"))
    for _poll in range(1 + 6):  # probe + polls at t=0,2,4,6,8,10
        stub.add_response("describe_target_health", rows, {"TargetGroupArn": GREEN})
    with pytest.raises(elb.ElbError) as info:
        make(client, clock, target_group="green").run()
    msg = info.value.msg
    assert "1 of 3 healthy" in msg
    for ident in ("10.0.1.5", "10.0.2.5", "10.0.3.5"):
        assert ident in msg
    assert "Target.ResponseCodeMismatch" in msg
    assert [t["id"] for t in info.value.facts["targets"]] == ["10.0.1.5", "10.0.2.5", "10.0.3.5"]
    assert info.value.facts["previous"]["weights"] == [dict(target_group=BLUE, weight=1)]


def test_not_in_use_group_is_attached_at_zero_then_swapped(stubbed):
    client, stub = stubbed
    clock = FakeClock()
    actions = forward([(BLUE, 1)])
    expect_lookup(stub, actions)
    unused = health(("10.0.1.5", "unused", "Target.NotInUse"))
    stub.add_response("describe_target_health", unused, {"TargetGroupArn": GREEN})
    stub.add_response("modify_listener", {}, {"ListenerArn": LISTENER, "DefaultActions": elb.build_actions(actions, 0, {BLUE: 1, GREEN: 0})})
    stub.add_response("describe_target_health", health(("10.0.1.5", "initial", "Elb.RegistrationInProgress")), {"TargetGroupArn": GREEN})
    stub.add_response("describe_target_health", health(("10.0.1.5", "healthy", None)), {"TargetGroupArn": GREEN})
    stub.add_response("modify_listener", {}, {"ListenerArn": LISTENER, "DefaultActions": elb.build_actions(actions, 0, {GREEN: 1, BLUE: 0})})
    stub.add_response("describe_listeners", listener(forward([(GREEN, 1), (BLUE, 0)])), None)
    result = make(client, clock, target_group="green").run()
    assert result["staged"] == ["green"]
    assert result["mutating_calls"] == 2


def test_not_in_use_then_timeout_detaches_again(stubbed):
    client, stub = stubbed
    clock = FakeClock()
    actions = forward([(BLUE, 1)])
    expect_lookup(stub, actions)
    stub.add_response("describe_target_health", health(("10.0.1.5", "unused", "Target.NotInUse")), None)
    stub.add_response("modify_listener", {}, None)
    for _poll in range(6):
        stub.add_response("describe_target_health", health(("10.0.1.5", "unhealthy", "Target.Timeout")), None)
    stub.add_response("modify_listener", {}, {"ListenerArn": LISTENER, "DefaultActions": actions})
    with pytest.raises(elb.ElbError, match="traffic not moved"):
        make(client, clock, target_group="green").run()


def test_already_there_is_unchanged_and_makes_no_call(stubbed):
    client, stub = stubbed
    clock = FakeClock()
    expect_lookup(stub, forward([(GREEN, 1), (BLUE, 0)]))
    result = make(client, clock, target_group="green").run()
    assert result["changed"] is False and result["mutating_calls"] == 0
    assert result["previous"] == result["current"]


def test_check_mode_predicts_without_writing(stubbed):
    client, stub = stubbed
    clock = FakeClock()
    stub.add_response("describe_listeners", listener(forward([(BLUE, 1)])), None)
    stub.add_response("describe_target_groups", tg(BLUE, "blue"), {"Names": ["blue"]})
    stub.add_response("describe_target_groups", tg(GREEN, "green"), {"Names": ["green"]})
    stub.add_response("describe_target_health", health(("10.0.1.5", "unhealthy", "Target.Timeout")), {"TargetGroupArn": GREEN})
    result = make(client, clock, check_mode=True, weights=[dict(target_group="blue", weight=90),
                                                           dict(target_group="green", weight=10)]).run()
    assert result["changed"] is True
    assert result["diff"]["after"]["split"] == {"blue": 90.0, "green": 10.0}
    assert result["health"]["targets"][0]["state"] == "unhealthy"


def test_unknown_target_group_is_a_clear_error(stubbed):
    client, stub = stubbed
    stub.add_response("describe_listeners", listener(forward([(BLUE, 1)])), None)
    stub.add_client_error("describe_target_groups", "TargetGroupNotFound", "One or more target groups not found")
    with pytest.raises(elb.ElbError, match="Target group 'nope' not found"):
        make(client, FakeClock(), target_group="nope").run()


def test_listener_not_found_is_a_clear_error(stubbed):
    client, stub = stubbed
    stub.add_client_error("describe_listeners", "ListenerNotFound", "The specified listener does not exist.")
    with pytest.raises(elb.ElbError, match="Listener .* not found: check listener_arn"):
        make(client, FakeClock(), target_group="green").run()


def test_listener_by_name_and_port_missing_port(stubbed):
    client, stub = stubbed
    stub.add_response("describe_load_balancers", {"LoadBalancers": [{"LoadBalancerArn": LB, "LoadBalancerName": "shop"}]},
                      {"Names": ["shop"]})
    stub.add_response("describe_listeners", listener(forward([(BLUE, 1)])), {"LoadBalancerArn": LB})
    with pytest.raises(elb.ElbError, match="no listener on port 443 \\(ports: 80\\)"):
        make(client, FakeClock(), listener_arn=None, load_balancer_name="shop", listener_port=443, target_group="green").run()


def test_rule_is_modified_with_modify_rule(stubbed):
    client, stub = stubbed
    clock = FakeClock()
    rule_actions = forward([(BLUE, 1)])
    stub.add_response("describe_listeners", listener(forward([(BLUE, 1)])), {"ListenerArns": [LISTENER]})
    stub.add_response("describe_rules", {"Rules": [{"RuleArn": RULE, "IsDefault": False, "Actions": rule_actions}]},
                      {"RuleArns": [RULE]})
    stub.add_response("describe_target_groups", tg(GREEN, "green"), None)
    stub.add_response("describe_target_groups", tg(BLUE, "blue"), None)
    result = make(client, clock, wait=False, listener_arn=None, rule_arn=RULE, target_group="green")
    stub.add_response("describe_target_health", health(("10.0.1.5", "healthy", None)), None)
    stub.add_response("modify_rule", {}, {"RuleArn": RULE, "Actions": elb.build_actions(rule_actions, 0, {GREEN: 1, BLUE: 0})})
    stub.add_response("describe_rules", {"Rules": [{"RuleArn": RULE, "Actions": forward([(GREEN, 1), (BLUE, 0)])}]}, None)
    out = result.run()
    assert out["rule_arn"] == RULE and out["previous"]["rule_arn"] == RULE
    assert out["current"]["weights"][0] == dict(target_group=GREEN, weight=1)


def test_no_forward_action_is_refused(stubbed):
    client, stub = stubbed
    stub.add_response("describe_listeners", listener([{"Type": "fixed-response",
                                                       "FixedResponseConfig": {"StatusCode": "503"}}]), None)
    with pytest.raises(elb.ElbError, match="no forward action"):
        make(client, FakeClock(), target_group="green").run()
