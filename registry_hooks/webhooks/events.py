"""MLflow registry webhook deliveries: signature checks and what an event asks us to do.

Pure functions, a small thread-safe set and a durable one; the HTTP receiver (``receiver.py``)
calls them.

MLflow (3.x, SQL stores) signs each delivery with HMAC-SHA256 over
``"{delivery_id}.{timestamp}.{body}"`` using the webhook's secret, and sends
``X-MLflow-Signature: v1,<base64 digest>``, ``X-MLflow-Delivery-Id`` and
``X-MLflow-Timestamp`` (Unix seconds). A delivery is trusted only when the signature matches,
the timestamp is recent (so a captured delivery cannot be replayed later), and its id has not
been seen before (so a replay within the window does nothing twice). The seen ids are kept in a
SQLite file (``DurableSeenDeliveries``), so a replay after the receiver restarts is still
recognised; the timestamp window is the second line of defence. A body nested deeper than
``MAX_JSON_DEPTH`` is refused before it is parsed (Python's parser would recurse on it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
EVENTS = ("model_version.created", "model_version_tag.set")
MAX_JSON_DEPTH = 32  # MLflow's payloads nest 3 deep
REEVALUATE_TAG = "quantgate.reevaluate"  # set it (any value) on a version to evaluate and gate it again


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for this delivery."""
    content = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def header_number(value: str | None, max_digits: int = 12) -> int | None:
    """A header holding a whole number (a Unix time, a body length), or ``None`` when it holds
    anything but ASCII digits; a number of more than ``max_digits`` digits reads as
    ``10**max_digits``, more than any limit. (``str.isdigit`` takes ``²``, which ``int`` refuses,
    and a 400-digit number overflows a float: the fifty-second adversarial run's headers crashed
    the receiver's handler, which then sent no answer at all.)"""
    if value is None or not re.fullmatch("[0-9]+", value):
        return None
    return int(value) if len(value) <= max_digits else 10**max_digits


def delivery_problem(
    headers: Mapping[str, str], body: bytes, secret: str, now: float, max_age_s: float = 300
) -> str | None:
    """Why this delivery must be refused, or None when it is authentic and fresh."""
    h = {k.lower(): v for k, v in headers.items()}
    delivery_id, timestamp, signature = (
        h.get(x.lower()) for x in (DELIVERY_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
    )
    if not (delivery_id and timestamp and signature):
        return "unsigned: missing delivery id, timestamp or signature header"
    seconds = header_number(timestamp)
    if seconds is None:
        return "malformed timestamp"
    age = now - seconds
    if abs(age) > max_age_s:
        return f"stale: timestamp is {age:.0f} s from now (limit {max_age_s:.0f} s)"
    if not hmac.compare_digest(signature.encode(), sign(secret, delivery_id, timestamp, body).encode()):
        return "bad signature"
    return None


class SeenDeliveries:
    """Delivery ids already accepted (bounded, oldest forgotten first): idempotency."""

    def __init__(self, capacity: int = 10_000):
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str) -> bool:
        with self._lock:
            if delivery_id in self._ids:
                return False
            self._ids[delivery_id] = None
            if len(self._ids) > self._capacity:
                self._ids.popitem(last=False)
            return True

    def forget(self, delivery_id: str) -> None:
        """Un-claim a delivery we could not take (MLflow retries it with the same id)."""
        with self._lock:
            self._ids.pop(delivery_id, None)


class DurableSeenDeliveries:
    """Delivery ids already accepted, in a SQLite file: survives a restart of the receiver.

    Each claim is one ``INSERT OR IGNORE`` in its own transaction (atomic, also across
    processes sharing the file). Ids older than ``keep_s`` are pruned: by then the timestamp
    window refuses the delivery anyway.
    """

    def __init__(self, path: str, keep_s: float = 7 * 24 * 3600):
        self.path, self.keep_s = str(path), keep_s
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS seen_deliveries (delivery_id TEXT PRIMARY KEY, seen_at REAL NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # autocommit: one statement, one transaction
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def first_time(self, delivery_id: str) -> bool:
        now = time.time()
        db = self._connect()
        try:
            claimed = (
                db.execute("INSERT OR IGNORE INTO seen_deliveries VALUES (?, ?)", (delivery_id, now)).rowcount == 1
            )
            db.execute("DELETE FROM seen_deliveries WHERE seen_at < ?", (now - self.keep_s,))
        finally:
            db.close()
        return claimed

    def forget(self, delivery_id: str) -> None:
        db = self._connect()
        try:
            db.execute("DELETE FROM seen_deliveries WHERE delivery_id = ?", (delivery_id,))
        finally:
            db.close()


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON text nests arrays/objects deeper than ``limit`` (brackets inside
    strings do not count); decided by scanning, without parsing."""
    depth, in_string, escaped = 0, False, False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


@dataclass(frozen=True)
class Job:
    name: str
    version: str
    why: str


def plan(body: bytes, model_name: str) -> tuple[Job | None, str]:
    """What a delivery asks for: (a job, or None, and a reason a person can read)."""
    if json_too_deep(body):
        raise ValueError(f"not an MLflow webhook payload: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        event = json.loads(body)
        kind = f"{event['entity']}.{event['action']}"
        data = event["data"]
        name, version = data["name"], str(data["version"])
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ValueError(f"not an MLflow webhook payload: {exc}") from None
    if name != model_name:
        return None, f"ignored: model {name!r} is not watched ({model_name!r} is)"
    if kind == "model_version.created":
        return Job(name, version, "new version"), "evaluate and gate the new version"
    if kind == "model_version_tag.set" and data.get("key") == REEVALUATE_TAG:
        return Job(name, version, f"tag {REEVALUATE_TAG}"), "evaluate and gate again on request"
    return None, f"ignored: {kind}" + (f" of tag {data.get('key')!r}" if "key" in data else "")


def is_candidate(tags: Mapping[str, str], version: str = "") -> tuple[bool, str]:
    """Only variants made from a parent are gated; the FP32 parent itself never is."""
    from registry_hooks.gate.provenance import variant_problem

    problem = variant_problem(tags, version)
    return (False, problem) if problem else (True, "candidate")
