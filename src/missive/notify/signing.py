"""HMAC-SHA256 signatures of webhook bodies, bound to a timestamp (replay window).

Header ``X-Missive-Signature: t=<unix seconds>,v1=<hex>`` where ``hex`` is
``HMAC-SHA256(secret, "<t>." + body)`` (the scheme Stripe and others use): the receiver checks
the MAC with the shared secret in constant time, and refuses a timestamp too far from its own
clock, so that a captured request cannot be replayed later. :func:`verify` is what a receiver
(an SMS gateway adapter, a relay) runs; it is also used by the tests' receivers.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Missive-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Missive-Event"


def mac(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The value of :data:`SIGNATURE_HEADER` for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={mac(secret, timestamp, body)}"


def verify(secret: bytes, header: str, body: bytes, *, now: float, tolerance: float = 300) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` within ``tolerance`` seconds."""
    fields: dict[str, list[str]] = {}
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            fields.setdefault(name, []).append(value)
    stamps = fields.get("t", [])
    if len(stamps) != 1 or not stamps[0].isdigit():
        return False
    timestamp = int(stamps[0])
    if abs(now - timestamp) > tolerance:
        return False
    expected = mac(secret, timestamp, body)
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))
