"""The part walk's shortcuts give what the code they skip gives, on generated input:

- ``_looks_text`` (printable ASCII deleted as bytes before the ``isprintable`` check) against
  the former check (decode everything, delete the four controls, ``isprintable``);
- a part :func:`unnamed` says has no name has no ``get_filename()``, no
  ``get_content_disposition()`` and no ``filename``/``name`` parameter.
"""

from __future__ import annotations

import email
import email.policy

from hypothesis import example, given, settings
from hypothesis import strategies as st

from missive.mime.parsing import parse_message
from missive.mime.parts import _looks_text, _other_names, unnamed


def former_looks_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:
            return False
        text = head[: exc.start].decode("utf-8")
    for control in "\t\r\n\f":
        text = text.replace(control, "")
    return text.isprintable()


TEXTS = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.text(alphabet=st.sampled_from("ab é\t\r\n\f\x00\x0b\x7f\u200b\u00a0\U0001f600"),
            max_size=64).map(str.encode),
    st.tuples(st.text(max_size=20), st.integers(1, 3)).map(
        lambda t: t[0].encode() + "é€\U0001f600".encode()[: t[1]]),  # a character cut short
)


@settings(max_examples=3000, deadline=None)
@given(TEXTS)
@example("Compte rendu, résultats normaux.\r\n".encode() * 100)
@example(b"a\xc3")
@example(b"\xc3a\xa9")  # invalid, though valid once the ASCII is deleted
@example(b"\xe2\x82")
def test_looks_text_equals_the_former_check(head: bytes) -> None:
    assert _looks_text(head) == former_looks_text(head)


FIELDS = st.sampled_from([
    "Content-Type: text/plain", "Content-Type: text/plain; charset=utf-8",
    "Content-Type: application/pdf; name=a.pdf", "Content-Type: application/pdf; NAME=\"a\"",
    "Content-Type: text/plain; name*0=a; name*1=b", "Content-Type: text/plain; name*=UTF-8''%C3%A9",
    "Content-Type: text/plain; x=\"name\"", "Content-Type: text/plain; filename=a",
    "Content-Type: text/plain; charset=\"=?utf-8?q?n=61me?=\"", "Content-Type:",
    "Content-Type: t\u00e9xt/plain; nam\u00e9=x", "Content-Type: ;;;",
    "Content-Type: text/plain; name",
    "Content-Disposition: attachment", "Content-Disposition: inline; filename=a.txt",
    "Content-Disposition:", "Content-Transfer-Encoding: base64", "Subject: name",
])


@settings(max_examples=1500, deadline=None)
@given(st.lists(FIELDS, max_size=4))
def test_unnamed_parts_have_no_name(lines: list[str]) -> None:
    raw = ("".join(line + "\r\n" for line in lines) + "\r\nbody\r\n").encode()
    for msg in (parse_message(raw), email.message_from_bytes(raw, policy=email.policy.default)):
        if unnamed(msg):
            assert msg.get_filename() is None
            assert msg.get_content_disposition() is None
            assert _other_names(msg, None) == ()


def test_unnamed_recognises_the_common_part() -> None:
    msg = parse_message(b"Content-Type: text/plain; charset=utf-8\r\n\r\nx\r\n")
    assert unnamed(msg)
    assert not unnamed(parse_message(b"Content-Type: text/plain; name=a\r\n\r\nx\r\n"))
    assert not unnamed(parse_message(b"Content-Disposition: inline\r\n\r\nx\r\n"))
