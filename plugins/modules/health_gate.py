#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: health_gate
short_description: Evaluate health signals over a window and pass, fail or recommend a rollback
version_added: 0.1.0
description:
  - Samples a list of health checks concurrently, every O(interval) seconds each, and decides a verdict
    from the sample streams, one of C(pass), C(fail) or C(inconclusive).
  - Check types are C(http) (status, body regex, JSON value), C(tcp) (connect), C(postgres) (a query returns a
    truthy value), C(prometheus) (an instant query compared with a threshold) and C(cloudwatch_alarm) (alarm state).
  - Every probe error (timeout, refused connection, DNS or TLS failure, SQL error, API error) is a failed sample
    carrying its reason. C(no data) (an empty Prometheus result, an alarm in C(INSUFFICIENT_DATA)) is never a success.
  - Checks run in a bounded thread pool, each on its own schedule, so a slow endpoint never delays another's samples.
  - A gate that does not pass fails the task, so a C(rescue:) section fires. In O(mode=trigger) the module reports
    which rollback triggers fired without failing, unless O(fail_on_trigger=true).
  - The module only reads; it never changes anything and always returns C(changed=false).
author:
  - failsafe.recovery contributors (@failsafe-recovery)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The gate only reads, so it runs in check mode exactly as in a normal run.
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - jmespath (for O(checks[].json_query))
  - psycopg >= 3.1 (for C(postgres) checks)
  - boto3 (for C(cloudwatch_alarm) checks)
