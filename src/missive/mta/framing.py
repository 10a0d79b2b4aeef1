"""Strict SMTP framing (policy P12): lines end with CRLF, nothing else (RFC 5321 §2.3.8).

SMTP smuggling (SEC Consult, December 2023) relies on servers that disagree about where the
message data ends: a sender hides ``<LF>.<LF>`` or ``<CR>.<CR>`` in the data, an outbound server
forwards it as data, a lenient inbound server takes it for the end of data and reads what
follows as a second, forged transaction. Missive is safe on both sides:

- **Data**: aiosmtpd reads data lines with ``readuntil(b"\\r\\n")`` and ends the data only at a
  line that is exactly ``.\\r\\n`` after a CRLF, so no variant ends the data early. Missive then
  refuses any message whose data contains a CR or LF that is not part of a CRLF pair
  (:func:`has_bare_line_ending`), so such data is never stored nor relayed to a lenient peer.
- **Commands**: aiosmtpd reads command lines up to a bare LF and strips CR/LF from the end,
  which would accept ``NOOP<LF>`` and ``MAIL FROM:<a><CR>RCPT TO:<b><CR><LF>``.
  :class:`StrictStreamReader` raises :class:`BareLineEnding` for such lines; the front replies
  ``500 5.5.2`` and the next line is read as the next command (the session stays in step).

:class:`StrictStreamReader` changes the class of the ``asyncio.StreamReader`` that aiosmtpd
creates for each connection (it adds no state, only a check on command lines), so aiosmtpd's
protocol state machine is otherwise untouched.
"""

from __future__ import annotations

import asyncio
from typing import Any


class BareLineEnding(Exception):
    """A command line ended with a bare LF or contained a bare CR."""


def is_strict_line(line: bytes) -> bool:
    """True when ``line`` ends with CRLF and has no other CR or LF."""
    return line.endswith(b"\r\n") and b"\r" not in line[:-2] and b"\n" not in line[:-2]


def has_bare_line_ending(data: bytes) -> bool:
    """True when ``data`` holds a CR or LF that is not part of a CRLF pair."""
    cr = data.count(b"\r")
    lf = data.count(b"\n")
    if cr != lf:
        return True
    return data.count(b"\r\n") != cr


class StrictStreamReader(asyncio.StreamReader):
    """A StreamReader whose command lines (``readuntil(b"\\n")``) must end with CRLF."""

    async def readuntil(self, separator: Any = b"\n") -> bytes:
        line = await super().readuntil(separator)
        if separator == b"\n" and not is_strict_line(line):
            raise BareLineEnding("command line not terminated by CRLF")
        return line


def make_strict(reader: asyncio.StreamReader) -> None:
    """Turn aiosmtpd's per-connection reader into a :class:`StrictStreamReader` in place."""
    if type(reader) is asyncio.StreamReader:
        reader.__class__ = StrictStreamReader
