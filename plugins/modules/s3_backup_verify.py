#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: s3_backup_verify
short_description: Prove that a series of backups in S3 is fresh, complete, intact, encrypted and replicated
version_added: 0.1.0
description:
  - Lists a series of backups in an S3 bucket (a prefix and an optional key regular expression) and runs the
    checks that are asked for, each reported separately in RV(checks) and RV(failures).
  - The time of each backup is its own, not the S3 upload time when it can be helped - from a named group
    C(time) in O(key_regex), else from the object metadata key O(metadata_time_key), else from S3
    C(LastModified) with a warning.
  - "Checks: newest backup age (O(max_age)), size floor (O(min_size)) and size jump versus the previous
    backup (O(max_size_change_percent)), integrity (O(checksum): S3 additional checksums including
    multipart composite checksums, a C(.sha256) sidecar or a JSON manifest, and a deep read that streams the
    bytes with parallel ranged GETs and compares them with every reference available), encryption with the
    expected KMS key, bucket versioning, object lock, missing slots in the schedule (O(expected_interval),
    O(retention_days)) and an off-site replica holding the same keys and checksums (O(replica_bucket))."
  - The module only reads. It never changes anything, so it reports C(changed=false) and runs the same in
    check mode.
  - Fails the task when any requested check fails, unless O(fail_on_error=false).
author:
  - failsafe.recovery contributors (@failsafe-recovery)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - failsafe.recovery.aws
attributes:
  check_mode:
    support: full
    details: The module is read-only; check mode runs every check.
  diff_mode:
    support: none
  platform:
    platforms: all
options:
  bucket:
    description:
      - Bucket holding the backups.
    type: str
    required: true
  prefix:
    description:
      - Only keys starting with this prefix belong to the series.
    type: str
    default: ""
  key_regex:
    description:
      - Python regular expression a key must match (searched, so anchor it with C(^) / C($) when needed) to
        belong to the series.
      - A named group C(time), for example C((?P<time>\\d{8}T\\d{6}Z)), gives the backup time. ISO 8601,
        compact forms such as C(20261122T020000Z) or C(20261122-020000), dates and epoch seconds are
        understood; see O(time_format).
      - Keys ending in O(sidecar_suffix) and the O(manifest_key) are never part of the series.
    type: str
  time_format:
    description:
      - C(strptime) format of the C(time) group of O(key_regex) or of the O(metadata_time_key) value, for
        formats that are not recognised automatically. Times without a zone are UTC.
    type: str
  metadata_time_key:
    description:
      - Object metadata key (the part after C(x-amz-meta-)) holding the backup time, used when O(key_regex)
        gives none. Costs one HEAD request per object.
    type: str
  scope:
    description:
      - Which backups the per-object checks (O(min_size), O(max_size_change_percent), O(checksum),
        O(require_encryption), O(require_object_lock), replica checksums) look at.
      - C(latest) checks the newest backup only; C(all) checks every backup of the series.
      - With O(deep_subset), the deep check reads its slice of the whole series whatever the scope.
    type: str
    choices: [latest, all]
    default: latest
  max_age:
    description:
      - The newest backup must be younger than this (the recovery point objective), measured from the
        backup's own time. A number and a unit, C(s), C(m), C(h), C(d) or C(w), for example C(15m), C(26h),
        C(7d), C(1h30m).
    type: str
  min_size:
    description:
      - Smallest acceptable size of a backup, in bytes.
    type: int
  max_size_change_percent:
    description:
      - Largest acceptable change in size, in percent, of a backup versus the previous one of the series,
        up or down. A truncated dump shows up here.
    type: float
  checksum:
    description:
      - Integrity checks to run.
      - C(s3) - the object carries an S3 additional checksum (SHA256, CRC32C, CRC32 or SHA1); for a multipart
        object whose part checksums S3 lists, they must combine to the composite checksum.
      - C(sidecar) - a sidecar file (the key plus O(sidecar_suffix), C(sha256sum) format) or the
        O(manifest_key) entry exists, its size matches, and its sha256 equals the object's S3 SHA256
        full-object checksum when there is one.
      - C(deep) - stream the bytes with parallel ranged GETs (O(concurrency) x O(part_size) bytes in memory at
        most), hash them in order, and compare with the sidecar or manifest sha256, the S3 checksum (part by
        part for composite checksums) and the ETag when it is an MD5. Throughput is returned in RV(deep).
    type: list
    elements: str
    choices: [s3, sidecar, deep]
    default: []
  sidecar_suffix:
    description:
      - Suffix of the sidecar checksum file of each backup.
    type: str
    default: .sha256
  manifest_key:
    description:
      - Key of a JSON manifest in the same bucket listing the backups with their C(sha256) (hex) and
        C(size); used instead of sidecar files.
      - Accepted shapes - a list of objects with C(key), C(sha256), C(size); a mapping key to such an object;
        either under a top-level C(files), C(backups), C(objects) or C(entries) field.
    type: str
  deep_subset:
    description:
      - Deep-read only slice C(n) of C(t) of the whole series (C(n/t), for example C(3/7)). The slice is a
        stable hash of each key, so runs with n = 1 to t read every backup once.
      - Needs C(deep) in O(checksum).
    type: str
  concurrency:
    description:
      - Parallel ranged GETs (and HEAD requests) at a time.
    type: int
    default: 8
  part_size:
    description:
      - Bytes per ranged GET of the deep check.
    type: int
    default: 8388608
  require_encryption:
    description:
      - Server-side encryption every checked backup must have.
    type: str
    choices: [AES256, "aws:kms"]
  kms_key_id:
    description:
      - The KMS key the backups must be encrypted with (key ID, key ARN, alias name or alias ARN; an alias is
        resolved with C(kms:DescribeKey)). Needs O(require_encryption=aws:kms).
    type: str
  require_versioning:
    description:
      - The bucket must have versioning enabled.
    type: bool
    default: false
  require_object_lock:
    description:
      - Every checked backup must carry an object lock retention, read from C(head_object).
    type: dict
    suboptions:
      mode:
        description:
          - Required lock mode; any mode when not given.
        type: str
        choices: [GOVERNANCE, COMPLIANCE]
      min_retention_days:
        description:
          - Minimum days between the object's write time and its retain-until date.
        type: int
        default: 0
  expected_interval:
    description:
      - Expected time between backups (same syntax as O(max_age)). Slots are laid out from the newest backup
        backwards (to the oldest backup, or over O(retention_days)) and forwards to now; a slot with no backup
        within half an interval is a gap, listed in RV(gaps).
    type: str
  retention_days:
    description:
      - Days of backups that must be kept; the gap check covers this window and RV(kept_count) counts the
        backups in it. Needs O(expected_interval).
    type: int
  replica_bucket:
    description:
      - Off-site copy that must hold every key of the series with the same size and, for checked backups, the
        same checksum (S3 checksum, else a non-multipart unencrypted ETag).
    type: str
  replica_prefix:
    description:
      - Prefix of the series in O(replica_bucket); defaults to O(prefix).
    type: str
  replica_region:
    description:
      - Region of O(replica_bucket); defaults to O(region).
    type: str
  replica_endpoint_url:
    description:
      - Endpoint of O(replica_bucket); defaults to O(endpoint_url).
    type: str
  fail_on_error:
    description:
      - Fail the task when a check fails. With V(false) the result carries RV(passed) and RV(failures) and
        the task succeeds.
    type: bool
    default: true
