# -*- coding: utf-8 -*-
"""Statistics and decisions of health_gate on synthetic sample streams."""

from __future__ import annotations

import pytest

from ansible_collections.failsafe.recovery.plugins.module_utils import _stats
from ansible_collections.failsafe.recovery.plugins.module_utils._stats import FAIL, NO_DATA, OK


def stream(spec, latency=10.0, latencies=None):
    """'..x-' → ok, ok, fail, no_data samples."""
    out = []
    for i, char in enumerate(spec):
        status = {".": OK, "x": FAIL, "-": NO_DATA}[char]
        lat = latencies[i] if latencies else latency
        out.append(dict(status=status, latency_ms=lat, t=0.1 * i, error="HTTP 500" if status == FAIL else (
            "no data" if status == NO_DATA else None)))
    return out


POLICY = dict(min_samples=3, failure_limit=3, consecutive_success=3, inconclusive_limit=2, window=0,
              max_error_rate=None, max_latency_p95_ms=None, max_latency_p99_ms=None)


def policy(**kw):
    return dict(POLICY, **kw)


def limits(**kw):
    return _stats.base_limits(policy(**kw))


# ---------------------------------------------------------------- percentiles

def test_percentile_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert _stats.percentile(values, 50) == 50
    assert _stats.percentile(values, 95) == 95
    assert _stats.percentile(values, 99) == 99
    assert _stats.percentile(values, 100) == 100


def test_percentile_small_and_unsorted():
    assert _stats.percentile([300, 10, 20], 95) == 300
    assert _stats.percentile([300, 10, 20], 50) == 20
    assert _stats.percentile([7], 99) == 7
    assert _stats.percentile([], 95) is None


# ---------------------------------------------------------------- rates and runs

def test_error_rate_whole_stream_ignores_no_data():
    samples = stream("..x.--x.")
    assert _stats.error_rate(samples) == pytest.approx(100.0 * 2 / 6)


def test_error_rate_windowed_uses_last_judged_samples():
    samples = stream("xxxx......")
    assert _stats.error_rate(samples, window=5) == 0.0
    assert _stats.error_rate(samples, window=7) == pytest.approx(100.0 * 1 / 7)
    assert _stats.error_rate(stream("---")) is None


def test_consecutive_failures_skip_no_data_and_stop_at_success():
    assert _stats.consecutive_failures(stream("..xx-x")) == 3
    assert _stats.consecutive_failures(stream("x.x")) == 1
    assert _stats.consecutive_failures(stream("xx.")) == 0
    assert _stats.max_consecutive_failures(stream("xxx.x-x.")) == 3


def test_consecutive_successes_broken_by_no_data():
    assert _stats.consecutive_successes(stream("x...")) == 3
    assert _stats.consecutive_successes(stream("..-.")) == 1
    assert _stats.consecutive_successes(stream("...x")) == 0


def test_summarize_reports_counts_latency_and_last_error():
    samples = stream(".x.-", latencies=[10, 40, 20, 5])
    stats = _stats.summarize(samples)
    assert stats["samples"] == 4 and stats["successes"] == 2 and stats["failures"] == 1 and stats["no_data"] == 1
    assert stats["error_rate"] == pytest.approx(33.33)
    assert stats["latency_ms"]["p50"] == 20 and stats["latency_ms"]["max"] == 40  # no_data latency excluded
    assert stats["last_error"] == "no data"


# ---------------------------------------------------------------- breaches

def test_fail_fast_on_consecutive_failures_before_min_samples():
    found = _stats.breaches(stream("xxx"), limits(min_samples=10), min_samples=10)
    assert [b["trigger"] for b in found] == ["consecutive_failures"]
    assert found[0]["observed"] == 3


def test_error_rate_judged_only_after_min_samples():
    lim = limits(max_error_rate=10)
    assert _stats.breaches(stream(".x"), lim, min_samples=3) == []
    found = _stats.breaches(stream(".x."), lim, min_samples=3)
    assert found[0]["trigger"] == "error_rate" and found[0]["observed"] == pytest.approx(33.33)


def test_error_rate_equal_to_limit_holds():
    lim = limits(max_error_rate=10)
    assert _stats.breaches(stream("x........."), lim, min_samples=3) == []


def test_latency_percentile_breach():
    lim = limits(max_latency_p95_ms=100, max_latency_p99_ms=1000)
    found = _stats.breaches(stream("....", latencies=[10, 20, 30, 400]), lim, min_samples=3)
    assert [(b["trigger"], b["observed"]) for b in found] == [("latency_p95", 400)]


def test_latency_limits_skipped_for_monitoring_checks():
    lim = _stats.base_limits(policy(max_latency_p95_ms=100), latency_applies=False)
    assert _stats.breaches(stream("...", latency=900), lim, min_samples=3) == []


# ---------------------------------------------------------------- decisions

def decide(mode, streams, final=False, **kw):
    pol = policy(**kw)
    lims = dict((name, _stats.base_limits(pol)) for name in streams)
    return _stats.decide(mode, streams, lims, pol, final=final)


def test_until_healthy_passes_on_consecutive_success():
    assert decide("until_healthy", {"a": stream("x..")}) is None
    result = decide("until_healthy", {"a": stream("x...")})
    assert result["verdict"] == "pass"


