# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: probes and the sampling engine of the health_gate module.

Each probe takes one sample and returns ``(status, value, error)``; it never
raises for an unhealthy target (timeouts, refused connections, DNS and TLS
errors are failed samples carrying their reason). The engine schedules every
check on its own clock through a bounded thread pool, so a slow check never
delays another's samples, and asks _stats.decide() after each sample.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import math
import operator
import re
import socket
import ssl
import threading
import time
import urllib.request
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode

from ansible_collections.failsafe.recovery.plugins.module_utils import _imports
from ansible_collections.failsafe.recovery.plugins.module_utils import _stats
from ansible_collections.failsafe.recovery.plugins.module_utils._aws import AWS_OPTION_NAMES

CHECK_TYPES = ("http", "tcp", "postgres", "prometheus", "cloudwatch_alarm")
# latency limits judge the target's own response time, not a monitoring API's
LATENCY_TYPES = ("http", "tcp", "postgres")
OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}
REQUIRED = {
    "http": ("url",),
    "tcp": ("host", "port"),
    "postgres": ("query",),
    "prometheus": ("url", "query", "op", "threshold"),
    "cloudwatch_alarm": ("alarm_names",),
}
POSTGRES_OPTION_NAMES = ("login_user", "login_password", "login_host", "login_unix_socket", "login_port", "login_db",
                         "ssl_mode", "ca_cert", "ssl_cert", "ssl_key", "connect_timeout", "connect_params")


class GateInputError(ValueError):
    """Bad module input, with the message naming the option."""


def validate(params):
    """Check what the argument spec cannot express; raise GateInputError naming the option."""
    if params["interval"] <= 0:
        raise GateInputError("interval must be greater than 0 seconds, got %s" % params["interval"])
    if params["timeout"] <= 0:
        raise GateInputError("timeout must be greater than 0 seconds, got %s" % params["timeout"])
    rate = params.get("max_error_rate")
    if rate is not None and not 0 <= rate <= 100:
        raise GateInputError("max_error_rate is a percentage and must be between 0 and 100, got %s" % rate)
    for key in ("min_samples", "failure_limit", "consecutive_success"):
        if params.get(key) is not None and params[key] < 1:
            raise GateInputError("%s must be at least 1, got %s" % (key, params[key]))
    for key in ("inconclusive_limit", "window"):
        if params.get(key) is not None and params[key] < 0:
            raise GateInputError("%s must not be negative, got %s" % (key, params[key]))
    if params.get("max_workers") is not None and params["max_workers"] < 1:
        raise GateInputError("max_workers must be at least 1, got %s" % params["max_workers"])
    checks = params.get("checks") or []
    if not checks:
        raise GateInputError("checks must list at least one check")
    seen = set()
    for index, check in enumerate(checks):
        where = "checks[%d]" % index
        name = check.get("name")
        if name in seen:
            raise GateInputError("%s.name '%s' is used twice; check names must be unique" % (where, name))
        seen.add(name)
        ctype = check["type"]
        for key in REQUIRED[ctype]:
            if check.get(key) in (None, "", []):
                raise GateInputError("%s.%s is required when type is %s (check '%s')" % (where, key, ctype, name))
        if ctype == "http":
            if check.get("json_query") and check.get("expected") is None and not (check.get("op") and check.get("threshold") is not None):
                raise GateInputError("%s.json_query needs either %s.expected or %s.op with %s.threshold (check '%s')"
                                     % (where, where, where, where, name))
            if bool(check.get("op")) != (check.get("threshold") is not None):
                raise GateInputError("%s.op and %s.threshold go together (check '%s')" % (where, where, name))
            if check.get("body_regex"):
                try:
                    re.compile(check["body_regex"])
                except re.error as exc:
                    raise GateInputError("%s.body_regex is not a valid regular expression: %s (check '%s')" % (where, exc, name))
            if check.get("json_query"):
                if "jmespath" in _imports.IMPORT_ERRORS:
                    raise GateInputError("%s.json_query needs the jmespath Python library (pip install jmespath)" % where)
                try:
                    _imports.jmespath.compile(check["json_query"])
                except Exception as exc:  # jmespath raises its own ParseError family
                    raise GateInputError("%s.json_query is not a valid JMESPath expression: %s (check '%s')" % (where, exc, name))
        if check.get("timeout") is not None and check["timeout"] <= 0:
            raise GateInputError("%s.timeout must be greater than 0 seconds (check '%s')" % (where, name))
        if ctype == "tcp" and not 0 < check["port"] < 65536:
            raise GateInputError("%s.port must be between 1 and 65535 (check '%s')" % (where, name))
        if ctype in LATENCY_TYPES:
            limit_s = check_timeout(check)
            for key in ("max_latency_p95_ms", "max_latency_p99_ms"):
                if params.get(key) is not None and params[key] > limit_s * 1000.0:
                    raise GateInputError("%s (%s ms) is above the probe timeout of %s (%s s): a sample that slow already fails;"
                                         " raise %s.timeout or lower %s" % (key, params[key], name, limit_s, where, key))


