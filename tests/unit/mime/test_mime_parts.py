"""list_parts: IMAP section numbers, RFC 2231 file names, sniffing, ZIP listing, robustness."""

from __future__ import annotations

import io
import zipfile
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from missive.mime.parts import (
    TOO_MANY_PARTS_TYPE,
    PartInfo,
    file_extension,
    get_part_payload,
    list_parts,
    sniff,
    zip_members,
)

PDF = b"%PDF-1.7\n" + b"0" * 100
PE = b"MZ\x90\x00" + b"\x00" * 56 + (64).to_bytes(4, "little") + b"PE\x00\x00" + b"\x00" * 100
ELF = b"\x7fELF\x02\x01\x01" + b"\x00" * 50


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "dr@example.org"
    msg["To"] = "279035121518989@patient.example.org"
    msg["Subject"] = "Résultats"
    msg.set_content("Bonjour,\nvoici vos résultats.\n")
    return msg


def test_single_part() -> None:
    msg = _message()
    parts = list_parts(msg.as_bytes())
    assert len(parts) == 1
    p = parts[0]
    assert p.index == "1"
    assert p.content_type == "text/plain"
    assert p.filename is None
    assert p.magic == "text"
    assert p.size == len("Bonjour,\nvoici vos résultats.\n".encode())


def test_multipart_sections_and_sniffing() -> None:
    msg = _message()
    msg.add_alternative("<p>Bonjour</p>", subtype="html")
    msg.add_attachment(PDF, maintype="application", filename="compte-rendu.pdf", subtype="pdf")
    # An executable that lies about its type.
    msg.add_attachment(PE, maintype="application", subtype="pdf", filename="facture.pdf")
    parts = list_parts(msg.as_bytes())
    assert [p.index for p in parts] == ["1.1", "1.2", "2", "3"]
    assert [p.content_type for p in parts] == [
        "text/plain",
        "text/html",
        "application/pdf",
        "application/pdf",
    ]
    assert parts[2].filename == "compte-rendu.pdf"
    assert parts[2].disposition == "attachment"
    assert parts[2].size == len(PDF)
    assert parts[2].magic == "pdf"
    assert parts[3].magic == "pe"
    assert parts[3].extension == "pdf"


def test_rfc2231_filename() -> None:
    raw = (
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--b\r\nContent-Type: application/pdf\r\n"
        b"Content-Disposition: attachment;\r\n"
        b" filename*0*=UTF-8''r%C3%A9sultat%20;\r\n"
        b" filename*1*=d%27analyse.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERi0xLjcK\r\n"
        b"--b--\r\n"
    )
    parts = list_parts(raw)
    assert parts[1].filename == "résultat d'analyse.pdf"
    assert parts[1].magic == "pdf"
    assert parts[1].size == len(b"%PDF-1.7\n")


def test_rfc2047_name_parameter() -> None:
    raw = (
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: application/octet-stream; name="=?UTF-8?B?w6l0YXQuZXhl?="\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        b"f0VMRgIBAQ==\r\n"
    )
    (p,) = list_parts(raw)
    assert p.filename == "état.exe"
    assert p.extension == "exe"
    assert p.magic == "elf"


def test_forwarded_message_parts_are_listed() -> None:
    inner = _message()
    inner.add_attachment(ELF, maintype="application", subtype="octet-stream", filename="x.bin")
    outer = _message()
    outer.add_attachment(inner)
    parts = list_parts(outer.as_bytes())
    # RFC 3501 §6.4.5: the encapsulated message's parts are 2.1, 2.2.
    assert [p.index for p in parts] == ["1", "2.1", "2.2"]
    assert parts[2].magic == "elf"
    assert get_part_payload(outer.as_bytes(), "2.2") == ELF


def test_forwarded_single_part_message() -> None:
    inner = _message()
    outer = _message()
    outer.add_attachment(inner)
    parts = list_parts(outer.as_bytes())
    assert [p.index for p in parts] == ["1", "2.1"]
    assert parts[1].content_type == "text/plain"


def test_zip_members_listed() -> None:
    data = _zip({"a/readme.txt": b"hello", "run.exe": PE})
    msg = _message()
    msg.add_attachment(data, maintype="application", subtype="zip", filename="docs.zip")
    parts = list_parts(msg.as_bytes())
    z = parts[1]
    assert z.magic == "zip"
    assert z.zip_members is not None
    by_name = {m.name: m for m in z.zip_members}
    assert by_name["a/readme.txt"].magic == "text"
    assert by_name["run.exe"].magic == "pe"
    assert by_name["run.exe"].size == len(PE)


def test_corrupt_zip_reported() -> None:
    members, error = zip_members(b"PK\x03\x04garbage")
    assert members is None
    assert error is not None and "cannot be read" in error


