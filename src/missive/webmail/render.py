"""Turning a stored message into what the message page shows (SPEC §5 message view).

- Text first: the first ``text/plain`` body part is shown as text; only when there is none is the
  ``text/html`` part shown, after sanitising with nh3 (the ammonia allowlist sanitiser): a short
  list of structural tags, no attributes but ``href`` and table spans, no ``style``, no images,
  no forms, no scripts, comments stripped. Remote content therefore cannot load (the page's CSP
  would block it anyway: ``img-src 'self'``).
- Links are not followed directly: each ``href`` is replaced by ``…/lien/<n>``, a warning page
  that shows the real destination (so no message content ends up in a URL or a Referer).
- Attachments are the leaf parts with a file name or an ``attachment`` disposition, numbered by
  IMAP section (``mime.parts``); IHE XDM packages are opened to list their documents' titles.

Nothing here logs; malformed MIME degrades to what can be read, never to an error page.
"""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass, field
from email.message import EmailMessage, Message

import nh3

from missive.mime.parts import PartInfo, get_part_payload, list_parts
from missive.mime.xdm import XdmDocument, XdmError, read_xdm

ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "dd", "div", "dl", "dt", "em",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "li", "ol", "p", "pre", "q", "s", "small",
    "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u",
    "ul",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "td": {"colspan", "rowspan"},
                      "th": {"colspan", "rowspan", "scope"}}
#: Tags removed together with their content (ammonia's default set plus a few).
DROP_WITH_CONTENT = {"script", "style", "title", "head", "template", "noscript", "svg", "math",
                     "iframe", "object", "textarea", "select"}
SAFE_LINK_SCHEMES = ("http://", "https://", "mailto:")
_REMOTE_HINT = re.compile(rb"<img|url\(|<link|<iframe|<object|<embed|background=", re.I)


@dataclass
class Attachment:
    index: str
    filename: str
    content_type: str
    size: int
    is_pdf: bool
    xdm_documents: list[XdmDocument] = field(default_factory=list)
    xdm_error: str | None = None


@dataclass
class RenderedMessage:
    text: str | None
    html: str | None
    links: list[str]
    remote_blocked: bool
    attachments: list[Attachment]


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)  # noqa: S101 - guaranteed by policy.default
    return msg


def _part_text(part: Message) -> str | None:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        return content if isinstance(content, str) else None
    except Exception:  # noqa: BLE001 - unknown charset, broken transfer encoding
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None


def _bodies(msg: Message) -> tuple[str | None, str | None]:
    text: str | None = None
    html: str | None = None
    try:
        for part in msg.walk():
            if part.is_multipart():
                continue
            if part.get_content_disposition() == "attachment" or part.get_filename():
                continue
            ctype = part.get_content_type()
            if ctype == "text/plain" and text is None:
                text = _part_text(part)
            elif ctype == "text/html" and html is None:
                html = _part_text(part)
    except Exception:  # noqa: BLE001, S110 - malformed structure: show what was found
        pass
    return text, html


def sanitise_html(html: str, link_base: str) -> tuple[str, list[str]]:
    """Sanitised HTML whose links point at ``link_base/<n>``; returns (html, real targets)."""
    links: list[str] = []

    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        if tag == "a" and attr == "href":
            target = value.strip()
            if not target.lower().startswith(SAFE_LINK_SCHEMES):
                return None
            links.append(target)
            return f"{link_base}/{len(links) - 1}"
        return value

    cleaned = nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES,
                        clean_content_tags=DROP_WITH_CONTENT, strip_comments=True,
                        link_rel="noopener noreferrer nofollow",
                        url_schemes={"http", "https", "mailto"},
                        attribute_filter=attribute_filter)
    return cleaned, links


def attachments(raw: bytes, parts: list[PartInfo] | None = None) -> list[Attachment]:
    out: list[Attachment] = []
    for p in parts if parts is not None else list_parts(raw):
        if not (p.filename or p.disposition == "attachment"):
            continue
        name = safe_filename(p.filename or f"piece-jointe-{p.index}")
        is_pdf = p.magic == "pdf" or (p.content_type == "application/pdf" and p.magic is None)
        att = Attachment(p.index, name, p.content_type, p.size, is_pdf)
        if p.zip_members is not None and any(
                m.name.upper().endswith("METADATA.XML") for m in p.zip_members):
            payload = get_part_payload(raw, p.index)
            if payload is not None:
                try:
                    att.xdm_documents = read_xdm(payload)
                except XdmError as exc:
                    att.xdm_error = str(exc)
        out.append(att)
    return out


def render(raw: bytes, link_base: str) -> RenderedMessage:
    msg = parse(raw)
    text, html = _bodies(msg)
    links: list[str] = []
    safe_html: str | None = None
    if text is None and html is not None:
        safe_html, links = sanitise_html(html, link_base)
    return RenderedMessage(text=text, html=safe_html, links=links,
                           remote_blocked=bool(_REMOTE_HINT.search(raw)),
                           attachments=attachments(raw))


def link_target(raw: bytes, n: int) -> str | None:
    """The real destination of the ``n``-th link of the message's HTML body."""
    msg = parse(raw)
    text, html = _bodies(msg)
    if html is None or text is not None:
        return None
    _, links = sanitise_html(html, "")
    return links[n] if 0 <= n < len(links) else None


_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f\"\\/:*?<>|;]+")


def safe_filename(name: str) -> str:
    """A file name without path, control or quoting characters (RFC 6266 §4.3 advice)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE_NAME.sub("_", base).strip(" .")[:150]
    return cleaned if any(ch.isalnum() for ch in cleaned) else "piece-jointe"


def content_disposition(kind: str, filename: str) -> str:
    """``attachment``/``inline`` with an ASCII fallback and the RFC 5987 UTF-8 form."""
    from urllib.parse import quote

    fallback = filename.encode("ascii", "replace").decode().replace("?", "_")
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
