"""Relay routing: static routes, MX ordering, implicit MX, null MX, DNS errors; client helpers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from missive.config import Settings, load_settings
from missive.mta.client import (
    Recipient,
    TransactionError,
    _mail_options,
    _rcpt_options,
    as_xtext,
    enhanced_status,
    xtext,
)
from missive.mta.dsn import xtext_decode
from missive.mta.relay import backoff_seconds
from missive.mta.routing import (
    DnsResolver,
    DnsTemporaryError,
    NoSuchDomain,
    Route,
    RouteError,
    order_mx,
    parse_routes,
    routes_for,
)


class FakeResolver:
    def __init__(self, answers: dict[str, list[tuple[int, str]] | Exception]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        self.asked.append(domain)
        answer = self.answers[domain]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _settings(tmp_path: Path, **mta: object) -> Settings:
    return load_settings(tmp_path / "data", environment="test", mta=mta)


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:2525", [Route("127.0.0.1", 2525)]),
    ("mx.peer.test", [Route("mx.peer.test", 25)]),
    ("smtps://mx.peer.test:465", [Route("mx.peer.test", 465, True)]),
    ("[::1]:2525", [Route("::1", 2525)]),
    ("a.test:1, b.test:2", [Route("a.test", 1, False, 0), Route("b.test", 2, False, 1)]),
])
def test_parse_routes(value: str, expected: list[Route]) -> None:
    assert parse_routes(value, 25) == expected


@pytest.mark.parametrize("value", ["", "host:0", "host:99999", "ftp://h:1", "[::1]x", ":25"])
def test_parse_routes_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="route"):
        parse_routes(value, 25)


async def test_static_route_wins_over_dns(tmp_path: Path) -> None:
    settings = _settings(tmp_path, relay_static_routes={"Peer.Test": "127.0.0.1:2525"})
    resolver = FakeResolver({})
    assert await routes_for("peer.test", settings, resolver) == [Route("127.0.0.1", 2525)]
    assert resolver.asked == []


async def test_wildcard_static_route(tmp_path: Path) -> None:
    settings = _settings(tmp_path, relay_static_routes={"*": "smarthost.test:587"})
    assert await routes_for("x.test", settings, FakeResolver({})) == [
        Route("smarthost.test", 587)]


async def test_bad_static_route_is_temporary(tmp_path: Path) -> None:
    settings = _settings(tmp_path, relay_static_routes={"peer.test": "host:notaport"})
    with pytest.raises(RouteError) as info:
        await routes_for("peer.test", settings, FakeResolver({}))
    assert not info.value.permanent


async def test_mx_sorted_by_preference(tmp_path: Path) -> None:
    settings = _settings(tmp_path, relay_port=2525)
    resolver = FakeResolver({"peer.test": [(20, "b.peer.test."), (10, "a.peer.test.")]})
    routes = await routes_for("peer.test", settings, resolver)
    assert [(r.host, r.port, r.preference) for r in routes] == [
        ("a.peer.test", 2525, 10), ("b.peer.test", 2525, 20)]


def test_equal_preferences_are_shuffled() -> None:
    records = [(10, f"h{i}.test") for i in range(6)] + [(5, "first.test")]
    seen = {tuple(r.host for r in order_mx(records, 25, random.Random(seed)))
            for seed in range(20)}
    assert all(order[0] == "first.test" for order in seen)
    assert len(seen) > 1


async def test_implicit_mx(tmp_path: Path) -> None:
    routes = await routes_for("peer.test", _settings(tmp_path), FakeResolver({"peer.test": []}))
    assert routes == [Route("peer.test", 25)]


@pytest.mark.parametrize(("answer", "permanent", "status"), [
    ([(0, ".")], True, "5.1.10"),
    (NoSuchDomain("peer.test"), True, "5.1.2"),
    (DnsTemporaryError("timeout"), False, "4.4.3"),
])
async def test_route_errors(tmp_path: Path, answer: object, permanent: bool, status: str) -> None:
    resolver = FakeResolver({"peer.test": answer})  # type: ignore[dict-item]
    with pytest.raises(RouteError) as info:
        await routes_for("peer.test", _settings(tmp_path), resolver)
    assert (info.value.permanent, info.value.status) == (permanent, status)


def test_xtext() -> None:
    # RFC 3461 §4: "+" and "=" and characters outside "!".."~" are hex-encoded.
    assert xtext("rfc822;a+b=c@x.test") == "rfc822;a+2Bb+3Dc@x.test"
    assert xtext("a b") == "a+20b"
    assert xtext("é") == "+C3+A9"


@pytest.mark.parametrize(("code", "text", "expected"), [
    (550, "5.1.1 no such user", "5.1.1"),
    (550, "no enhanced code", "5.0.0"),
    (451, "4.3.0 try later", "4.3.0"),
    (451, "5.1.1 mismatched class", "4.0.0"),
    (250, "2.0.0 ok", "2.0.0"),
])
def test_enhanced_status(code: int, text: str, expected: str) -> None:
    assert enhanced_status(code, text) == expected


def test_backoff_grows_and_is_capped() -> None:
    waits = [backoff_seconds(n, base=60, factor=2, cap=600, jitter=0) for n in range(1, 8)]
    assert waits == [60, 120, 240, 480, 600, 600, 600]
    jittered = backoff_seconds(3, base=60, factor=2, cap=600, rng=random.Random(1))
    assert 240 * 0.9 <= jittered <= 240 * 1.1


def test_xtext_values_pass_on_unchanged() -> None:
    # RFC 3461 §5.2: ENVID and ORCPT are relayed as received (already xtext).
    assert as_xtext("rfc822;a+2Bb@x.test") == "rfc822;a+2Bb@x.test"
    assert as_xtext("id with space") == "id+20with+20space"
    assert xtext_decode("a+2Bb+3Dc+20d") == "a+b=c d"
    assert xtext_decode("+C3+A9lodie") == "élodie"


def test_mail_and_rcpt_options_follow_the_peer_extensions() -> None:
    rcpt = Recipient("a@peer.test", ("SUCCESS", "failure"), "rfc822;a+2B1@peer.test")
    body = "é".encode()
    with_dsn = {"size": "1000", "8bitmime": "", "dsn": ""}
    assert _mail_options("s@x.test", [rcpt], body, extensions=with_dsn, ret="hdrs",
                         envid="E 1") == ["SIZE=2", "BODY=8BITMIME", "RET=HDRS", "ENVID=E+201"]
    assert _rcpt_options(rcpt, True) == ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;a+2B1@peer.test"]
    # Without the DSN extension nothing of RFC 3461 is sent (the relay reports itself).
    assert _mail_options("s@x.test", [rcpt], b"ascii", extensions={}, ret="FULL",
                         envid="E1") == []
    assert _rcpt_options(rcpt, False) == []


def test_non_ascii_address_needs_smtputf8() -> None:
    rcpt = Recipient("élodie@peer.test")
    assert "SMTPUTF8" in _mail_options("s@x.test", [rcpt], b"x", extensions={"smtputf8": ""},
                                       ret=None, envid=None)
    with pytest.raises(TransactionError) as info:
        _mail_options("s@x.test", [rcpt], b"x", extensions={}, ret=None, envid=None)
    assert info.value.permanent and info.value.status == "5.6.7"


class _FakeDnsResolver:
    """Stands in for ``dns.asyncresolver.Resolver``: answers or raises per domain."""

    def __init__(self, outcomes: dict[str, object]) -> None:
        self.outcomes = outcomes

    async def resolve(self, domain: str, rdtype: str, lifetime: float) -> object:
        outcome = self.outcomes[domain]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


async def test_dnspython_resolver_maps_answers_and_errors(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import dns.asyncresolver
    import dns.exception
    import dns.name
    import dns.rdtypes.ANY.MX
    import dns.resolver

    def mx(pref: int, host: str) -> object:
        return dns.rdtypes.ANY.MX.MX(1, 15, pref, dns.name.from_text(host))

    outcomes: dict[str, object] = {
        "ok.test": [mx(10, "mx1.ok.test."), mx(20, "mx2.ok.test.")],
        "null.test": [mx(0, ".")],
        "nx.test": dns.resolver.NXDOMAIN(),
        "nomx.test": dns.resolver.NoAnswer(),
        "slow.test": dns.exception.Timeout(),
    }
    monkeypatch.setattr(dns.asyncresolver, "Resolver", lambda: _FakeDnsResolver(outcomes))
    resolver = DnsResolver(timeout=1)
    assert await resolver.mx("ok.test") == [(10, "mx1.ok.test"), (20, "mx2.ok.test")]
    assert await resolver.mx("null.test") == [(0, ".")]
    assert await resolver.mx("nomx.test") == []
    with pytest.raises(NoSuchDomain):
        await resolver.mx("nx.test")
    with pytest.raises(DnsTemporaryError):
        await resolver.mx("slow.test")
