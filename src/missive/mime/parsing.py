"""One parse of a message, with each header field parsed at most once.

The standard library's ``email.policy.default`` (RFC 5322 / RFC 2047 / RFC 2231 aware) parses a
header field *every time* it is read: ``get_content_type()``, ``get_filename()``,
``get_content_disposition()`` and ``get_payload(decode=True)`` each re-read ``Content-Type``,
``Content-Disposition`` or ``Content-Transfer-Encoding``, and the summary and the part list read
the same fields again. :class:`MemoPolicy` is ``email.policy.default`` with a memo of
``header_fetch_parse``: the header object built for one ``(name, raw value)`` is returned again
for the next read. Header objects are immutable, so the results are exactly those of
``email.policy.default``, computed once. Its header registry also reuses the header class it
builds for each kind of field (the standard one builds a new class with ``type()`` on every
read).

The memo lives in the policy instance made for one parse (:func:`parse_message`) and goes away
with the message. Only the fields that repeat from message to message in real traffic and cost
the most to parse — address fields (``From``, ``To``, ``Cc``, ``Sender``…: a practice writes from
the same address to the same patients) and the MIME structure fields (``Content-Type``,
``Content-Transfer-Encoding``, ``Content-Disposition``, ``MIME-Version``) — are also kept in a
small bounded LRU shared between messages (:func:`_shared_header`), for values up to
:data:`_SHARED_MAX_VALUE` characters. Such a header object is a pure function of its name and raw
value, and immutable, so sharing it changes no result; ``Subject``, ``Date``, ``Message-ID`` and
other per-message fields are never shared.
"""

from __future__ import annotations

import email
import functools
import re
from email.headerregistry import (
    AddressHeader,
    ContentDispositionHeader,
    ContentTransferEncodingHeader,
    ContentTypeHeader,
    HeaderRegistry,
    MIMEVersionHeader,
)
from email.message import EmailMessage
from email.policy import EmailPolicy
from typing import Any

__all__ = ["MemoPolicy", "parse_message"]

#: Longest raw value kept in the shared LRU (longer ones are parsed per message).
_SHARED_MAX_VALUE = 512
_SHARED_ENTRIES = 1024
_SHARED_KINDS: tuple[type, ...] = (AddressHeader, ContentTypeHeader, ContentDispositionHeader,
                                   ContentTransferEncodingHeader, MIMEVersionHeader)