def check_timeout(check):
    return float(check.get("timeout") or 5.0)


def error_reason(exc):
    """Short reason of a probe exception (no traceback)."""
    if isinstance(exc, HTTPError):
        return "HTTP %s %s" % (exc.code, exc.reason)
    if isinstance(exc, URLError):
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            return "TLS certificate verification failed: %s" % (reason.verify_message or reason)
        if isinstance(reason, ssl.SSLError):
            return "TLS error: %s" % reason
        if isinstance(reason, socket.gaierror):
            return "DNS resolution failed: %s" % reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return "timed out"
        if isinstance(reason, ConnectionRefusedError):
            return "connection refused"
        return str(reason)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "TLS certificate verification failed: %s" % (exc.verify_message or exc)
    if isinstance(exc, ssl.SSLError):
        return "TLS error: %s" % exc
    if isinstance(exc, socket.gaierror):
        return "DNS resolution failed: %s" % exc
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip().splitlines()
    return "%s: %s" % (type(exc).__name__, text[0] if text else "")


def _compare(value, op, threshold):
    try:
        return OPS[op](float(value), float(threshold))
    except (TypeError, ValueError):
        return None


_CONTEXTS = {}
_CONTEXTS_LOCK = threading.Lock()


def tls_context(check):
    """The TLS context for a check's verification, CA bundle and client certificate.

    Loading the system CA store costs far more than a local request, so one context
    per distinct setting is built once and shared by every check of the gate.
    """
    key = (bool(check.get("validate_certs", True)), check.get("ca_path"), check.get("client_cert"), check.get("client_key"))
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(key)
        if ctx is None:
            if key[0]:
                ctx = ssl.create_default_context(cafile=key[1] or None)
            else:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            if key[2]:
                ctx.load_cert_chain(key[2], key[3] or None)
            _CONTEXTS[key] = ctx
    return ctx


def build_opener(check, url):
    """A urllib opener for one check, built once, without proxies; TLS only for https URLs."""
    handlers = [urllib.request.ProxyHandler({})]
    if url.lower().startswith("https:"):
        handlers.append(urllib.request.HTTPSHandler(context=tls_context(check)))
    return urllib.request.build_opener(*handlers)


def _request(opener, url, timeout, data=None, headers=None, method="GET"):
    req = urllib.request.Request(url, data=data, headers=dict(headers or {}), method=method)
    return opener.open(req, timeout=timeout)


