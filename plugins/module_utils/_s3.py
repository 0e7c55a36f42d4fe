# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: the S3 backup verifier behind failsafe.recovery.s3_backup_verify.

Pure helpers first (durations, backup times, gaps, subset slices, checksum
arithmetic), then ``BackupVerifier`` which talks to S3 through a boto3 client.
Everything here is read-only: no call writes to any bucket.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import collections
import datetime
import hashlib
import json
import re
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.failsafe.recovery.plugins.module_utils import _imports

UTC = datetime.timezone.utc
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)", re.IGNORECASE)
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_TIME_FORMATS = (
    "%Y%m%dT%H%M%SZ", "%Y%m%dT%H%M%S", "%Y%m%d-%H%M%S", "%Y%m%d_%H%M%S", "%Y%m%d%H%M%S", "%Y%m%d%H%M",
    "%Y-%m-%dT%H-%M-%SZ", "%Y-%m-%dT%H-%M-%S", "%Y-%m-%d_%H-%M-%S", "%Y-%m-%d-%H%M%S", "%Y-%m-%d-%H-%M-%S",
    "%Y-%m-%d_%H%M%S", "%Y-%m-%dT%H%M%SZ", "%Y%m%d",
)
CHECKSUM_ALGORITHMS = ("SHA256", "CRC32C", "CRC32", "SHA1")
KMS_ENCRYPTIONS = ("aws:kms", "aws:kms:dsse")


class VerifyError(Exception):
    """Bad input or an unusable bucket: the module fails with this message."""

    def __init__(self, msg, **facts):
        super().__init__(msg)
        self.msg = msg
        self.facts = facts


# ---------------------------------------------------------------- parsing

def parse_duration(value, option):
    """Seconds in ``value`` (``15m``, ``26h``, ``7d``, ``1h30m``, ``2w``, or a bare number of seconds).

    Raises VerifyError naming ``option`` when the text is not a positive duration.
    """
    if value is None:
        return None
    text = str(value).strip()
    seconds = None
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        seconds = float(text)
    elif text and _DURATION_RE.sub("", text).strip() == "":
        seconds = sum(float(num) * _UNITS[unit.lower()] for num, unit in _DURATION_RE.findall(text))
    if seconds is None or seconds <= 0:
        raise VerifyError("%s: cannot parse %r as a duration; use a number and a unit such as 15m, 26h, 7d "
                          "(units: s, m, h, d, w)" % (option, value), option=option)
    return seconds


def parse_subset(value, option="deep_subset"):
    """``(n, t)`` from ``"n/t"`` with 1 <= n <= t."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise VerifyError("%s: %r is not a slice 'n/t' with 1 <= n <= t (for example 3/7 checks the third "
                          "seventh of the backups)" % (option, value), option=option)
    return int(match.group(1)), int(match.group(2))


def in_subset(key, n, t):
    """True when ``key`` belongs to slice ``n`` of ``t``.

    The slice is a stable hash of the key, so slices 1..t partition every
    series: running n = 1, 2, ..., t (one per scheduled run) reads every
    object exactly once, whatever the listing order and even as keys come and go.
    """
    value = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return value % t == n - 1


def parse_backup_time(text, time_format=None):
    """A timezone-aware UTC datetime from ``text``; None when it does not parse.

    With ``time_format`` (strptime), only that format is tried. Otherwise ISO 8601,
    compact forms such as ``20261122T020000Z`` / ``20261122-0200``, dates and
    Unix epoch seconds are accepted. Times without a zone are taken as UTC.
    """
    if text is None:
        return None
    text = str(text).strip()
    parsed = None
    if time_format:
        try:
            parsed = datetime.datetime.strptime(text, time_format)
        except ValueError:
            return None
    else:
        if re.fullmatch(r"\d{10}(\.\d+)?", text):
            return datetime.datetime.fromtimestamp(float(text), UTC)
        try:
            parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            for fmt in _TIME_FORMATS:
                try:
                    parsed = datetime.datetime.strptime(text, fmt)
                    break
                except ValueError:
                    continue
    if parsed is None:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def iso(moment):
    """ISO 8601 text in UTC with a Z suffix."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- gaps

def compute_gaps(times, interval, now, window_start=None):
    """Expected backup slots in [window_start, now] that hold no backup.

    Slots are anchored on the newest backup and spaced ``interval`` seconds
    apart, backwards to ``window_start`` (default: the oldest backup) and
    forwards to ``now``. A slot is filled by any backup within half an interval
    of it; a slot after the newest backup is only missing once half an interval
    has passed (the backup may still be running). Returns datetimes, oldest first.
    """
    if not times:
        return []
    stamps = sorted(t.timestamp() for t in times)
    half = interval / 2.0
    anchor = stamps[-1]
    start = window_start.timestamp() if window_start is not None else stamps[0]
    end = now.timestamp()
    slots = []
    k = 0
    while anchor - k * interval >= start - 1e-6:
        slots.append(anchor - k * interval)
        k += 1
    k = 1
    while anchor + k * interval + half < end:
        slots.append(anchor + k * interval)
        k += 1
    missing = []
    for slot in sorted(slots):
        idx = bisect.bisect_left(stamps, slot - half)
        if idx < len(stamps) and stamps[idx] < slot + half:
            continue
        missing.append(datetime.datetime.fromtimestamp(slot, UTC))
    return missing


# ---------------------------------------------------------------- checksums

def _crc32c_table():
    table = []
    for i in range(256):
        crc = i
        for _bit in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    """CRC-32C (Castagnoli) of ``data``, continuing from ``crc``. Pure Python: a few MB/s."""
    crc ^= 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


