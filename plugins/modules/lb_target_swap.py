#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: lb_target_swap
short_description: Blue/green and weighted traffic moves on ELBv2 or HAProxy, with instant revert
version_added: 0.1.0
description:
  - Moves traffic between the blue and green sides of a service, in one step or in weighted steps (canary),
    and returns the state before the move in the shape of this module's own options, so feeding
    RV(previous) back reverts in one call.
  - Before any traffic moves, waits until B(all) targets or servers of the incoming side are healthy, and at
    least O(min_healthy_targets) of them. A timeout fails with the last observed state of every target and
    changes nothing.
  - Splits are compared exactly (as shares of traffic), so asking for the state already in place is
    C(changed=false). Check mode returns the diff of the traffic split and changes nothing.
  - O(provider=elbv2) changes the forward action of a listener (its default action) or of a listener rule.
    Target groups of the current forward action that the new split does not name are kept at weight 0,
    so they stay attached, health checked, and ready for an instant revert. A target group not attached to
    the load balancer yet is first attached at weight 0 so that ELB health checks it, then traffic moves.
  - O(provider=haproxy) uses the HAProxy runtime API on an admin socket. With O(map_file) and O(map_key) it
    sets which O(backend) a frontend uses (a frontend whose C(use_backend) looks O(map_key) up in the map), at runtime
    with C(set map) AND by rewriting the map file atomically, so a reload keeps the choice. With O(servers)
    it sets the state and weight of servers of O(backend) at runtime.
author:
  - failsafe.recovery contributors (@failsafe-recovery)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - failsafe.recovery.aws
  - failsafe.recovery.wait
attributes:
  check_mode:
    support: full
    details: Reads the current state and the health of the incoming side, returns the diff, changes nothing.
  diff_mode:
    support: full
    details: The diff is the traffic split (share and weight of each target group, backend or server) before and after.
  platform:
    platforms: [aws, haproxy]
    details: ELBv2 (Application and Network Load Balancers) through the AWS API; HAProxy 2.2 or later through its runtime API.
options:
  provider:
    description:
      - Which load balancer to drive.
    type: str
    required: true
    choices: [elbv2, haproxy]
  listener_arn:
    description:
      - ARN of the ELBv2 listener whose default action (or whose rule O(rule_arn)) is changed.
      - Mutually exclusive with O(load_balancer_name).
    type: str
  load_balancer_name:
    description:
      - Name of the ELBv2 load balancer; with O(listener_port) it finds the listener.
    type: str
  listener_port:
    description:
      - Port of the listener on O(load_balancer_name).
    type: int
  rule_arn:
    description:
      - ARN of a listener rule whose forward action is changed instead of the listener's default action.
      - When neither O(listener_arn) nor O(load_balancer_name) is given, the listener is the one the rule belongs to.
    type: str
  target_group:
    description:
      - Name or ARN of the target group that gets 100 % of the traffic.
      - Mutually exclusive with O(weights).
    type: str
  weights:
    description:
      - Weighted split between target groups (names or ARNs), for canary steps. Weights go from 0 to 999 and
        must not all be 0; at most 5 target groups.
      - RV(previous.weights) has this shape, so it can be given back here to revert.
    type: list
    elements: dict
    suboptions:
      target_group:
        description:
          - Name or ARN of the target group.
        type: str
        required: true
      weight:
        description:
          - Relative weight of the target group.
        type: int
        required: true
  haproxy_socket:
    description:
      - The HAProxy admin socket, a Unix socket path or C(host:port). It must be at level admin
        (C(stats socket PATH level admin)).
    type: str
  backend:
    description:
      - With O(map_file), the backend the frontend should use.
      - With O(servers), the backend whose servers are changed.
    type: str
  map_file:
    description:
      - Path of the map file, exactly as in the HAProxy configuration. The key O(map_key) must already exist in
        the loaded map. The file is rewritten atomically (same mode and owner) so a reload keeps the change;
        when it is not readable from the host running the module, the change is made at runtime only and a
        warning says so.
      - Mutually exclusive with O(servers).
    type: path
  map_key:
    description:
      - The key of O(map_file) whose value names the backend.
    type: str
  servers:
    description:
      - Servers of O(backend) with their wanted state and weight. Servers set to C(ready) or given more weight are
        changed first and waited on; servers set to C(drain) or C(maint) or given less weight are changed after.
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - Server name in O(backend).
        type: str
        required: true
      state:
        description:
          - Administrative state; unchanged when omitted.
        type: str
        choices: [ready, drain, maint]
      weight:
        description:
          - Weight, 0 to 256; unchanged when omitted.
        type: int
  server_state_file:
    description:
      - With O(servers), write C(show servers state) to this file after the change (atomically), so an HAProxy
        configured with C(server-state-file) and C(load-server-state-from-file) keeps the states across a reload.
    type: path
  min_healthy_targets:
    description:
      - At least this many targets (per incoming target group) or servers must be healthy, in addition to all of them.
    type: int
    default: 1
  drain:
    description:
      - HAProxy only. After the move, wait until the outgoing side (the previous backend in map mode, the servers
        set to C(drain) or C(maint) in servers mode) has no sessions left, at most O(drain_timeout) seconds.
      - A drain that does not complete in time is reported in RV(drain) and as a warning; the move itself stands.
    type: bool
    default: false
  drain_timeout:
    description:
      - Seconds the drain waits at most.
    type: int
    default: 30
