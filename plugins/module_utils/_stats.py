# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: statistics and decisions of the health_gate module.

Pure functions over sample streams, so every rule is unit tested without a
network. A sample is a dict with at least ``status`` (``ok``, ``fail`` or
``no_data``) and ``latency_ms`` (float or None); the engine in _health.py adds
the check name, time and error text.

Rules (the module documentation states the same):

- "judged" samples are ``ok`` and ``fail`` ones; ``no_data`` is never success,
  it breaks a success streak, it does not break a failure streak, and more than
  ``inconclusive_limit`` of them make the check inconclusive.
- error rate is the percentage of failed judged samples, over the last
  ``window`` judged samples (0 = every sample of the gate).
- percentiles are nearest-rank over the latencies of the same window.
- rate and latency limits are judged once ``min_samples`` judged samples exist;
  ``failure_limit`` consecutive failures decide at once (fail fast).
"""

from __future__ import annotations

import math

OK = "ok"
FAIL = "fail"
NO_DATA = "no_data"

# check states
HEALTHY = "healthy"
FAILED = "failed"
INCONCLUSIVE = "inconclusive"
PENDING = "pending"

# gate verdicts
PASS = "pass"
VERDICT_FAIL = "fail"
VERDICT_INCONCLUSIVE = "inconclusive"

LIMIT_NAMES = ("max_error_rate", "max_latency_p95_ms", "max_latency_p99_ms")


def percentile(values, pct):
    """Nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(math.ceil(pct / 100.0 * len(ordered))))
    return ordered[min(rank, len(ordered)) - 1]


def judged(samples, window=0):
    """The ok/fail samples, the last ``window`` of them when window > 0."""
    out = [s for s in samples if s["status"] in (OK, FAIL)]
    if window and window > 0:
        out = out[-window:]
    return out


def error_rate(samples, window=0):
    """Percent of failed judged samples over the window; None without any."""
    sel = judged(samples, window)
    if not sel:
        return None
    return 100.0 * sum(1 for s in sel if s["status"] == FAIL) / len(sel)


def consecutive_failures(samples):
    """Trailing failures; no-data samples are skipped, a success ends the run."""
    count = 0
    for sample in reversed(samples):
        if sample["status"] == FAIL:
            count += 1
        elif sample["status"] == OK:
            break
    return count


def consecutive_successes(samples):
    """Trailing successes; anything else (failure or no data) ends the run."""
    count = 0
    for sample in reversed(samples):
        if sample["status"] != OK:
            break
        count += 1
    return count


def max_consecutive_failures(samples):
    """Longest failure run of the stream (no-data samples skipped)."""
    best = run = 0
    for sample in samples:
        if sample["status"] == FAIL:
            run += 1
            best = max(best, run)
        elif sample["status"] == OK:
            run = 0
    return best


def latencies(samples):
    return [s["latency_ms"] for s in samples if s.get("latency_ms") is not None]


def _round(value, digits=2):
    return None if value is None else round(float(value), digits)


def summarize(samples, window=0):
    """Per-check statistics of a sample stream (the ``checks`` return value)."""
    sel = judged(samples, window)
    lat = latencies(sel)
    last_error = None
    for sample in reversed(samples):
        if sample["status"] != OK and sample.get("error"):
            last_error = sample["error"]
            break
    rate = error_rate(samples, window)
    return dict(
        samples=len(samples),
        successes=sum(1 for s in samples if s["status"] == OK),
        failures=sum(1 for s in samples if s["status"] == FAIL),
        no_data=sum(1 for s in samples if s["status"] == NO_DATA),
        judged=len(sel),
        error_rate=_round(rate),
        latency_ms=dict(p50=_round(percentile(lat, 50)), p95=_round(percentile(lat, 95)),
                        p99=_round(percentile(lat, 99)), max=_round(max(lat) if lat else None)),
        consecutive_failures=consecutive_failures(samples),
        consecutive_successes=consecutive_successes(samples),
        max_consecutive_failures=max_consecutive_failures(samples),
        last_error=last_error,
        last_value=samples[-1].get("value") if samples else None,
    )


def base_limits(policy, latency_applies=True):
    """Limits of one check from the gate policy (latency limits only where they apply)."""
    return dict(
        failure_limit=policy.get("failure_limit"),
        max_error_rate=policy.get("max_error_rate"),
        max_latency_p95_ms=policy.get("max_latency_p95_ms") if latency_applies else None,
        max_latency_p99_ms=policy.get("max_latency_p99_ms") if latency_applies else None,
        degraded_baseline=False,
    )


def _baseline_value(baseline, key):
    if key == "max_error_rate":
        return baseline.get("error_rate")
    lat = baseline.get("latency_ms") or {}
    return lat.get("p95" if key == "max_latency_p95_ms" else "p99")


