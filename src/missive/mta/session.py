"""Typed per-connection and per-transaction state of the SMTP fronts.

aiosmtpd keeps a ``Session`` per connection (reset by STARTTLS, RFC 3207 §4.2) and an
``Envelope`` per transaction (reset by RSET, EHLO and after DATA). Missive subclasses both so
that handlers read typed attributes instead of ``Any``: who authenticated (:class:`Principal`),
what TLS gave (:class:`TlsInfo`), and, per recipient, the directory facts the policy accepted
(:class:`RecipientPlan`).
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from dataclasses import dataclass, field
from typing import Literal

from aiosmtpd.smtp import Envelope, Session
from cryptography import x509

from missive.mta.params import MailDsn, RcptDsn

PrincipalKind = Literal["professional", "patient"]


@dataclass(frozen=True)
class Principal:
    """The authenticated identity of a submission session."""

    kind: PrincipalKind
    login: str
    #: Every address this identity may send as (P2), in normal form.
    addresses: frozenset[str]
    mechanism: str
    mailbox_id: int
    professional_id: int | None = None
    patient_id: int | None = None


@dataclass(frozen=True)
class TlsInfo:
    """What the TLS layer negotiated, for ``Received:`` and for P1/P7 decisions."""

    version: str
    cipher: str
    bits: int
    peer_cert: x509.Certificate | None = None

    @classmethod
    def of(cls, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> TlsInfo | None:
        if ssl_object is None:
            return None
        cipher = ssl_object.cipher()
        der = ssl_object.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der) if der else None
        name, version, bits = cipher if cipher else ("unknown", "unknown", 0)
        return cls(version=ssl_object.version() or version, cipher=name, bits=bits or 0,
                   peer_cert=cert)


@dataclass
class RecipientPlan:
    """One accepted RCPT: where it goes and its DSN parameters."""

    address: str
    kind: Literal["professional", "patient", "remote"]
    mailbox_id: int | None
    professional_id: int | None = None
    patient_id: int | None = None
    held: bool = False
    dsn: RcptDsn = field(default_factory=RcptDsn)


class SmtpSession(Session):
    """aiosmtpd's Session with Missive's typed connection state."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.id = secrets.token_hex(6)
        self.listener = ""
        self.tls: TlsInfo | None = None
        self.principal: Principal | None = None
        #: The MX peer's trust domain once MAIL FROM matched its certificate (P7).
        self.peer_domain: str | None = None
        self.auth_failures = 0
        self.errors = 0
        self.revoked = False
        self.pending_mail_dsn = MailDsn()
        self.pending_rcpt_dsn = RcptDsn()

    @property
    def client_ip(self) -> str:
        peer = self.peer
        if isinstance(peer, tuple) and peer:
            return str(peer[0])
        return str(peer or "unknown")


class SmtpEnvelope(Envelope):
    """aiosmtpd's Envelope with the accepted recipients' plans and the DSN parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.plans: list[RecipientPlan] = []
        self.dsn = MailDsn()
