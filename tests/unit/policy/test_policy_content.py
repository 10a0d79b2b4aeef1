"""P8 (size) and P9 (attachments): real MIME messages through list_parts, exact codes."""

from __future__ import annotations

import io
import zipfile
from email.message import EmailMessage

import pytest

from missive.errors import PolicyRefusal
from missive.mime.parts import PartInfo, ZipMember, list_parts
from missive.policy import (
    DEFAULT_ATTACHMENT_TYPES,
    check_attachments,
    check_declared_size,
    check_size,
)

MIB = 1024 * 1024
PDF = b"%PDF-1.7\n" + b"1 0 obj\n" * 20
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
PE = b"MZ\x90\x00" + b"\x00" * 56 + (64).to_bytes(4, "little") + b"PE\x00\x00" + b"\x00" * 100
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 50
OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 200
OLE_MACRO = OLE + "_VBA_PROJECT".encode("utf-16-le") + b"\x00" * 50
CDA = b"<?xml version='1.0'?><ClinicalDocument xmlns='urn:hl7-org:v3'/>"
DICOM = b"\x00" * 128 + b"DICM" + b"\x02\x00" * 20
HPRIM = b"H|~^\\&|||Labo|||||||P|H2.2|20240102\r\nP|1||||DUPONT^MARIE\r\n"


# --- P8 ----------------------------------------------------------------------------------------


def test_p8_size() -> None:
    check_size(20 * MIB, 20 * MIB)
    check_declared_size(None, 20 * MIB)
    check_declared_size(1000, 20 * MIB)
    for fn in (check_size, check_declared_size):
        with pytest.raises(PolicyRefusal) as info:
            fn(20 * MIB + 1, 20 * MIB)
        assert (info.value.code, info.value.enhanced, info.value.rule) == (552, "5.3.4", "P8")


# --- P9 ----------------------------------------------------------------------------------------