def effective_limits(limits, baseline):
    """Judge a check against its pre-action baseline ("no worse than before").

    ``baseline`` is the check's entry of an earlier gate's ``checks`` result (or
    a hand-written dict with ``error_rate``, ``latency_ms.p95/p99``,
    ``state``). When the baseline already breached a limit, that limit becomes
    the baseline's own value; when the baseline was failing (state ``failed``
    or a failure run of at least ``failure_limit``), fail-fast is off and the
    error rate may not exceed the baseline's. So an alarm that was already
    firing before the fix does not block the fix, while a worse one still fails.
    """
    out = dict(limits)
    if not baseline:
        return out
    failing = baseline.get("state") == FAILED
    if limits.get("failure_limit") and (baseline.get("max_consecutive_failures") or baseline.get("consecutive_failures") or 0) >= limits["failure_limit"]:
        failing = True
    for key in LIMIT_NAMES:
        observed = _baseline_value(baseline, key)
        if observed is None:
            continue
        if limits.get(key) is not None and observed > limits[key]:
            out[key] = float(observed)
            out["degraded_baseline"] = True
    if failing:
        out["degraded_baseline"] = True
        out["failure_limit"] = None
        rate = baseline.get("error_rate")
        if rate is not None:
            out["max_error_rate"] = max(float(rate), out.get("max_error_rate") or 0.0)
    return out


def breaches(samples, limits, min_samples, window=0):
    """Every limit the stream breaches now: [{trigger, threshold, observed, samples}]."""
    out = []
    sel = judged(samples, window)
    if limits.get("failure_limit"):
        run = consecutive_failures(samples)
        if run >= limits["failure_limit"]:
            out.append(dict(trigger="consecutive_failures", threshold=limits["failure_limit"], observed=run, samples=len(sel)))
    if len(sel) >= max(1, min_samples):
        rate = error_rate(samples, window)
        if limits.get("max_error_rate") is not None and rate is not None and rate > limits["max_error_rate"]:
            out.append(dict(trigger="error_rate", threshold=limits["max_error_rate"], observed=_round(rate), samples=len(sel)))
        lat = latencies(sel)
        for pct, key in ((95, "max_latency_p95_ms"), (99, "max_latency_p99_ms")):
            if limits.get(key) is None or len(lat) < max(1, min_samples):
                continue
            value = percentile(lat, pct)
            if value > limits[key]:
                out.append(dict(trigger="latency_p%d" % pct, threshold=limits[key], observed=_round(value), samples=len(lat)))
    return out


def _streak_ok(samples, limits, need):
    """Latency limits over the current success streak (until_healthy pass rule)."""
    streak = samples[-need:] if need else []
    lat = latencies(streak)
    for pct, key in ((95, "max_latency_p95_ms"), (99, "max_latency_p99_ms")):
        if limits.get(key) is not None and lat and percentile(lat, pct) > limits[key]:
            return dict(trigger="latency_p%d" % pct, threshold=limits[key], observed=_round(percentile(lat, pct)), samples=len(lat))
    return None


def check_state(mode, samples, limits, policy):
    """State of one check now: (state, detail dict).

    ``failed`` carries the breach that decided it; ``inconclusive`` the no-data
    count; ``healthy`` and ``pending`` a short note for the reason sentence.
    """
    min_samples = policy.get("min_samples") or 1
    window = policy.get("window") or 0
    inconclusive_limit = policy.get("inconclusive_limit") or 0
    no_data = sum(1 for s in samples if s["status"] == NO_DATA)
    sel = judged(samples, window)
    found = breaches(samples, limits, min_samples, window)
    if mode == "until_healthy" and not limits.get("degraded_baseline"):
        # recovery: early errors are expected; only a failure run fails fast
        fatal = [b for b in found if b["trigger"] == "consecutive_failures"]
    else:
        fatal = found
    if fatal:
        return FAILED, dict(breach=fatal[0], breaches=found)
    if no_data > inconclusive_limit:
        return INCONCLUSIVE, dict(no_data=no_data, breaches=found)
    if len(judged(samples)) < min_samples:
        return PENDING, dict(need="min_samples", have=len(judged(samples)), breaches=found)
    if mode == "until_healthy" and not limits.get("degraded_baseline"):
        need = policy.get("consecutive_success") or 1
        run = consecutive_successes(samples)
        if run < need:
            return PENDING, dict(need="consecutive_success", have=run, want=need, breaches=found)
        slow = _streak_ok(samples, limits, need)
        if slow:
            return PENDING, dict(need="latency", breach=slow, breaches=[slow])
    return HEALTHY, dict(judged=len(sel), breaches=found)


def describe_breach(name, breach):
    """One sentence naming the check, the threshold and the observed number."""
    trig = breach["trigger"]
    if trig == "consecutive_failures":
        return "check '%s' failed %d consecutive samples (failure_limit %d)" % (name, breach["observed"], breach["threshold"])
    if trig == "error_rate":
        return "check '%s' error rate %.1f %% over %d samples exceeds max_error_rate %s %%" % (
            name, breach["observed"], breach["samples"], _fmt(breach["threshold"]))
    pct = trig.split("_p")[-1]
    return "check '%s' latency p%s %.0f ms over %d samples exceeds max_latency_p%s_ms %s" % (
        name, pct, breach["observed"], breach["samples"], pct, _fmt(breach["threshold"]))


