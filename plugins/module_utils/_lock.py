# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: an exclusive lock file for incidents (one rollback or failover per
environment at a time).

The lock is a small JSON file created with O_CREAT|O_EXCL, so two runs racing
for it cannot both win. It holds who took it (holder = incident id, actor,
host, pid), since when and for how long (ttl). A lock is stale when its TTL has
passed, or when it was taken on this very host by a process that no longer
exists; a stale lock is recovered (removed and taken again) with a warning.
Only the holder releases it.

Pure logic with the clock, pid and host injectable, for unit tests.
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import socket
import time

LOCK_VERSION = 1
RECOVER_GUARD_TTL = 30


class LockError(Exception):
    """The lock could not be taken or released; ``facts`` says why and by whom."""

    def __init__(self, msg, **facts):
        super().__init__(msg)
        self.facts = facts


def iso(epoch):
    """ISO 8601 UTC with microseconds for an epoch time."""
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc).isoformat()


def pid_alive(pid):
    """True when a process with this pid exists on this host."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        # EPERM: it exists but belongs to someone else.
        return exc.errno == errno.EPERM
    return True


def _ppid_and_cmd(pid):
    with open("/proc/%d/stat" % pid, "r") as handle:
        stat = handle.read()
    # Field 4 follows the parenthesised command name, which may hold spaces.
    ppid = int(stat[stat.rindex(")") + 2:].split()[1])
    with open("/proc/%d/cmdline" % pid, "rb") as handle:
        argv = [a.decode("utf-8", "replace") for a in handle.read().split(b"\0") if a]
    return ppid, argv


def controller_pid(start=None):
    """The pid of the ansible-playbook (or ansible) process this module runs under, or None.

    A module process lives only for one task, and Ansible's worker processes
    only for one task too, so the lock names the top-most ancestor whose
    command line is ansible-playbook: that process lives as long as the run.
    When the module runs on another host than the controller (or /proc is
    missing), there is no such ancestor and only the TTL makes a lock stale.
    """
    pid = os.getppid() if start is None else start
    found = None
    for _depth in range(64):
        if pid <= 1:
            break
        try:
            ppid, argv = _ppid_and_cmd(pid)
        except (IOError, OSError, ValueError, IndexError):
            break
        names = [os.path.basename(a) for a in argv[:3]]
        if any(n.startswith("ansible-playbook") or n == "ansible" for n in names):
            found = pid
        pid = ppid
    return found


def read(path):
    """The lock record at ``path``, None when there is no lock.

    An unreadable or corrupt lock file is returned as ``{"corrupt": True}``
    so the caller can treat it as stale (it cannot name a live holder).
    """
    try:
        with open(path, "r") as handle:
            text = handle.read()
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    try:
        data = json.loads(text)
    except ValueError:
        return {"corrupt": True}
    if not isinstance(data, dict):
        return {"corrupt": True}
    return data


def stale_reason(record, now, host, alive=pid_alive):
    """Why ``record`` is stale, or None when it is held by a live holder."""
    if record.get("corrupt"):
        return "the lock file is not a lock record written by this module"
    try:
        expires = float(record.get("since_epoch", 0)) + float(record.get("ttl", 0))
    except (TypeError, ValueError):
        return "the lock record has no valid since_epoch/ttl"
    if record.get("ttl") and now >= expires:
        return "its TTL of %ss expired at %s" % (record.get("ttl"), iso(expires))
    if record.get("host") == host and record.get("pid") and not alive(record.get("pid")):
        return "its holder process %s on %s is gone" % (record.get("pid"), host)
    return None


def describe(record):
    """'<holder> (actor <actor>, pid <pid> on <host>) since <since>'."""
    return "%s (actor %s, pid %s on %s) since %s" % (
        record.get("holder"), record.get("actor"), record.get("pid"), record.get("host"), record.get("since"))


def _create(path, record):
    """Create ``path`` holding ``record`` atomically: written to a private file, then hard-linked.

    link() fails with EEXIST when the lock exists, so a reader never sees a
    half-written lock and two writers never both win.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    tmp = os.path.join(directory, ".%s.%d.%d.tmp" % (os.path.basename(path), os.getpid(), id(record)))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
    finally:
        os.unlink(tmp)