notes:
  - Required permissions - C(s3:ListBucket), C(s3:GetObject), C(s3:GetObjectAttributes),
    C(s3:GetObjectVersion) (versioned buckets), C(s3:GetBucketVersioning) with O(require_versioning),
    C(kms:DescribeKey) for an alias in O(kms_key_id), C(kms:Decrypt) to read SSE-KMS objects.
  - An ETag is an MD5 of the bytes only for objects that are not SSE-KMS or SSE-C encrypted; the deep check
    uses it only then, part by part for multipart uploads.
  - CRC32C is computed in pure Python (a few MB/s); prefer SHA256 checksums for large backups checked with
    C(deep).
seealso:
  - module: amazon.aws.s3_object_info
"""

EXAMPLES = r"""
- name: Nightly database dumps are fresh, sane, intact and off-site
  failsafe.recovery.s3_backup_verify:
    region: eu-west-1
    bucket: acme-backups
    prefix: postgres/main/
    key_regex: '^postgres/main/main-(?P<time>\d{8}T\d{6}Z)\.dump$'
    max_age: 26h
    min_size: 1048576
    max_size_change_percent: 30
    checksum: [s3, sidecar, deep]
    require_encryption: "aws:kms"
    kms_key_id: alias/backups
    require_versioning: true
    require_object_lock:
      mode: COMPLIANCE
      min_retention_days: 30
    expected_interval: 1d
    retention_days: 30
    replica_bucket: acme-backups-dr
    replica_region: eu-central-1

- name: Read one seventh of all backups each night, so a week reads them all
  failsafe.recovery.s3_backup_verify:
    bucket: acme-backups
    prefix: files/
    key_regex: '(?P<time>\d{4}-\d{2}-\d{2})\.tar\.zst$'
    scope: all
    checksum: [deep]
    deep_subset: "{{ (now(utc=true).timetuple().tm_yday % 7) + 1 }}/7"
    concurrency: 16
    part_size: 16777216

