# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: provider-neutral pieces of lb_target_swap: traffic split
arithmetic and the documents shown as ``diff.before`` / ``diff.after``.
"""

from __future__ import annotations

from fractions import Fraction


def percentages(weights):
    """{name: weight} -> {name: percent of traffic}, zero weights kept at 0.0."""
    total = sum(weights.values())
    if total <= 0:
        return {name: 0.0 for name in weights}
    return {name: round(100.0 * w / total, 2) for name, w in weights.items()}


def same_split(a, b):
    """True when two {name: weight} dicts send the same share of traffic to every name.

    Shares are compared exactly (fractions), so ``{A: 1}`` equals ``{A: 100}`` and
    ``{A: 1, B: 0}``, while ``{A: 1, B: 1}`` differs from ``{A: 50, B: 51}``.
    """
    def shares(weights):
        total = sum(weights.values())
        if total <= 0:
            return {}
        return {name: Fraction(w, total) for name, w in weights.items() if w > 0}
    return shares(a) == shares(b)


def validate_weights(weights, max_weight=None):
    """Raise ValueError with a clear message when a weights list makes no sense."""
    if not weights:
        raise ValueError("weights is empty: give at least one target group with a weight")
    names = [w["name"] for w in weights]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError("weights names %s more than once: give each target once" % ", ".join(dupes))
    for w in weights:
        if w["weight"] is None or w["weight"] < 0:
            raise ValueError("weight of %s is %s: weights must be 0 or more" % (w["name"], w["weight"]))
        if max_weight is not None and w["weight"] > max_weight:
            raise ValueError("weight of %s is %s: the maximum is %d" % (w["name"], w["weight"], max_weight))
    if sum(w["weight"] for w in weights) <= 0:
        raise ValueError("weights sum to 0: at least one target must get traffic (weight > 0)")


def split_doc(weights, **extra):
    """The document shown in the diff for a traffic split."""
    doc = dict(split=percentages(weights), weights=dict(weights))
    doc.update({k: v for k, v in extra.items() if v is not None})
    return doc


def servers_doc(backend, servers):
    """The document shown in the diff for servers mode."""
    return dict(backend=backend,
                servers={s["name"]: dict(state=s["state"], weight=s["weight"]) for s in servers},
                split=percentages({s["name"]: (s["weight"] if s["state"] == "ready" else 0) for s in servers}))


ELBV2_OPTIONS = ("listener_arn", "load_balancer_name", "listener_port", "rule_arn", "target_group", "weights")
HAPROXY_OPTIONS = ("haproxy_socket", "backend", "map_file", "map_key", "servers", "server_state_file")


def foreign_options(params):
    """Options given that belong to the other provider (value-dependent check, before any connection)."""
    other = HAPROXY_OPTIONS if params.get("provider") == "elbv2" else ELBV2_OPTIONS
    names = [name for name in other if params.get(name) not in (None, [], "")]
    if params.get("provider") == "elbv2" and params.get("drain"):
        names.append("drain")
    return names