def _remove_stale(path, stale, now):
    """Remove the stale lock ``stale`` unless it changed meanwhile; serialised by a short-lived guard file."""
    guard = path + ".recover"
    try:
        fd = os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise
        try:
            if now - os.stat(guard).st_mtime > RECOVER_GUARD_TTL:
                os.unlink(guard)  # left behind by a run that died while recovering
        except OSError:
            pass
        return False
    os.close(fd)
    try:
        current = read(path)
        if current is not None and current == stale:
            os.unlink(path)
        return True
    finally:
        os.unlink(guard)


def acquire(path, holder, actor, ttl, check_mode=False, now=None, pid=None, host=None, alive=pid_alive,
            extra=None):
    """Take the lock at ``path`` for ``holder``.

    Returns ``dict(changed, lock, warnings, recovered)``. Taking a lock already
    held by the same holder is ``changed=False``. Raises LockError naming the
    holder and since when if someone else holds a live lock.
    """
    now = time.time() if now is None else now
    host = socket.gethostname() if host is None else host
    warnings = []
    record = {
        "version": LOCK_VERSION,
        "holder": holder,
        "actor": actor,
        "host": host,
        "pid": pid,
        "since": iso(now),
        "since_epoch": now,
        "ttl": ttl,
        "expires": iso(now + ttl) if ttl else None,
    }
    record.update(extra or {})
    recovered = None
    for _attempt in range(50):
        current = read(path)
        if current is not None:
            if current.get("holder") == holder and not current.get("corrupt"):
                return dict(changed=False, lock=current, warnings=warnings, recovered=recovered)
            reason = stale_reason(current, now, host, alive)
            if reason is None:
                raise LockError(
                    "Lock %s is held by %s; refusing to start a second run. Wait for it to finish, or remove the "
                    "lock file if you are sure that run is gone." % (path, describe(current)),
                    holder=current.get("holder"), actor=current.get("actor"), since=current.get("since"),
                    lock=current)
            if check_mode:
                warnings.append("Would recover a stale lock %s held by %s: %s." % (path, describe(current), reason))
                return dict(changed=True, lock=record, warnings=warnings, recovered=current)
            if not _remove_stale(path, current, time.time()):
                time.sleep(0.1)  # another run is recovering it: look again
                continue
            if recovered is None:
                warnings.append("Recovered a stale lock %s held by %s: %s." % (path, describe(current), reason))
                recovered = current
            continue
        if check_mode:
            return dict(changed=True, lock=record, warnings=warnings, recovered=recovered)
        try:
            _create(path, record)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                continue  # someone won the race since we looked: look again
            raise
        return dict(changed=True, lock=record, warnings=warnings, recovered=recovered)
    current = read(path) or {}
    raise LockError("Lock %s kept changing hands while taking it; now held by %s." % (path, describe(current)),
                    holder=current.get("holder"), since=current.get("since"), lock=current)


def release(path, holder, check_mode=False, force=False):
    """Release the lock at ``path`` held by ``holder``.

    No lock is ``changed=False``. A lock held by someone else is refused
    (LockError) unless ``force``.
    """
    current = read(path)
    if current is None:
        return dict(changed=False, lock=None, warnings=[])
    warnings = []
    if current.get("holder") != holder:
        if not force:
            raise LockError("Lock %s is held by %s, not by %s; only its holder may release it (force=true overrides)."
                            % (path, describe(current), holder),
                            holder=current.get("holder"), actor=current.get("actor"), since=current.get("since"),
                            lock=current)
        warnings.append("Forced release of lock %s held by %s." % (path, describe(current)))
    if not check_mode:
        try:
            os.unlink(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
    return dict(changed=True, lock=current, warnings=warnings)
