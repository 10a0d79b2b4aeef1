"""Pure parts of the webmail: sanitiser, file names, codes, password policy, cookie signing."""

from __future__ import annotations

import pytest

from missive.webmail import codes, render
from missive.webmail.passwords import password_problem
from missive.webmail.sessions import SessionSigner


@pytest.mark.parametrize("html", [
    '<script>alert(1)</script>', '<img src=x onerror=alert(1)>', '<a href="javascript:x">a</a>',
    '<p style="color:red" onclick="x()">p</p>', '<iframe src="//e"></iframe>',
    '<svg><script>alert(1)</script></svg>', '<form><input name=a></form>',
    '<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>',
])
def test_sanitiser_removes_active_and_remote_content(html: str) -> None:
    cleaned, _links = render.sanitise_html(html, "/l")
    for bad in ("<script", "onerror", "onclick", "javascript:", "style=", "<img", "<iframe",
                "<form", "<input", "<svg"):
        assert bad not in cleaned


def test_links_are_rewritten_to_the_warning_page() -> None:
    cleaned, links = render.sanitise_html(
        '<a href="https://a.example/x?y=1">A</a><a href="mailto:b@c.example">B</a>'
        '<a href="ftp://d.example">C</a>', "/boite/reception/3/lien")
    assert links == ["https://a.example/x?y=1", "mailto:b@c.example"]
    assert 'href="/boite/reception/3/lien/0"' in cleaned
    assert 'href="/boite/reception/3/lien/1"' in cleaned
    assert "a.example" not in cleaned and "ftp:" not in cleaned


@pytest.mark.parametrize(("name", "expected"), [
    ("../../etc/passwd", "passwd"), ('a"b;c.pdf', "a_b_c.pdf"), ("C:\\x\\y.pdf", "y.pdf"),
    ("\x00\x1f", "piece-jointe"), ("  .hidden. ", "hidden"),
])
def test_safe_filename(name: str, expected: str) -> None:
    assert render.safe_filename(name) == expected


def test_content_disposition_has_ascii_fallback_and_utf8() -> None:
    value = render.content_disposition("attachment", "compte rendu é.pdf")
    assert value == ("attachment; filename=\"compte rendu _.pdf\"; "
                     "filename*=UTF-8''compte%20rendu%20%C3%A9.pdf")


def test_codes_normalise_and_format() -> None:
    assert codes.normalise_code(" abcd-efgh jkmn ") == "ABCDEFGHJKMN"
    assert codes.format_code("ABCDEFGHJKMN") == "ABCD-EFGH-JKMN"
    assert len(codes.new_otp()) == 6 and codes.new_otp().isdigit()


def test_password_policy() -> None:
    assert "au moins 12" in (password_problem("court", min_length=12) or "")
    assert "trop facile" in (password_problem("motdepasse123", min_length=12) or "")
    assert "trop facile" in (password_problem(
        "dupont279035121518989", min_length=12,
        user_inputs=["279035121518989", "dupont"]) or "")
    assert password_problem("tulipe velo orage mardi", min_length=12) is None
    assert password_problem("x" * 2000, min_length=12) is not None


def test_cookie_signature() -> None:
    signer = SessionSigner("secret-one")
    value = signer.sign("token")
    assert signer.unsign(value) == "token"
    assert signer.unsign(value[:-1] + ("0" if value[-1] != "0" else "1")) is None
    assert SessionSigner("secret-two").unsign(value) is None
    assert signer.unsign("token") is None
