"""Content: P8 (size limit) and P9 (attachment types; executables, scripts, macros refused)."""

from __future__ import annotations

from collections.abc import Sequence

from missive.mime.parts import TOO_MANY_PARTS_TYPE, PartInfo, ZipMember, file_extension
from missive.mime.xdm import is_xdm_member_list
from missive.policy.codes import NOT_AUTHORISED, TOO_BIG
from missive.policy.codes import refuse as _refuse

# --- P8 size -------------------------------------------------------------------------------------


def check_size(size: int, limit: int) -> None:
    """P8: a message over ``limit`` octets is refused with ``552 5.3.4`` (RFC 1870 §6)."""
    if limit > 0 and size > limit:
        raise _refuse(
            TOO_BIG,
            f"Message size exceeds fixed maximum message size ({limit} bytes)",
            "P8",
            f"message of {size} bytes over limit {limit}",
        )


def check_declared_size(declared: int | None, limit: int) -> None:
    """P8 at MAIL FROM: the ``SIZE=`` parameter (RFC 1870 §6) already over the limit."""
    if declared is not None:
        check_size(declared, limit)


# --- P9 attachments ------------------------------------------------------------------------------

DEFAULT_ATTACHMENT_TYPES: frozenset[str] = frozenset(
    {
        # message bodies and notifications
        "text/plain",
        "text/html",
        "message/delivery-status",
        "message/global-delivery-status",
        "message/disposition-notification",
        "message/global-disposition-notification",
        "text/rfc822-headers",
        "message/global-headers",
        "application/pkcs7-signature",  # S/MIME signatures (RFC 8551)
        "application/x-pkcs7-signature",
        # documents
        "application/pdf",
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/tiff",
        # structured documents: CDA (XML), HL7 v2, HPRIM, DICOM
        "text/xml",
        "application/xml",
        "application/hl7-v3+xml",
        "application/hl7-cda+xml",
        "application/hl7-v2",
        "x-application/hl7-v2+er7",
        "application/x-hl7",
        "text/x-hprim",
        "application/x-hprim",
        "application/dicom",
        # IHE XDM packages (and ZIPs, inspected one level)
        "application/zip",
        "application/x-zip-compressed",
    }
)

FORBIDDEN_EXTENSIONS: frozenset[str] = frozenset(
    {
        # executables and installers
        "exe", "com", "scr", "pif", "cpl", "dll", "sys", "msi", "msp", "mst", "msix", "appx",
        "app", "apk", "dmg", "pkg", "deb", "rpm", "jar", "class", "elf", "run",
        # scripts
        "bat", "cmd", "js", "jse", "mjs", "vbs", "vbe", "vb", "wsf", "wsh", "wsc", "ws", "ps1",
        "psm1", "psd1", "ps1xml", "sh", "bash", "zsh", "csh", "ksh", "py", "pyw", "pl", "rb",
        "php", "hta", "reg", "inf", "scf", "lnk", "url", "desktop", "applescript", "scpt",
        "command", "msc", "gadget", "chm",
        # macro-enabled Office documents and add-ins
        "docm", "dotm", "xlsm", "xltm", "xlam", "xll", "pptm", "potm", "ppam", "ppsm", "sldm",
        # disk images (used to smuggle executables past filters)
        "iso", "img", "vhd", "vhdx",
    }
)  # fmt: skip

FORBIDDEN_MAGIC: frozenset[str] = frozenset(
    {"pe", "elf", "macho", "script-shebang", "ole-macro", "lnk", "cab"}
)

_FORBIDDEN_TYPE_MARKERS = (
    "x-msdownload",
    "x-msdos-program",
    "x-executable",
    "x-sharedlib",
    "x-mach-binary",
    "x-elf",
    "x-sh",
    "x-csh",
    "x-shellscript",
    "javascript",
    "ecmascript",
    "x-bat",
    "x-msi",
    "x-ms-installer",
    "java-archive",
    "x-java",
    "vbscript",
    "x-python",
    "x-perl",
    "x-php",
    "powershell",
    "hta",
    "macroenabled",
    "x-ms-shortcut",
    "x-apple-diskimage",
    "x-iso9660-image",
)

_GENERIC_TYPES = frozenset(
    {"application/octet-stream", "application/unknown", "binary/octet-stream"}
)

# Real type sniffed → MIME type used when the declared type is generic or to compare with it.
_MAGIC_TYPES = {
    "pdf": "application/pdf",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "tiff": "image/tiff",
    "bmp": "image/bmp",
    "webp": "image/webp",
    "zip": "application/zip",
    "gzip": "application/gzip",
    "rar": "application/vnd.rar",
    "7z": "application/x-7z-compressed",
    "ole": "application/x-ole-storage",
    "rtf": "application/rtf",
    "dicom": "application/dicom",
    "xml": "application/xml",
    "hl7": "application/hl7-v2",
    "text": "text/plain",
}
# Binary real types whose mismatch with the declared type matters (text-like ones do not: a
# CDA is text, an HPRIM file is text, whatever they are declared as).
_BINARY_MAGIC = frozenset(
    {"pdf", "png", "jpeg", "gif", "tiff", "bmp", "webp", "zip", "gzip", "rar", "7z", "ole",
     "dicom"}
)  # fmt: skip
# Declared formats that are ZIP or OLE containers underneath.
_ZIP_BASED_SUFFIXES = (".openxmlformats-officedocument.", "opendocument", "epub", "zip")
_OLE_BASED = frozenset(
    {"application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
     "application/vnd.ms-outlook", "application/x-msg"}
)  # fmt: skip
# Nested archives inside a ZIP are refused (they cannot be inspected one level deep), except
# Office Open XML documents, which cannot carry macros under these extensions.
_NESTED_ZIP_OK = frozenset({"docx", "xlsx", "pptx"})
_MAX_NAME_SHOWN = 60


