# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: the ELBv2 driver of lb_target_swap.

Moves the traffic of one forward action (a listener's default action, or a
listener rule) between target groups:

- the listener is found by ARN, or by load balancer name + port; a rule by ARN;
- the forward action is normalised to ``{target group ARN: weight}`` (a bare
  ``TargetGroupArn`` is weight 1) and splits are compared as exact shares, so
  running the same move twice is ``changed: false``;
- target groups of the current action that the new split does not name stay
  attached at weight 0, so they keep being health checked and a revert is instant;
- before traffic moves, ALL registered targets of every target group whose share
  grows must be healthy (draining targets are listed but not required), at least
  ``min_healthy_targets`` per group; a target group not attached to the load
  balancer yet (targets ``unused`` / ``Target.NotInUse``) is first attached at
  weight 0 so ELB health checks it, and detached again if the wait fails;
- ``previous`` and ``current`` have the shape of the module's own options.
"""

from __future__ import annotations

import copy
import time

from ansible_collections.failsafe.recovery.plugins.module_utils import _lb
from ansible_collections.failsafe.recovery.plugins.module_utils._aws import aws_error

MAX_WEIGHT = 999
MAX_TARGET_GROUPS = 5


class ElbError(Exception):
    """A failure with structured facts, raised before or instead of a change."""

    def __init__(self, msg, **facts):
        super().__init__(msg)
        self.msg = msg
        self.facts = facts


def _client_error(exc, what):
    facts = aws_error(exc)
    return ElbError("%s: %s (%s)" % (what, facts["message"], facts["code"]), error=facts)


def is_botocore_error(exc):
    return type(exc).__module__.startswith("botocore")


def forward_weights(action):
    """A forward action -> {target group ARN: weight}; a bare TargetGroupArn is weight 1."""
    groups = (action.get("ForwardConfig") or {}).get("TargetGroups") or []
    if groups:
        return {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in groups}
    if action.get("TargetGroupArn"):
        return {action["TargetGroupArn"]: 1}
    return {}


def find_forward(actions):
    """Index of the forward action in a list of actions, or None."""
    for index, action in enumerate(actions):
        if action.get("Type") == "forward":
            return index
    return None


def build_actions(actions, index, weights):
    """A copy of ``actions`` whose forward action at ``index`` sends ``weights`` ({arn: weight})."""
    new = copy.deepcopy(actions)
    old = new[index]
    forward = dict(Type="forward", ForwardConfig=dict(
        TargetGroups=[dict(TargetGroupArn=arn, Weight=w) for arn, w in weights.items()]))
    stickiness = (old.get("ForwardConfig") or {}).get("TargetGroupStickinessConfig")
    if stickiness:
        forward["ForwardConfig"]["TargetGroupStickinessConfig"] = stickiness
    if "Order" in old:
        forward["Order"] = old["Order"]
    new[index] = forward
    return new


def plan_weights(current, desired):
    """The new {arn: weight}: the desired split plus current groups not named, kept at weight 0."""
    new = dict(desired)
    for arn in current:
        if arn not in new and len(new) < MAX_TARGET_GROUPS:
            new[arn] = 0
    return new


def incoming_groups(current, new):
    """Target groups whose share of traffic grows (they must be healthy before the move)."""
    before = _lb.percentages(current) if sum(current.values()) > 0 else {}
    after = _lb.percentages(new)
    return [arn for arn, pct in after.items() if pct > 0 and pct > before.get(arn, 0.0)]


def target_rows(arn, name, descriptions):
    """describe_target_health output -> flat rows for reports."""
    rows = []
    for desc in descriptions:
        health = desc.get("TargetHealth", {})
        rows.append(dict(target_group=name, target_group_arn=arn, id=desc["Target"]["Id"],
                         port=desc["Target"].get("Port"), state=health.get("State", "unknown"),
                         reason=health.get("Reason"), description=health.get("Description")))
    return rows


def group_verdict(rows, min_healthy):
    """(ok, healthy, required) for one target group: all non-draining healthy and >= min_healthy."""
    required = [r for r in rows if r["state"] != "draining"]
    healthy = sum(1 for r in required if r["state"] == "healthy")
    return healthy == len(required) and healthy >= min_healthy, healthy, len(required)


def not_in_use(rows):
    return bool(rows) and all(r["state"] == "unused" and r.get("reason") == "Target.NotInUse"
                              for r in rows if r["state"] != "draining")


def listener_of_rule(rule_arn):
    """The listener ARN a rule ARN belongs to (``listener-rule/app/N/LB/L/R`` -> ``listener/app/N/LB/L``)."""
    head, _sep, path = rule_arn.partition(":listener-rule/")
    if not path:
        return rule_arn
    return "%s:listener/%s" % (head, path.rsplit("/", 1)[0])


def describe_rows(rows):
    return ", ".join("%s %s:%s=%s%s" % (r["target_group"], r["id"], r["port"], r["state"],
                                        " (%s)" % r["reason"] if r.get("reason") else "") for r in rows)


class ElbSwap:
    """Plan and apply a traffic move on one ELBv2 forward action."""

    def __init__(self, client, params, check_mode=False, clock=time.monotonic, sleep=time.sleep):
        self.client = client
        self.p = params
        self.check_mode = check_mode
        self.clock = clock
        self.sleep = sleep
        self.mutating_calls = 0
        self.names = {}

    # -- lookups -----------------------------------------------------------
    def _call(self, what, method, **kwargs):
        try:
            return getattr(self.client, method)(**kwargs)
        except Exception as exc:  # botocore ClientError and friends, re-raised with facts
            if is_botocore_error(exc):
                raise _client_error(exc, what) from exc
            raise

    def find_listener(self):
        p = self.p
        if not p.get("listener_arn") and not p.get("load_balancer_name") and p.get("rule_arn"):
            p = dict(p, listener_arn=listener_of_rule(p["rule_arn"]))
        if p.get("listener_arn"):
            try:
                return self.client.describe_listeners(ListenerArns=[p["listener_arn"]])["Listeners"][0]
            except Exception as exc:
                if is_botocore_error(exc) and aws_error(exc)["code"] == "ListenerNotFound":
                    raise ElbError("Listener %s not found: check listener_arn and the region" % p["listener_arn"],
                                   listener_arn=p["listener_arn"]) from exc
                if is_botocore_error(exc):
                    raise _client_error(exc, "Cannot describe listener %s" % p["listener_arn"]) from exc
                raise
        name, port = p["load_balancer_name"], p["listener_port"]
        try:
            lbs = self.client.describe_load_balancers(Names=[name])["LoadBalancers"]
        except Exception as exc:
            if is_botocore_error(exc) and aws_error(exc)["code"] == "LoadBalancerNotFound":
                raise ElbError("Load balancer %r not found: check load_balancer_name and the region" % name,
                               load_balancer_name=name) from exc
            if is_botocore_error(exc):
                raise _client_error(exc, "Cannot describe load balancer %r" % name) from exc
            raise
        listeners = []
        paginator = self.client.get_paginator("describe_listeners")
        for page in paginator.paginate(LoadBalancerArn=lbs[0]["LoadBalancerArn"]):
            listeners.extend(page["Listeners"])
        for listener in listeners:
            if listener["Port"] == port:
                return listener
        raise ElbError("Load balancer %r has no listener on port %s (ports: %s)"
                       % (name, port, ", ".join(str(x["Port"]) for x in listeners) or "none"),
                       load_balancer_name=name, listener_port=port)

    def find_rule(self, listener_arn):
        rule_arn = self.p["rule_arn"]
        try:
            rule = self.client.describe_rules(RuleArns=[rule_arn])["Rules"][0]
        except Exception as exc:
            if is_botocore_error(exc) and aws_error(exc)["code"] == "RuleNotFound":
                raise ElbError("Listener rule %s not found: check rule_arn" % rule_arn, rule_arn=rule_arn) from exc
            if is_botocore_error(exc):
                raise _client_error(exc, "Cannot describe rule %s" % rule_arn) from exc
            raise
        if listener_of_rule(rule_arn) != listener_arn:
            raise ElbError("Rule %s does not belong to listener %s" % (rule_arn, listener_arn),
                           rule_arn=rule_arn, listener_arn=listener_arn)
        return rule

    def resolve_target_group(self, ref):
        """Name or ARN -> ARN, remembering the name; unknown -> ElbError."""
        key = "TargetGroupArns" if ref.startswith("arn:") else "Names"
        try:
            groups = self.client.describe_target_groups(**{key: [ref]})["TargetGroups"]
        except Exception as exc:
            if is_botocore_error(exc) and aws_error(exc)["code"] == "TargetGroupNotFound":
                raise ElbError("Target group %r not found: check the name or ARN and the region" % ref,
                               target_group=ref) from exc
            if is_botocore_error(exc):
                raise _client_error(exc, "Cannot describe target group %r" % ref) from exc
            raise
        group = groups[0]
        self.names[group["TargetGroupArn"]] = group["TargetGroupName"]
        return group["TargetGroupArn"]

    def name_of(self, arn):
        if arn not in self.names:
            try:
                self.resolve_target_group(arn)
            except ElbError:
                self.names[arn] = arn.rsplit(":", 1)[-1]
        return self.names[arn]

    def health(self, arns):
        rows = []
        for arn in arns:
            resp = self._call("Cannot read target health of %s" % self.name_of(arn),
                              "describe_target_health", TargetGroupArn=arn)
            rows.extend(target_rows(arn, self.name_of(arn), resp["TargetHealthDescriptions"]))
        return rows

    # -- writes ------------------------------------------------------------
    def write(self, target, actions):
        self.mutating_calls += 1
        if target["kind"] == "rule":
            self._call("Cannot modify rule %s" % target["arn"], "modify_rule", RuleArn=target["arn"], Actions=actions)
        else:
            self._call("Cannot modify listener %s" % target["arn"], "modify_listener",
                       ListenerArn=target["arn"], DefaultActions=actions)

    def read_actions(self, target):
        if target["kind"] == "rule":
            return self._call("Cannot describe rule %s" % target["arn"], "describe_rules",
                              RuleArns=[target["arn"]])["Rules"][0]["Actions"]
        return self._call("Cannot describe listener %s" % target["arn"], "describe_listeners",
                          ListenerArns=[target["arn"]])["Listeners"][0]["DefaultActions"]

    # -- the wait ----------------------------------------------------------
    def wait_healthy(self, arns):
        p = self.p
        start = self.clock()
        while True:
            rows = self.health(arns)
            verdicts = {}
            for arn in arns:
                verdicts[arn] = group_verdict([r for r in rows if r["target_group_arn"] == arn], p["min_healthy_targets"])
            if all(v[0] for v in verdicts.values()):
                return dict(healthy=True, waited=round(self.clock() - start, 3), targets=rows)
            if self.clock() - start >= p["wait_timeout"]:
                summary = "; ".join("%s: %d of %d healthy (need all, at least %d)"
                                    % (self.name_of(a), v[1], v[2], p["min_healthy_targets"])
                                    for a, v in verdicts.items())
                raise ElbError("Target groups not healthy after %ss, traffic not moved. %s. Targets: %s"
                               % (p["wait_timeout"], summary, describe_rows(rows) or "none registered"),
                               targets=rows)
            self.sleep(p["poll_interval"])

    # -- the swap ----------------------------------------------------------
    def run(self):
        p = self.p
        if p.get("weights"):
            desired_refs = [dict(name=w["target_group"], weight=w["weight"]) for w in p["weights"]]
            try:
                _lb.validate_weights(desired_refs, MAX_WEIGHT)
            except ValueError as exc:
                raise ElbError(str(exc), weights=p["weights"]) from exc
            if len(desired_refs) > MAX_TARGET_GROUPS:
                raise ElbError("weights names %d target groups: a forward action takes at most %d"
                               % (len(desired_refs), MAX_TARGET_GROUPS))
        else:
            desired_refs = [dict(name=p["target_group"], weight=1)]

        listener = self.find_listener()
        if p.get("rule_arn"):
            rule = self.find_rule(listener["ListenerArn"])
            if rule.get("IsDefault"):
                target = dict(kind="listener", arn=listener["ListenerArn"])
                actions = listener["DefaultActions"]
            else:
                target = dict(kind="rule", arn=rule["RuleArn"])
                actions = rule["Actions"]
        else:
            target = dict(kind="listener", arn=listener["ListenerArn"])
            actions = listener["DefaultActions"]

        index = find_forward(actions)
        if index is None:
            raise ElbError("The %s %s has no forward action (actions: %s): lb_target_swap moves forward actions only"
                           % (target["kind"], target["arn"], ", ".join(a.get("Type", "?") for a in actions)),
                           actions=actions)
        desired = {}
        for ref in desired_refs:
            arn = self.resolve_target_group(ref["name"])
            if arn in desired:
                raise ElbError("weights names target group %s twice (as name and ARN)" % self.name_of(arn))
            desired[arn] = ref["weight"]
        current = forward_weights(actions[index])
        new = plan_weights(current, desired)
        changed = not _lb.same_split(current, new)

        def options(weights):
            doc = dict(provider="elbv2", listener_arn=listener["ListenerArn"],
                       weights=[dict(target_group=arn, weight=w) for arn, w in weights.items()])
            if p.get("rule_arn"):
                doc["rule_arn"] = p["rule_arn"]
            return doc

        def named(weights):
            return {self.name_of(arn): w for arn, w in weights.items()}

        result = dict(
            changed=changed,
            listener_arn=listener["ListenerArn"],
            previous=options(current),
            current=options(new if changed else current),
            diff=dict(before=_lb.split_doc(named(current)), after=_lb.split_doc(named(new if changed else current))),
        )
        if p.get("rule_arn"):
            result["rule_arn"] = p["rule_arn"]
        incoming = incoming_groups(current, new) if changed else []
        if not changed or self.check_mode:
            result["health"] = dict(targets=self.health(incoming))
            result["mutating_calls"] = 0
            return result

        if p.get("wait", True) and incoming:
            rows = self.health(incoming)
            detached = [arn for arn in incoming if arn not in current
                        and not_in_use([r for r in rows if r["target_group_arn"] == arn])]
            if detached:
                # Attach at weight 0 so ELB starts health checking; no traffic moves yet.
                staged = dict(current)
                staged.update({arn: 0 for arn in detached})
                self.write(target, build_actions(actions, index, staged))
                result["staged"] = [self.name_of(a) for a in detached]
            try:
                result["health"] = self.wait_healthy(incoming)
            except ElbError as exc:
                if detached:
                    self.write(target, actions)
                exc.facts.setdefault("previous", result["previous"])
                raise
        else:
            result["health"] = dict(targets=self.health(incoming))

        started = self.clock()
        self.write(target, build_actions(actions, index, new))
        result["swap_seconds"] = round(self.clock() - started, 4)
        after = forward_weights(self.read_actions(target)[index])
        if not _lb.same_split(after, new):
            raise ElbError("The %s %s reports split %s after the change, expected %s"
                           % (target["kind"], target["arn"], named(after), named(new)), previous=result["previous"])
        result["current"] = options(after)
        result["mutating_calls"] = self.mutating_calls
        return result


def run_module(module):
    """Entry point of lb_target_swap for provider=elbv2; exits the module."""
    from ansible_collections.failsafe.recovery.plugins.module_utils._aws import aws_client
    if module.params["min_healthy_targets"] < 0:
        module.fail("min_healthy_targets must be 0 or more, got %d" % module.params["min_healthy_targets"])
    if module.params.get("weights"):
        try:
            _lb.validate_weights([dict(name=w["target_group"], weight=w["weight"]) for w in module.params["weights"]],
                                 MAX_WEIGHT)
        except ValueError as exc:
            module.fail(str(exc), weights=module.params["weights"])
    try:
        client = aws_client(module.params, "elbv2")
    except Exception as exc:  # botocore: no region, unknown profile ...
        if not is_botocore_error(exc):
            raise
        module.fail("Cannot create an ELBv2 client: %s (set region, profile or credentials)" % exc, error=aws_error(exc))
    swap = ElbSwap(client, module.params, check_mode=module.check_mode)
    try:
        result = swap.run()
    except ElbError as exc:
        module.fail(exc.msg, mutating_calls=swap.mutating_calls, **exc.facts)
    warnings = result.pop("warnings", [])
    for warning in warnings:
        module.warn(warning)
    module.exit_json(provider="elbv2", **result)