notes:
  - Statistics are computed per check. The error rate is the percentage of failed samples among judged
    (success or failure) samples; percentiles are nearest-rank over the sample latencies. Both use the last
    O(window) judged samples, or all samples of the gate when O(window=0).
  - Latency limits apply to C(http), C(tcp) and C(postgres) checks (the target's own response time), not to the
    monitoring APIs queried by C(prometheus) and C(cloudwatch_alarm) checks.
  - For C(postgres) checks use O(checks[].login_host) and O(checks[].login_port);
    O(checks[].host) and O(checks[].port) belong to C(tcp) checks.
options:
  checks:
    description:
      - The health checks. Each is sampled every O(interval) seconds.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - Unique name of the check, used in RV(checks), RV(reason) and RV(samples).
        type: str
        required: true
      type:
        description:
          - What to probe.
        type: str
        required: true
        choices: [http, tcp, postgres, prometheus, cloudwatch_alarm]
      timeout:
        description:
          - Seconds one sample may take; a slower sample fails with C(timed out).
          - For C(postgres) checks it also bounds the query (C(statement_timeout)).
        type: float
        default: 5.0
      url:
        description:
          - C(http) the URL to request; C(prometheus) the base URL of the Prometheus server.
          - Required for C(http) and C(prometheus) checks.
        type: str
      method:
        description:
          - C(http) request method. Redirects are followed; O(checks[].expected_status) applies to the final answer.
        type: str
        default: GET
      headers:
        description:
          - C(http) and C(prometheus) request headers.
        type: dict
        default: {}
      body:
        description:
          - C(http) request body. A dict or list is sent as JSON with C(Content-Type application/json).
        type: raw
      expected_status:
        description:
          - C(http) status codes that count as success.
        type: list
        elements: int
        default: [200]
      body_regex:
        description:
          - C(http) a regular expression the response body must match (Python C(re.search)).
        type: str
      json_query:
        description:
          - C(http) a JMESPath expression applied to the JSON response body.
          - Needs O(checks[].expected), or O(checks[].op) with O(checks[].threshold).
        type: str
      expected:
        description:
          - C(http) the value O(checks[].json_query) must return (compared as value, then as string).
        type: raw
      op:
        description:
          - Comparison of the observed value with O(checks[].threshold), as C(observed op threshold).
          - Required for C(prometheus) checks; for C(http) checks with O(checks[].json_query).
        type: str
        choices: ['<', '<=', '>', '>=', '==']
      threshold:
        description:
          - The number the observed value is compared with.
        type: float
      validate_certs:
        description:
          - Verify TLS certificates (C(http), C(prometheus) and the CloudWatch API endpoint).
        type: bool
        default: true
      client_cert:
        description:
          - C(http) and C(prometheus) PEM client certificate file for mutual TLS.
        type: path
      client_key:
        description:
          - C(http) and C(prometheus) PEM private key of O(checks[].client_cert).
        type: path
      ca_path:
        description:
          - C(http) and C(prometheus) PEM CA bundle that verifies the server instead of the system store.
        type: path
      host:
        description:
          - C(tcp) host name or address to connect to. Required for C(tcp) checks.
        type: str
      port:
        description:
          - C(tcp) port to connect to. Required for C(tcp) checks.
        type: int
      query:
        description:
          - C(postgres) SQL query; the sample succeeds when the first column of the first row is truthy.
          - C(prometheus) PromQL instant query; every returned series must satisfy O(checks[].op) O(checks[].threshold),
            an empty result is no data.
          - Required for C(postgres) and C(prometheus) checks.
        type: str
      alarm_names:
        description:
          - C(cloudwatch_alarm) alarm names. A sample succeeds when all are C(OK), fails when one is C(ALARM) or
            missing, and is no data when one is C(INSUFFICIENT_DATA).
        type: list
        elements: str
      login_user:
        description:
          - C(postgres) role to connect as.
        type: str
        default: postgres
        aliases: [login]
      login_password:
        description:
          - C(postgres) password of O(checks[].login_user). Never logged.
        type: str
        default: ''
      login_host:
        description:
          - C(postgres) server host. Empty means the local Unix socket.
        type: str
        default: ''
      login_unix_socket:
        description:
          - C(postgres) directory of the server's Unix socket; takes precedence over O(checks[].login_host).
        type: str
        default: ''
        aliases: [unix_socket]
      login_port:
        description:
          - C(postgres) server port.
        type: int
        default: 5432
      login_db:
        description:
          - C(postgres) database to connect to.
        type: str
        aliases: [db]
      ssl_mode:
        description:
          - C(postgres) libpq C(sslmode) of the connection.
        type: str
        default: prefer
        choices: [allow, disable, prefer, require, verify-ca, verify-full]
      ca_cert:
        description:
          - C(postgres) CA certificate file that must have signed the server's certificate.
        type: str
        aliases: [ssl_rootcert]
      ssl_cert:
        description:
          - C(postgres) client certificate file.
        type: path
      ssl_key:
        description:
          - C(postgres) private key file of O(checks[].ssl_cert).
        type: path
      connect_timeout:
        description:
          - C(postgres) seconds to wait for the connection (capped by O(checks[].timeout)).
        type: int
        default: 10
      connect_params:
        description:
          - C(postgres) further libpq connection parameters.
        type: dict
        default: {}
      region:
        description:
          - C(cloudwatch_alarm) AWS region.
        type: str
        aliases: [aws_region, ec2_region]
      endpoint_url:
        description:
          - C(cloudwatch_alarm) URL of the CloudWatch API endpoint, for VPC endpoints or a local test endpoint.
        type: str
        aliases: [aws_endpoint_url, ec2_url]
      access_key:
        description:
          - C(cloudwatch_alarm) AWS access key ID; boto3's credential chain when not given.
        type: str
        aliases: [aws_access_key_id, aws_access_key, ec2_access_key]
      secret_key:
        description:
          - C(cloudwatch_alarm) AWS secret access key. Never logged.
        type: str
        aliases: [aws_secret_access_key, aws_secret_key, ec2_secret_key]
      session_token:
        description:
          - C(cloudwatch_alarm) AWS session token. Never logged.
        type: str
        aliases: [aws_session_token, security_token]
      profile:
        description:
          - C(cloudwatch_alarm) named profile from the shared credentials file.
        type: str
        aliases: [aws_profile]
  mode:
    description:
      - C(until_healthy) (verification after a rollback) passes as soon as every check has O(consecutive_success)
        successes in a row and at least O(min_samples) samples, with the latency limits holding over that run;
        it fails fast after O(failure_limit) consecutive failures and fails when O(timeout) ends first.
        Errors between successes while the service recovers do not fail it (O(max_error_rate) is not applied,
        except for a check judged against a failing O(baseline)).
      - C(steady) (bake) observes for the whole O(timeout) and passes at the end when every limit held;
        it fails as soon as one limit is breached (after O(min_samples) for rates and latencies).
      - C(trigger) samples until every check has O(min_samples) samples (or O(timeout) ends), then reports every
        limit breached as RV(triggers_fired) and sets RV(rollback_recommended); it fails only with O(fail_on_trigger=true).
    type: str
    default: until_healthy
    choices: [until_healthy, steady, trigger]
  interval:
    description:
      - Seconds between two samples of the same check. Must be greater than 0.
    type: float
    default: 5.0
  timeout:
    description:
      - Seconds the whole gate may take; in O(mode=steady) the observation window. No probe outlives it.
    type: float
    default: 300.0
  min_samples:
    description:
      - Judged samples a check needs before its error rate and latency percentiles are judged, and before it can pass.
    type: int
    default: 3
  failure_limit:
    description:
      - Consecutive failed samples of one check that decide the gate at once (fail fast). No-data samples neither
        count nor break the run.
    type: int
    default: 3
  consecutive_success:
    description:
      - Successes in a row each check needs to pass early in O(mode=until_healthy).
    type: int
    default: 3
  max_error_rate:
    description:
      - Highest tolerated percentage (0-100) of failed samples per check over the window.
    type: float
  max_latency_p95_ms:
    description:
      - Highest tolerated 95th percentile of sample latency per check, in milliseconds.
      - Must not exceed the probe O(checks[].timeout) of a check it applies to.
    type: float
  max_latency_p99_ms:
    description:
      - Highest tolerated 99th percentile of sample latency per check, in milliseconds.
    type: float
  inconclusive_limit:
    description:
      - No-data samples tolerated per check; one more makes the verdict C(inconclusive), which does not pass.
    type: int
    default: 3
  window:
    description:
      - Number of most recent judged samples the error rate and percentiles are computed over; C(0) means all
        samples of the gate.
    type: int
    default: 0
  baseline:
    description:
      - A pre-action measurement to judge against, so a signal that was already bad before the action (an alarm
        already firing) does not block the fix while a worse one still fails.
      - Either the registered result of an earlier C(health_gate) run, its RV(checks) value, or a dict of check
        name to C(error_rate), C(latency_ms.p95), C(latency_ms.p99), C(state).
      - For a check whose baseline breached a limit, the limit becomes the baseline's value; for a check whose
        baseline was failing, fail-fast is off and its error rate may not exceed the baseline's.
    type: dict
  fail_on_trigger:
    description:
      - In O(mode=trigger), fail the task when a trigger fired.
    type: bool
    default: false
  max_workers:
    description:
      - Size of the thread pool probing concurrently (never more threads than checks). Each check has at most
        one probe in flight, so with at least as many workers as checks no check ever waits for another.
    type: int
    default: 32
  samples_limit:
    description:
      - How many of the most recent samples RV(samples) returns.
    type: int
    default: 100
seealso:
  - module: ansible.builtin.uri
"""

EXAMPLES = r"""
- name: Verify the rollback took (fails the task, so rescue fires)
  failsafe.recovery.health_gate:
    mode: until_healthy
    interval: 2
    timeout: 120
    consecutive_success: 5
    max_latency_p95_ms: 800
    checks:
      - name: api
        type: http
        url: https://api.example.com/health
        json_query: status
        expected: ok
      - name: db
        type: postgres
        login_host: db1.example.com
        login_user: monitor
        login_password: "{{ vault_monitor_password }}"
        query: SELECT NOT pg_is_in_recovery()

- name: Bake the new release for 10 minutes
  failsafe.recovery.health_gate:
    mode: steady
    interval: 10
    timeout: 600
    min_samples: 10
    max_error_rate: 5
    max_latency_p95_ms: 5000
    checks:
      - name: checkout
        type: http
        url: https://shop.example.com/checkout/health
      - name: error-ratio
        type: prometheus
        url: http://prometheus.example.com:9090
        query: sum(rate(http_requests_total{status=~"5.."}[2m])) / sum(rate(http_requests_total[2m]))
        op: "<"
        threshold: 0.1
      - name: alarms
        type: cloudwatch_alarm
        region: eu-west-1
        alarm_names: [checkout-5xx, checkout-latency]

- name: Evaluate the rollback triggers
  failsafe.recovery.health_gate:
    mode: trigger
    interval: 5
    timeout: 60
    min_samples: 6
    max_error_rate: 10
    max_latency_p95_ms: 5000
    checks:
      - name: api
        type: http
        url: http://10.0.0.10:8080/health
      - name: db
        type: tcp
        host: 10.0.0.20
        port: 5432
  register: triggers

- name: Roll back when a trigger fired
  ansible.builtin.include_role:
    name: failsafe.recovery.rollback_code
  when: triggers.rollback_recommended

- name: Measure before the fix
  failsafe.recovery.health_gate:
    mode: trigger
    timeout: 30
    checks: &checks
      - name: alarms
        type: cloudwatch_alarm
        alarm_names: [api-5xx]
  register: before

- name: Gate after the fix, judged against what was already firing
  failsafe.recovery.health_gate:
    mode: steady
    timeout: 120
    baseline: "{{ before }}"
    checks: *checks
"""

RETURN = r"""
passed:
  description: Whether the gate passed.
  returned: always
  type: bool
  sample: false
verdict:
  description: C(pass), C(fail) or C(inconclusive) (too little data; not a pass).
  returned: always
  type: str
  sample: fail
reason:
  description: One sentence naming the deciding check and the numbers.
  returned: always
  type: str
  sample: "check 'api' error rate 16.7 % over 6 samples exceeds max_error_rate 10 %; last error: HTTP 500 (expected 200)"
decided_by:
  description: Name of the check whose sample decided the verdict (null for a pass over all checks).
  returned: always
  type: str
  sample: api
mode:
  description: The mode the gate ran in.
  returned: always
  type: str
  sample: steady
checks:
  description: Statistics per check, keyed by check name.
  returned: always
  type: dict
  sample:
    api:
      name: api
      type: http
      state: failed
      samples: 6
      successes: 5
      failures: 1
      no_data: 0
      judged: 6
      error_rate: 16.67
      latency_ms: {p50: 2.1, p95: 3.4, p99: 3.4, max: 3.4}
      consecutive_failures: 1
      consecutive_successes: 0
      max_consecutive_failures: 1
      last_error: "HTTP 500 (expected 200)"
      last_value: 500
      limits: {failure_limit: 3, max_error_rate: 10.0, max_latency_p95_ms: null, max_latency_p99_ms: null, degraded_baseline: false}
time_to_detect:
  description: Seconds from the start of the gate to the sample that decided the verdict (the elapsed time on a timeout).
  returned: always
  type: float
  sample: 1.42
elapsed:
  description: Seconds the gate ran.
  returned: always
  type: float
  sample: 1.43
samples:
  description:
    - The most recent samples (at most O(samples_limit)), oldest first.
    - Each has C(check), C(seq), C(t) (seconds since the start), C(status) (C(ok), C(fail), C(no_data)),
      C(latency_ms), C(value) and C(error).
  returned: always
  type: list
  elements: dict
  sample:
    - {check: api, seq: 6, t: 1.42, status: fail, latency_ms: 2.3, value: 500, error: "HTTP 500 (expected 200)"}
triggers_fired:
  description: Every limit breached, with C(check), C(trigger) (C(consecutive_failures), C(error_rate), C(latency_p95),
    C(latency_p99)), C(threshold), C(observed) and C(samples).
  returned: when O(mode=trigger)
  type: list
  elements: dict
  sample:
    - {check: api, trigger: error_rate, threshold: 10.0, observed: 33.33, samples: 6}
rollback_recommended:
  description: Whether at least one trigger fired.
  returned: when O(mode=trigger)
  type: bool
  sample: true
"""

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.failsafe.recovery.plugins.module_utils._base import (
    FailsafeModule, aws_argument_spec, postgres_argument_spec)
from ansible_collections.failsafe.recovery.plugins.module_utils import _health, _imports


def check_options():
    """Suboptions of one check: the type options plus the shared PostgreSQL and AWS option names."""
    options = dict(
        name=dict(type="str", required=True),
        type=dict(type="str", required=True, choices=list(_health.CHECK_TYPES)),
        timeout=dict(type="float", default=5.0),
        url=dict(type="str"),
        method=dict(type="str", default="GET"),
        headers=dict(type="dict", default={}),
        body=dict(type="raw"),
        expected_status=dict(type="list", elements="int", default=[200]),
        body_regex=dict(type="str"),
        json_query=dict(type="str"),
        expected=dict(type="raw"),
        op=dict(type="str", choices=list(_health.OPS)),
        threshold=dict(type="float"),
        client_cert=dict(type="path"),
        client_key=dict(type="path", no_log=False),
        ca_path=dict(type="path"),
        host=dict(type="str"),
        port=dict(type="int"),
        query=dict(type="str"),
        alarm_names=dict(type="list", elements="str"),
    )
    postgres = postgres_argument_spec()
    # host/port are the tcp check's own options; postgres checks use login_host/login_port
    for key in ("login_host", "login_port"):
        postgres[key].pop("aliases", None)
    options.update(postgres)
    aws = aws_argument_spec()
    # s3_url makes no sense for CloudWatch
    aws["endpoint_url"]["aliases"] = ["aws_endpoint_url", "ec2_url"]
    options.update(aws)
    return options


def argument_spec():
    return dict(
        checks=dict(type="list", elements="dict", required=True, options=check_options()),
        mode=dict(type="str", default="until_healthy", choices=["until_healthy", "steady", "trigger"]),
        interval=dict(type="float", default=5.0),
        timeout=dict(type="float", default=300.0),
        min_samples=dict(type="int", default=3),
        failure_limit=dict(type="int", default=3),
        consecutive_success=dict(type="int", default=3),
        max_error_rate=dict(type="float"),
        max_latency_p95_ms=dict(type="float"),
        max_latency_p99_ms=dict(type="float"),
        inconclusive_limit=dict(type="int", default=3),
        window=dict(type="int", default=0),
        baseline=dict(type="dict"),
        fail_on_trigger=dict(type="bool", default=False),
        max_workers=dict(type="int", default=32),
        samples_limit=dict(type="int", default=100),
    )


NEEDS = {"postgres": "psycopg", "cloudwatch_alarm": "boto3"}


def main():
    module = FailsafeModule(argument_spec())
    params = module.params
    for index, check in enumerate(params["checks"]):
        lib = NEEDS.get(check["type"]) or ("jmespath" if check.get("json_query") else None)
        if lib and lib in _imports.IMPORT_ERRORS:
            hint = missing_required_lib(_imports.PIP_NAMES[lib])
            module.fail_json(msg="checks[%d] (%s, type %s): %s" % (index, check["name"], check["type"], hint),
                             exception=_imports.IMPORT_ERRORS[lib])
    try:
        result = _health.run_gate(params)
    except _health.GateInputError as exc:
        module.fail_json(msg=str(exc))
    failed = not result["passed"]
    if params["mode"] == "trigger":
        failed = result["rollback_recommended"] and params["fail_on_trigger"]
    if failed:
        module.fail_json(msg="health gate %s: %s" % (result["verdict"], result["reason"]), changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