notes:
  - Use O(wait=false) to move traffic without waiting for the health of the incoming side.
  - The number of mutating ELBv2 calls per move is 1 (2 when a target group is first attached at weight 0).
seealso:
  - module: failsafe.recovery.health_gate
"""

EXAMPLES = r"""
- name: Send all traffic of the listener to green, once every green target is healthy
  failsafe.recovery.lb_target_swap:
    provider: elbv2
    region: eu-west-1
    load_balancer_name: shop-alb
    listener_port: 443
    target_group: shop-green
    wait_timeout: 600
  register: swap

- name: Revert to what was there before
  failsafe.recovery.lb_target_swap:
    provider: elbv2
    region: eu-west-1
    listener_arn: "{{ swap.previous.listener_arn }}"
    weights: "{{ swap.previous.weights }}"

- name: Canary step, 10 % to green on one rule
  failsafe.recovery.lb_target_swap:
    provider: elbv2
    rule_arn: "{{ api_rule_arn }}"
    weights:
      - target_group: shop-blue
        weight: 90
      - target_group: shop-green
        weight: 10

- name: Switch the HAProxy frontend to green, kept across reloads, and drain blue for 30 s
  failsafe.recovery.lb_target_swap:
    provider: haproxy
    haproxy_socket: /run/haproxy/admin.sock
    map_file: /etc/haproxy/route.map
    map_key: default
    backend: be_green
    drain: true
    drain_timeout: 30
  register: hswap

- name: Take one server out and bring another in
  failsafe.recovery.lb_target_swap:
    provider: haproxy
    haproxy_socket: 127.0.0.1:9999
    backend: be_app
    servers:
      - name: app2
        state: ready
        weight: 100
      - name: app1
        state: drain
"""

RETURN = r"""
previous:
  description:
    - The state before the task, in the shape of this module's options (C(provider), C(listener_arn),
      C(rule_arn), C(weights) for ELBv2; C(haproxy_socket), C(map_file), C(map_key), C(backend) or C(backend) and
      C(servers) for HAProxy). Give these back to revert.
  returned: always
  type: dict
  contains:
    provider:
      description: The provider.
      type: str
    listener_arn:
      description: ARN of the listener (ELBv2).
      type: str
    rule_arn:
      description: ARN of the rule, when one was given (ELBv2).
      type: str
    weights:
      description: Every target group of the forward action (by ARN) with its weight (ELBv2).
      type: list
      elements: dict
    haproxy_socket:
      description: The admin socket (HAProxy).
      type: str
    map_file:
      description: The map file (HAProxy map mode).
      type: str
    map_key:
      description: The map key (HAProxy map mode).
      type: str
    backend:
      description: The backend the key pointed to (map mode), or the backend whose servers changed (servers mode).
      type: str
    servers:
      description: Each server given with its C(name), C(state) and C(weight) (HAProxy servers mode).
      type: list
      elements: dict
  sample:
    provider: elbv2
    listener_arn: arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/shop/50dc6c495c0c9188/f2f7dc8efc522ab2
    weights:
      - target_group: arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/shop-blue/6d0ecf831eec9f09
        weight: 1
current:
  description: The state after the task (in check mode, the predicted state), in the same shape as RV(previous).
  returned: always
  type: dict
  sample:
    provider: haproxy
    haproxy_socket: /run/haproxy/admin.sock
    map_file: /etc/haproxy/route.map
    map_key: default
    backend: be_green
diff:
  description: The traffic split before and after (share in percent and weight of each target group, backend or server).
  returned: always
  type: dict
  sample:
    before:
      split: {shop-blue: 100.0}
      weights: {shop-blue: 1}
    after:
      split: {shop-blue: 0.0, shop-green: 100.0}
      weights: {shop-blue: 0, shop-green: 1}
