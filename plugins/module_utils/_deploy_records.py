# -*- coding: utf-8 -*-
# Copyright: failsafe.recovery contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PRIVATE: the deployment record index kept by the deploy_snapshot role.

The records directory holds one directory per deployment (``<deployment_id>/record.json``
plus the fetched snapshot files) and ``index.json``: a JSON list of index entries, oldest
first. Each entry carries ``deployment_id``, ``time`` (UTC ISO 8601), ``release`` and
``previous_release``. Rollback roles read the index to pick a record.
"""

from __future__ import annotations

import re

_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
INDEX_FIELDS = ("deployment_id", "time", "release", "previous_release", "git_hash")


def deployment_id(timestamp, release):
    """A deployment id that sorts by time and is safe as a directory name.

    ``timestamp`` is compact UTC (``20261122T215339Z``); ``release`` is any string.
    """
    release = _ID_UNSAFE.sub("-", str(release or "")).strip("-.") or "unnamed"
    stamp = _ID_UNSAFE.sub("", str(timestamp))
    if not stamp:
        raise ValueError("the deployment id needs a timestamp")
    return "%s_%s" % (stamp, release[:64])


def _check_index(index):
    if index is None:
        return []
    if not isinstance(index, list):
        raise ValueError("index.json must hold a JSON list of deployment entries, got %s" % type(index).__name__)
    for pos, entry in enumerate(index):
        if not isinstance(entry, dict) or not entry.get("deployment_id"):
            raise ValueError("index.json entry %d has no deployment_id: %r" % (pos, entry))
    return index


def update_index(index, entry, keep=30):
    """Add (or replace, same deployment_id) ``entry`` and keep the newest ``keep`` entries.

    Returns ``{"index": [...oldest first...], "pruned": [deployment ids dropped], "replaced": bool}``.
    Entries are ordered by ``time`` then ``deployment_id``, so the index stays sorted even when
    written out of order.
    """
    index = _check_index(index)
    if not isinstance(entry, dict) or not entry.get("deployment_id"):
        raise ValueError("the new index entry needs a deployment_id")
    keep = int(keep)
    if keep < 1:
        raise ValueError("keep must be at least 1, got %d" % keep)
    new = {k: entry.get(k, "") for k in INDEX_FIELDS}
    others = [dict(e) for e in index if e["deployment_id"] != new["deployment_id"]]
    replaced = len(others) != len(index)
    merged = sorted(others + [new], key=lambda e: (str(e.get("time", "")), str(e["deployment_id"])))
    pruned = [e["deployment_id"] for e in merged[:-keep]] if len(merged) > keep else []
    return {"index": merged[-keep:], "pruned": pruned, "replaced": replaced}


def select_record(index, deployment_id="", offset=0):  # pylint: disable=redefined-outer-name
    """Pick an entry of the index.

    ``deployment_id`` empty: the newest entry moved back by ``offset`` (0 = newest,
    1 = the one before it). Otherwise the entry with that id (``offset`` ignored).
    Raises ValueError naming what exists when nothing matches.
    """
    index = _check_index(index)
    if not index:
        raise ValueError("no deployment is recorded yet: run failsafe.recovery.pre_deploy (role deploy_snapshot) "
                         "before a deploy")
    if deployment_id:
        for entry in index:
            if entry["deployment_id"] == deployment_id:
                return dict(entry)
        raise ValueError("deployment %r is not recorded; recorded (newest last): %s"
                         % (deployment_id, ", ".join(e["deployment_id"] for e in index[-5:])))
    offset = int(offset)
    if offset < 0 or offset >= len(index):
        raise ValueError("offset %d is out of range: %d deployment(s) recorded" % (offset, len(index)))
    return dict(index[-1 - offset])


def previous_release(index, release=""):
    """The release running before a deploy of ``release``: the newest recorded release.

    When the newest entry is the same release (the deploy is re-run), its previous_release.
    """
    index = _check_index(index)
    if not index:
        return ""
    newest = index[-1]
    if release and newest.get("release") == release:
        return newest.get("previous_release", "")
    return newest.get("release", "")
