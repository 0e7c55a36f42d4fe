# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""_lock: exclusive creation, refusal naming the holder, stale recovery, release by holder only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from ansible_collections.failsafe.recovery.plugins.module_utils import _lock

NOW = 1_800_000_000.0


def _alive(_pid):
    return True


def _dead(_pid):
    return False


def test_acquire_creates_0600_file_with_holder_facts(tmp_path):
    path = str(tmp_path / "prod.lock")
    result = _lock.acquire(path, "inc-1", "alice", 600, now=NOW, pid=4242, host="bastion")
    assert result["changed"] is True and result["warnings"] == []
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path) as handle:
        data = json.load(handle)
    assert data["holder"] == "inc-1" and data["actor"] == "alice" and data["pid"] == 4242
    assert data["host"] == "bastion" and data["ttl"] == 600 and data["since_epoch"] == NOW
    assert data["since"].startswith("2027-01-15T08:00:00") and data["expires"].startswith("2027-01-15T08:10:00")


def test_same_holder_again_is_unchanged(tmp_path):
    path = str(tmp_path / "prod.lock")
    _lock.acquire(path, "inc-1", "alice", 600, now=NOW, pid=1, host="h")
    again = _lock.acquire(path, "inc-1", "alice", 600, now=NOW + 5, pid=1, host="h", alive=_alive)
    assert again["changed"] is False and again["lock"]["since_epoch"] == NOW


def test_second_holder_refused_naming_holder_and_since(tmp_path):
    path = str(tmp_path / "prod.lock")
    _lock.acquire(path, "inc-1", "alice", 600, now=NOW, pid=4242, host="bastion")
    with pytest.raises(_lock.LockError) as info:
        _lock.acquire(path, "inc-2", "bob", 600, now=NOW + 60, pid=5, host="bastion", alive=_alive)
    msg = str(info.value)
    assert "inc-1" in msg and "alice" in msg and "2027-01-15T08:00:00" in msg
    assert info.value.facts["holder"] == "inc-1" and info.value.facts["actor"] == "alice"
    with open(path) as handle:
        assert json.load(handle)["holder"] == "inc-1"


def test_ttl_expired_lock_recovered_with_warning(tmp_path):
    path = str(tmp_path / "prod.lock")
    _lock.acquire(path, "inc-1", "alice", 600, now=NOW, pid=4242, host="other")
    result = _lock.acquire(path, "inc-2", "bob", 600, now=NOW + 601, pid=7, host="bastion", alive=_alive)
    assert result["changed"] is True and result["recovered"]["holder"] == "inc-1"
    assert len(result["warnings"]) == 1 and "TTL of 600s expired" in result["warnings"][0]
    with open(path) as handle:
        assert json.load(handle)["holder"] == "inc-2"


def test_dead_holder_on_same_host_recovered(tmp_path):
    path = str(tmp_path / "prod.lock")
    _lock.acquire(path, "inc-1", "alice", 0, now=NOW, pid=4242, host="bastion")
    result = _lock.acquire(path, "inc-2", "bob", 0, now=NOW + 1, pid=7, host="bastion", alive=_dead)
    assert "holder process 4242 on bastion is gone" in result["warnings"][0]


def test_dead_pid_on_other_host_is_not_stale(tmp_path):
    path = str(tmp_path / "prod.lock")
    _lock.acquire(path, "inc-1", "alice", 600, now=NOW, pid=4242, host="elsewhere")
    with pytest.raises(_lock.LockError):
        _lock.acquire(path, "inc-2", "bob", 600, now=NOW + 1, pid=7, host="bastion", alive=_dead)


def test_corrupt_lock_is_stale(tmp_path):
    path = tmp_path / "prod.lock"
    path.write_text("not json")
    result = _lock.acquire(str(path), "inc-2", "bob", 600, now=NOW, pid=7, host="h")
    assert result["changed"] and "not a lock record" in result["warnings"][0]


def test_check_mode_writes_nothing(tmp_path):
    path = str(tmp_path / "prod.lock")
    result = _lock.acquire(path, "inc-1", "alice", 600, check_mode=True, now=NOW, pid=1, host="h")
    assert result["changed"] is True and not os.path.exists(path)
    _lock.acquire(path, "inc-1", "alice", 600, now=NOW, pid=1, host="h")
    released = _lock.release(path, "inc-1", check_mode=True)
    assert released["changed"] is True and os.path.exists(path)


def test_release_only_by_holder(tmp_path):
    path = str(tmp_path / "prod.lock")
    _lock.acquire(path, "inc-1", "alice", 600, now=NOW, pid=1, host="h")
    with pytest.raises(_lock.LockError) as info:
        _lock.release(path, "inc-2")
    assert "only its holder" in str(info.value) and os.path.exists(path)
    assert _lock.release(path, "inc-1")["changed"] is True and not os.path.exists(path)
    assert _lock.release(path, "inc-1")["changed"] is False


def test_forced_release_warns(tmp_path):
    path = str(tmp_path / "prod.lock")
    _lock.acquire(path, "inc-1", "alice", 600, now=NOW, pid=1, host="h")
    result = _lock.release(path, "inc-2", force=True)
    assert result["changed"] and "Forced release" in result["warnings"][0] and not os.path.exists(path)


def test_race_has_exactly_one_winner(tmp_path):
    path = str(tmp_path / "prod.lock")
    barrier = threading.Barrier(8)
    winners, losers = [], []

    def grab(i):
        barrier.wait()
        try:
            _lock.acquire(path, "inc-%d" % i, "a", 600, pid=os.getpid(), host="h", alive=_alive)
            winners.append(i)
        except _lock.LockError:
            losers.append(i)

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(winners) == 1 and len(losers) == 7


def test_pid_alive_and_controller_pid():
    assert _lock.pid_alive(os.getpid()) is True
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert _lock.pid_alive(proc.pid) is False
    assert _lock.pid_alive("nope") is False
    # pytest is not ansible-playbook: no such ancestor here.
    assert _lock.controller_pid() is None


def test_race_on_stale_lock_has_exactly_one_winner(tmp_path):
    path = str(tmp_path / "prod.lock")
    _lock.acquire(path, "old", "zed", 1, now=NOW, pid=1, host="h")
    barrier = threading.Barrier(8)
    winners, losers = [], []

    def grab(i):
        barrier.wait()
        try:
            _lock.acquire(path, "inc-%d" % i, "a", 600, now=NOW + 10, pid=os.getpid(), host="h", alive=_alive)
            winners.append(i)
        except _lock.LockError:
            losers.append(i)

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(winners) == 1 and len(losers) == 7
    assert sorted(os.listdir(str(tmp_path))) == ["prod.lock"]