def test_get_part_payload_missing() -> None:
    assert get_part_payload(_message().as_bytes(), "7") is None
    assert get_part_payload(_message().as_bytes(), "1") is not None


@pytest.mark.parametrize(
    ("head", "magic"),
    [
        (PDF, "pdf"),
        (b"\x89PNG\r\n\x1a\n....", "png"),
        (b"\xff\xd8\xff\xe0....", "jpeg"),
        (b"GIF89a....", "gif"),
        (b"PK\x03\x04....", "zip"),
        (PE, "pe"),
        (ELF, "elf"),
        (b"\xcf\xfa\xed\xfe\x07\x00", "macho"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00", "ole"),
        (b"#!/bin/sh\nrm -rf /\n", "script-shebang"),
        (b"\x00" * 128 + b"DICM" + b"\x00" * 8, "dicom"),
        (b"MSH|^~\\&|LAB|", "hl7"),
        (b"<?xml version='1.0'?><ClinicalDocument/>", "xml"),
        (b"MZ is a nice text start\n", "text"),  # not an executable
        ("MZé, compte rendu".encode(), "text"),
        (b"MZ\x90\x00\x03\x00", "pe"),  # a truncated DOS header
        (b"plain text\n", "text"),
        (b"\x00\x01\x02\x03", None),
        (b"", None),
    ],
)
def test_sniff(head: bytes, magic: str | None) -> None:
    assert sniff(head) == magic


def test_deep_nesting_becomes_opaque_leaf() -> None:
    depth = 40
    raw = b"MIME-Version: 1.0\r\n"
    for i in range(depth):
        raw += f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
    raw += b"Content-Type: text/plain\r\n\r\nx\r\n"
    for i in reversed(range(depth)):
        raw += f"--b{i}--\r\n".encode()
    parts = list_parts(raw)
    assert len(parts) == 1
    assert parts[0].content_type.startswith("multipart/")


def test_too_many_parts_marker(monkeypatch: pytest.MonkeyPatch) -> None:
    import missive.mime.parts as mod

    monkeypatch.setattr(mod, "MAX_PARTS", 3)
    msg = _message()
    for i in range(5):
        msg.add_attachment(b"x", maintype="text", subtype="plain", filename=f"{i}.txt")
    parts = list_parts(msg.as_bytes())
    assert len(parts) == 4
    assert parts[-1].content_type == TOO_MANY_PARTS_TYPE


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary",
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\nunterminated',
        b"Content-Type: ;;;\r\nContent-Disposition: attachment; filename*=bogus''%%\r\n\r\nx",
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!",
        b"Content-Type: message/rfc822\r\n\r\n",
        b"\xff\xfe\x00garbage\x00\r\n\r\n",
    ],
)
def test_malformed_never_raises(raw: bytes) -> None:
    parts = list_parts(raw)
    assert all(isinstance(p, PartInfo) for p in parts)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_fuzz_binary(raw: bytes) -> None:
    for p in list_parts(raw):
        assert p.size >= 0


_header_lines = st.lists(
    st.sampled_from(
        [
            b"MIME-Version: 1.0",
            b'Content-Type: multipart/mixed; boundary="q"',
            b"Content-Type: message/rfc822",
            b"Content-Type: application/zip; name*=UTF-8''%E2%82",
            b"Content-Disposition: attachment; filename*0*=x; filename*2=y",
            b"Content-Transfer-Encoding: base64",
            b"Content-Transfer-Encoding: quoted-printable",
            b"--q",
            b"--q--",
            b"",
            b"UEsDBA==",
            b"=E9=",
        ]
    ),
    max_size=40,
)


@settings(max_examples=200)
@given(_header_lines)
def test_fuzz_structured(lines: list[bytes]) -> None:
    raw = b"\r\n".join(lines)
    for p in list_parts(raw):
        assert p.index


@pytest.mark.parametrize(
    ("name", "ext"),
    [
        ("a.PDF", "pdf"),
        ("a.exe. ", "exe"),
        ("dir\\x.js", "js"),
        ("noext", ""),
        (".bashrc", "bashrc"),
    ],
)
def test_file_extension(name: str, ext: str) -> None:
    assert file_extension(name) == ext


def test_ole_macro_refined() -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600
    msg = _message()
    msg.add_attachment(ole, maintype="application", subtype="msword", filename="a.doc")
    msg.add_attachment(
        ole + "Macros".encode("utf-16-le"),
        maintype="application",
        subtype="msword",
        filename="b.doc",
    )
    parts = list_parts(msg.as_bytes())
    assert [p.magic for p in parts[1:]] == ["ole", "ole-macro"]