- name: WAL archive every 15 minutes, times from object metadata; report without failing
  failsafe.recovery.s3_backup_verify:
    bucket: acme-wal
    prefix: wal/
    metadata_time_key: backup-time
    max_age: 15m
    expected_interval: 15m
    retention_days: 2
    fail_on_error: false
  register: wal

- name: Show what did not hold
  ansible.builtin.debug:
    msg: "{{ wal.failures | map(attribute='message') | list }}"
  when: not wal.passed
"""

RETURN = r"""
passed:
  description: Whether every requested check held.
  returned: always
  type: bool
  sample: false
backups_count:
  description: Number of backups in the series.
  returned: always
  type: int
  sample: 30
bucket:
  description: The bucket checked.
  returned: always
  type: str
  sample: acme-backups
prefix:
  description: The prefix checked.
  returned: always
  type: str
  sample: postgres/main/
scope:
  description: The O(scope) used.
  returned: always
  type: str
  sample: latest
checked_keys:
  description: Keys the per-object checks looked at.
  returned: always
  type: list
  elements: str
  sample: [postgres/main/main-20261122T020000Z.dump]
latest:
  description:
    - The newest backup, or null when the series is empty. C(checksum), C(encryption) and C(object_lock) are
      filled by the checks that read them.
  returned: always
  type: dict
  sample:
    key: postgres/main/main-20261122T020000Z.dump
    size: 73400320
    time: "2026-11-22T02:00:00Z"
    time_source: key
    age_seconds: 3600
    last_modified: "2026-11-22T02:03:11Z"
    checksum: {s3: present, s3_algorithm: SHA256, sidecar: matches_s3_checksum, deep: ok}
    encryption: {algorithm: "aws:kms", kms_key_id: "arn:aws:kms:eu-west-1:111122223333:key/1234abcd"}
    object_lock: {mode: COMPLIANCE, retain_until: "2026-12-22T02:03:11Z", legal_hold: null}
oldest:
  description: The oldest backup (key, size, time, time_source, age_seconds, last_modified), or null.
  returned: always
  type: dict
  sample: {key: postgres/main/main-20261023T020000Z.dump, size: 70000000, time: "2026-10-23T02:00:00Z"}
gaps:
  description: Expected backup slots (UTC, ISO 8601) with no backup; empty unless O(expected_interval) is set.
  returned: always
  type: list
  elements: str
  sample: ["2026-11-14T02:00:00Z"]
kept_count:
  description:
    - Backups inside the O(retention_days) window (all backups when no window is given), null when
      O(expected_interval) is not set.
  returned: always
  type: int
  sample: 29
failures:
  description: What did not hold, one entry per check and object.
  returned: always
  type: list
  elements: dict
  contains:
    check:
      description:
        - C(backups), C(max_age), C(min_size), C(max_size_change_percent), C(checksum_s3),
          C(checksum_sidecar), C(checksum_deep), C(require_encryption), C(kms_key_id),
          C(require_versioning), C(require_object_lock), C(expected_interval), C(replica) or C(head).
      type: str
    key:
      description: The backup concerned, null for series-wide findings.
      type: str
    message:
      description: What was found versus what was expected.
      type: str
  sample:
    - check: max_age
      key: postgres/main/main-20261120T020000Z.dump
      message: newest backup is 2.5d old (taken 2026-11-20T02:00:00Z, from key), more than max_age 26h
checks:
  description:
    - One entry per check that ran, with C(status) (C(passed) or C(failed)), C(checked) (objects or slots
      looked at), C(failures) and check-specific figures (C(age_seconds), C(gaps), C(kept_count), ...).
  returned: always
  type: dict
  sample:
    backups: {status: passed, checked: 30, failures: 0}
    max_age: {status: passed, checked: 1, failures: 0, age_seconds: 3600, max_age_seconds: 93600}
deep:
  description: Figures of the deep check.
  returned: when C(deep) is in O(checksum)
  type: dict
  contains:
    objects:
      description: Objects read.
      type: int
    bytes:
      description: Bytes read.
      type: int
    seconds:
      description: Time spent reading and hashing.
      type: float
    mib_per_second:
      description: Throughput over all objects read.
      type: float
    concurrency:
      description: Parallel ranged GETs used.
      type: int
    part_size:
      description: Bytes per ranged GET.
      type: int
    subset:
      description: The O(deep_subset) slice, if any.
      type: str
    keys:
      description: Keys read.
      type: list
      elements: str
    results:
      description: Per object - key, bytes, seconds, mib_per_second, ok, sha256, compared_with (the references used).
      type: list
      elements: dict
  sample:
    objects: 1
    bytes: 73400320
    seconds: 0.61
    mib_per_second: 114.8
    concurrency: 8
    part_size: 8388608
    subset: null
    keys: [postgres/main/main-20261122T020000Z.dump]
    results: [{key: postgres/main/main-20261122T020000Z.dump, ok: true, compared_with: [s3 SHA256]}]