def _zip(members: dict[str, bytes], encrypt_flag: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    out = bytearray(buf.getvalue())
    if encrypt_flag:
        # Set the "encrypted" general-purpose flag (APPNOTE 4.4.4) in the local and central
        # headers, as a password-protected archive has (zipfile cannot write one).
        for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            pos = out.find(sig)
            while pos >= 0:
                out[pos + offset] |= 0x1
                pos = out.find(sig, pos + 4)
    return bytes(out)


XDM = _zip(
    {
        "INDEX.HTM": b"<html></html>",
        "README.TXT": b"readme",
        "IHE_XDM/SUBSET01/METADATA.XML": b"<?xml version='1.0'?><x/>",
        "IHE_XDM/SUBSET01/DOC0001.XML": CDA,
    }
)


def _message(*attachments: tuple[bytes, str, str | None]) -> bytes:
    msg = EmailMessage()
    msg["From"] = "dr@example.org"
    msg["Subject"] = "Compte rendu"
    msg.set_content("Bonjour")
    msg.add_alternative("<p>Bonjour</p>", subtype="html")
    for data, ctype, filename in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


ACCEPTED = [
    (PDF, "application/pdf", "cr.pdf"),
    (PDF, "application/octet-stream", "cr.pdf"),  # generic type, judged by content
    (PNG, "image/png", "radio.png"),
    (CDA, "text/xml", "cda.xml"),
    (CDA, "application/octet-stream", "cda.xml"),
    (DICOM, "application/dicom", "image.dcm"),
    (HPRIM, "text/plain", "resultats.hpr"),
    (HPRIM, "application/octet-stream", "resultats.hpr"),
    (XDM, "application/zip", "IHE_XDM.ZIP"),
    (_zip({"a.pdf": PDF, "b.png": PNG}), "application/zip", "docs.zip"),
    (_zip({"lettre.docx": _zip({"word/document.xml": b"<w/>"})}), "application/zip", "d.zip"),
]


@pytest.mark.parametrize(("data", "ctype", "filename"), ACCEPTED)
def test_p9_accepted(data: bytes, ctype: str, filename: str | None) -> None:
    check_attachments(list_parts(_message((data, ctype, filename))))


REFUSED = [
    (PE, "application/octet-stream", "setup.exe", "executable"),
    (PE, "application/pdf", "facture.pdf", "executable"),  # lies about its type
    (ELF, "application/pdf", "cr.pdf", "executable"),
    (b"#!/bin/sh\necho\n", "text/plain", "notes.txt", "executable"),
    (b"echo off\r\n", "text/plain", "run.bat", "executable"),
    (b"WScript.Echo 1", "text/plain", "x.vbs", "executable"),
    (b"alert(1)", "application/javascript", "x.txt", "executable"),
    (b"Write-Host 1", "text/plain", "x.PS1", "executable"),
    (b"x", "application/vnd.ms-word.document.macroenabled.12", "a.doc", "executable"),
    (_zip({"[Content_Types].xml": b"<x/>"}), "application/zip", "lettre.docm", "executable"),
    (OLE_MACRO, "application/msword", "lettre.doc", "macro"),
    (PDF, "application/x-msdownload", "x.pdf", "executable"),
    (b"\x00\x01\x02binary", "application/octet-stream", "blob", "could not be determined"),
    (b"{}", "application/json", "data.json", "not allowed"),
    (OLE, "application/msword", "lettre.doc", "not allowed"),  # allowed only if configured
    (_zip({"run.exe": b"hello"}), "application/zip", "docs.zip", "executable"),
    (_zip({"a.pdf": PE}), "application/zip", "docs.zip", "executable content"),
    (_zip({"inner.zip": _zip({"a.exe": PE})}), "application/zip", "docs.zip", "another archive"),
    (_zip({"word/vbaProject.bin": OLE}), "application/zip", "d.zip", "macro-enabled"),
    (_zip({"lettre.doc": OLE_MACRO}), "application/zip", "d.zip", "executable content"),
    (_zip({"a.pdf": PDF}, encrypt_flag=True), "application/zip", "secret.zip", "encrypted"),
    (_zip({"x": PE, "IHE_XDM/SUBSET01/METADATA.XML": b"<x/>"}), "application/zip", "IHE_XDM.ZIP",
     "executable"),
    (b"PK\x03\x04corrupt", "application/zip", "broken.zip", "cannot be inspected"),
    (b"\x1f\x8b\x08\x00" + b"\x00" * 20, "image/png", "photo.png", "does not match"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "ctype", "filename", "reason"), REFUSED)
def test_p9_refused(data: bytes, ctype: str, filename: str, reason: str) -> None:
    parts = list_parts(_message((PDF, "application/pdf", "ok.pdf"), (data, ctype, filename)))
    with pytest.raises(PolicyRefusal) as info:
        check_attachments(parts)
    err = info.value
    assert (err.code, err.enhanced, err.rule) == (550, "5.7.1", "P9")
    assert f'"{filename}"' in err.public_text
    assert reason in err.public_text
    assert "part 3" in err.cause  # the offending part, by section number


def test_p9_unnamed_part_named_by_section() -> None:
    parts = [PartInfo("2", "application/octet-stream", None, 10, "attachment", "pe")]
    with pytest.raises(PolicyRefusal) as info:
        check_attachments(parts)
    assert "part 2" in info.value.public_text


def test_p9_filename_sanitised_and_shortened() -> None:
    name = "a\r\nMAIL FROM:<x>" + "b" * 200 + ".exe"
    parts = [PartInfo("2", "application/pdf", name, 10, "attachment", "pdf")]
    with pytest.raises(PolicyRefusal) as info:
        check_attachments(parts)
    text = info.value.public_text
    assert "\r" not in text and "\n" not in text
    assert len(text) < 150


def test_p9_allowlist_is_configurable() -> None:
    parts = list_parts(_message((OLE, "application/msword", "lettre.doc")))
    with pytest.raises(PolicyRefusal):
        check_attachments(parts)
    check_attachments(parts, DEFAULT_ATTACHMENT_TYPES | {"application/msword"})
    # Wildcards.
    parts = list_parts(_message((b"BM" + b"\x00" * 40, "image/bmp", "x.bmp")))
    with pytest.raises(PolicyRefusal):
        check_attachments(parts)
    check_attachments(parts, DEFAULT_ATTACHMENT_TYPES | {"image/*"})
    # Removing PDF refuses PDFs.
    parts = list_parts(_message((PDF, "application/pdf", "cr.pdf")))
    with pytest.raises(PolicyRefusal):
        check_attachments(parts, DEFAULT_ATTACHMENT_TYPES - {"application/pdf"})


def test_p9_executable_refused_even_if_allowlisted() -> None:
    parts = list_parts(_message((PE, "application/x-msdownload", "a.exe")))
    with pytest.raises(PolicyRefusal):
        check_attachments(parts, DEFAULT_ATTACHMENT_TYPES | {"application/x-msdownload"})


def test_p9_hidden_in_forwarded_message() -> None:
    inner = EmailMessage()
    inner["Subject"] = "fwd"
    inner.set_content("see attached")
    inner.add_attachment(ELF, maintype="application", subtype="pdf", filename="cr.pdf")
    outer = EmailMessage()
    outer.set_content("transfert")
    outer.add_attachment(inner)
    with pytest.raises(PolicyRefusal) as info:
        check_attachments(list_parts(outer.as_bytes()))
    assert "part 2.2" in info.value.cause


def test_p9_dsn_parts_allowed() -> None:
    raw = (
        b"From: MAILER-DAEMON@example.org\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
        b"--r\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
        b"--r\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.org\r\n\r\n"
        b"Final-Recipient: rfc822; x@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--r\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: x\r\n\r\n"
        b"--r--\r\n"
    )
    parts = list_parts(raw)
    assert [p.index for p in parts] == ["1", "2", "3"]
    assert parts[1].content_type == "message/delivery-status"
    check_attachments(parts)


def test_p9_too_many_parts_marker_refused() -> None:
    parts = [PartInfo("1001", "multipart/x-too-many-parts", None, 0, None, None)]
    with pytest.raises(PolicyRefusal) as info:
        check_attachments(parts)
    assert "too many" in info.value.public_text


def test_p9_member_with_encrypted_flag_only() -> None:
    part = PartInfo(
        "2",
        "application/zip",
        "x.zip",
        10,
        "attachment",
        "zip",
        zip_members=(ZipMember("a.pdf", 10, None, encrypted=True),),
    )
    with pytest.raises(PolicyRefusal, match="encrypted"):
        check_attachments([part])


def test_p9_disagreeing_names_both_checked() -> None:
    # Content-Disposition says .pdf, Content-Type name says .exe: some clients use the latter.
    raw = (
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b'--b\r\nContent-Type: application/pdf; name="facture.exe"\r\n'
        b'Content-Disposition: attachment; filename="facture.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERi0xLjcK\r\n"
        b"--b--\r\n"
    )
    parts = list_parts(raw)
    assert parts[1].filename == "facture.pdf"
    assert parts[1].other_names == ("facture.exe",)
    with pytest.raises(PolicyRefusal) as info:
        check_attachments(parts)
    assert "extension .exe" in info.value.cause
