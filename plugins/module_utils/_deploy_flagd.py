# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: switch flags off in an OpenFeature flagd flag definition and evaluate them statically.

A flagd file is ``{"flags": {"<key>": {"state": "ENABLED"|"DISABLED", "variants": {...},
"defaultVariant": "<variant>", "targeting": {...}}}}``. flagd answers a DISABLED flag with an
error, so the application falls back to the default written in its code, which may well be
"on". Disabling here therefore means: state ENABLED, ``defaultVariant`` set to the off variant
and ``targeting`` removed, so every evaluation, for every context, returns the off value.
"""

from __future__ import annotations

import copy

OFF_VALUES = (False, "off", "false", "disabled", 0)


def _flags(document):
    if not isinstance(document, dict) or not isinstance(document.get("flags"), dict):
        raise ValueError('not a flagd flag definition: the top level needs a "flags" object')
    return document["flags"]


def off_variant(flag, key, preferred="off"):
    """The name of the variant that switches ``flag`` off.

    ``preferred`` if the flag has a variant of that name; else the only variant whose value
    is false-like (false, "off", "false", "disabled", 0). Raises ValueError otherwise.
    """
    variants = flag.get("variants")
    if not isinstance(variants, dict) or not variants:
        raise ValueError("flag %r has no variants" % key)
    if preferred and preferred in variants:
        return preferred
    falsy = [name for name, value in variants.items()
             if isinstance(value, (bool, int, float, str)) and value is not True
             and (value.lower() if isinstance(value, str) else value) in OFF_VALUES]
    if len(falsy) == 1:
        return falsy[0]
    raise ValueError("flag %r: cannot tell which variant is off (no variant named %r, %d false-like variants among "
                     "%s); set the off variant explicitly" % (key, preferred, len(falsy), ", ".join(sorted(variants))))


def disable(document, keys, preferred="off"):
    """Return ``{"document", "switched", "already_off", "off_variants"}`` with ``keys`` switched off.

    The input is not modified. A flag already off (ENABLED, defaultVariant the off variant, no
    targeting) is left exactly as it is, so a second run changes nothing.
    """
    flags = _flags(document)
    if isinstance(keys, str):
        keys = [keys]
    missing = [k for k in keys if k not in flags]
    if missing:
        raise ValueError("flag(s) %s not in the flag file; defined: %s"
                         % (", ".join(missing), ", ".join(sorted(flags)) or "none"))
    out = copy.deepcopy(document)
    switched, already_off, offs = [], [], {}
    for key in keys:
        flag = out["flags"][key]
        off = off_variant(flag, key, preferred)
        offs[key] = off
        if flag.get("state", "ENABLED") == "ENABLED" and flag.get("defaultVariant") == off and "targeting" not in flag:
            already_off.append(key)
            continue
        flag["state"] = "ENABLED"
        flag["defaultVariant"] = off
        flag.pop("targeting", None)
        switched.append(key)
    return {"document": out, "switched": switched, "already_off": already_off, "off_variants": offs}


def evaluate(document, key):
    """Evaluate ``key`` without an evaluation context, as flagd would for a static flag.

    Returns ``{"key", "value", "variant", "reason"}``; reason is STATIC, DISABLED (flagd
    answers with an error: value None) or TARGETING_MATCH_UNKNOWN (rules present: the value
    depends on the context and is reported as None).
    """
    flags = _flags(document)
    if key not in flags:
        return {"key": key, "value": None, "variant": None, "reason": "FLAG_NOT_FOUND"}
    flag = flags[key]
    if flag.get("state", "ENABLED") == "DISABLED":
        return {"key": key, "value": None, "variant": None, "reason": "DISABLED"}
    if flag.get("targeting"):
        return {"key": key, "value": None, "variant": None, "reason": "TARGETING_MATCH_UNKNOWN"}
    variant = flag.get("defaultVariant")
    variants = flag.get("variants") or {}
    if variant not in variants:
        return {"key": key, "value": None, "variant": variant, "reason": "ERROR_DEFAULT_VARIANT_MISSING"}
    return {"key": key, "value": variants[variant], "variant": variant, "reason": "STATIC"}


def not_off(document, keys, off_variants):
    """The evaluations (see evaluate) of ``keys`` that do not statically return their off variant.

    ``off_variants`` maps each key to its off variant (as returned by disable). Empty means all off.
    """
    if isinstance(keys, str):
        keys = [keys]
    bad = []
    for key in keys:
        result = evaluate(document, key)
        if result["reason"] != "STATIC" or result["variant"] != off_variants.get(key):
            result["expected_variant"] = off_variants.get(key)
            bad.append(result)
    return bad