health:
  description: The incoming side's health as last observed (in check mode or without a wait, one observation).
  returned: always
  type: dict
  contains:
    targets:
      description:
        - Every target of the incoming target groups (ELBv2, with C(target_group), C(target_group_arn), C(id), C(port),
          C(state), C(reason), C(description)) or every incoming server (HAProxy, with C(backend), C(server),
          C(status), C(check_status), C(check_desc), C(admin_state), C(sessions), C(healthy)).
      type: list
      elements: dict
    healthy:
      description: Whether the wait ended with the incoming side healthy.
      type: bool
      returned: when the module waited
    waited:
      description: Seconds waited for the incoming side.
      type: float
      returned: when the module waited
listener_arn:
  description: ARN of the listener (ELBv2).
  returned: when provider is elbv2
  type: str
rule_arn:
  description: ARN of the rule changed (ELBv2).
  returned: when rule_arn was given
  type: str
mutating_calls:
  description: Number of ELBv2 API calls that changed something.
  returned: when provider is elbv2
  type: int
  sample: 1
staged:
  description: Target groups first attached at weight 0 so that ELB health checks them before the move.
  returned: when a target group had to be attached first
  type: list
  elements: str
swap_seconds:
  description: Seconds taken by the move itself (the API calls), after the health wait.
  returned: when changed and not in check mode
  type: float
persisted:
  description: Whether the change is kept across an HAProxy reload (map file rewritten, or server state file written).
  returned: when provider is haproxy
  type: bool
drain:
  description: Result of the drain of the outgoing side.
  returned: when drain=true and traffic moved
  type: dict
  contains:
    backend:
      description: Backend drained.
      type: str
    completed:
      description: Whether no session was left before O(drain_timeout).
      type: bool
    waited:
      description: Seconds waited.
      type: float
    timeout:
      description: The O(drain_timeout) honoured.
      type: int
    sessions_left:
      description: Current sessions per server at the end of the drain.
      type: dict
targets:
  description: On a health wait timeout, the last observed state of every target or server.
  returned: on failure of the health wait
  type: list
  elements: dict
"""

from ansible_collections.failsafe.recovery.plugins.module_utils._base import (
    FailsafeModule,
    aws_argument_spec,
    wait_argument_spec,
)
from ansible_collections.failsafe.recovery.plugins.module_utils import _lb, _lb_elbv2, _lb_haproxy


def main():
    argument_spec = dict(
        provider=dict(type="str", required=True, choices=["elbv2", "haproxy"]),
        listener_arn=dict(type="str"),
        load_balancer_name=dict(type="str"),
        listener_port=dict(type="int"),
        rule_arn=dict(type="str"),
        target_group=dict(type="str"),
        weights=dict(type="list", elements="dict", options=dict(
            target_group=dict(type="str", required=True),
            weight=dict(type="int", required=True),
        )),
        haproxy_socket=dict(type="str"),
        backend=dict(type="str"),
        map_file=dict(type="path"),
        map_key=dict(type="str", no_log=False),
        servers=dict(type="list", elements="dict", options=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["ready", "drain", "maint"]),
            weight=dict(type="int"),
        )),
        server_state_file=dict(type="path"),
        min_healthy_targets=dict(type="int", default=1),
        drain=dict(type="bool", default=False),
        drain_timeout=dict(type="int", default=30),
    )
    argument_spec.update(aws_argument_spec())
    argument_spec.update(wait_argument_spec())
    module = FailsafeModule(
        argument_spec,
        mutually_exclusive=[
            ("target_group", "weights"),
            ("listener_arn", "load_balancer_name"),
            ("map_file", "servers"),
        ],
        required_together=[
            ("load_balancer_name", "listener_port"),
            ("map_file", "map_key"),
        ],
        required_if=[
            ("provider", "elbv2", ("listener_arn", "load_balancer_name", "rule_arn"), True),
            ("provider", "elbv2", ("target_group", "weights"), True),
            ("provider", "haproxy", ("haproxy_socket", "backend")),
            ("provider", "haproxy", ("map_file", "servers"), True),
        ],
    )
    foreign = _lb.foreign_options(module.params)
    if foreign:
        module.fail("Option(s) %s do not apply to provider=%s" % (", ".join(foreign), module.params["provider"]),
                    options=foreign)
    if module.params["provider"] == "elbv2":
        _lb_elbv2.run_module(module)
    else:
        _lb_haproxy.run_module(module)


if __name__ == "__main__":
    main()
