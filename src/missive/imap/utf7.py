"""Modified UTF-7 for mailbox names (RFC 3501 §5.1.3, kept by RFC 9051 §5.1.3 without UTF8=ACCEPT).

Printable US-ASCII stands for itself except ``&``, written ``&-``; other characters are UTF-16BE,
base64 with ``,`` instead of ``/`` and no padding, between ``&`` and ``-``. :func:`decode` is
strict (a stray ``&``, bad base64, a needlessly encoded printable character or non-zero padding
bits are refused with :class:`ValueError`), because a lenient decoder lets two spellings name one
mailbox; :func:`encode` always produces the one canonical form.
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["decode", "encode"]


def _is_direct(ch: str) -> bool:
    return 0x20 <= ord(ch) <= 0x7E


def encode(name: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be", "surrogatepass")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if _is_direct(ch):
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode(text: str) -> str:
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if not _is_direct(ch):
            raise ValueError("only printable US-ASCII may appear in a modified UTF-7 name")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise ValueError("'&' starts an encoded run that never ends with '-'")
        run = text[i + 1:end]
        i = end + 1
        if not run:
            out.append("&")
            continue
        if len(run) % 4 == 1 or any(c not in _B64 for c in run):
            raise ValueError("bad base64 in an encoded run")
        padded = run.replace(",", "/") + "=" * (-len(run) % 4)
        try:
            data = base64.b64decode(padded, validate=True)
        except binascii.Error:
            raise ValueError("bad base64 in an encoded run") from None
        if len(data) % 2:
            raise ValueError("an encoded run is not whole UTF-16 units")
        try:
            decoded = data.decode("utf-16-be")
        except UnicodeDecodeError:
            raise ValueError("an encoded run is not valid UTF-16") from None
        if any(_is_direct(c) for c in decoded):
            raise ValueError("printable ASCII must not be encoded")
        if encode(decoded)[1:-1] != run:
            raise ValueError("an encoded run is not in canonical form")
        out.append(decoded)
    return "".join(out)


_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")
