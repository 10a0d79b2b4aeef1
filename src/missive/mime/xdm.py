"""IHE XDM zip attachments: recognise them and list their documents (SPEC §4, IHE ITI-32).

An XDM package (IHE ITI TF-1 §16, ITI TF-3 §4.2.3 metadata) is a ZIP whose
``IHE_XDM/<SUBSET>/METADATA.XML`` (usually ``SUBSET01``) holds an ebRIM
``SubmitObjectsRequest`` (``urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0``; older packages use
the ebRS 2.1 namespaces, which we accept by matching local names only). Each document is an
``rim:ExtrinsicObject`` with:

- ``mimeType`` attribute; ``rim:Name/rim:LocalizedString/@value`` the title;
- ``rim:Slot name="URI"`` the document's path relative to the subset directory (XDS 2.1 split
  long URIs into ``"1|first part"``, ``"2|…"`` values, reassembled here);
- slots ``creationTime`` (HL7 DTM, e.g. ``20240102103000``), ``size``, ``hash``,
  ``languageCode``;
- ``rim:Classification`` elements, told apart by ``classificationScheme``: classCode
  ``urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a``, typeCode
  ``urn:uuid:f0306f51-975f-434e-a61c-c59651d33983``, formatCode
  ``urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d`` (code in ``nodeRepresentation``, display
  name in ``rim:Name``);
- ``rim:ExternalIdentifier`` with scheme ``urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab``:
  the document uniqueId.

Defences: the metadata is parsed with ``defusedxml`` with DTDs forbidden (no entity expansion,
no external entities); the metadata file and the number of documents are bounded; nothing is
decompressed beyond the metadata (no zip bomb can cost more than ``max_metadata`` bytes);
document paths that escape the subset directory (``../``) are not resolved. Titles come from
the sender: callers escape them when displaying (the webmail's templates do).
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree

from missive.mime.parts import PartInfo

__all__ = [
    "CLASS_CODE_SCHEME",
    "FORMAT_CODE_SCHEME",
    "TYPE_CODE_SCHEME",
    "UNIQUE_ID_SCHEME",
    "XdmDocument",
    "XdmError",
    "is_xdm",
    "is_xdm_member_list",
    "read_xdm",
]

CLASS_CODE_SCHEME = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
TYPE_CODE_SCHEME = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
FORMAT_CODE_SCHEME = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
UNIQUE_ID_SCHEME = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"

MAX_METADATA = 2 * 1024 * 1024
MAX_DOCUMENTS = 500
MAX_SUBSETS = 20
_MAX_TEXT = 1000


class XdmError(ValueError):
    """The ZIP is not a readable XDM package; the message says why (no content quoted)."""


@dataclass(frozen=True)
class XdmDocument:
    """One document listed in an XDM package's metadata."""

    subset: str
    entry_id: str | None
    title: str | None
    mime_type: str | None
    uri: str | None
    path: str | None  # member path in the ZIP, None when the URI is missing or escapes
    present: bool  # the member exists in the ZIP
    creation_time: str | None
    class_code: str | None
    class_display: str | None
    type_code: str | None
    type_display: str | None
    format_code: str | None
    unique_id: str | None
    size: int | None
    hash: str | None
    language_code: str | None


def _metadata_members(names: Iterable[str]) -> list[tuple[str, str]]:
    """``(subset, member name)`` for every ``IHE_XDM/<subset>/METADATA.XML`` (any case)."""
    found = []
    for name in names:
        parts = name.split("/")
        if len(parts) == 3 and parts[0].upper() == "IHE_XDM" and parts[2].upper() == "METADATA.XML":
            if parts[1]:
                found.append((parts[1], name))
    return sorted(found)


def is_xdm_member_list(names: Iterable[str]) -> bool:
    """True when ZIP member names include an ``IHE_XDM/<subset>/METADATA.XML``."""
    return bool(_metadata_members(names))


def is_xdm(part: PartInfo) -> bool:
    """True when a listed MIME part is a ZIP laid out as an IHE XDM package."""
    if part.magic != "zip" or part.zip_members is None:
        return False
    return is_xdm_member_list(m.name for m in part.zip_members)


def _local(tag: Any) -> str:
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def _children(elem: Element, name: str) -> list[Element]:
    return [c for c in elem if _local(c.tag) == name]


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text[:_MAX_TEXT] or None


def _name(elem: Element) -> str | None:
    for name in _children(elem, "Name"):
        for ls in _children(name, "LocalizedString"):
            value = _clip(ls.get("value"))
            if value:
                return value
    return None


def _slots(elem: Element) -> dict[str, list[str]]:
    slots: dict[str, list[str]] = {}
    for slot in _children(elem, "Slot"):
        key = slot.get("name")
        if not key:
            continue
        values = []
        for vl in _children(slot, "ValueList"):
            for v in _children(vl, "Value"):
                if v.text is not None:
                    values.append(v.text.strip()[:_MAX_TEXT])
        slots.setdefault(key, values)
    return slots


def _uri(values: list[str]) -> str | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0] or None
    # XDS 2.1 long URI: "1|part", "2|part", … in any order.
    pieces: list[tuple[int, str]] = []
    for v in values:
        num, sep, rest = v.partition("|")
        if not sep or not num.isdigit():
            return values[0] or None
        pieces.append((int(num), rest))
    return "".join(rest for _, rest in sorted(pieces)) or None


