"""The block-wise DATA reader (:class:`missive.mta.framing.DataParser`) against aiosmtpd.

The reference below is aiosmtpd 1.4's ``smtp_DATA`` loop transcribed line for line, with its
``StreamReader.readuntil(b"\\r\\n")`` (limit ``line_length_limit``) played on the whole
stream: the parser must give the same content, the same end and the same refusal, however
the stream is cut into blocks. Then the same through a real ``asyncio.StreamReader``.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from missive.mta.framing import DataParser, DataState, StrictStreamReader

LINE_LIMIT = 1001  # aiosmtpd's line_length_limit, also the limit of its StreamReader


def reference(stream: bytes, size_limit: int | None,
              line_limit: int = LINE_LIMIT) -> tuple[DataState, bytes, int] | None:
    """aiosmtpd's DATA loop on ``stream``: (state, content, octets consumed), or None when the
    stream holds no end of data."""
    pos = 0
    data: list[bytes] = []
    num_bytes = 0
    fragments: list[bytes] = []
    state = DataState.NOMINAL
    while True:
        isep = stream.find(b"\r\n", pos)
        if isep < 0:
            return None
        if isep - pos > line_limit:
            # readuntil: LimitOverrunError("Separator is found, but chunk is longer than
            # limit", consumed=isep); aiosmtpd then reads those octets alone.
            if state is DataState.NOMINAL:
                state = DataState.TOO_LONG
            data = []
            line = stream[pos:isep]
            pos = isep
        else:
            line = stream[pos:isep + 2]
            pos = isep + 2
        if not fragments and line == b".\r\n":
            break
        num_bytes += len(line)
        if state is DataState.NOMINAL and size_limit and num_bytes > size_limit:
            state = DataState.TOO_MUCH
            data = []
        fragments.append(line)
        if line.endswith(b"\r\n"):
            if state is DataState.NOMINAL:
                joined = b"".join(fragments)
                if len(joined) > line_limit:
                    state = DataState.TOO_LONG
                    data = []
                else:
                    data.append(joined)
            fragments = []
    content = b"".join(x[1:] if x.startswith(b".") else x for x in data)
    return state, content, pos


def parse(stream: bytes, cuts: list[int], size_limit: int | None,
          line_limit: int = LINE_LIMIT) -> tuple[DataState, bytes, int] | None:
    """Feed ``stream`` to a parser in blocks cut at ``cuts``, as a reader would: each block is
    what is buffered, and what the parser does not use is offered again with the next one."""
    parser = DataParser(size_limit, line_limit)
    buffered = b""
    consumed = 0
    bounds = [*sorted({c for c in cuts if 0 < c < len(stream)}), len(stream)]
    start = 0
    for bound in bounds:
        buffered += stream[start:bound]
        start = bound
        used = parser.feed(buffered)
        assert 0 <= used <= len(buffered)
        consumed += used
        buffered = buffered[used:]
        if parser.done:
            break
    if not parser.done:
        return None
    return parser.state, (parser.content() if parser.state is DataState.NOMINAL else b""), consumed


def expected(stream: bytes, size_limit: int | None,
             line_limit: int = LINE_LIMIT) -> tuple[DataState, bytes, int] | None:
    found = reference(stream, size_limit, line_limit)
    if found is None or found[0] is DataState.NOMINAL:
        return found
    return found[0], b"", found[2]


# Streams built from the pieces that matter: CR, LF, dots, CRLF, end markers, and runs long
# enough to cross the limits (small line limits too, so long lines are cheap to produce).
PIECES = st.sampled_from([b"\r", b"\n", b".", b"\r\n", b"\r\n.\r\n", b"\r\n..", b"a", b"b" * 7,
                          b"\x00", b"c" * 40, b".\r\n", b"\n.\n", b"\r.\r"])
STREAMS = st.lists(PIECES, max_size=60).map(b"".join)


@settings(max_examples=600, deadline=None)
@given(stream=STREAMS, cuts=st.lists(st.integers(0, 400), max_size=8),
       size_limit=st.one_of(st.none(), st.integers(0, 300)),
       line_limit=st.sampled_from([8, 20, 45, LINE_LIMIT]))
@example(stream=b".\r\n", cuts=[], size_limit=None, line_limit=LINE_LIMIT)
@example(stream=b"..\r\n.x\r\n.\r\nQUIT\r\n", cuts=[1, 2, 5], size_limit=None,
         line_limit=LINE_LIMIT)
@example(stream=b"abc\r", cuts=[], size_limit=None, line_limit=LINE_LIMIT)
# A block ending in the CR of a line exactly at the reader's limit: not yet "too long", so
# the size limit, checked first for such a line, wins.
@example(stream=b"xxxxxxxx\r\n.\r\n", cuts=[9], size_limit=5, line_limit=8)
def test_parser_matches_aiosmtpd(stream: bytes, cuts: list[int], size_limit: int | None,
                                 line_limit: int) -> None:
    assert parse(stream, cuts, size_limit, line_limit) == expected(stream, size_limit,
                                                                   line_limit)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.binary(max_size=1100).map(lambda b: b.replace(b"\r", b"").replace(
           b"\n", b"")), max_size=12),
       cuts=st.lists(st.integers(0, 14000), max_size=6),
       size_limit=st.one_of(st.none(), st.integers(0, 8000)))
def test_parser_matches_aiosmtpd_at_the_real_line_limit(lines: list[bytes], cuts: list[int],
                                                        size_limit: int | None) -> None:
    """Lines around aiosmtpd's 1001-octet limit (998…1003 with CRLF are the edge cases)."""
    stream = b"".join(x + b"\r\n" for x in lines) + b".\r\nNOOP\r\n"
    assert parse(stream, cuts, size_limit) == expected(stream, size_limit)


