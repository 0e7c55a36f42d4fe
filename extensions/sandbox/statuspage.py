"""A local webhook receiver and status-page stub for the sandbox (standard library only).

It stands in for a status page (or a chat webhook) so the incident role's notifications go
somewhere real and the report can measure the first status update.

Endpoints:
  POST /hooks/<token>  a notification: the body (JSON, else text) is recorded with the time it
                       arrived and answered 200 {"ok": true, "seq": N}. The token makes the URL a
                       credential, like a Slack incoming-webhook URL.
  POST <anything else> recorded as refused (no path, no body: a wrong token is not written
                       down) and answered 404.
  GET  /hooks/<token>  every recorded POST as a JSON list (oldest first).
  GET  /               the status page: the newest accepted notification's incident, event and
                       time as JSON ({"status": "operational"} before any).
  GET  /health         200 {"status": "ok", "received": N}.

Every POST is appended as one JSON line to ``--record`` (created mode 0600): ``seq``,
``received_at`` (ISO 8601 UTC), ``epoch``, ``accepted``, ``status`` (the HTTP answer), ``content_type``
and, when accepted, ``body``. The token is read from ``--token-file`` (never from the command line,
which other users can read in ``ps``).
"""

import argparse
import datetime
import hmac
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOOK_PREFIX = "/hooks/"
MAX_BODY = 1024 * 1024


def decode_body(raw, content_type):
    """The body as JSON when it parses (whatever the content type says), else as text."""
    text = raw.decode("utf-8", errors="replace")
    if raw and ("json" in (content_type or "") or text.lstrip()[:1] in ("{", "[")):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def token_matches(path, token):
    """True when ``path`` (query string ignored) is exactly /hooks/<token>; constant-time comparison."""
    given = path.split("?", 1)[0]
    if not given.startswith(HOOK_PREFIX) or not token:
        return False
    return hmac.compare_digest(given[len(HOOK_PREFIX):].encode(), token.encode())


def make_record(seq, accepted, status, content_type, body, now=None):
    """One line of the record file. A refused POST keeps neither its body nor its path."""
    now = time.time() if now is None else now
    record = {"seq": seq, "epoch": round(now, 6),
              "received_at": datetime.datetime.fromtimestamp(now, tz=datetime.timezone.utc).isoformat(),
              "accepted": bool(accepted), "status": status, "content_type": content_type or ""}
    if accepted:
        record["body"] = body
    return record


def status_summary(records):
    """What the status page shows: the newest accepted notification that carries an event."""
    for record in reversed(records):
        body = record.get("body")
        if record.get("accepted") and isinstance(body, dict) and body.get("event"):
            return {"status": {"start": "investigating", "level": "identified", "done": "resolved",
                               "failed": "major outage"}.get(body["event"], body["event"]),
                    "event": body["event"], "incident": body.get("incident"), "title": body.get("title"),
                    "environment": body.get("environment"), "updated": record["received_at"]}
    return {"status": "operational", "updated": None}


class Store:
    """The recorded POSTs, in memory and appended to the record file (one JSON object a line)."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.records = []
        if path and os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                self.records = [json.loads(line) for line in handle if line.strip()]
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.close(fd)

    def add(self, accepted, status, content_type, body):
        with self.lock:
            seq = len(self.records) + 1
            record = make_record(seq, accepted, status, content_type, body)
            self.records.append(record)
            if self.path:
                with open(self.path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record, sort_keys=True) + "\n")
            return record

    def snapshot(self):
        with self.lock:
            return list(self.records)


class Handler(BaseHTTPRequestHandler):
    store = None
    token = ""
    quiet = True
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write("statuspage: %s\n" % (fmt % args))

    def _send(self, status, data):
        payload = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):  # noqa: N802 (http.server's naming)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        content_type = self.headers.get("Content-Type", "")
        if length < 0 or length > MAX_BODY:
            self.store.add(False, 413, content_type, None)
            self.close_connection = True
            # read (and drop) what the client sends, up to a bound, so it gets the answer, not a broken pipe
            left = min(max(length, 0), 16 * MAX_BODY)
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
            self._send(413, {"ok": False, "error": "body larger than %d bytes or no valid Content-Length" % MAX_BODY})
            return
        raw = self.rfile.read(length) if length else b""
        if not token_matches(self.path, self.token):
            self.store.add(False, 404, content_type, None)
            self._send(404, {"ok": False, "error": "no such webhook"})
            return
        record = self.store.add(True, 200, content_type, decode_body(raw, content_type))
        self._send(200, {"ok": True, "seq": record["seq"]})

    def do_GET(self):  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._send(200, {"status": "ok", "received": len(self.store.snapshot())})
        elif path == "/":
            self._send(200, status_summary(self.store.snapshot()))
        elif token_matches(path, self.token):
            self._send(200, self.store.snapshot())
        else:
            self._send(404, {"error": "not found"})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(host, port, store, token, quiet=True):
    handler = type("StatusPageHandler", (Handler,), {"store": store, "token": token, "quiet": quiet})
    return Server((host, port), handler)


def main(argv=None):
    parser = argparse.ArgumentParser(description="failsafe.recovery sandbox webhook receiver / status page stub")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", required=True, help="file holding the secret path segment of the webhook URL")
    parser.add_argument("--record", required=True, help="JSON lines file every POST is appended to")
    parser.add_argument("--access-log", action="store_true", help="log every request to stderr (paths hold the token)")
    args = parser.parse_args(argv)

    with open(args.token_file, encoding="utf-8") as handle:
        token = handle.read().strip()
    if not token:
        parser.error("--token-file %s is empty" % args.token_file)
    server = make_server(args.host, args.port, Store(args.record), token, quiet=not args.access_log)

    def on_term(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    sys.stderr.write("statuspage listening on %s:%d (pid %d), recording to %s\n"
                     % (args.host, args.port, os.getpid(), args.record))
    sys.stderr.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
