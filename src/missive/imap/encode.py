"""Response encoding (RFC 3501 §4, §9): strings as atoms, quoted strings or literals; NIL.

Everything the server sends is built as ``bytes`` from these helpers, so no response can carry a
bare CR or LF outside a literal (which would let message content inject protocol lines). A value
goes out as a quoted string when it is short 7-bit text without CR, LF, NUL, ``"`` or ``\\``
needing more than escaping, otherwise as a literal ``{n}\\r\\n`` followed by its octets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

__all__ = ["NIL", "astring", "datetime_text", "flag_list", "literal", "nstring", "paren",
           "quoted_or_literal"]

NIL = b"NIL"
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
#: Printable ASCII but ``"`` and ``\\``: quoted as it is.
_PLAIN = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_QUOTABLE_MAX = 1024
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0, 32)) | {127}


def _bytes(value: str | bytes) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return value


def literal(value: str | bytes) -> bytes:
    data = _bytes(value)
    return b"{%d}\r\n" % len(data) + data


def quoted_or_literal(value: str | bytes) -> bytes:
    """A ``string`` (RFC 3501 §4.3): quoted when safe, else a literal."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if len(data) <= _QUOTABLE_MAX:
        if _PLAIN.fullmatch(data) is not None:  # the usual case: nothing to escape
            return b'"' + data + b'"'
        if data.isascii() and _CONTROL.search(data) is None:
            return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(data)


def nstring(value: str | bytes | None) -> bytes:
    return NIL if value is None else quoted_or_literal(value)


def astring(value: str | bytes) -> bytes:
    """An ``astring``: a bare atom when possible (mailbox names, flags), else a string."""
    data = _bytes(value)
    if data and not any(c in _ATOM_SPECIALS or c > 0x7E for c in data) and data.upper() != NIL:
        return data
    return quoted_or_literal(data)


def paren(items: Iterable[bytes]) -> bytes:
    return b"(" + b" ".join(items) + b")"


def flag_list(flags: Iterable[str]) -> bytes:
    return paren(f.encode("ascii", "replace") for f in sorted(flags))


def datetime_text(moment: datetime) -> bytes:
    """``date-time`` (RFC 3501 §9): ``"17-Jul-1996 02:44:25 -0700"``, here in UTC."""
    m = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    m = m.astimezone(UTC)
    return (f'"{m.day:2d}-{_MONTHS[m.month - 1]}-{m.year:04d} '
            f'{m.hour:02d}:{m.minute:02d}:{m.second:02d} +0000"').encode()