class _ClassCachingRegistry(HeaderRegistry):
    """A :class:`HeaderRegistry` that builds each header class once (keyed by the registered
    class, so the cache is bounded by the registry's size, whatever names a message uses)."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[type, type] = {}

    def __getitem__(self, name: str) -> type:
        cls = self.registry.get(name.lower(), self.default_class)
        built = self._classes.get(cls)
        if built is None:
            built = self._classes[cls] = super().__getitem__(name)
        return built


@functools.cache
def _registry() -> _ClassCachingRegistry:
    """One registry for every parse (built on first use; stdlib clones share theirs too)."""
    return _ClassCachingRegistry()


@functools.cache
def _shared_policy() -> EmailPolicy[EmailMessage]:
    return EmailPolicy(header_factory=_registry())


@functools.lru_cache(maxsize=_SHARED_ENTRIES)
def _shared_header(name: str, value: str) -> Any:
    """The header object for a repeated field, shared between messages (module docstring)."""
    return _shared_policy().header_fetch_parse(name, value)


def _shareable(name: str, value: str) -> bool:
    if len(value) > _SHARED_MAX_VALUE:
        return False
    registry = _registry()
    cls = registry.registry.get(name.lower(), registry.default_class)
    return issubclass(cls, _SHARED_KINDS)


class MemoPolicy(EmailPolicy):
    """``email.policy.default`` whose header fields are parsed once per (name, value)."""

    def __init__(self, **kw: Any) -> None:
        kw.setdefault("header_factory", _registry())
        super().__init__(**kw)
        # Policies are frozen (``__setattr__`` raises): the memo is set past it, once.
        object.__setattr__(self, "_memo", {})

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):  # already a header object (set by a program)
            return value
        memo: dict[tuple[str, str], Any] = self._memo  # type: ignore[attr-defined]
        key = (name, value)
        found = memo.get(key)
        if found is None:
            if _shareable(name, value):
                found = memo[key] = _shared_header(name, value)
            else:
                found = memo[key] = super().header_fetch_parse(name, value)
        return found


def parse_message(raw: bytes) -> EmailMessage:
    """Parse ``raw`` (RFC 5322 / MIME) as ``email.policy.default`` does, with the header memo.

    A single-part message (the common case: no ``multipart/*`` or ``message/*`` type) whose
    header block is cleanly delimited is parsed by :func:`_parse_single_part`: same message
    object, without feeding the body line by line through the parser.
    """
    single = _parse_single_part(raw)
    if single is not None:
        return single
    msg = email.message_from_bytes(raw, policy=MemoPolicy())
    assert isinstance(msg, EmailMessage)  # noqa: S101 - guaranteed by EmailPolicy
    return msg


def _parse_single_part(raw: bytes) -> EmailMessage | None:
    """The message the full parse would give, or None when this shortcut does not apply.

    The standard parser reads header lines up to the first empty line, then, for a type that
    is neither ``multipart`` nor ``message``, makes the whole rest of the input the payload,
    octet for octet (``FeedParser._parsegen``). So when the header block ends at the first
    ``CRLF CRLF`` (no bare CR or LF before it, which the parser would take as line ends, and
    no line that ends the headers earlier, which would leave something in the payload of the
    parsed header block), parsing the header block alone and setting the rest as the payload
    yields the same message, at a fraction of the cost (the body of a 10 KB message was about
    140 parser steps). Anything else: None, and the caller parses everything.
    """
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = raw[:end + 4]
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        return None
    policy = MemoPolicy()
    msg = _plain_header_block(head, policy)
    if msg is None:
        parsed = email.message_from_bytes(head, policy=policy)
        assert isinstance(parsed, EmailMessage)  # noqa: S101 - guaranteed by EmailPolicy
        if parsed.get_payload() != "":
            return None
        msg = parsed
    if msg.get_content_maintype() in ("multipart", "message"):
        return None
    # As the parser does (BytesParser decodes the input as ASCII with surrogateescape).
    msg.set_payload(raw[end + 4:].decode("ascii", "surrogateescape"))
    return msg


#: A header field's first line as the parser recognises it (``email.feedparser.headerRE``'s
#: field branch: printable ASCII other than ``:``, at least one, then ``:``).
_FIELD_LINE = re.compile(r"[\041-\071\073-\176]+:")


def _plain_header_block(head: bytes, policy: MemoPolicy) -> EmailMessage | None:
    """The message the parser builds from ``head`` (a header block ending with its empty
    line, CRLF line ends only), built directly, or None when the block is not plain.

    The standard parser spends ~70 µs on a ten-field block (a generator per message, a line
    buffer, a regular expression per line). For a plain block — every line a field
    (``name:`` …, with a name of printable ASCII) or the continuation of the field above it
    (starting with a space or tab, RFC 5322 §2.2.3), no ``From `` envelope line — it does
    exactly this (``FeedParser._parsegen`` / ``_parse_headers``): a message from the policy's
    factory, each field given to ``set_raw`` as ``policy.header_source_parse`` makes it from
    its lines (line ends included), and an empty payload. Anything else (a line that is not a
    field, which ends the block with a defect; a leading continuation; a ``From `` line) is
    left to the parser (``tests/unit/mime/test_mime_single_part.py`` compares the two).
    """
    text = head[:-2].decode("ascii", "surrogateescape")
    lines = text.split("\r\n")[:-1]  # each field line, its CRLF removed
    if not lines or lines[0][:1] in (" ", "\t"):
        return None
    fields: list[list[str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            fields[-1].append(line + "\r\n")
        elif _FIELD_LINE.match(line) is None:  # (a "From " line has a blank before any ":")
            return None
        else:
            fields.append([line + "\r\n"])
    factory = policy.message_factory
    if factory is None:
        return None
    msg = factory(policy=policy)
    assert isinstance(msg, EmailMessage)  # noqa: S101 - EmailPolicy's factory
    for source in fields:
        msg.set_raw(*policy.header_source_parse(source))
    msg.set_payload("")
    return msg
