"""MLflow registry webhook deliveries: signature checks and what an event asks us to do.

Pure functions and a small thread-safe set; the HTTP receiver (``receiver.py``) calls them.

MLflow (3.x, SQL stores) signs each delivery with HMAC-SHA256 over
``"{delivery_id}.{timestamp}.{body}"`` using the webhook's secret, and sends
``X-MLflow-Signature: v1,<base64 digest>``, ``X-MLflow-Delivery-Id`` and
``X-MLflow-Timestamp`` (Unix seconds). A delivery is trusted only when the signature matches,
the timestamp is recent (so a captured delivery cannot be replayed later), and its id has not
been seen before (so a replay within the window does nothing twice).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
EVENTS = ("model_version.created", "model_version_tag.set")
REEVALUATE_TAG = "quantgate.reevaluate"  # set it (any value) on a version to evaluate and gate it again


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow sends for this delivery."""
    content = f"{delivery_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def delivery_problem(headers: Mapping[str, str], body: bytes, secret: str, now: float, max_age_s: float = 300) -> str | None:
    """Why this delivery must be refused, or None when it is authentic and fresh."""
    h = {k.lower(): v for k, v in headers.items()}
    delivery_id, timestamp, signature = (h.get(x.lower()) for x in (DELIVERY_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER))
    if not (delivery_id and timestamp and signature):
        return "unsigned: missing delivery id, timestamp or signature header"
    if not timestamp.isdigit():
        return "malformed timestamp"
    age = now - int(timestamp)
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


@dataclass(frozen=True)
class Job:
    name: str
    version: str
    why: str


def plan(body: bytes, model_name: str) -> tuple[Job | None, str]:
    """What a delivery asks for: (a job, or None, and a reason a person can read)."""
    try:
        event = json.loads(body)
        kind = f"{event['entity']}.{event['action']}"
        data = event["data"]
        name, version = data["name"], str(data["version"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not an MLflow webhook payload: {exc}") from None
    if name != model_name:
        return None, f"ignored: model {name!r} is not watched ({model_name!r} is)"
    if kind == "model_version.created":
        return Job(name, version, "new version"), "evaluate and gate the new version"
    if kind == "model_version_tag.set" and data.get("key") == REEVALUATE_TAG:
        return Job(name, version, f"tag {REEVALUATE_TAG}"), "evaluate and gate again on request"
    return None, f"ignored: {kind}" + (f" of tag {data.get('key')!r}" if "key" in data else "")


def is_candidate(tags: Mapping[str, str]) -> tuple[bool, str]:
    """Only variants made from a parent are gated; the FP32 parent itself never is."""
    if tags.get("variant") == "fp32":
        return False, "the FP32 parent is not a promotion candidate"
    if not tags.get("parent_version"):
        return False, "no parent_version tag: not a quantgate variant"
    return True, "candidate"
