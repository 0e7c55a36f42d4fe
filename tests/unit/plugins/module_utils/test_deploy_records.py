"""Unit tests of the deployment record index (module_utils/_deploy_records.py)."""

import pytest

from ansible_collections.failsafe.recovery.plugins.module_utils import _deploy_records as records


def entry(n, release=None):
    return {"deployment_id": "2026112%dT000000Z_r%d" % (n, n), "time": "2026-11-2%dT00:00:00Z" % n,
            "release": release or "r%d" % n, "previous_release": "r%d" % (n - 1)}


def test_deployment_id_is_sortable_and_safe():
    assert records.deployment_id("20261122T215339Z", "v1.2 / hot fix") == "20261122T215339Z_v1.2-hot-fix"
    assert records.deployment_id("2026-11-22T21:53:39Z", "") == "2026-11-22T215339Z_unnamed"
    with pytest.raises(ValueError):
        records.deployment_id("", "v1")


def test_update_index_appends_sorted_and_prunes_oldest():
    index = []
    for n in (3, 1, 2):
        index = records.update_index(index, entry(n), keep=30)["index"]
    assert [e["release"] for e in index] == ["r1", "r2", "r3"]
    out = records.update_index(index, entry(4), keep=2)
    assert [e["release"] for e in out["index"]] == ["r3", "r4"]
    assert out["pruned"] == [entry(1)["deployment_id"], entry(2)["deployment_id"]]
    assert out["replaced"] is False


def test_update_index_same_id_replaces():
    index = records.update_index([], entry(1), keep=5)["index"]
    again = records.update_index(index, dict(entry(1), release="r1b"), keep=5)
    assert again["replaced"] is True
    assert [e["release"] for e in again["index"]] == ["r1b"]


def test_update_index_refuses_bad_input():
    with pytest.raises(ValueError, match="deployment_id"):
        records.update_index([], {"release": "x"})
    with pytest.raises(ValueError, match="keep"):
        records.update_index([], entry(1), keep=0)
    with pytest.raises(ValueError, match="JSON list"):
        records.update_index({"a": 1}, entry(1))
    with pytest.raises(ValueError, match="entry 0"):
        records.update_index([{"x": 1}], entry(1))


def test_select_record_newest_offset_and_by_id():
    index = [entry(1), entry(2), entry(3)]
    assert records.select_record(index)["release"] == "r3"
    assert records.select_record(index, offset=1)["release"] == "r2"
    assert records.select_record(index, entry(1)["deployment_id"])["release"] == "r1"
    with pytest.raises(ValueError, match="not recorded"):
        records.select_record(index, "nope")
    with pytest.raises(ValueError, match="out of range"):
        records.select_record(index, offset=3)
    with pytest.raises(ValueError, match="pre_deploy"):
        records.select_record([])


def test_previous_release():
    assert records.previous_release([]) == ""
    index = [entry(1), entry(2)]
    assert records.previous_release(index, "r3") == "r2"
    # the same release deployed again: what ran before it
    assert records.previous_release(index, "r2") == "r1"