class _Crc:
    def __init__(self, func):
        self._func = func
        self._value = 0

    def update(self, data):
        self._value = self._func(data, self._value)

    def digest(self):
        return (self._value & 0xFFFFFFFF).to_bytes(4, "big")


def new_hasher(algorithm):
    """A hashlib-like object (update/digest) for an S3 checksum algorithm or MD5."""
    algorithm = algorithm.upper()
    if algorithm == "SHA256":
        return hashlib.sha256()
    if algorithm == "SHA1":
        return hashlib.sha1()  # nosec - S3 checksum algorithm, not used for security
    if algorithm == "MD5":
        return hashlib.md5()  # nosec - ETag arithmetic, not used for security
    if algorithm == "CRC32":
        return _Crc(zlib.crc32)
    if algorithm == "CRC32C":
        return _Crc(crc32c)
    raise ValueError("unknown checksum algorithm %s" % algorithm)


def b64(digest):
    return base64.b64encode(digest).decode("ascii")


def composite_checksum(algorithm, part_digests):
    """S3's composite (multipart) checksum: the checksum of the concatenated raw part checksums, base64,
    with the ``-N`` part count suffix."""
    hasher = new_hasher(algorithm)
    hasher.update(b"".join(part_digests))
    return "%s-%d" % (b64(hasher.digest()), len(part_digests))


def multipart_etag(part_md5s):
    """The ETag of a multipart upload (not KMS-encrypted): md5 of the concatenated part md5s, hex, ``-N``."""
    return "%s-%d" % (hashlib.md5(b"".join(part_md5s)).hexdigest(), len(part_md5s))  # nosec


def strip_part_count(value):
    """``(checksum, part_count or None)`` from ``"abc=-3"``."""
    match = re.fullmatch(r"(.*?)-(\d+)", value or "")
    if match:
        return match.group(1), int(match.group(2))
    return value, None


def hex_to_b64(hexdigest):
    return b64(binascii.unhexlify(hexdigest))


class StreamHasher:
    """Hashes a byte stream fed in order, whole and per part.

    ``whole`` names algorithms hashed over the whole stream; ``per_part`` names
    algorithms hashed part by part, with ``part_sizes`` the byte size of each part.
    """

    def __init__(self, whole=(), per_part=(), part_sizes=None):
        self.whole = {alg: new_hasher(alg) for alg in whole}
        self.per_part_algs = tuple(per_part) if part_sizes else ()
        self.part_sizes = list(part_sizes or [])
        self.part_digests = {alg: [] for alg in self.per_part_algs}
        self._part_index = 0
        self._remaining = self.part_sizes[0] if self.part_sizes else 0
        self._current = {alg: new_hasher(alg) for alg in self.per_part_algs}
        self.bytes = 0

    def update(self, chunk):
        self.bytes += len(chunk)
        for hasher in self.whole.values():
            hasher.update(chunk)
        if not self.per_part_algs:
            return
        view = memoryview(chunk)
        while len(view):
            if self._part_index >= len(self.part_sizes):
                # more bytes than the parts announce: count them into an extra part so sizes mismatch
                self.part_sizes.append(0)
                self._remaining = float("inf")
            take = min(len(view), self._remaining)
            piece = view[:take]
            for hasher in self._current.values():
                hasher.update(piece)
            self._remaining -= take
            view = view[take:]
            if self._remaining == 0:
                self._close_part()

    def _close_part(self):
        for alg, hasher in self._current.items():
            self.part_digests[alg].append(hasher.digest())
        self._part_index += 1
        self._remaining = self.part_sizes[self._part_index] if self._part_index < len(self.part_sizes) else 0
        self._current = {alg: new_hasher(alg) for alg in self.per_part_algs}

    def finish(self):
        """Whole-stream digests by algorithm (raw bytes); closes a trailing partial part."""
        if self.per_part_algs and self._remaining not in (0, float("inf")) and self._part_index < len(self.part_sizes):
            self._close_part()
        elif self.per_part_algs and self._remaining == float("inf"):
            self._close_part()
        return {alg: hasher.digest() for alg, hasher in self.whole.items()}


def ranged_chunks(fetch, size, part_size, concurrency):
    """Yield the bytes of an object of ``size`` bytes in order, read by ``fetch(start, end)``
    (inclusive range) on ``concurrency`` threads.

    At most ``concurrency`` ranges are in flight or buffered at once, so memory stays
    below concurrency x part_size whatever the object size.
    """
    ranges = [(start, min(start + part_size, size) - 1) for start in range(0, size, part_size)]
    if not ranges:
        return
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        pending = collections.deque()
        position = 0
        while position < len(ranges) and len(pending) < concurrency:
            pending.append(pool.submit(fetch, *ranges[position]))
            position += 1
        while pending:
            future = pending.popleft()
            try:
                data = future.result()
            except BaseException:
                for other in pending:
                    other.cancel()
                raise
            if position < len(ranges):
                pending.append(pool.submit(fetch, *ranges[position]))
                position += 1
            yield data


# ---------------------------------------------------------------- verifier

def _failure(check, key, message):
    return {"check": check, "key": key, "message": message}


def _client_error_code(exc):
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")), response.get("ResponseMetadata", {}).get("HTTPStatusCode")