def _fmt(number):
    return ("%g" % number) if isinstance(number, (int, float)) else str(number)


def _with_error(text, samples):
    for sample in reversed(samples):
        if sample["status"] != OK and sample.get("error"):
            return "%s; last error: %s" % (text, sample["error"])
    return text


def decide(mode, streams, limits, policy, final=False, order=None, states=None):
    """Gate decision now: None while undecided, else dict(verdict, reason, check, triggers).

    ``streams`` maps check name to its samples, ``limits`` check name to its
    effective limits. ``final`` is True when the gate time is up. ``order``
    lists check names in the order their latest samples arrived, newest last,
    so the check whose sample decided is named first. ``states`` may carry the
    check_state() of every check already (the engine recomputes only the check
    whose sample just arrived).
    """
    names = list(order or streams)
    if states is None:
        states = dict((name, check_state(mode, streams[name], limits[name], policy)) for name in streams)
    if mode == "trigger":
        return _decide_trigger(streams, states, policy, final)
    failed = [n for n in reversed(names) if states[n][0] == FAILED]
    if failed:
        name = failed[0]
        text = describe_breach(name, states[name][1]["breach"])
        return dict(verdict=VERDICT_FAIL, check=name, reason=_with_error(text, streams[name]),
                    triggers=[dict(b, check=name) for b in states[name][1]["breaches"]])
    inconclusive = [n for n in reversed(names) if states[n][0] == INCONCLUSIVE]
    if inconclusive:
        name = inconclusive[0]
        return dict(verdict=VERDICT_INCONCLUSIVE, check=name, triggers=[],
                    reason=_with_error("check '%s' returned no data %d times (inconclusive_limit %d)"
                                       % (name, states[name][1]["no_data"], policy.get("inconclusive_limit") or 0), streams[name]))
    pending = [n for n in names if states[n][0] == PENDING]
    if not pending:
        if mode == "until_healthy" and not final:
            return dict(verdict=PASS, check=None, triggers=[],
                        reason="all %d checks healthy: %d consecutive successes each, at least %d samples"
                        % (len(names), policy.get("consecutive_success") or 1, policy.get("min_samples") or 1))
        if final:
            return dict(verdict=PASS, check=None, triggers=[],
                        reason="all %d checks held every limit for the whole window (%s)"
                        % (len(names), ", ".join("%s: %d samples" % (n, len(judged(streams[n]))) for n in names)))
        return None
    if not final:
        return None
    # time is up with checks still pending
    name = pending[0]
    detail = states[name][1]
    stream = streams[name]
    if detail["need"] == "min_samples":
        no_failures = not any(s["status"] == FAIL for s in stream)
        text = "check '%s' has only %d judged samples of min_samples %d when the gate timed out" % (name, detail["have"], policy.get("min_samples") or 1)
        verdict = VERDICT_INCONCLUSIVE if no_failures else VERDICT_FAIL
        return dict(verdict=verdict, check=name, triggers=[], reason=_with_error(text, stream))
    if detail["need"] == "latency":
        return dict(verdict=VERDICT_FAIL, check=name, triggers=[dict(detail["breach"], check=name)],
                    reason="did not become healthy before the gate timed out: " + describe_breach(name, detail["breach"]))
    text = ("check '%s' did not become healthy before the gate timed out: %d consecutive successes of %d needed"
            % (name, detail["have"], detail["want"]))
    verdict = VERDICT_INCONCLUSIVE if stream and stream[-1]["status"] == NO_DATA else VERDICT_FAIL
    return dict(verdict=verdict, check=name, triggers=[], reason=_with_error(text, stream))


def _decide_trigger(streams, states, policy, final):
    min_samples = policy.get("min_samples") or 1
    # a check is complete with min_samples judged samples, unless it sits in a failure run
    # that may still reach failure_limit
    complete = all(state in (FAILED, INCONCLUSIVE)
                   or (len(judged(streams[name])) >= min_samples and consecutive_failures(streams[name]) == 0)
                   for name, (state, dummy) in states.items())
    if not (complete or final):
        return None
    fired = []
    for name, (state, detail) in states.items():
        for breach in detail.get("breaches") or []:
            fired.append(dict(breach, check=name))
    if fired:
        first = fired[0]
        reason = "; ".join(describe_breach(t["check"], t) for t in fired)
        return dict(verdict=VERDICT_FAIL, check=first["check"], triggers=fired,
                    reason="rollback recommended: " + reason)
    short = [n for n, (state, dummy) in states.items() if state == INCONCLUSIVE or len(judged(streams[n])) < min_samples]
    if short:
        return dict(verdict=VERDICT_INCONCLUSIVE, check=short[0], triggers=[],
                    reason=_with_error("no trigger fired but check '%s' has too little data (%d judged samples, min_samples %d)"
                                       % (short[0], len(judged(streams[short[0]])), min_samples), streams[short[0]]))
    return dict(verdict=PASS, check=None, triggers=[],
                reason="no trigger fired over %d checks" % len(streams))