replica:
  description: What the replica check found.
  returned: when O(replica_bucket) is set
  type: dict
  contains:
    bucket:
      description: The replica bucket.
      type: str
    prefix:
      description: The replica prefix.
      type: str
    count:
      description: Objects under the replica prefix.
      type: int
    missing:
      description: Source keys the replica lacks.
      type: list
      elements: str
    mismatched:
      description: Source keys whose replica differs in size or checksum.
      type: list
      elements: str
    checksums_compared:
      description: Checked backups whose checksums could be compared.
      type: int
  sample: {bucket: acme-backups-dr, prefix: postgres/main/, count: 29, missing: [postgres/main/main-20261122T020000Z.dump],
           mismatched: [], checksums_compared: 0}
"""

from ansible_collections.failsafe.recovery.plugins.module_utils._aws import aws_client, aws_error
from ansible_collections.failsafe.recovery.plugins.module_utils._base import FailsafeModule, aws_argument_spec
from ansible_collections.failsafe.recovery.plugins.module_utils import _imports
from ansible_collections.failsafe.recovery.plugins.module_utils._s3 import BackupVerifier, VerifyError


def argument_spec():
    spec = aws_argument_spec()
    spec.update(
        bucket=dict(type="str", required=True),
        prefix=dict(type="str", default=""),
        key_regex=dict(type="str", no_log=False),
        time_format=dict(type="str"),
        metadata_time_key=dict(type="str", no_log=False),
        scope=dict(type="str", choices=["latest", "all"], default="latest"),
        max_age=dict(type="str"),
        min_size=dict(type="int"),
        max_size_change_percent=dict(type="float"),
        checksum=dict(type="list", elements="str", choices=["s3", "sidecar", "deep"], default=[]),
        sidecar_suffix=dict(type="str", default=".sha256"),
        manifest_key=dict(type="str", no_log=False),
        deep_subset=dict(type="str"),
        concurrency=dict(type="int", default=8),
        part_size=dict(type="int", default=8388608),
        require_encryption=dict(type="str", choices=["AES256", "aws:kms"]),
        kms_key_id=dict(type="str", no_log=False),
        require_versioning=dict(type="bool", default=False),
        require_object_lock=dict(type="dict", options=dict(
            mode=dict(type="str", choices=["GOVERNANCE", "COMPLIANCE"]),
            min_retention_days=dict(type="int", default=0),
        )),
        expected_interval=dict(type="str"),
        retention_days=dict(type="int"),
        replica_bucket=dict(type="str"),
        replica_prefix=dict(type="str"),
        replica_region=dict(type="str"),
        replica_endpoint_url=dict(type="str"),
        fail_on_error=dict(type="bool", default=True),
    )
    return spec


def main():
    module = FailsafeModule(
        argument_spec(),
        requires=("boto3",),
        required_by=dict(kms_key_id="require_encryption", retention_days="expected_interval",
                         deep_subset="checksum", replica_prefix="replica_bucket",
                         replica_region="replica_bucket", replica_endpoint_url="replica_bucket"),
    )
    params = module.params
    where = "s3://%s/%s" % (params["bucket"], params["prefix"] or "")
    try:
        verifier = BackupVerifier(
            params,
            client_factory=lambda p: aws_client(p, "s3", max_pool_connections=max(10, p["concurrency"] or 1)),
            kms_factory=lambda p: aws_client(p, "kms"),
            warn=module.warn,
        )
        result = verifier.run()
    except VerifyError as exc:
        module.fail(exc.msg, **exc.facts)
    except (_imports.botocore.exceptions.ClientError, _imports.botocore.exceptions.BotoCoreError) as exc:
        module.fail("S3 request failed while verifying %s: %s" % (where, exc), error=aws_error(exc))
    if not result["passed"] and params["fail_on_error"]:
        names = sorted({f["check"] for f in result["failures"]})
        first = result["failures"][0]
        module.fail("%d backup check(s) failed on %s (%s); first: %s%s" % (
            len(result["failures"]), where, ", ".join(names), first["message"],
            " [%s]" % first["key"] if first["key"] else ""), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