@pytest.mark.parametrize("octets", [997, 998, 999, 1000, 1001, 1002])
def test_line_length_edges(octets: int) -> None:
    """Content of 999 octets + CRLF is the longest line aiosmtpd keeps (1001 with CRLF);
    1000 and 1001 are refused after counting, longer ones as soon as seen: all "too long"."""
    stream = b"x" * octets + b"\r\n.\r\n"
    want = DataState.NOMINAL if octets + 2 <= LINE_LIMIT else DataState.TOO_LONG
    for cuts in ([], [1], [octets], [octets + 1], [500, 1000]):
        got = parse(stream, cuts, None)
        assert got is not None and got[0] is want and got[2] == len(stream)
        assert got == expected(stream, None)


def test_unstuffing_and_leftover() -> None:
    stream = b"..a\r\n...\r\nb\r\n.c\r\n.\r\nMAIL FROM:<x@y>\r\n"
    got = parse(stream, [3, 4, 11], None)
    assert got == (DataState.NOMINAL, b".a\r\n..\r\nb\r\nc\r\n", len(stream) - 17)


def test_smuggling_variants_do_not_end_the_data() -> None:
    for fake in (b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r.\n", b"\r\n.\r", b"\r\n.\n", b"\n.\r",
                 b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"):
        stream = b"Subject: x\r\n\r\nbody" + fake + b"MAIL FROM:<a@b>\r\n\r\n.\r\n"
        got = parse(stream, [], None)
        assert got is not None and got[2] == len(stream)  # the data ends at the real end only
        assert got == expected(stream, None)
        assert b"MAIL FROM:<a@b>" in got[1]


def test_refused_data_is_scanned_to_its_end_without_keeping_it() -> None:
    parser = DataParser(100, LINE_LIMIT)
    assert parser.feed(b"x" * 98 + b"\r\n") == 100
    assert parser.feed(b"y\r\n") == 3
    assert parser.state is DataState.TOO_MUCH
    assert parser.feed(b"z" * 5000) == 5000
    assert parser._blocks == [] and parser._pending == b""
    assert parser.feed(b"\r\n.\r\nQUIT\r\n") == 5
    assert parser.done


@settings(max_examples=60, deadline=None)
@given(stream=STREAMS, cuts=st.lists(st.integers(0, 400), max_size=6))
def test_stream_reader_leaves_what_follows(stream: bytes, cuts: list[int]) -> None:
    """Through a real StreamReader fed in pieces: the data, then the rest stays readable."""
    stream += b"\r\n.\r\nNEXT\r\n"
    want = reference(stream, None)
    assert want is not None

    async def run() -> tuple[DataParser, bytes]:
        reader = StrictStreamReader(limit=LINE_LIMIT)
        parser = DataParser(None, LINE_LIMIT)

        async def produce() -> None:
            start = 0
            for bound in [*sorted({c for c in cuts if 0 < c < len(stream)}), len(stream)]:
                reader.feed_data(stream[start:bound])
                start = bound
                await asyncio.sleep(0)
            reader.feed_eof()

        task = asyncio.ensure_future(produce())
        await reader.read_data(parser)
        await task
        return parser, await reader.read()

    parser, rest = asyncio.run(run())
    assert parser.state is want[0]
    if want[0] is DataState.NOMINAL:
        assert parser.content() == want[1]
    assert rest == stream[want[2]:]
