"""Where to relay mail for a domain: static routes, else MX records (RFC 5321 §5.1).

Order of the rules:

1. ``settings.mta.relay_static_routes[domain]`` (exact domain, any case), then the ``"*"``
   entry: a comma-separated list of ``[smtp://|smtps://]host[:port]`` tried in order (private
   networks, test harnesses, a smarthost). ``smtps://`` means implicit TLS (RFC 8314 §3.3);
   otherwise STARTTLS is required.
2. MX records through an injectable :class:`MxResolver` (dnspython by default, so that tests
   and other deployments can inject theirs; mox does the same): sorted by preference, hosts of
   equal preference shuffled (RFC 5321 §5.1 "randomised to spread the load").
3. No MX record but the domain exists: the domain itself is the implicit MX (RFC 5321 §5.1).
4. A "null MX" (a single MX ``.`` of preference 0) says the domain accepts no mail
   (RFC 7505 §3): permanent failure ``5.1.10``. A domain that does not exist (NXDOMAIN):
   permanent ``5.1.2``. DNS timeouts and server failures: temporary ``4.4.3``.

Only trust-space domains reach this module (the relay checks before routing); the resolver is
never asked about anything else.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from missive.config import Settings

if TYPE_CHECKING:
    import dns.asyncresolver

STATIC_WILDCARD = "*"


@dataclass(frozen=True)
class Route:
    """One host to try: connect to ``host:port``, TLS implicit or through STARTTLS."""

    host: str
    port: int
    implicit_tls: bool = False
    preference: int = 0

    def __str__(self) -> str:
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{self.host}:{self.port}"


class RouteError(Exception):
    """No route for a domain: ``permanent`` decides between bouncing and retrying."""

    def __init__(self, text: str, *, permanent: bool, status: str) -> None:
        super().__init__(text)
        self.text = text
        self.permanent = permanent
        self.status = status


class NoSuchDomain(Exception):
    """The domain does not exist (NXDOMAIN)."""


class DnsTemporaryError(Exception):
    """DNS did not answer (timeout, SERVFAIL, no reachable name server)."""


@runtime_checkable
class MxResolver(Protocol):
    """MX lookup (RFC 1035 §3.3.9, RFC 5321 §5.1).

    ``mx(domain)`` returns ``(preference, exchange)`` pairs, exchange without trailing dot
    (``"."`` stays ``"."`` for a null MX); an empty list when the domain exists without MX
    records. Raises :class:`NoSuchDomain` or :class:`DnsTemporaryError`.
    """

    async def mx(self, domain: str) -> list[tuple[int, str]]: ...


class DnsResolver:
    """:class:`MxResolver` over dnspython's asyncio resolver (system ``resolv.conf``)."""

    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        # Built on first use (it reads resolv.conf): no I/O at construction.
        self._resolver: dns.asyncresolver.Resolver | None = None

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        import dns.asyncresolver
        import dns.exception
        import dns.resolver

        if self._resolver is None:
            self._resolver = dns.asyncresolver.Resolver()
        try:
            answer = await self._resolver.resolve(domain, "MX", lifetime=self.timeout)
        except dns.resolver.NXDOMAIN:
            raise NoSuchDomain(domain) from None
        except dns.resolver.NoAnswer:
            return []
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise DnsTemporaryError(f"MX lookup for {domain} failed: {exc}") from None
        out: list[tuple[int, str]] = []
        for rr in answer:
            exchange = rr.exchange.to_text(omit_final_dot=True) or "."
            out.append((int(rr.preference), exchange))
        return out


def parse_routes(value: str, default_port: int) -> list[Route]:
    """Parse a static route value: ``host[:port]``, ``[v6addr]:port``, ``smtps://host:port``,
    several separated by commas. Raises :class:`ValueError` naming the bad entry."""
    routes: list[Route] = []
    for position, item in enumerate(p.strip() for p in value.split(",")):
        if not item:
            continue
        implicit = False
        text = item
        if "://" in text:
            scheme, _, text = text.partition("://")
            if scheme.lower() not in ("smtp", "smtps"):
                raise ValueError(f"static route {item!r}: scheme must be smtp:// or smtps://")
            implicit = scheme.lower() == "smtps"
        port = default_port
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"static route {item!r}: expected [address]:port")
                port = _port(rest[1:], item)
        elif text.count(":") == 1:
            host, _, port_text = text.partition(":")
            port = _port(port_text, item)
        else:
            host = text
        host = host.strip().rstrip(".")
        if not host:
            raise ValueError(f"static route {item!r}: missing host")
        routes.append(Route(host, port, implicit, position))
    if not routes:
        raise ValueError(f"static route {value!r} names no host")
    return routes


def _port(text: str, item: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"static route {item!r}: port must be 1-65535")
    return int(text)


def static_routes(domain: str, settings: Settings) -> list[Route] | None:
    """The configured routes for ``domain`` (exact name first, then ``*``), or None."""
    table = {k.lower().rstrip("."): v for k, v in settings.mta.relay_static_routes.items()}
    value = table.get(domain.lower().rstrip(".")) or table.get(STATIC_WILDCARD)
    if value is None:
        return None
    try:
        return parse_routes(value, settings.mta.relay_port)
    except ValueError as exc:
        # A configuration mistake: retry (the operator can fix it) rather than bounce.
        raise RouteError(f"mta.relay_static_routes: {exc}", permanent=False,
                         status="4.3.5") from None


def order_mx(records: Iterable[tuple[int, str]], port: int,
             rng: random.Random | None = None) -> list[Route]:
    """Routes from MX records: ascending preference, equal preferences shuffled."""
    chooser = rng or random.Random()  # noqa: S311 - load spreading, not security
    by_pref: dict[int, list[str]] = {}
    for pref, host in records:
        by_pref.setdefault(pref, []).append(host.rstrip(".").lower())
    routes: list[Route] = []
    for pref in sorted(by_pref):
        hosts = list(dict.fromkeys(by_pref[pref]))
        chooser.shuffle(hosts)
        routes.extend(Route(h, port, False, pref) for h in hosts)
    return routes


async def routes_for(domain: str, settings: Settings, resolver: MxResolver) -> list[Route]:
    """The hosts to try for ``domain``, best first (see the module docstring).

    Raises :class:`RouteError` (``permanent`` or not) when there is none.
    """
    static = static_routes(domain, settings)
    if static is not None:
        return static
    try:
        records = await resolver.mx(domain)
    except NoSuchDomain:
        raise RouteError(f"the domain {domain} does not exist (DNS NXDOMAIN)", permanent=True,
                         status="5.1.2") from None
    except DnsTemporaryError as exc:
        raise RouteError(str(exc), permanent=False, status="4.4.3") from None
    if any(host in ("", ".") for _pref, host in records):
        if len(records) == 1:
            raise RouteError(f"the domain {domain} accepts no mail (null MX, RFC 7505)",
                             permanent=True, status="5.1.10")
        records = [(p, h) for p, h in records if h not in ("", ".")]
    if not records:
        return [Route(domain.lower(), settings.mta.relay_port)]
    return order_mx(records, settings.mta.relay_port)


__all__ = [
    "DnsResolver",
    "DnsTemporaryError",
    "MxResolver",
    "NoSuchDomain",
    "Route",
    "RouteError",
    "order_mx",
    "parse_routes",
    "routes_for",
    "static_routes",
]