class BackupVerifier:
    """Runs the requested checks on one backup series and builds the module result.

    ``params`` is the module's parameter dict; ``client_factory(params)`` returns a
    boto3 S3 client (the replica client gets params with its own region/endpoint);
    ``warn`` collects warnings; ``now`` is injectable for tests.
    """

    def __init__(self, params, client_factory, warn=None, now=None, kms_factory=None):
        self.params = params
        self.client_factory = client_factory
        self.kms_factory = kms_factory
        self.warn = warn or (lambda msg: None)
        self.now = now or datetime.datetime.now(UTC)
        self.failures = []
        self.checks = {}
        self.warnings = []
        self._heads = {}
        self._sidecars = {}
        self._manifest = None
        self.validate()
        self.client = None

    # -------------------------------------------------------- input
    def validate(self):
        """Value checks that need no connection; raise VerifyError naming the option."""
        p = self.params
        self.max_age = parse_duration(p.get("max_age"), "max_age")
        self.interval = parse_duration(p.get("expected_interval"), "expected_interval")
        try:
            self.regex = re.compile(p["key_regex"]) if p.get("key_regex") else None
        except re.error as exc:
            raise VerifyError("key_regex: %r is not a valid regular expression: %s" % (p["key_regex"], exc),
                              option="key_regex")
        self.subset = parse_subset(p["deep_subset"]) if p.get("deep_subset") else None
        checksum = p.get("checksum") or []
        if self.subset and "deep" not in checksum:
            raise VerifyError("deep_subset needs checksum to include 'deep' (it selects which backups the deep "
                              "check reads)", option="deep_subset")
        if p.get("kms_key_id") and p.get("require_encryption") != "aws:kms":
            raise VerifyError("kms_key_id needs require_encryption=aws:kms", option="kms_key_id")
        for option in ("min_size", "retention_days", "concurrency", "part_size"):
            if p.get(option) is not None and p[option] < (0 if option == "min_size" else 1):
                raise VerifyError("%s: %s is out of range" % (option, p[option]), option=option)
        if p.get("max_size_change_percent") is not None and p["max_size_change_percent"] < 0:
            raise VerifyError("max_size_change_percent must be >= 0", option="max_size_change_percent")
        if p.get("retention_days") and not self.interval:
            raise VerifyError("retention_days needs expected_interval (the gap check compares the series "
                              "with the expected schedule over the retention window)", option="retention_days")

    def _check(self, name, failures_before, checked, **extra):
        failed = len(self.failures) - failures_before
        self.checks[name] = dict(extra, status="failed" if failed else "passed", checked=checked, failures=failed)

    def _bucket_error(self, exc, bucket, option, action):
        code, status = _client_error_code(exc)
        if code in ("NoSuchBucket", "404") or status == 404 and action == "list":
            raise VerifyError("%s: bucket %r does not exist (or is not visible with these credentials and "
                              "endpoint)" % (option, bucket), option=option, error_code=code)
        if code in ("AccessDenied", "403", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch") \
                or status == 403:
            raise VerifyError("%s: access denied to %s bucket %r (%s); the verifier needs s3:ListBucket, "
                              "s3:GetObject, s3:GetObjectAttributes and s3:GetBucketVersioning"
                              % (option, action, bucket, code), option=option, error_code=code)
        raise VerifyError("%s: cannot %s bucket %r: %s" % (option, action, bucket, exc), option=option,
                          error_code=code)

    # -------------------------------------------------------- S3 access
    def list_objects(self, client, bucket, prefix, option):
        out = []
        try:
            paginator = client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                out.extend(page.get("Contents", []))
        except _imports.botocore.exceptions.ClientError as exc:
            self._bucket_error(exc, bucket, option, "list")
        except _imports.botocore.exceptions.BotoCoreError as exc:
            raise VerifyError("%s: cannot reach S3 to list bucket %r: %s" % (option, bucket, exc), option=option)
        return out

    def head(self, key, client=None, bucket=None):
        client = client or self.client
        bucket = bucket or self.params["bucket"]
        cache_key = (bucket, key)
        if cache_key not in self._heads:
            self._heads[cache_key] = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        return self._heads[cache_key]

    def head_many(self, keys, client=None, bucket=None):
        """head_object for many keys on the thread pool; returns {key: head or exception}."""
        client = client or self.client
        bucket = bucket or self.params["bucket"]
        out = {}

        def one(key):
            try:
                return key, self.head(key, client, bucket)
            except _imports.botocore.exceptions.ClientError as exc:
                return key, exc

        with ThreadPoolExecutor(max_workers=self.params.get("concurrency") or 8) as pool:
            for key, value in pool.map(one, keys):
                out[key] = value
        return out

    def get_text(self, key, limit=1 << 20):
        body = self.client.get_object(Bucket=self.params["bucket"], Key=key)["Body"]
        try:
            return body.read(limit).decode("utf-8", "replace")
        finally:
            body.close()

    # -------------------------------------------------------- selection
    def select(self, objects):
        """Backups of the series, oldest first, each a dict with key, size, time, time_source."""
        p = self.params
        suffix = p.get("sidecar_suffix") or ""
        manifest_key = p.get("manifest_key")
        backups = []
        need_meta = []
        for obj in objects:
            key = obj["Key"]
            if key.endswith("/") or (suffix and key.endswith(suffix)) or key == manifest_key:
                continue
            match = None
            if self.regex:
                match = self.regex.search(key)
                if not match:
                    continue
            entry = dict(key=key, size=obj.get("Size", 0), etag=(obj.get("ETag") or "").strip('"'),
                         last_modified=obj["LastModified"].astimezone(UTC), time=None, time_source=None)
            if match and "time" in self.regex.groupindex and match.group("time"):
                entry["time"] = parse_backup_time(match.group("time"), p.get("time_format"))
                if entry["time"] is not None:
                    entry["time_source"] = "key"
                else:
                    self._warn_once("time", "key_regex group 'time' of %r (%r) does not parse as a time%s; "
                                    "falling back" % (key, match.group("time"),
                                                      " with time_format %r" % p["time_format"] if p.get("time_format") else ""))
            if entry["time"] is None and p.get("metadata_time_key"):
                need_meta.append(entry)
            backups.append(entry)
        if need_meta:
            heads = self.head_many([e["key"] for e in need_meta])
            for entry in need_meta:
                head = heads[entry["key"]]
                if isinstance(head, Exception):
                    continue
                meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
                value = meta.get(p["metadata_time_key"].lower())
                parsed = parse_backup_time(value, p.get("time_format")) if value else None
                if parsed is not None:
                    entry["time"], entry["time_source"] = parsed, "metadata"
        fallback = [e["key"] for e in backups if e["time"] is None]
        for entry in backups:
            if entry["time"] is None:
                entry["time"], entry["time_source"] = entry["last_modified"], "last_modified"
        if fallback:
            self._warn_once("lastmod", "%d backup(s) got their time from S3 LastModified (a copy or re-upload changes "
                            "it), e.g. %r; give key_regex a named group 'time' or set metadata_time_key"
                            % (len(fallback), fallback[0]))
        backups.sort(key=lambda e: (e["time"], e["key"]))
        return backups

    def _warn_once(self, tag, msg):
        if tag not in {w[0] for w in self.warnings}:
            self.warnings.append((tag, msg))
            self.warn(msg)

    # -------------------------------------------------------- run
    def run(self):
        p = self.params
        bucket, prefix = p["bucket"], p.get("prefix") or ""
        self.client = self.client_factory(p)
        objects = self.list_objects(self.client, bucket, prefix, "bucket")
        backups = self.select(objects)
        self.backups = backups
        self.object_index = {o["Key"]: o for o in objects}
        scope = backups[-1:] if p.get("scope", "latest") == "latest" else list(backups)
        result = dict(changed=False, bucket=bucket, prefix=prefix, backups_count=len(backups),
                      oldest=self._describe(backups[0]) if backups else None, gaps=[], kept_count=None)
        start = len(self.failures)
        if not backups:
            self.failures.append(_failure("backups", None, "no backup in s3://%s/%s%s" % (
                bucket, prefix, " matches key_regex %r" % p["key_regex"] if p.get("key_regex") else "")))
        self._check("backups", start, len(backups))
        if backups:
            self.check_age(backups[-1])
            self.check_sizes(backups, scope)
            if self.interval:
                result["gaps"], result["kept_count"] = self.check_gaps(backups)
            self.check_bucket()
            self.check_objects(scope)
            deep = self.check_deep(backups, scope) if "deep" in (p.get("checksum") or []) else None
            if deep is not None:
                result["deep"] = deep
            if p.get("replica_bucket"):
                result["replica"] = self.check_replica(backups, scope)
        latest = self._describe(backups[-1]) if backups else None
        if latest:
            latest.update(self._object_status(backups[-1]))
        result.update(latest=latest, failures=self.failures, checks=self.checks,
                      passed=not self.failures, scope=p.get("scope", "latest"),
                      checked_keys=[o["key"] for o in scope])
        return result

    def _describe(self, entry):
        return dict(key=entry["key"], size=entry["size"], time=iso(entry["time"]), time_source=entry["time_source"],
                    age_seconds=int((self.now - entry["time"]).total_seconds()),
                    last_modified=iso(entry["last_modified"]))

    def _object_status(self, entry):
        status = entry.get("status", {})
        head = self._heads.get((self.params["bucket"], entry["key"]))
        out = dict(checksum=status.get("checksum", {}))
        if isinstance(head, dict):
            out["encryption"] = dict(algorithm=head.get("ServerSideEncryption"), kms_key_id=head.get("SSEKMSKeyId"))
            out["object_lock"] = dict(mode=head.get("ObjectLockMode"),
                                      retain_until=iso(head.get("ObjectLockRetainUntilDate")),
                                      legal_hold=head.get("ObjectLockLegalHoldStatus"))
        return out

    # -------------------------------------------------------- series checks
    def check_age(self, latest):
        if self.max_age is None:
            return
        start = len(self.failures)
        age = (self.now - latest["time"]).total_seconds()
        if age > self.max_age:
            message = "newest backup is %s old (taken %s, from %s), more than max_age %s" % (
                _human(age), iso(latest["time"]), latest["time_source"], self.params["max_age"])
            self.failures.append(_failure("max_age", latest["key"], message))
        self._check("max_age", start, 1, age_seconds=int(age), max_age_seconds=int(self.max_age))

    def check_sizes(self, backups, scope):
        p = self.params
        if p.get("min_size") is not None:
            start = len(self.failures)
            for entry in scope:
                if entry["size"] < p["min_size"]:
                    self.failures.append(_failure("min_size", entry["key"], "size %d bytes is below min_size %d"
                                                  % (entry["size"], p["min_size"])))
            self._check("min_size", start, len(scope))
        if p.get("max_size_change_percent") is not None:
            start = len(self.failures)
            index = {e["key"]: i for i, e in enumerate(backups)}
            checked = 0
            changes = []
            for entry in scope:
                i = index[entry["key"]]
                if i == 0:
                    continue
                prev = backups[i - 1]
                checked += 1
                if prev["size"] == 0:
                    change = 0.0 if entry["size"] == 0 else float("inf")
                else:
                    change = (entry["size"] - prev["size"]) * 100.0 / prev["size"]
                changes.append(change)
                if abs(change) > p["max_size_change_percent"]:
                    self.failures.append(_failure("max_size_change_percent", entry["key"],
                                                  "size %d bytes is %+.1f%% vs the previous backup %r (%d bytes); "
                                                  "the limit is %s%%" % (entry["size"], change, prev["key"],
                                                                         prev["size"], p["max_size_change_percent"])))
            self._check("max_size_change_percent", start, checked,
                        last_change_percent=round(changes[-1], 2) if changes and changes[-1] != float("inf") else None)

    def check_gaps(self, backups):
        p = self.params
        start = len(self.failures)
        window_start = None
        if p.get("retention_days"):
            window_start = self.now - datetime.timedelta(days=p["retention_days"])
        gaps = compute_gaps([b["time"] for b in backups], self.interval, self.now, window_start)
        kept = [b for b in backups if window_start is None or b["time"] >= window_start]
        for gap in gaps:
            self.failures.append(_failure("expected_interval", None, "no backup within %s of the expected slot %s"
                                          % (_human(self.interval / 2), iso(gap))))
        self._check("expected_interval", start, len(backups), gaps=len(gaps), kept_count=len(kept))
        return [iso(g) for g in gaps], len(kept)

    def check_bucket(self):
        p = self.params
        if not p.get("require_versioning"):
            return
        start = len(self.failures)
        try:
            status = self.client.get_bucket_versioning(Bucket=p["bucket"]).get("Status")
        except _imports.botocore.exceptions.ClientError as exc:
            self._bucket_error(exc, p["bucket"], "require_versioning", "read the versioning of")
        if status != "Enabled":
            self.failures.append(_failure("require_versioning", None, "versioning of bucket %r is %s, not Enabled"
                                          % (p["bucket"], status or "never enabled")))
        self._check("require_versioning", start, 1, status=status or "Disabled")

    # -------------------------------------------------------- per-object checks
    def _needs_head(self):
        p = self.params
        return bool(p.get("checksum") or p.get("require_encryption") or p.get("require_object_lock"))

    def check_objects(self, scope):
        p = self.params
        checksum = p.get("checksum") or []
        if not self._needs_head():
            return
        heads = self.head_many([e["key"] for e in scope])
        for entry in scope:
            head = heads[entry["key"]]
            if isinstance(head, Exception):
                code, _status = _client_error_code(head)
                if code in ("AccessDenied", "403"):
                    raise VerifyError("bucket: access denied reading object %r (s3:GetObject needed): %s"
                                      % (entry["key"], code), option="bucket", key=entry["key"])
                self.failures.append(_failure("head", entry["key"], "cannot read the object's metadata: %s" % head))
                entry["head"] = None
                continue
            entry["head"] = head
            entry.setdefault("status", {}).setdefault("checksum", {})
        live = [e for e in scope if e.get("head")]
        if p.get("require_encryption"):
            self.check_encryption(live)
        if p.get("require_object_lock"):
            self.check_object_lock(live)
        if "s3" in checksum:
            self.check_s3_checksums(live)
        if "sidecar" in checksum:
            self.check_sidecars(live)

    def _resolve_kms(self, key_id):
        if not key_id.startswith("alias/") and ":alias/" not in key_id:
            return key_id
        if self.kms_factory is None:
            return key_id
        try:
            return self.kms_factory(self.params).describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]
        except _imports.botocore.exceptions.ClientError as exc:
            raise VerifyError("kms_key_id: cannot resolve %r with kms:DescribeKey: %s" % (key_id, exc),
                              option="kms_key_id")

    def check_encryption(self, entries):
        p = self.params
        start = len(self.failures)
        wanted = p["require_encryption"]
        expected = self._resolve_kms(p["kms_key_id"]) if p.get("kms_key_id") else None
        for entry in entries:
            head = entry["head"]
            actual = head.get("ServerSideEncryption")
            ok = actual == wanted or (wanted == "aws:kms" and actual in KMS_ENCRYPTIONS)
            if not ok:
                self.failures.append(_failure("require_encryption", entry["key"], "server-side encryption is %s, "
                                              "require_encryption is %s" % (actual or "none", wanted)))
                continue
            if expected and not _same_kms_key(head.get("SSEKMSKeyId"), expected):
                self.failures.append(_failure("kms_key_id", entry["key"], "encrypted with KMS key %s, expected %s"
                                              % (head.get("SSEKMSKeyId"), p["kms_key_id"])))
        self._check("require_encryption", start, len(entries))

    def check_object_lock(self, entries):
        spec = self.params["require_object_lock"] or {}
        start = len(self.failures)
        min_days = spec.get("min_retention_days") or 0
        for entry in entries:
            head = entry["head"]
            mode = head.get("ObjectLockMode")
            until = head.get("ObjectLockRetainUntilDate")
            if not mode or not until:
                self.failures.append(_failure("require_object_lock", entry["key"], "object has no object lock "
                                              "retention (no mode / retain-until date)"))
                continue
            if spec.get("mode") and mode != spec["mode"]:
                self.failures.append(_failure("require_object_lock", entry["key"], "object lock mode is %s, "
                                              "expected %s" % (mode, spec["mode"])))
            locked_days = (until - head["LastModified"]).total_seconds() / 86400.0
            if locked_days + 1.0 / 1440 < min_days:
                self.failures.append(_failure("require_object_lock", entry["key"], "object is locked until %s, "
                                              "%.1f days after it was written; min_retention_days is %s"
                                              % (iso(until), locked_days, min_days)))
        self._check("require_object_lock", start, len(entries))

    def _part_sizes(self, key, head, client=None, bucket=None):
        """Byte size of each part of a multipart object, or None for a single-part one."""
        client = client or self.client
        bucket = bucket or self.params["bucket"]
        etag = (head.get("ETag") or "").strip('"')
        _value, count = strip_part_count(etag)
        if count is None:
            for alg in CHECKSUM_ALGORITHMS:
                _v, count = strip_part_count(head.get("Checksum" + alg))
                if count:
                    break
        if not count:
            return None
        try:
            attrs = client.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=["ObjectParts"],
                                                 MaxParts=10000)
            parts = (attrs.get("ObjectParts") or {}).get("Parts") or []
            if len(parts) == count:
                return [part["Size"] for part in sorted(parts, key=lambda x: x["PartNumber"])]
        except _imports.botocore.exceptions.ClientError:
            pass
        sizes = []
        for number in range(1, count + 1):
            sizes.append(client.head_object(Bucket=bucket, Key=key, PartNumber=number)["ContentLength"])
        return sizes

    def _s3_checksum(self, head):
        """(algorithm, value without suffix, composite?) of the object's S3 additional checksum, or None."""
        for alg in CHECKSUM_ALGORITHMS:
            value = head.get("Checksum" + alg)
            if value:
                bare, count = strip_part_count(value)
                kind = head.get("ChecksumType")
                if kind:
                    composite = kind == "COMPOSITE"
                else:
                    # No ChecksumType in the answer: a "-N" suffix or a multipart ETag means composite
                    # (the classic multipart checksum).
                    composite = count is not None or "-" in (head.get("ETag") or "")
                return alg, bare, composite
        return None

    def check_s3_checksums(self, entries):
        start = len(self.failures)
        for entry in entries:
            found = self._s3_checksum(entry["head"])
            if not found:
                self.failures.append(_failure("checksum_s3", entry["key"], "object has no S3 additional checksum; "
                                              "upload it with ChecksumAlgorithm SHA256 or CRC32C"))
                entry["status"]["checksum"]["s3"] = "missing"
                continue
            alg, value, composite = found
            entry["status"]["checksum"]["s3"] = "present"
            entry["status"]["checksum"]["s3_algorithm"] = alg + ("-composite" if composite else "")
            if composite:
                # Part checksums, when S3 lists them, must combine to the object checksum.
                try:
                    attrs = self.client.get_object_attributes(
                        Bucket=self.params["bucket"], Key=entry["key"], ObjectAttributes=["ObjectParts", "Checksum"],
                        MaxParts=10000)
                except _imports.botocore.exceptions.ClientError:
                    attrs = {}
                parts = sorted((attrs.get("ObjectParts") or {}).get("Parts") or [], key=lambda x: x["PartNumber"])
                digests = [part.get("Checksum" + alg) for part in parts]
                if parts and all(digests):
                    combined = strip_part_count(composite_checksum(alg, [base64.b64decode(d) for d in digests]))[0]
                    if combined != value:
                        self.failures.append(_failure("checksum_s3", entry["key"], "the %d part checksums combine to "
                                                      "%s, the object's composite %s is %s" % (len(parts), combined, alg, value)))
                        continue
                    entry["status"]["checksum"]["s3"] = "parts_consistent"
        self._check("checksum_s3", start, len(entries))

    def _load_references(self):
        """{key: {"sha256": hex or None, "size": int or None, "source": ...}} from the manifest, once."""
        p = self.params
        if self._manifest is not None or not p.get("manifest_key"):
            return self._manifest
        try:
            data = json.loads(self.get_text(p["manifest_key"], limit=64 << 20))
        except _imports.botocore.exceptions.ClientError as exc:
            raise VerifyError("manifest_key: cannot read s3://%s/%s: %s" % (p["bucket"], p["manifest_key"],
                                                                            _client_error_code(exc)[0]), option="manifest_key")
        except ValueError as exc:
            raise VerifyError("manifest_key: s3://%s/%s is not JSON: %s" % (p["bucket"], p["manifest_key"], exc),
                              option="manifest_key")
        items = data
        if isinstance(data, dict):
            for name in ("files", "backups", "objects", "entries"):
                if isinstance(data.get(name), (list, dict)):
                    items = data[name]
                    break
        refs = {}
        if isinstance(items, dict):
            items = [dict(value, key=key) if isinstance(value, dict) else {"key": key, "sha256": value}
                     for key, value in items.items()]
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and item.get("key"):
                refs[item["key"]] = dict(sha256=(item.get("sha256") or "").lower() or None, size=item.get("size"),
                                         source="manifest")
        self._manifest = refs
        return refs

    def reference(self, key):
        """The sidecar / manifest reference of a backup, or None when there is none."""
        p = self.params
        manifest = self._load_references()
        if manifest is not None:
            return manifest.get(key)
        if key in self._sidecars:
            return self._sidecars[key]
        sidecar = key + (p.get("sidecar_suffix") or ".sha256")
        ref = None
        if sidecar in self.object_index:
            text = self.get_text(sidecar, limit=4096).strip()
            match = re.match(r"([0-9a-fA-F]{64})\b", text)
            ref = dict(sha256=match.group(1).lower() if match else None, size=None, source=sidecar,
                       error=None if match else "no sha256 hex digest at the start of %r" % sidecar)
        self._sidecars[key] = ref
        return ref

    def check_sidecars(self, entries):
        start = len(self.failures)
        for entry in entries:
            ref = self.reference(entry["key"])
            status = entry["status"]["checksum"]
            if ref is None or not ref.get("sha256"):
                status["sidecar"] = "missing"
                what = ref["error"] if ref and ref.get("error") else (
                    "not listed in manifest %r" % self.params["manifest_key"] if self.params.get("manifest_key")
                    else "no sidecar %r" % (entry["key"] + (self.params.get("sidecar_suffix") or "")))
                self.failures.append(_failure("checksum_sidecar", entry["key"], what))
                continue
            if ref.get("size") is not None and int(ref["size"]) != entry["size"]:
                status["sidecar"] = "mismatch"
                self.failures.append(_failure("checksum_sidecar", entry["key"], "size is %d bytes, %s says %s"
                                              % (entry["size"], ref["source"], ref["size"])))
                continue
            found = self._s3_checksum(entry["head"])
            if found and found[0] == "SHA256" and not found[2]:
                if hex_to_b64(ref["sha256"]) != found[1]:
                    status["sidecar"] = "mismatch"
                    self.failures.append(_failure("checksum_sidecar", entry["key"], "sha256 %s from %s differs from "
                                                  "the object's S3 SHA256 checksum %s: the stored bytes are not "
                                                  "the ones the sidecar describes" % (ref["sha256"], ref["source"], found[1])))
                    continue
                status["sidecar"] = "matches_s3_checksum"
            else:
                status["sidecar"] = "present"
        self._check("checksum_sidecar", start, len(entries))

    # -------------------------------------------------------- deep
    def check_deep(self, backups, scope):
        p = self.params
        start = len(self.failures)
        if self.subset:
            n, t = self.subset
            targets = [e for e in backups if in_subset(e["key"], n, t)]
        else:
            targets = scope
        heads = self.head_many([e["key"] for e in targets])
        total_bytes, total_seconds, per_object = 0, 0.0, []
        for entry in targets:
            head = heads[entry["key"]]
            if isinstance(head, Exception):
                self.failures.append(_failure("checksum_deep", entry["key"], "cannot read the object's metadata: %s" % head))
                continue
            entry["head"] = head
            outcome = self.deep_verify(entry, head)
            total_bytes += outcome["bytes"]
            total_seconds += outcome["seconds"]
            per_object.append(outcome)
            entry.setdefault("status", {}).setdefault("checksum", {})["deep"] = "ok" if outcome["ok"] else "failed"
        self._check("checksum_deep", start, len(targets), subset=p.get("deep_subset"))
        return dict(objects=len(per_object), bytes=total_bytes, seconds=round(total_seconds, 3),
                    mib_per_second=round(total_bytes / 1048576.0 / total_seconds, 1) if total_seconds else None,
                    concurrency=p.get("concurrency") or 8, part_size=p.get("part_size") or 8388608,
                    subset=p.get("deep_subset"), keys=[o["key"] for o in per_object], results=per_object)

    def deep_verify(self, entry, head, client=None, bucket=None):
        """Stream one object with parallel ranged GETs and compare it with every reference available."""
        p = self.params
        client = client or self.client
        bucket = bucket or p["bucket"]
        key = entry["key"]
        size = head["ContentLength"]
        found = self._s3_checksum(head)
        ref = self.reference(key) if bucket == p["bucket"] else None
        etag = (head.get("ETag") or "").strip('"')
        etag_md5 = head.get("ServerSideEncryption") not in KMS_ENCRYPTIONS and not head.get("SSECustomerAlgorithm") \
            and re.fullmatch(r"[0-9a-f]{32}(-\d+)?", etag)
        whole, per_part = {"SHA256"}, set()
        part_sizes = None
        if found:
            if found[2]:
                per_part.add(found[0])
            else:
                whole.add(found[0])
        if etag_md5:
            if "-" in etag:
                per_part.add("MD5")
            else:
                whole.add("MD5")
        if per_part:
            part_sizes = self._part_sizes(key, head, client, bucket)
        hasher = StreamHasher(whole=sorted(whole), per_part=sorted(per_part), part_sizes=part_sizes)
        version = head.get("VersionId")

        def fetch(first, last):
            kwargs = dict(Bucket=bucket, Key=key, Range="bytes=%d-%d" % (first, last))
            if version and version != "null":
                kwargs["VersionId"] = version
            elif etag:
                kwargs["IfMatch"] = head["ETag"]
            body = client.get_object(**kwargs)["Body"]
            try:
                return body.read()
            finally:
                body.close()

        started = time.monotonic()
        problems = []
        try:
            for chunk in ranged_chunks(fetch, size, p.get("part_size") or 8388608, p.get("concurrency") or 8):
                hasher.update(chunk)
        except _imports.botocore.exceptions.ClientError as exc:
            problems.append("reading the bytes failed: %s" % _client_error_code(exc)[0])
        digests = hasher.finish()
        seconds = time.monotonic() - started
        compared = []
        if not problems:
            if hasher.bytes != size:
                problems.append("read %d bytes, the object is %d" % (hasher.bytes, size))
            sha_hex = digests["SHA256"].hex()
            if ref and ref.get("sha256"):
                compared.append(ref["source"])
                if ref["sha256"] != sha_hex:
                    problems.append("sha256 of the bytes is %s, %s says %s" % (sha_hex, ref["source"], ref["sha256"]))
            if found:
                alg, value, composite = found
                compared.append("s3 %s%s" % (alg, " composite" if composite else ""))
                if composite:
                    got = strip_part_count(composite_checksum(alg, hasher.part_digests.get(alg, [])))[0]
                else:
                    got = b64(digests[alg])
                if got != value:
                    problems.append("%s of the bytes is %s, S3 recorded %s%s" % (
                        alg, got, value, self._bad_parts(key, alg, hasher, client, bucket) if composite else ""))
            if etag_md5:
                compared.append("etag md5")
                got = multipart_etag(hasher.part_digests.get("MD5", [])) if "-" in etag else digests["MD5"].hex()
                if got != etag:
                    problems.append("md5 of the bytes gives ETag %s, S3 has %s" % (got, etag))
            if not compared:
                problems.append("no reference to compare the bytes with (no sidecar/manifest entry, no S3 "
                                "checksum, ETag is not an MD5); read %d bytes" % hasher.bytes)
        for problem in problems:
            self.failures.append(_failure("checksum_deep", key, problem))
        return dict(key=key, bytes=hasher.bytes, seconds=round(seconds, 3), ok=not problems,
                    sha256=digests["SHA256"].hex() if not problems or hasher.bytes == size else None,
                    compared_with=compared,
                    mib_per_second=round(hasher.bytes / 1048576.0 / seconds, 1) if seconds > 0 else None)

    def _bad_parts(self, key, alg, hasher, client, bucket):
        """Text naming the parts whose checksum differs from what S3 lists, when S3 lists part checksums."""
        try:
            attrs = client.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=["ObjectParts"], MaxParts=10000)
        except _imports.botocore.exceptions.ClientError:
            return ""
        parts = sorted((attrs.get("ObjectParts") or {}).get("Parts") or [], key=lambda x: x["PartNumber"])
        bad = [part["PartNumber"] for part, digest in zip(parts, hasher.part_digests.get(alg, []))
               if part.get("Checksum" + alg) and part["Checksum" + alg] != b64(digest)]
        return " (parts %s differ)" % bad if bad else ""

    # -------------------------------------------------------- replica
    def check_replica(self, backups, scope):
        p = self.params
        start = len(self.failures)
        rparams = dict(p)
        if p.get("replica_region"):
            rparams["region"] = p["replica_region"]
        if p.get("replica_endpoint_url"):
            rparams["endpoint_url"] = p["replica_endpoint_url"]
        rclient = self.client_factory(rparams)
        rbucket = p["replica_bucket"]
        prefix = p.get("prefix") or ""
        rprefix = p["replica_prefix"] if p.get("replica_prefix") is not None else prefix
        robjects = {o["Key"]: o for o in self.list_objects(rclient, rbucket, rprefix, "replica_bucket")}
        missing, mismatched = [], []
        for entry in backups:
            rkey = rprefix + entry["key"][len(prefix):]
            robj = robjects.get(rkey)
            if robj is None:
                missing.append(entry["key"])
                self.failures.append(_failure("replica", entry["key"], "missing from replica s3://%s/%s"
                                              % (rbucket, rkey)))
            elif robj.get("Size") != entry["size"]:
                mismatched.append(entry["key"])
                self.failures.append(_failure("replica", entry["key"], "replica s3://%s/%s is %s bytes, the "
                                              "source %d" % (rbucket, rkey, robj.get("Size"), entry["size"])))
        compared = 0
        bad = set(missing) | set(mismatched)
        for entry in scope:
            if entry["key"] in bad:
                continue
            rkey = rprefix + entry["key"][len(prefix):]
            try:
                src = self.head(entry["key"])
                dst = self.head(rkey, rclient, rbucket)
            except _imports.botocore.exceptions.ClientError as exc:
                self.failures.append(_failure("replica", entry["key"], "cannot read replica metadata: %s"
                                              % _client_error_code(exc)[0]))
                continue
            verdict = _compare_checksums(src, dst)
            if verdict is None:
                continue
            compared += 1
            if verdict:
                mismatched.append(entry["key"])
                self.failures.append(_failure("replica", entry["key"], "replica s3://%s/%s differs: %s"
                                              % (rbucket, rkey, verdict)))
        self._check("replica", start, len(backups), missing=len(missing))
        return dict(bucket=rbucket, prefix=rprefix, count=len(robjects), missing=missing, mismatched=mismatched,
                    checksums_compared=compared)


def _compare_checksums(src, dst):
    """'' when equal, a text when different, None when nothing comparable."""
    for alg in CHECKSUM_ALGORITHMS:
        a, b = src.get("Checksum" + alg), dst.get("Checksum" + alg)
        if a and b:
            return "" if strip_part_count(a)[0] == strip_part_count(b)[0] else "%s %s vs %s" % (alg, a, b)
    if src.get("ServerSideEncryption") not in KMS_ENCRYPTIONS and dst.get("ServerSideEncryption") not in KMS_ENCRYPTIONS:
        a, b = (src.get("ETag") or "").strip('"'), (dst.get("ETag") or "").strip('"')
        if a and b and a.count("-") == b.count("-") == 0:
            return "" if a == b else "ETag %s vs %s" % (a, b)
    return None


def _same_kms_key(actual, expected):
    if not actual:
        return False
    if actual == expected:
        return True
    return _kms_key_part(actual) == _kms_key_part(expected)


def _kms_key_part(value):
    """The key ID of a key ARN, or the value itself."""
    return value.rsplit("key/", 1)[-1] if "key/" in value else value


def _human(seconds):
    seconds = float(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return "%.1f%s" % (seconds / size, unit)
    return "%ds" % seconds
