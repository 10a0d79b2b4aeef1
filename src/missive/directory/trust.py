"""The trust space: operator domains allowed to exchange mail with us (SPEC §1, P4, P7).

Each trust domain has the CA certificates its MTAs' certificates chain to (added with
``missive admin trust add DOMAIN --ca FILE``) and the subject DN of the operator certificate.
The outbound relay verifies a peer against the CAs of the recipient's domain; the MX front
(P7) checks that the client certificate chains to a CA registered for the sender's domain.

Certificates are parsed here only to check they are CA certificates and to compute their
SHA-256 fingerprint (the uniqueness key per domain); chain validation is the TLS layer's job
(``missive.certs``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from missive.db.base import utcnow
from missive.directory import validate
from missive.directory.common import audit
from missive.directory.errors import InvalidField, NotFound
from missive.directory.models import TrustCa, TrustDomain


@dataclass(frozen=True)
class CaCertificate:
    """A parsed CA certificate ready to store."""

    pem: str
    fingerprint: str
    subject: str
    not_after: datetime


def parse_ca_certificates(data: bytes, *, field: str = "ca") -> list[CaCertificate]:
    """Every certificate in ``data`` (PEM, one or more; or a single DER certificate).

    Raises :class:`InvalidField` when nothing parses or a certificate is not a CA
    (RFC 5280 §4.2.1.9: basicConstraints cA must be true for a certificate that signs others).
    """
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise InvalidField(field, f"not a PEM or DER certificate file ({exc})") from None
    out: list[CaCertificate] = []
    for cert in certs:
        subject = cert.subject.rfc4514_string()
        try:
            basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            is_ca = basic.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise InvalidField(
                field, f"certificate {subject!r} is not a CA certificate (basicConstraints cA)"
            )
        der = cert.public_bytes(Encoding.DER)
        out.append(
            CaCertificate(
                pem=cert.public_bytes(Encoding.PEM).decode("ascii"),
                fingerprint=hashlib.sha256(der).hexdigest(),
                subject=subject,
                not_after=cert.not_valid_after_utc,
            )
        )
    return out


def trust_view(domain: TrustDomain, cas: Sequence[TrustCa] = ()) -> dict[str, Any]:
    return {
        "domain": domain.domain,
        "description": domain.description,
        "operator_dn": domain.operator_dn,
        "responsible_contact": domain.responsible_contact,
        "support_contact": domain.support_contact,
        "source": domain.source,
        "list_updated": domain.list_updated,
        "updated_at": domain.updated_at.isoformat(),
        "cas": [
            {
                "fingerprint": ca.fingerprint,
                "subject": ca.subject,
                "not_after": ca.not_after.isoformat(),
                "expired": ca.not_after <= utcnow(),
            }
            for ca in cas
        ],
    }


async def trust_domain_for(session: AsyncSession, domain: str) -> TrustDomain | None:
    """The trust-space entry for ``domain`` (any case, IDN allowed), or None."""
    try:
        name = validate.domain(domain)
    except InvalidField:
        return None
    result = await session.execute(select(TrustDomain).where(TrustDomain.domain == name))
    return result.scalar_one_or_none()


async def get_trust_domain(session: AsyncSession, domain: str) -> TrustDomain:
    found = await trust_domain_for(session, validate.domain(domain))
    if found is None:
        raise NotFound(f"{domain.strip()} is not in the trust space")
    return found


async def cas_of(session: AsyncSession, domain_id: int) -> Sequence[TrustCa]:
    result = await session.execute(
        select(TrustCa).where(TrustCa.domain_id == domain_id).order_by(TrustCa.id)
    )
    return result.scalars().all()


async def trusted_ca_pems(session: AsyncSession, domain: str | None = None) -> list[bytes]:
    """PEM CA certificates of one trust domain, or of the whole trust space (deduplicated)."""
    query = select(TrustCa.pem, TrustCa.fingerprint).order_by(TrustCa.id)
    if domain is not None:
        entry = await trust_domain_for(session, domain)
        if entry is None:
            return []
        query = query.where(TrustCa.domain_id == entry.id)
    seen: set[str] = set()
    pems: list[bytes] = []
    for pem, fingerprint in (await session.execute(query)).all():
        if fingerprint not in seen:
            seen.add(fingerprint)
            pems.append(pem.encode("ascii"))
    return pems


async def add_trust_domain(
    session: AsyncSession,
    domain: str,
    *,
    ca_data: bytes | None = None,
    operator_dn: str | None = None,
    description: str | None = None,
    actor: str | None,
) -> tuple[TrustDomain, list[CaCertificate]]:
    """Add ``domain`` to the trust space (or update it) and register its CA certificates.

    Adding a CA that is already registered for the domain is a no-op; returns the domain and
    the certificates that were new.
    """
    name = validate.domain(domain)
    certs = parse_ca_certificates(ca_data) if ca_data is not None else []
    dn = validate.text("operator_dn", operator_dn, required=False, limit=1000) or None
    desc = validate.text("description", description, required=False, limit=1000) or None
    entry = await trust_domain_for(session, name)
    now = utcnow()
    if entry is None:
        entry = TrustDomain(domain=name, source="manual", created_at=now, updated_at=now)
        session.add(entry)
    if dn is not None:
        entry.operator_dn = dn
    if desc is not None:
        entry.description = desc
    entry.updated_at = now
    await session.flush()
    known = {ca.fingerprint for ca in await cas_of(session, entry.id)}
    added: list[CaCertificate] = []
    for cert in certs:
        if cert.fingerprint in known:
            continue
        known.add(cert.fingerprint)
        session.add(TrustCa(domain_id=entry.id, pem=cert.pem, fingerprint=cert.fingerprint,
                            subject=cert.subject, not_after=cert.not_after, created_at=now))
        added.append(cert)
    await session.flush()
    await audit(
        session,
        "admin.trust.add",
        actor=actor,
        details={"domain": name, "cas_added": len(added)},
    )
    return entry, added


async def list_trust_domains(session: AsyncSession) -> Sequence[TrustDomain]:
    result = await session.execute(select(TrustDomain).order_by(TrustDomain.domain))
    return result.scalars().all()


async def delete_trust_domain(
    session: AsyncSession, domain: str, *, fingerprint: str | None = None, actor: str | None
) -> int:
    """Remove a domain (and its CAs), or only the CA with ``fingerprint``; returns rows removed.

    Mail from or to a removed domain is refused from then on (P4, P7).
    """
    entry = await get_trust_domain(session, domain)
    if fingerprint is not None:
        wanted = fingerprint.strip().lower().replace(":", "")
        for ca in await cas_of(session, entry.id):
            if ca.fingerprint == wanted:
                await session.delete(ca)
                await session.flush()
                await audit(session, "admin.trust.remove_ca", actor=actor,
                            details={"domain": entry.domain, "fingerprint": wanted})
                return 1
        raise NotFound(f"no CA with fingerprint {wanted} for {entry.domain}")
    await audit(session, "admin.trust.delete", actor=actor, details={"domain": entry.domain})
    await session.delete(entry)
    await session.flush()
    return 1