class HttpProbe:
    """GET/POST a URL; judge status, body regex and a JMESPath value."""

    latency = True

    def __init__(self, check):
        self.check = check
        self.regex = re.compile(check["body_regex"]) if check.get("body_regex") else None
        self.query = _imports.jmespath.compile(check["json_query"]) if check.get("json_query") else None
        body = check.get("body")
        headers = dict(check.get("headers") or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        self.data = body.encode("utf-8") if isinstance(body, str) else body
        self.headers = headers
        self.opener = None

    def __call__(self, timeout):
        check = self.check
        status, text = None, ""
        try:
            if self.opener is None:
                self.opener = build_opener(check, check["url"])
            with _request(self.opener, check["url"], timeout, self.data, self.headers, check.get("method") or "GET") as resp:
                status = resp.getcode()
                text = resp.read().decode("utf-8", "replace")
        except HTTPError as exc:
            status = exc.code
            try:
                text = exc.read().decode("utf-8", "replace")
            except Exception:  # the error body is only a convenience
                text = ""
        except Exception as exc:  # every transport error is a failed sample
            return _stats.FAIL, None, error_reason(exc)
        expected = check.get("expected_status") or [200]
        if status not in expected:
            return _stats.FAIL, status, "HTTP %s (expected %s)" % (status, ", ".join(str(s) for s in expected))
        if self.regex and not self.regex.search(text):
            return _stats.FAIL, status, "body does not match body_regex %r" % check["body_regex"]
        if self.query is not None:
            try:
                doc = json.loads(text)
            except ValueError:
                return _stats.FAIL, status, "body is not JSON, json_query cannot apply"
            value = self.query.search(doc)
            if value is None:
                return _stats.FAIL, None, "json_query %r found nothing" % check["json_query"]
            if check.get("expected") is not None:
                if value == check["expected"] or str(value) == str(check["expected"]):
                    return _stats.OK, value, None
                return _stats.FAIL, value, "json_query %r is %r, expected %r" % (check["json_query"], value, check["expected"])
            verdict = _compare(value, check["op"], check["threshold"])
            if verdict is None:
                return _stats.FAIL, value, "json_query %r is %r, not a number" % (check["json_query"], value)
            if not verdict:
                return _stats.FAIL, value, "json_query %r is %s, not %s %s" % (check["json_query"], value, check["op"], check["threshold"])
            return _stats.OK, value, None
        return _stats.OK, status, None


class TcpProbe:
    latency = True

    def __init__(self, check):
        self.check = check

    def __call__(self, timeout):
        try:
            sock = socket.create_connection((self.check["host"], self.check["port"]), timeout=timeout)
            sock.close()
        except Exception as exc:  # refused, timeout, DNS: a failed sample
            return _stats.FAIL, None, "%s:%s %s" % (self.check["host"], self.check["port"], error_reason(exc))
        return _stats.OK, None, None


class PostgresProbe:
    latency = True

    def __init__(self, check):
        self.check = check
        self.params = dict((key, check.get(key)) for key in POSTGRES_OPTION_NAMES)

    def __call__(self, timeout):
        # deferred import: _pgconn needs nothing at import time, but keep probes independent
        from ansible_collections.failsafe.recovery.plugins.module_utils import _pgconn
        params = dict(self.params)
        # libpq counts whole seconds and treats 1 as 2; keep the probe within its timeout
        params["connect_timeout"] = max(2, int(math.ceil(min(timeout, params.get("connect_timeout") or timeout))))
        conn = None
        try:
            conn = _pgconn.connect(params)
            conn.execute("SET statement_timeout = %d" % max(1, int(timeout * 1000)))
            row = conn.execute(self.check["query"]).fetchone()
        except Exception as exc:  # unreachable, auth, SQL error: a failed sample
            return _stats.FAIL, None, "%s: %s" % (_pgconn.describe_target(params), error_reason(exc))
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # closing a broken connection may fail too
                    pass
        if row is None:
            return _stats.FAIL, None, "query returned no rows"
        value = row[0]
        if value:
            return _stats.OK, _jsonable(value), None
        return _stats.FAIL, _jsonable(value), "query returned %r (not truthy)" % (value,)


def _jsonable(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class PrometheusProbe:
    """Instant query; every returned series must satisfy ``op threshold``."""

    latency = False

    def __init__(self, check):
        self.check = check
        self.url = check["url"].rstrip("/") + "/api/v1/query?" + urlencode({"query": check["query"]})
        self.opener = None

    def __call__(self, timeout):
        check = self.check
        try:
            if self.opener is None:
                self.opener = build_opener(check, self.url)
            with _request(self.opener, self.url, timeout, headers=check.get("headers")) as resp:
                doc = json.loads(resp.read().decode("utf-8"))
        except HTTPError as exc:
            detail = ""
            try:
                detail = json.loads(exc.read().decode("utf-8")).get("error", "")
            except Exception:  # the error body is only a convenience
                pass
            return _stats.FAIL, None, "Prometheus HTTP %s %s" % (exc.code, detail)
        except Exception as exc:  # transport error or non-JSON answer: a failed sample
            return _stats.FAIL, None, "Prometheus %s" % error_reason(exc)
        if doc.get("status") != "success":
            return _stats.FAIL, None, "Prometheus error: %s" % doc.get("error", doc.get("status"))
        data = doc.get("data") or {}
        rtype, result = data.get("resultType"), data.get("result")
        if rtype in ("scalar", "string"):
            values = [(None, result[1])]
        else:
            values = [(item.get("metric") or {}, item.get("value", [None, None])[1]) for item in (result or [])]
        values = [(m, v) for m, v in values if v is not None and str(v).lower() != "nan"]
        if not values:
            return _stats.NO_DATA, None, "query returned no data"
        bad = []
        for metric, raw in values:
            if not _compare(raw, check["op"], check["threshold"]):
                bad.append((metric, raw))
        shown = [float(v) for dummy, v in values]
        value = shown[0] if len(shown) == 1 else shown
        if bad:
            metric, raw = bad[0]
            label = "{%s}" % ",".join("%s=%s" % kv for kv in sorted(metric.items())) if metric else ""
            return _stats.FAIL, value, "query value %s%s is not %s %s" % (raw, label, check["op"], check["threshold"])
        return _stats.OK, value, None


class CloudWatchAlarmProbe:
    """All named alarms OK → ok; any ALARM → fail; INSUFFICIENT_DATA → no data."""

    latency = False

    def __init__(self, check):
        self.check = check
        self.client = None

    def __call__(self, timeout):
        from ansible_collections.failsafe.recovery.plugins.module_utils import _aws
        names = list(self.check["alarm_names"])
        try:
            if self.client is None:
                params = dict((key, self.check.get(key)) for key in AWS_OPTION_NAMES)
                self.client = _aws.aws_client(params, "cloudwatch", max_attempts=2)
            found = {}
            for page in self.client.get_paginator("describe_alarms").paginate(AlarmNames=names, AlarmTypes=["MetricAlarm", "CompositeAlarm"]):
                for group in ("MetricAlarms", "CompositeAlarms"):
                    for alarm in page.get(group, []):
                        found[alarm["AlarmName"]] = alarm["StateValue"]
        except Exception as exc:  # botocore errors and endpoint failures: a failed sample
            if hasattr(exc, "response"):
                info = _aws.aws_error(exc)
                return _stats.FAIL, None, "CloudWatch %s: %s" % (info["code"], info["message"])
            return _stats.FAIL, None, "CloudWatch %s" % error_reason(exc)
        value = dict((name, found.get(name, "MISSING")) for name in names)
        missing = [n for n in names if n not in found]
        if missing:
            return _stats.FAIL, value, "alarm(s) not found: %s" % ", ".join(missing)
        firing = [n for n in names if found[n] == "ALARM"]
        if firing:
            return _stats.FAIL, value, "alarm(s) in ALARM: %s" % ", ".join(firing)
        waiting = [n for n in names if found[n] != "OK"]
        if waiting:
            return _stats.NO_DATA, value, "alarm(s) in %s: %s" % ("/".join(sorted(set(found[n] for n in waiting))), ", ".join(waiting))
        return _stats.OK, value, None


PROBES = {"http": HttpProbe, "tcp": TcpProbe, "postgres": PostgresProbe,
          "prometheus": PrometheusProbe, "cloudwatch_alarm": CloudWatchAlarmProbe}


def make_probe(check):
    return PROBES[check["type"]](check)


def normalize_baseline(baseline):
    """Accept a registered health_gate result, its ``checks`` dict, or a list of check stats."""
    if not baseline:
        return {}
    if isinstance(baseline, dict) and isinstance(baseline.get("checks"), (dict, list)):
        baseline = baseline["checks"]
    if isinstance(baseline, list):
        return dict((item.get("name"), item) for item in baseline if isinstance(item, dict))
    return dict((k, v) for k, v in baseline.items() if isinstance(v, dict))


class Gate:
    """Run the checks concurrently and decide a verdict.

    ``probes`` maps check name to a callable(timeout) -> (status, value, error);
    tests pass fakes, the module passes make_probe(check).
    """

    def __init__(self, checks, params, probes=None, clock=time.monotonic):
        self.checks = checks
        self.params = params
        self.clock = clock
        self.probes = probes or dict((c["name"], make_probe(c)) for c in checks)
        self.streams = collections.OrderedDict((c["name"], []) for c in checks)
        self.order = [c["name"] for c in checks]
        baseline = normalize_baseline(params.get("baseline"))
        self.limits = {}
        for check in checks:
            base = _stats.base_limits(params, latency_applies=check["type"] in LATENCY_TYPES)
            self.limits[check["name"]] = _stats.effective_limits(base, baseline.get(check["name"]))
        self.samples = collections.deque(maxlen=max(0, params.get("samples_limit", 100)))
        self.seq = 0

    def _record(self, name, t_start, t_end, outcome):
        status, value, error = outcome
        self.seq += 1
        sample = dict(check=name, seq=self.seq, t=round(t_end, 3), status=status,
                      latency_ms=round((t_end - t_start) * 1000.0, 2), value=value, error=error)
        self.streams[name].append(sample)
        self.samples.append(sample)
        if name in self.order:
            self.order.remove(name)
        self.order.append(name)

    def _run_probe(self, name, timeout):
        started = self.clock()
        try:
            outcome = self.probes[name](timeout)
        except Exception as exc:  # a probe bug must still be a failed sample, not a traceback
            outcome = (_stats.FAIL, None, error_reason(exc))
        return started, self.clock(), outcome

    def run(self):
        params = self.params
        interval = float(params["interval"])
        t0 = self.clock()
        deadline = t0 + float(params["timeout"])
        workers = min(len(self.checks), params.get("max_workers") or 32)
        next_due = dict((c["name"], t0) for c in self.checks)
        timeouts = dict((c["name"], check_timeout(c)) for c in self.checks)
        inflight = {}
        states = dict((name, _stats.check_state(params["mode"], [], self.limits[name], params)) for name in self.streams)
        decision = None
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="health_gate")
        try:
            while decision is None:
                now = self.clock()
                if now >= deadline:
                    break
                for name in self.streams:
                    if name not in inflight.values() and now >= next_due[name]:
                        # a probe never outlives the gate
                        budget = max(0.05, min(timeouts[name], deadline - now))
                        inflight[pool.submit(self._run_probe, name, budget)] = name
                        next_due[name] = max(next_due[name] + interval, now)
                wait_for = min([next_due[n] for n in self.streams if n not in inflight.values()] + [deadline]) - self.clock()
                if inflight:
                    done, dummy = concurrent.futures.wait(list(inflight), timeout=max(0.0, wait_for),
                                                          return_when=concurrent.futures.FIRST_COMPLETED)
                else:
                    time.sleep(max(0.0, wait_for))
                    done = ()
                for future in sorted(done, key=lambda f: f.result()[1]):
                    name = inflight.pop(future)
                    started, ended, outcome = future.result()
                    self._record(name, started - t0, ended - t0, outcome)
                    states[name] = _stats.check_state(params["mode"], self.streams[name], self.limits[name], params)
                    decision = _stats.decide(params["mode"], self.streams, self.limits, params, final=False,
                                             order=self.order, states=states)
                    if decision is not None:
                        decision["t"] = ended - t0
                        break
            if decision is None:
                decision = _stats.decide(params["mode"], self.streams, self.limits, params, final=True, order=self.order)
                decision["t"] = self.clock() - t0
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        elapsed = self.clock() - t0
        return self._result(decision, elapsed)

    def _result(self, decision, elapsed):
        checks = collections.OrderedDict()
        for check in self.checks:
            name = check["name"]
            stats = _stats.summarize(self.streams[name], self.params.get("window") or 0)
            state, dummy = _stats.check_state(self.params["mode"], self.streams[name], self.limits[name], self.params)
            stats.update(name=name, type=check["type"], state=state,
                         limits=dict((k, v) for k, v in self.limits[name].items()))
            checks[name] = stats
        verdict = decision["verdict"]
        result = dict(
            passed=verdict == _stats.PASS,
            verdict=verdict,
            reason=decision["reason"],
            decided_by=decision.get("check"),
            mode=self.params["mode"],
            checks=checks,
            time_to_detect=round(decision["t"], 3),
            elapsed=round(elapsed, 3),
            samples=list(self.samples),
        )
        if self.params["mode"] == "trigger":
            result["triggers_fired"] = decision.get("triggers") or []
            result["rollback_recommended"] = bool(result["triggers_fired"])
        return result


def run_gate(params, probes=None):
    """Validate and run; returns the result dict (raises GateInputError on bad input)."""
    validate(params)
    return Gate(params["checks"], params, probes=probes).run()