def test_until_healthy_waits_for_every_check():
    assert decide("until_healthy", {"a": stream("..."), "b": stream("x..")}) is None
    assert decide("until_healthy", {"a": stream("...."), "b": stream("x...")})["verdict"] == "pass"


def test_until_healthy_tolerates_early_error_rate_but_fails_fast():
    # recovering service: early errors do not fail the gate; a failure run does
    assert decide("until_healthy", {"a": stream("x.x.")}, max_error_rate=10) is None
    result = decide("until_healthy", {"a": stream("..xxx")}, max_error_rate=10)
    assert result["verdict"] == "fail"
    assert "check 'a' failed 3 consecutive samples (failure_limit 3)" in result["reason"]
    assert "last error: HTTP 500" in result["reason"]


def test_until_healthy_slow_streak_does_not_pass_and_times_out_naming_p95():
    slow = stream("....", latency=900)
    assert decide("until_healthy", {"a": slow}, max_latency_p95_ms=500) is None
    result = decide("until_healthy", {"a": slow}, final=True, max_latency_p95_ms=500)
    assert result["verdict"] == "fail" and "latency p95 900 ms" in result["reason"]


def test_until_healthy_timeout_reports_missing_successes():
    result = decide("until_healthy", {"a": stream("x.x.")}, final=True)
    assert result["verdict"] == "fail"
    assert "1 consecutive successes of 3 needed" in result["reason"]


def test_steady_fails_on_error_rate_and_names_numbers():
    result = decide("steady", {"a": stream("...x")}, max_error_rate=10)
    assert result["verdict"] == "fail" and result["check"] == "a"
    assert "error rate 25.0 % over 4 samples exceeds max_error_rate 10 %" in result["reason"]


def test_steady_holds_until_the_end():
    assert decide("steady", {"a": stream("......")}, max_error_rate=10) is None
    assert decide("steady", {"a": stream("......")}, final=True, max_error_rate=10)["verdict"] == "pass"


def test_steady_too_few_samples_is_inconclusive():
    result = decide("steady", {"a": stream("..")}, final=True)
    assert result["verdict"] == "inconclusive"


def test_no_data_is_never_success():
    result = decide("until_healthy", {"a": stream("---")}, inconclusive_limit=2)
    assert result["verdict"] == "inconclusive"
    assert "returned no data 3 times (inconclusive_limit 2)" in result["reason"]
    # no data inside a streak restarts it
    assert decide("until_healthy", {"a": stream("..-..")}) is None


def test_trigger_reports_every_threshold_that_fired():
    streams = {"api": stream("..xx.x", latencies=[10, 10, 10, 10, 900, 10]), "db": stream("......")}
    result = decide("trigger", streams, max_error_rate=10, max_latency_p95_ms=500, min_samples=6)
    assert result["verdict"] == "fail"
    fired = sorted((t["check"], t["trigger"]) for t in result["triggers"])
    assert fired == [("api", "error_rate"), ("api", "latency_p95")]
    assert "rollback recommended" in result["reason"]


def test_trigger_waits_for_min_samples_then_passes():
    assert decide("trigger", {"a": stream("..")}, max_error_rate=10) is None
    result = decide("trigger", {"a": stream("...")}, max_error_rate=10)
    assert result["verdict"] == "pass" and result["triggers"] == []


# ---------------------------------------------------------------- baseline

def test_baseline_already_firing_does_not_block_the_fix():
    base = {"state": "failed", "error_rate": 100.0, "max_consecutive_failures": 5}
    lim = _stats.effective_limits(limits(max_error_rate=10), base)
    assert lim["failure_limit"] is None and lim["max_error_rate"] == 100.0 and lim["degraded_baseline"]
    pol = policy(max_error_rate=10)
    result = _stats.decide("steady", {"alarm": stream("xxxxx")}, {"alarm": lim}, pol, final=True)
    assert result["verdict"] == "pass"


def test_baseline_worse_than_before_still_fails():
    base = {"error_rate": 20.0, "latency_ms": {"p95": 50.0}}
    lim = _stats.effective_limits(limits(max_error_rate=10, max_latency_p95_ms=100), base)
    assert lim["max_error_rate"] == 20.0 and lim["max_latency_p95_ms"] == 100  # p95 baseline was fine
    pol = policy(max_error_rate=10)
    assert _stats.decide("steady", {"a": stream("....x")}, {"a": lim}, pol) is None  # 20 % = baseline
    result = _stats.decide("steady", {"a": stream("...xx")}, {"a": lim}, pol)
    assert result["verdict"] == "fail" and "max_error_rate 20 %" in result["reason"]


def test_healthy_baseline_changes_nothing():
    base = {"error_rate": 0.0, "latency_ms": {"p95": 5.0}, "state": "healthy", "max_consecutive_failures": 0}
    lim = limits(max_error_rate=10)
    assert _stats.effective_limits(lim, base) == lim


def test_trigger_keeps_sampling_a_failure_run_until_failure_limit():
    assert decide("trigger", {"a": stream("..xx")}) is None
    result = decide("trigger", {"a": stream("..xxx")})
    assert [t["trigger"] for t in result["triggers"]] == ["consecutive_failures"]
