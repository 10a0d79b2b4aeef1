"""Strict SMTP framing (policy P12): lines end with CRLF, nothing else (RFC 5321 §2.3.8).

SMTP smuggling (SEC Consult, December 2023) relies on servers that disagree about where the
message data ends: a sender hides ``<LF>.<LF>`` or ``<CR>.<CR>`` in the data, an outbound server
forwards it as data, a lenient inbound server takes it for the end of data and reads what
follows as a second, forged transaction. Missive is safe on both sides:

- **Data**: the data ends only at a line that is exactly ``.\\r\\n`` after a CRLF (or at the
  very start of the data), so no variant ends the data early. Missive then refuses any message
  whose data contains a CR or LF that is not part of a CRLF pair (:func:`has_bare_line_ending`),
  so such data is never stored nor relayed to a lenient peer. The data is read by
  :class:`DataParser` (see below), which gives exactly what aiosmtpd's line loop gives.
- **Commands**: aiosmtpd reads command lines up to a bare LF and strips CR/LF from the end,
  which would accept ``NOOP<LF>`` and ``MAIL FROM:<a><CR>RCPT TO:<b><CR><LF>``.
  :class:`StrictStreamReader` raises :class:`BareLineEnding` for such lines; the front replies
  ``500 5.5.2`` and the next line is read as the next command (the session stays in step).

:class:`StrictStreamReader` changes the class of the ``asyncio.StreamReader`` that aiosmtpd
creates for each connection (it adds no state, only a check on command lines and a data-phase
reader), so aiosmtpd's protocol state machine is otherwise untouched.

**Reading the data in blocks.** aiosmtpd's ``smtp_DATA`` reads the data one line at a time
(``readuntil(b"\\r\\n")``, a few Python-level steps per 75-octet line: about 140 awaits for
a 10 KB message, the largest single cost of the SMTP front after TLS). :class:`DataParser`
takes whatever the connection buffered, finds the end of data with ``bytes.find`` (C speed),
checks line lengths with one ``split`` per block, and unstuffs dots with one
``bytes.replace`` (RFC 5321 §4.5.2). Its results are those of aiosmtpd's loop, octet for
octet: the same content, the same end (the leftover, e.g. a pipelined next command, stays in
the reader), the same refusal when a line is over ``line_length_limit`` (aiosmtpd's
``500 Line too long``) or the data over ``data_size_limit`` (``552``), and the same precedence
between the two when both happen (the first in the stream wins, as in aiosmtpd). It is fuzzed
against a line-by-line transcription of aiosmtpd's loop (``tests/unit/mta``).
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any

#: The end of the data (RFC 5321 §4.1.1.4), seen as ``CRLF . CRLF`` with the CRLF that ends
#: the line before it; the data itself starts after a CRLF (the DATA command line's).
END_OF_DATA = b"\r\n.\r\n"


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

    def has_line(self) -> bool:
        """A whole line is already buffered: the next ``readuntil`` returns without waiting
        for the client (the client pipelined another command, RFC 2920)."""
        return b"\n" in self._buffer  # type: ignore[attr-defined]

    async def read_data(self, parser: DataParser) -> None:
        """Feed the data phase to ``parser`` from what the connection buffered, in blocks,
        until its end; what follows the end (pipelined commands) stays in the buffer.

        Uses the buffer and wait primitives of ``asyncio.StreamReader`` (CPython 3.11+), as
        its own ``readuntil`` does: the public readers either consume past the end of data
        or stop at ``limit`` (aiosmtpd's 1001 octets, a line).
        """
        while True:
            if self._buffer:  # type: ignore[attr-defined]
                used = parser.feed(bytes(self._buffer))  # type: ignore[attr-defined]
                del self._buffer[:used]  # type: ignore[attr-defined]
                self._maybe_resume_transport()  # type: ignore[attr-defined]
                if parser.done:
                    return
            if self._exception is not None:  # type: ignore[attr-defined]
                raise self._exception  # type: ignore[attr-defined]
            if self._eof:  # type: ignore[attr-defined]
                raise asyncio.IncompleteReadError(b"", None)
            await self._wait_for_data("read_data")  # type: ignore[attr-defined]


def make_strict(reader: asyncio.StreamReader) -> None:
    """Turn aiosmtpd's per-connection reader into a :class:`StrictStreamReader` in place."""
    if type(reader) is asyncio.StreamReader:
        reader.__class__ = StrictStreamReader


class DataState(enum.Enum):
    """Outcome of the data phase (aiosmtpd's ``_DataState``)."""

    NOMINAL = "nominal"
    TOO_LONG = "too long"  # a line over the line length limit: aiosmtpd's "500 Line too long"
    TOO_MUCH = "too much"  # over the message size limit: aiosmtpd's "552 … Too much mail data"


class DataParser:
    """The SMTP data phase, fed in blocks of any size (see the module docstring).

    :meth:`feed` takes the next bytes received and returns how many of them belong to the
    data (all of them until the end of data is seen). Once :attr:`done`, :attr:`state` says
    whether the data is acceptable and :meth:`content` returns it, dot-unstuffed.

    ``size_limit`` (0 or None: none) bounds the octets of the data as sent (dot-stuffed, with
    CRLFs), ``line_limit`` the octets of each line with its CRLF; a line longer than
    ``line_limit`` octets before its CRLF is refused as soon as it is seen (aiosmtpd's reader
    limit). Memory is bounded by ``size_limit`` plus one line: past a refusal, data is only
    scanned for its end, not kept.
    """

    def __init__(self, size_limit: int | None, line_limit: int) -> None:
        self.size_limit = size_limit or 0
        self.line_limit = line_limit
        self.state = DataState.NOMINAL
        self.done = False
        self._blocks: list[bytes] = []  # complete lines, as sent (NOMINAL only)
        self._pending = b""  # the current, incomplete line (NOMINAL only)
        self._size = 0  # octets of the complete lines so far
        self._tail = b""  # the last octets seen, once refused (to find the end marker)

    def feed(self, data: bytes) -> int:
        """Take ``data``; return how many of its octets belong to the data phase."""
        if self.done:
            return 0
        if self.state is not DataState.NOMINAL:
            return self._skip(data)
        pending = self._pending
        seg = pending + data if pending else data  # starts at the start of a line
        if seg.startswith(b".\r\n"):
            end = 0
        else:
            end = seg.find(END_OF_DATA)
            if end >= 0:
                end += 2  # the CRLF belongs to the last line of the data
        if end >= 0:
            self._pending = b""
            self._lines(seg[:end])
            self.done = True
            return end + 3 - len(pending)
        last = seg.rfind(b"\r\n")
        cut = last + 2 if last >= 0 else 0  # where the current, incomplete line starts
        rest = seg[cut:]
        if cut:
            self._lines(seg[:cut])
        if self.state is DataState.NOMINAL:
            # A line already longer than the reader's limit is refused before it ends
            # (aiosmtpd's LimitOverrunError), whatever the size so far.
            if len(rest) - rest.endswith(b"\r") > self.line_limit:
                self._refuse(DataState.TOO_LONG)
            else:
                self._pending = rest
                return len(data)
        self._tail = (b"\r\n" + seg)[-4:]
        return len(data)

    def content(self) -> bytes:
        """The data without its end marker, dot-unstuffed (RFC 5321 §4.5.2)."""
        data = b"".join(self._blocks)
        unstuffed = data.replace(b"\r\n.", b"\r\n")
        return unstuffed[1:] if data.startswith(b".") else unstuffed

    # --- internals ----------------------------------------------------------------------------

    def _lines(self, block: bytes) -> None:
        """Complete lines (``block`` ends with CRLF), checked as aiosmtpd checks them."""
        if self.state is not DataState.NOMINAL or not block:
            return
        size = self._size + len(block)
        longest = max(map(len, block.split(b"\r\n"))) + 2
        if (not self.size_limit or size <= self.size_limit) and longest <= self.line_limit:
            self._size = size
            self._blocks.append(block)
            return
        # Something is refused in this block: which comes first, line by line as aiosmtpd.
        for line in block[:-2].split(b"\r\n"):
            octets = len(line) + 2
            if octets - 2 > self.line_limit:
                return self._refuse(DataState.TOO_LONG)
            self._size += octets
            if self.size_limit and self._size > self.size_limit:
                return self._refuse(DataState.TOO_MUCH)
            if octets > self.line_limit:
                return self._refuse(DataState.TOO_LONG)
        raise AssertionError("unreachable: the fast check found a refusal")  # pragma: no cover

    def _refuse(self, state: DataState) -> None:
        self.state = state
        self._blocks = []
        self._pending = b""

    def _skip(self, data: bytes) -> int:
        """After a refusal: look for the end of data only."""
        window = self._tail + data
        found = window.find(END_OF_DATA)
        if found < 0:
            self._tail = window[-4:]
            return len(data)
        self.done = True
        return found + 5 - len(self._tail)