def _resolve(subset_dir: str, uri: str | None) -> str | None:
    if not uri or "\\" in uri or uri.startswith("/") or ":" in uri:
        return None
    path = posixpath.normpath(posixpath.join(subset_dir, uri))
    if not path.startswith(subset_dir + "/"):
        return None
    return path


def _first(values: list[str] | None) -> str | None:
    return values[0] if values else None


def _int(values: list[str] | None) -> int | None:
    if values and values[0].isdigit() and len(values[0]) < 19:
        return int(values[0])
    return None


def _documents(root: Element, subset: str, subset_dir: str, names: set[str]) -> list[XdmDocument]:
    docs: list[XdmDocument] = []
    upper_names = {n.upper(): n for n in names}
    for eo in root.iter():
        if _local(eo.tag) != "ExtrinsicObject":
            continue
        if len(docs) >= MAX_DOCUMENTS:
            raise XdmError(f"XDM metadata lists more than {MAX_DOCUMENTS} documents")
        slots = _slots(eo)
        codes: dict[str, tuple[str | None, str | None]] = {}
        for cl in _children(eo, "Classification"):
            scheme = cl.get("classificationScheme")
            if scheme and scheme not in codes:
                codes[scheme] = (_clip(cl.get("nodeRepresentation")), _name(cl))
        unique_id = None
        for ei in _children(eo, "ExternalIdentifier"):
            if ei.get("identificationScheme") == UNIQUE_ID_SCHEME:
                unique_id = _clip(ei.get("value"))
        uri = _uri(slots.get("URI", []))
        path = _resolve(subset_dir, uri)
        # Zip member names are case-sensitive, but producers disagree on case: match either.
        member = None
        if path is not None:
            member = path if path in names else upper_names.get(path.upper())
        docs.append(
            XdmDocument(
                subset=subset,
                entry_id=_clip(eo.get("id")),
                title=_name(eo),
                mime_type=_clip(eo.get("mimeType")),
                uri=uri,
                path=member or path,
                present=member is not None,
                creation_time=_first(slots.get("creationTime")),
                class_code=codes.get(CLASS_CODE_SCHEME, (None, None))[0],
                class_display=codes.get(CLASS_CODE_SCHEME, (None, None))[1],
                type_code=codes.get(TYPE_CODE_SCHEME, (None, None))[0],
                type_display=codes.get(TYPE_CODE_SCHEME, (None, None))[1],
                format_code=codes.get(FORMAT_CODE_SCHEME, (None, None))[0],
                unique_id=unique_id,
                size=_int(slots.get("size")),
                hash=_first(slots.get("hash")),
                language_code=_first(slots.get("languageCode")),
            )
        )
    return docs


def read_xdm(zip_bytes: bytes, *, max_metadata: int = MAX_METADATA) -> list[XdmDocument]:
    """List the documents of an XDM package, in metadata order, subset by subset.

    Raises :class:`XdmError` when the bytes are not a ZIP, have no ``IHE_XDM/*/METADATA.XML``,
    or the metadata is too large, not well-formed, or uses a DTD/entities.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(zip_bytes))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise XdmError(f"not a ZIP archive ({type(exc).__name__})") from None
    with zf:
        try:
            infos = {i.filename: i for i in zf.infolist()}
        except Exception as exc:  # noqa: BLE001 - corrupt central directory
            raise XdmError(f"ZIP archive cannot be read ({type(exc).__name__})") from None
        metadata = _metadata_members(infos)
        if not metadata:
            raise XdmError("ZIP archive has no IHE_XDM/<subset>/METADATA.XML")
        if len(metadata) > MAX_SUBSETS:
            raise XdmError(f"XDM package has more than {MAX_SUBSETS} subsets")
        documents: list[XdmDocument] = []
        names = set(infos)
        for subset, member in metadata:
            info = infos[member]
            if info.flag_bits & 0x1:
                raise XdmError(f"{member} is encrypted")
            if info.file_size > max_metadata:
                raise XdmError(f"{member} is larger than {max_metadata} bytes")
            try:
                with zf.open(info) as fh:
                    data = fh.read(max_metadata + 1)
            except Exception as exc:  # noqa: BLE001 - bad CRC, unsupported compression, truncated
                raise XdmError(f"{member} cannot be read ({type(exc).__name__})") from None
            if len(data) > max_metadata:
                raise XdmError(f"{member} is larger than {max_metadata} bytes")
            try:
                root = defusedxml.ElementTree.fromstring(data, forbid_dtd=True)
            except defusedxml.DefusedXmlException as exc:
                raise XdmError(
                    f"{member} uses forbidden XML features ({type(exc).__name__})"
                ) from None
            except (ParseError, ValueError, UnicodeError) as exc:
                raise XdmError(f"{member} is not well-formed XML ({type(exc).__name__})") from None
            subset_dir = member.rsplit("/", 1)[0]
            documents.extend(_documents(root, subset, subset_dir, names))
            if len(documents) > MAX_DOCUMENTS:
                raise XdmError(f"XDM metadata lists more than {MAX_DOCUMENTS} documents")
        return documents
