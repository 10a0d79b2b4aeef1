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

The memo lives in the policy instance made for one parse (:func:`parse_message`): nothing is
shared between messages, and it goes away with the message.
"""

from __future__ import annotations

import email
import functools
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from email.policy import EmailPolicy
from typing import Any

__all__ = ["MemoPolicy", "parse_message"]


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
            found = memo[key] = super().header_fetch_parse(name, value)
        return found


def parse_message(raw: bytes) -> EmailMessage:
    """Parse ``raw`` (RFC 5322 / MIME) as ``email.policy.default`` does, with the header memo."""
    msg = email.message_from_bytes(raw, policy=MemoPolicy())
    assert isinstance(msg, EmailMessage)  # noqa: S101 - guaranteed by EmailPolicy
    return msg
