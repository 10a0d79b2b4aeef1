"""The ``Received:`` trace header (RFC 5321 §4.4) that the SMTP fronts prepend.

Shape (folded, one clause a line)::

    Received: from client.example ([192.0.2.1])
            by mail.operator.example (Missive) with ESMTPSA id 4f0c2a9e11bd
            tls TLS_AES_256_GCM_SHA384 (TLSv1.3, 256 bits)
            for <dr.x@operator.example>; Mon, 23 Nov 2026 14:00:00 +0000

- ``with`` is the protocol type of RFC 3848 / RFC 6531 §3.7.3 (``ESMTP``, ``ESMTPS`` with
  TLS, ``ESMTPSA`` with TLS and AUTH, ``UTF8SMTPSA`` … with SMTPUTF8).
- ``tls`` is the clause RFC 8314 §4.3 registers, the cipher suite; the comment after it gives
  the TLS version and key bits.
- ``for`` names the recipient only when there is exactly one (RFC 5321 §7.2: listing several
  would disclose Bcc recipients to each other). The authenticated login is not written: the
  trace is kept by every recipient and the login is not theirs to know.
- The ``from`` domain is the EHLO argument, sanitised to what RFC 5321 allows in a domain or
  address literal, so that a client cannot inject header syntax.
"""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime

from missive.mta.session import TlsInfo

_SAFE = re.compile(r"[^A-Za-z0-9.\-:\[\]_]")


def _clean(text: str, limit: int = 255) -> str:
    cleaned = _SAFE.sub("", text)[:limit]
    return cleaned or "unknown"


def protocol(*, esmtp: bool, tls: bool, auth: bool, utf8: bool) -> str:
    """The ``with`` keyword (RFC 3848, RFC 6531 §3.7.3)."""
    if utf8:
        base = "UTF8SMTP"
    else:
        base = "ESMTP" if esmtp else "SMTP"
    if base == "SMTP":
        return "SMTP"
    return base + ("S" if tls else "") + ("A" if auth else "")


def received_header(
    *,
    helo: str,
    client_ip: str,
    hostname: str,
    queue_id: str,
    tls: TlsInfo | None,
    esmtp: bool,
    authenticated: bool,
    utf8: bool,
    recipients: list[str],
    now: datetime | None = None,
) -> bytes:
    """The header field, CRLF-terminated, ready to prepend to the message."""
    moment = now or datetime.now(UTC)
    ip = _clean(client_ip, 64)
    literal = f"IPv6:{ip}" if ":" in ip else ip
    lines = [
        f"Received: from {_clean(helo)} ([{literal}])",
        f"\tby {_clean(hostname)} (Missive) with "
        f"{protocol(esmtp=esmtp, tls=tls is not None, auth=authenticated, utf8=utf8)} "
        f"id {_clean(queue_id, 64)}",
    ]
    if tls is not None:
        lines.append(f"\ttls {_clean(tls.cipher, 100)} ({_clean(tls.version, 20)}, "
                     f"{int(tls.bits)} bits)")
    date = email.utils.format_datetime(moment)
    if len(recipients) == 1 and "\r" not in recipients[0] and "\n" not in recipients[0]:
        lines.append(f"\tfor <{recipients[0]}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")
