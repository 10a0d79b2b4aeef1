"""The fast MAIL/RCPT path parser gives what aiosmtpd's own ``_getaddr`` gives."""

from __future__ import annotations

from types import SimpleNamespace

from aiosmtpd.smtp import SMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from missive.mta.protocol import simple_path


def aiosmtpd_getaddr(arg: str) -> tuple[str | None, str | None]:
    return SMTP._getaddr(SimpleNamespace(local_part_limit=0), arg)  # type: ignore[arg-type]


def test_common_paths_take_the_fast_way() -> None:
    for arg, want in [("<dr.x@operator.example>", ("dr.x@operator.example", "")),
                      ("<a+b@c-d.e> SIZE=100 BODY=8BITMIME",
                       ("a+b@c-d.e", "SIZE=100 BODY=8BITMIME")),
                      ("<x@y>\t NOTIFY=NEVER", ("x@y", "NOTIFY=NEVER"))]:
        assert simple_path(arg) == want
        assert aiosmtpd_getaddr(arg) == want


def test_other_paths_are_left_to_aiosmtpd() -> None:
    for arg in ['<"a b"@c.d>', "<a@[192.0.2.1]>", "<@r.example:a@b.c>", "<a@b> (comment)",
                "<a..b@c.d>", "<.a@b.c>", "<a@b.>", "a@b.c", " <a@b.c>", "<>", "<é@b.c>",
                "<a@b.c"]:
        assert simple_path(arg) is None, arg


ALPHABET = st.sampled_from([*"ab.@<>- \t()\"[]:,;=+_é1", "SIZE=1", "x.y", "@d.e"])


@settings(max_examples=1500, deadline=None)
@given(st.lists(ALPHABET, max_size=14).map("".join))
@example("<a@b.c> SIZE=1")
@example("<a@b.c>  (x) SIZE=1")
@example("<a-@-b.c>")
def test_fast_path_agrees_with_aiosmtpd(arg: str) -> None:
    fast = simple_path(arg)
    if fast is not None:
        assert fast == aiosmtpd_getaddr(arg)


PIECE = st.sampled_from(["a", "Z9", ".", "-", "+", "'", "é", " ", '"', "(", ")", "[", "@", ""])
WORD = st.lists(PIECE, min_size=1, max_size=5).map("".join)


@settings(max_examples=1500, deadline=None)
@given(WORD, WORD, st.sampled_from(["", " ", "  \t", " (c) ", "("]),
       st.sampled_from(["", "SIZE=10", "NOTIFY=NEVER ORCPT=rfc822;a@b"]))
def test_fast_path_agrees_with_aiosmtpd_on_path_shapes(local: str, domain: str, gap: str,
                                                       params: str) -> None:
    arg = f"<{local}@{domain}>{gap}{params}"
    fast = simple_path(arg)
    if fast is not None:
        assert fast == aiosmtpd_getaddr(arg)
