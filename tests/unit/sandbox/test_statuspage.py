"""Pure logic of the sandbox's webhook receiver: body decoding, the token check, records, the status page."""

import pytest

from sandbox import statuspage


@pytest.mark.parametrize("raw, content_type, expected", [
    (b'{"event": "start"}', "application/json", {"event": "start"}),
    (b'{"event": "start"}', "", {"event": "start"}),
    (b'[1, 2]', "text/plain", [1, 2]),
    (b'{not json', "application/json", "{not json"),
    (b"ROLLBACK INITIATED", "text/plain", "ROLLBACK INITIATED"),
    (b"", "application/json", ""),
    (b"caf\xc3\xa9 \xff", "text/plain", "caf\u00e9 \ufffd"),
])
def test_decode_body(raw, content_type, expected):
    assert statuspage.decode_body(raw, content_type) == expected


@pytest.mark.parametrize("path, token, expected", [
    ("/hooks/abc123", "abc123", True),
    ("/hooks/abc123?x=1", "abc123", True),
    ("/hooks/abc1234", "abc123", False),
    ("/hooks/abc12", "abc123", False),
    ("/hooks/", "abc123", False),
    ("/hooks/abc123/more", "abc123", False),
    ("/other/abc123", "abc123", False),
    ("/hooks/", "", False),
])
def test_token_matches(path, token, expected):
    assert statuspage.token_matches(path, token) is expected


def test_make_record_keeps_the_body_only_when_accepted():
    accepted = statuspage.make_record(3, True, 200, "application/json", {"event": "start"}, now=0.5)
    assert accepted == {"seq": 3, "epoch": 0.5, "received_at": "1970-01-01T00:00:00.500000+00:00",
                        "accepted": True, "status": 200, "content_type": "application/json",
                        "body": {"event": "start"}}
    refused = statuspage.make_record(4, False, 404, None, {"event": "start"}, now=1.0)
    assert "body" not in refused and refused["accepted"] is False and refused["content_type"] == ""


def _record(event, incident="inc-1", accepted=True, at="2026-01-01T00:00:00+00:00"):
    return {"accepted": accepted, "received_at": at,
            "body": {"event": event, "incident": incident, "title": "t", "environment": "sandbox"}}


def test_status_summary_shows_the_newest_accepted_event():
    assert statuspage.status_summary([]) == {"status": "operational", "updated": None}
    records = [_record("start"), _record("level", at="2026-01-01T00:00:05+00:00"),
               _record("done", incident="forged", accepted=False),
               {"accepted": True, "received_at": "x", "body": "plain text"}]
    assert statuspage.status_summary(records) == {
        "status": "identified", "event": "level", "incident": "inc-1", "title": "t", "environment": "sandbox",
        "updated": "2026-01-01T00:00:05+00:00"}
    assert statuspage.status_summary(records + [_record("done")])["status"] == "resolved"
    assert statuspage.status_summary([_record("failed")])["status"] == "major outage"
    assert statuspage.status_summary([_record("escalation")])["status"] == "escalation"


def test_store_appends_private_json_lines(tmp_path):
    path = tmp_path / "received.jsonl"
    store = statuspage.Store(str(path))
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    store.add(True, 200, "application/json", {"event": "start"})
    store.add(False, 404, "text/plain", "ignored")
    again = statuspage.Store(str(path))
    assert [(r["seq"], r["accepted"], r.get("body")) for r in again.snapshot()] == [
        (1, True, {"event": "start"}), (2, False, None)]
    assert again.add(True, 200, "", "x")["seq"] == 3