def _shown_name(part: PartInfo) -> str:
    """How a part is named in a public text: its file name, sanitised and shortened."""
    if part.filename:
        name = "".join(ch if ch.isprintable() else "?" for ch in part.filename)
        if len(name) > _MAX_NAME_SHOWN:
            name = name[: _MAX_NAME_SHOWN - 1] + "…"
        return f'"{name}"'
    return f"part {part.index}"


def _type_allowed(content_type: str, allowlist: frozenset[str]) -> bool:
    if content_type in allowlist:
        return True
    major = content_type.split("/", 1)[0]
    return f"{major}/*" in allowlist


def _forbidden_type(content_type: str) -> bool:
    return any(marker in content_type for marker in _FORBIDDEN_TYPE_MARKERS)


def _container_compatible(declared: str, magic: str) -> bool:
    if magic == "zip":
        return any(s in declared for s in _ZIP_BASED_SUFFIXES)
    if magic == "ole":
        return declared in _OLE_BASED
    return False


def _member_problem(member: ZipMember) -> str | None:
    ext = file_extension(member.name)
    if member.encrypted:
        return "encrypted archive member cannot be inspected"
    if member.name.rsplit("/", 1)[-1].lower() == "vbaproject.bin":
        return "archive is a macro-enabled document"
    if ext in FORBIDDEN_EXTENSIONS:
        return "archive contains an executable, script or macro file"
    if member.magic in FORBIDDEN_MAGIC:
        return "archive contains executable content"
    if member.magic in ("zip", "rar", "7z", "gzip") and ext not in _NESTED_ZIP_OK:
        return "archive contains another archive, which cannot be inspected"
    return None


def _part_problem(part: PartInfo, allowlist: frozenset[str]) -> tuple[str, str] | None:
    """``(public reason, cause)`` when the part must be refused, else None."""
    declared = part.content_type.lower()
    if declared == TOO_MANY_PARTS_TYPE:
        return "too many MIME parts", "part count limit"
    if declared.startswith("multipart/"):
        return "message structure is nested too deeply", "nesting depth limit"
    if declared in ("message/rfc822", "message/global"):
        return "attached message cannot be read", "empty or too deeply nested message/rfc822"
    if part.magic in FORBIDDEN_MAGIC:
        return "executable or macro content is not allowed", f"real type {part.magic}"
    forbidden_ext = sorted(part.extensions & FORBIDDEN_EXTENSIONS)
    if forbidden_ext:
        return "executable, script or macro files are not allowed", f"extension .{forbidden_ext[0]}"
    if _forbidden_type(declared):
        return "executable, script or macro files are not allowed", f"declared type {declared}"
    real = _MAGIC_TYPES.get(part.magic or "")
    if declared in _GENERIC_TYPES:
        if real is None:
            return "file type could not be determined", "generic type, unknown content"
        effective = real
    else:
        effective = declared
    # Body parts without a name are always acceptable as text.
    if not _type_allowed(effective, allowlist) and not (
        effective in ("text/plain", "text/html") and not part.filename
    ):
        return f"file type {effective} is not allowed", f"type {effective} not in allowlist"
    if (
        part.magic in _BINARY_MAGIC
        and real is not None
        and real != effective
        and not _type_allowed(real, allowlist)
        and not _container_compatible(declared, part.magic or "")
    ):
        return "content does not match its declared type", f"declared {declared}, real {real}"
    if part.magic == "zip":
        if part.zip_members is None:
            return "archive cannot be inspected", part.zip_error or "unreadable ZIP"
        xdm = is_xdm_member_list(m.name for m in part.zip_members)
        for member in part.zip_members:
            problem = _member_problem(member)
            if problem:
                return problem, f"zip member problem ({'XDM' if xdm else 'ZIP'})"
    return None


def check_attachments(
    parts: Sequence[PartInfo], allowlist: frozenset[str] = DEFAULT_ATTACHMENT_TYPES
) -> None:
    """P9: refuse a message with a part that is not allowed, naming the part.

    For each leaf part (from :func:`missive.mime.parts.list_parts`), in order:

    1. executables, scripts and macro documents are refused whatever their declared type: by
       real type (PE, ELF, Mach-O, shebang scripts, OLE with a VBA project, Windows shortcuts,
       CAB), by file extension (:data:`FORBIDDEN_EXTENSIONS`) or by declared type;
    2. the declared type (or, when it is ``application/octet-stream``, the sniffed real type)
       must be in ``allowlist`` (entries may be ``major/*``); unnamed ``text/plain`` and
       ``text/html`` bodies are always accepted;
    3. a binary real type that differs from the declared one must itself be allowed, unless the
       declared format is a container of that type (Office Open XML/ODF are ZIPs, legacy Office
       files are OLE);
    4. ZIP archives (IHE XDM packages included) are inspected one level: encrypted members,
       forbidden members (by extension or real type), VBA projects and nested archives
       (except ``.docx``/``.xlsx``/``.pptx``) are refused; an unreadable ZIP is refused.

    Refusal: ``550 5.7.1`` "Attachment "name" refused: reason" (file name sanitised and
    shortened, or the part's section number; never content).
    """
    for part in parts:
        problem = _part_problem(part, allowlist)
        if problem is not None:
            reason, cause = problem
            raise _refuse(
                NOT_AUTHORISED,
                f"Attachment {_shown_name(part)} refused: {reason}",
                "P9",
                f"part {part.index}: {cause}",
            )
