"""A webhook receiver that keeps every finished run in SQLite, with nothing but the stdlib.

It checks each request's ``Broker-Signature``, then upserts the run by its delivery id (the run
id), so a delivery that comes twice (a retry after a crash) leaves one row::

    WEBHOOK_SECRET=change-me python examples/webhook_receiver.py            # listens on :9000
    python examples/webhook_receiver.py --show                              # the stored runs

Point the broker at it with ``BROKER_WEBHOOK_URL=http://127.0.0.1:9000/runs`` and the same
secret in ``BROKER_WEBHOOK_SECRET``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sqlite3
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def verify_broker_signature(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    t, given = fields.get("t", ""), fields.get("v1", "")
    if not t.isdigit() or abs(time.time() - int(t)) > tolerance:
        return False  # malformed, or too old: a replayed request
    expected = hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    status TEXT NOT NULL,
    model TEXT NOT NULL,
    question TEXT,
    answer TEXT NOT NULL,
    parts TEXT NOT NULL,
    body TEXT NOT NULL
)
"""
UPSERT = """
INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO UPDATE SET status = excluded.status, answer = excluded.answer,
    parts = excluded.parts, body = excluded.body
"""


def store(db_path: str, body: bytes) -> None:
    run = json.loads(body)
    question = run["user_message"]["content"] if run["user_message"] else None
    row = (
        run["run_id"],
        run["conversation_id"],
        run["status"],
        run["model"],
        question,
        run["message"]["content"],
        json.dumps(run["message"]["parts"]),
        body.decode(),
    )
    with sqlite3.connect(db_path) as db:
        db.execute(SCHEMA)
        db.execute(UPSERT, row)


def serve(port: int, db_path: str, secret: str) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if not verify_broker_signature(secret, self.headers.get("broker-signature", ""), body):
                self.send_response(401)
                self.end_headers()
                return
            store(db_path, body)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            print(f"{self.headers.get('broker-delivery-id')}: {format % args}", flush=True)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"receiving on http://127.0.0.1:{port}/ into {db_path}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def show(db_path: str) -> None:
    with sqlite3.connect(db_path) as db:
        db.execute(SCHEMA)
        for run_id, status, question, answer in db.execute(
            "SELECT run_id, status, question, answer FROM runs ORDER BY rowid"
        ):
            print(json.dumps({"run_id": run_id, "status": status, "q": question, "a": answer}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--db", default="answers.db")
    parser.add_argument("--show", action="store_true", help="print the stored runs and exit")
    args = parser.parse_args()
    if args.show:
        show(args.db)
    else:
        secret = os.environ.get("WEBHOOK_SECRET")
        if not secret:
            raise SystemExit("set WEBHOOK_SECRET to the broker's BROKER_WEBHOOK_SECRET")
        serve(args.port, args.db, secret)
