"""Unit tests of the flagd helpers (module_utils/_deploy_flagd.py)."""

import copy

import pytest

from ansible_collections.failsafe.recovery.plugins.module_utils import _deploy_flagd as flagd

DOC = {
    "$schema": "https://flagd.dev/schema/v0/flags.json",
    "flags": {
        "new-checkout": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
        "banner": {"state": "ENABLED", "variants": {"shown": "yes", "hidden": "off"}, "defaultVariant": "shown",
                   "targeting": {"if": [{"==": [{"var": "tier"}, "gold"]}, "shown", None]}},
        "legacy": {"state": "DISABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"},
        "already-off": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"},
        "ambiguous": {"state": "ENABLED", "variants": {"a": False, "b": 0}, "defaultVariant": "a"},
    },
}


def test_disable_switches_default_variant_and_drops_targeting():
    before = copy.deepcopy(DOC)
    out = flagd.disable(DOC, ["new-checkout", "banner", "legacy"])
    assert DOC == before, "input must not be modified"
    flags = out["document"]["flags"]
    assert flags["new-checkout"]["defaultVariant"] == "off"
    assert flags["banner"]["defaultVariant"] == "hidden" and "targeting" not in flags["banner"]
    assert flags["legacy"]["state"] == "ENABLED"
    assert out["switched"] == ["new-checkout", "banner", "legacy"]
    assert out["off_variants"]["banner"] == "hidden"
    assert out["document"]["$schema"] == DOC["$schema"]


def test_disable_already_off_changes_nothing():
    out = flagd.disable(DOC, "already-off")
    assert out["switched"] == [] and out["already_off"] == ["already-off"]
    assert out["document"] == DOC
    again = flagd.disable(flagd.disable(DOC, ["new-checkout"])["document"], ["new-checkout"])
    assert again["switched"] == []


def test_disable_errors_name_the_fix():
    with pytest.raises(ValueError, match="missing-one not in the flag file"):
        flagd.disable(DOC, ["missing-one"])
    with pytest.raises(ValueError, match="set the off variant explicitly"):
        flagd.disable(DOC, ["ambiguous"])
    assert flagd.disable(DOC, ["ambiguous"], preferred="b")["document"]["flags"]["ambiguous"]["defaultVariant"] == "b"
    with pytest.raises(ValueError, match='"flags" object'):
        flagd.disable({"nope": 1}, ["x"])


def test_evaluate_static_disabled_and_targeting():
    assert flagd.evaluate(DOC, "new-checkout") == {"key": "new-checkout", "value": True, "variant": "on",
                                                   "reason": "STATIC"}
    assert flagd.evaluate(DOC, "legacy")["reason"] == "DISABLED"
    assert flagd.evaluate(DOC, "banner")["reason"] == "TARGETING_MATCH_UNKNOWN"
    assert flagd.evaluate(DOC, "ghost")["reason"] == "FLAG_NOT_FOUND"
    broken = {"flags": {"x": {"variants": {"on": True}, "defaultVariant": "off"}}}
    assert flagd.evaluate(broken, "x")["reason"] == "ERROR_DEFAULT_VARIANT_MISSING"
    off = flagd.disable(DOC, ["new-checkout", "banner"])["document"]
    assert flagd.evaluate(off, "new-checkout")["value"] is False
    assert flagd.evaluate(off, "banner") == {"key": "banner", "value": "off", "variant": "hidden", "reason": "STATIC"}


def test_not_off_lists_flags_still_on():
    plan = flagd.disable(DOC, ["new-checkout", "banner"])
    assert flagd.not_off(plan["document"], ["new-checkout", "banner"], plan["off_variants"]) == []
    bad = flagd.not_off(DOC, ["new-checkout", "banner"], plan["off_variants"])
    assert [(b["key"], b["reason"], b["expected_variant"]) for b in bad] == [
        ("new-checkout", "STATIC", "off"), ("banner", "TARGETING_MATCH_UNKNOWN", "hidden")]
    assert flagd.not_off(DOC, "legacy", {"legacy": "off"})[0]["reason"] == "DISABLED"
