"""IHE XDM: a hand-built package is recognised and its documents listed; attacks are refused."""

from __future__ import annotations

import io
import zipfile
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from missive.mime.parts import list_parts
from missive.mime.xdm import (
    CLASS_CODE_SCHEME,
    TYPE_CODE_SCHEME,
    UNIQUE_ID_SCHEME,
    XdmError,
    is_xdm,
    read_xdm,
)

RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"


def _metadata(
    title: str = "Compte rendu d'hospitalisation", uri_values: list[str] | None = None
) -> bytes:
    uris = uri_values or ["DOC0001.XML"]
    uri_xml = "".join(f"<rim:Value>{u}</rim:Value>" for u in uris)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<lcm:SubmitObjectsRequest xmlns:lcm="{LCM}" xmlns:rim="{RIM}">
 <rim:RegistryObjectList>
  <rim:ExtrinsicObject id="Document01" mimeType="text/xml"
      objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">
   <rim:Slot name="creationTime"><rim:ValueList><rim:Value>20240102103000</rim:Value>
   </rim:ValueList></rim:Slot>
   <rim:Slot name="languageCode"><rim:ValueList><rim:Value>fr-FR</rim:Value></rim:ValueList>
   </rim:Slot>
   <rim:Slot name="size"><rim:ValueList><rim:Value>42</rim:Value></rim:ValueList></rim:Slot>
   <rim:Slot name="URI"><rim:ValueList>{uri_xml}</rim:ValueList></rim:Slot>
   <rim:Name><rim:LocalizedString value="{title}"/></rim:Name>
   <rim:Classification classificationScheme="{CLASS_CODE_SCHEME}" classifiedObject="Document01"
       nodeRepresentation="10" id="cl01">
    <rim:Slot name="codingScheme"><rim:ValueList><rim:Value>1.2.250.1.213.1.1.4.1</rim:Value>
    </rim:ValueList></rim:Slot>
    <rim:Name><rim:LocalizedString value="Compte rendu"/></rim:Name>
   </rim:Classification>
   <rim:Classification classificationScheme="{TYPE_CODE_SCHEME}" classifiedObject="Document01"
       nodeRepresentation="34112-3" id="cl02">
    <rim:Name><rim:LocalizedString value="CR d'hospitalisation"/></rim:Name>
   </rim:Classification>
   <rim:ExternalIdentifier identificationScheme="{UNIQUE_ID_SCHEME}" value="1.2.3.4.5"
       registryObject="Document01" id="ei01"/>
  </rim:ExtrinsicObject>
  <rim:ExtrinsicObject id="Document02" mimeType="application/pdf">
   <rim:Slot name="URI"><rim:ValueList><rim:Value>../../evil.pdf</rim:Value></rim:ValueList>
   </rim:Slot>
   <rim:Name><rim:LocalizedString value="Ordonnance"/></rim:Name>
  </rim:ExtrinsicObject>
 </rim:RegistryObjectList>
</lcm:SubmitObjectsRequest>""".encode()


def _xdm(metadata: bytes | None = None, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("INDEX.HTM", b"<html></html>")
        zf.writestr("README.TXT", b"XDM package")
        zf.writestr("IHE_XDM/SUBSET01/METADATA.XML", metadata or _metadata())
        zf.writestr("IHE_XDM/SUBSET01/DOC0001.XML", b"<?xml version='1.0'?><ClinicalDocument/>")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_read_hand_built_package() -> None:
    docs = read_xdm(_xdm())
    assert len(docs) == 2
    d = docs[0]
    assert d.title == "Compte rendu d'hospitalisation"
    assert d.mime_type == "text/xml"
    assert d.uri == "DOC0001.XML"
    assert d.path == "IHE_XDM/SUBSET01/DOC0001.XML"
    assert d.present
    assert d.creation_time == "20240102103000"
    assert d.class_code == "10" and d.class_display == "Compte rendu"
    assert d.type_code == "34112-3" and d.type_display == "CR d'hospitalisation"
    assert d.unique_id == "1.2.3.4.5"
    assert d.size == 42
    assert d.language_code == "fr-FR"
    assert d.subset == "SUBSET01"
    # A URI escaping the subset directory is not resolved.
    assert docs[1].title == "Ordonnance"
    assert docs[1].path is None and not docs[1].present


def test_split_long_uri_xds21() -> None:
    docs = read_xdm(_xdm(_metadata(uri_values=["2|0001.XML", "1|DOC"])))
    assert docs[0].uri == "DOC0001.XML"
    assert docs[0].present


def test_is_xdm_on_mime_part() -> None:
    msg = EmailMessage()
    msg.set_content("voir pièce jointe")
    msg.add_attachment(_xdm(), maintype="application", subtype="zip", filename="IHE_XDM.ZIP")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("photo.jpg", b"\xff\xd8\xff\xe0")
    msg.add_attachment(buf.getvalue(), maintype="application", subtype="zip", filename="p.zip")
    parts = list_parts(msg.as_bytes())
    assert [is_xdm(p) for p in parts] == [False, True, False]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not a zip", "not a ZIP archive"),
        (b"", "not a ZIP archive"),
    ],
)
def test_not_zip(data: bytes, message: str) -> None:
    with pytest.raises(XdmError, match=message):
        read_xdm(data)


def test_zip_without_metadata() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.txt", b"x")
    with pytest.raises(XdmError, match="no IHE_XDM"):
        read_xdm(buf.getvalue())


def test_billion_laughs_refused() -> None:
    bomb = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<lolz>&lol2;</lolz>"""
    with pytest.raises(XdmError, match="forbidden XML features"):
        read_xdm(_xdm(bomb))


def test_external_entity_refused() -> None:
    xxe = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"""
    with pytest.raises(XdmError, match="forbidden XML features"):
        read_xdm(_xdm(xxe))


def test_malformed_xml() -> None:
    with pytest.raises(XdmError, match="not well-formed"):
        read_xdm(_xdm(b"<unclosed>"))


def test_metadata_size_bound() -> None:
    # Highly compressible metadata larger than the bound: refused without reading it all.
    big = b"<r>" + b" " * 50_000 + b"</r>"
    with pytest.raises(XdmError, match="larger than"):
        read_xdm(_xdm(big), max_metadata=10_000)


def test_too_many_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    import missive.mime.xdm as mod

    monkeypatch.setattr(mod, "MAX_DOCUMENTS", 1)
    with pytest.raises(XdmError, match="more than 1 documents"):
        read_xdm(_xdm())


@settings(max_examples=100)
@given(st.binary(max_size=500))
def test_fuzz_zip_bytes(data: bytes) -> None:
    try:
        read_xdm(data)
    except XdmError:
        return


@settings(max_examples=100)
@given(st.binary(max_size=300))
def test_fuzz_metadata(metadata: bytes) -> None:
    try:
        docs = read_xdm(_xdm(metadata))
    except XdmError:
        return
    assert isinstance(docs, list)


@settings(max_examples=50)
@given(st.text(max_size=40))
def test_fuzz_title_text(title: str) -> None:
    escaped = title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    # XML attribute-value normalisation turns literal whitespace into spaces: escape it.
    escaped = escaped.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    try:
        docs = read_xdm(_xdm(_metadata(title=escaped)))
    except XdmError:
        return  # e.g. control characters are not allowed in XML 1.0
    assert docs[0].title is None or docs[0].title == title.strip()[:1000]
