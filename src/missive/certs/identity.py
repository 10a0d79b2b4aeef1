"""Who is on the other end of a TLS connection: read a peer certificate (RFC 5280 §4.1.2.6).

- A **professional** is identified by the national identifier ``8`` + RPPS (or ``0`` + ADELI)
  that IGC-Santé puts in the ``CN`` of the subject's multi-valued RDN
  (``SN=…+CN=810001234565+GN=…,T=Médecin,C=FR``); older CPS certificates carried it in
  ``serialNumber`` (2.5.4.5), which is read as a fallback. Only a value that parses as a
  national id (RPPS with a valid Luhn digit) is returned.
- An **operator** is identified by its certificate's subject DN, formatted as RFC 4514 with the
  short names the trust-space list uses (``CN=…,OU=…,O=…,ST=…,C=FR``);
  :func:`dn_matches` compares DNs structurally (RDN order, attribute-name aliases, case and
  spaces of values), so ``C=FR, O=x, CN=y`` and ``CN=y,O=x,C=FR`` match.
- :func:`verify_chain` checks that a peer certificate chains to one given CA (policy P7: the
  sender domain's CA, not merely any CA the listener trusts).

Pure functions over bytes: no settings, no I/O except what the caller passes in.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from missive.certs.errors import CertificateRevoked, ChainError
from missive.identity.rpps import RppsError, parse_national_id

#: Short names used when formatting a DN (OpenSSL / IGC-Santé spelling).
_SHORT_NAMES: dict[x509.ObjectIdentifier, str] = {
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "GN",
    NameOID.TITLE: "T",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.USER_ID: "UID",
}
#: Names accepted when parsing a DN string (case-insensitive).
_PARSE_NAMES: dict[str, x509.ObjectIdentifier] = {
    "SN": NameOID.SURNAME,
    "SURNAME": NameOID.SURNAME,
    "GN": NameOID.GIVEN_NAME,
    "GIVENNAME": NameOID.GIVEN_NAME,
    "T": NameOID.TITLE,
    "TITLE": NameOID.TITLE,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "E": NameOID.EMAIL_ADDRESS,
    "UID": NameOID.USER_ID,
    "CN": NameOID.COMMON_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "STREET": NameOID.STREET_ADDRESS,
    "DC": NameOID.DOMAIN_COMPONENT,
}


_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
_UNESCAPED_PLUS = re.compile(r"(?<!\\)\+")


def load_certificate(data: bytes | x509.Certificate) -> x509.Certificate:
    """A certificate from DER (``getpeercert(binary_form=True)``) or PEM bytes."""
    if isinstance(data, x509.Certificate):
        return data
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise ChainError(f"not a certificate: {exc}") from None


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> x509.Certificate | None:
    """The verified peer certificate of a TLS connection, or None when it sent none."""
    der = ssl_object.getpeercert(binary_form=True)
    return load_certificate(der) if der else None


def format_dn(name: x509.Name) -> str:
    """RFC 4514 string of a DN with short attribute names (stable, for storage and display)."""
    return name.rfc4514_string(_SHORT_NAMES)


def subject_dn(cert: bytes | x509.Certificate) -> str:
    """The subject DN of a certificate as :func:`format_dn` writes it (the operator DN)."""
    return format_dn(load_certificate(cert).subject)


def parse_dn(text: str) -> x509.Name:
    """Parse a DN written RFC 4514 style (``CN=a,O=b,C=FR``), also the forms seen in the wild:
    ``, `` separators and OpenSSL's slash form ``/C=FR/O=b/CN=a`` (most significant first)."""
    value = text.strip()
    try:
        if value.startswith("/"):
            parts = [p for p in value.split("/") if p]
            value = ",".join(reversed(parts))
        # Tolerate spaces around separators and lower-case attribute names (RFC 4514 §3 is
        # strict; configuration files are not): "cn=a, o=b" → "CN=a,O=b".
        rdns = []
        for rdn in _UNESCAPED_COMMA.split(value):
            avas = []
            for ava in _UNESCAPED_PLUS.split(rdn):
                name, sep, val = ava.partition("=")
                if not sep:
                    raise ValueError(f"{ava.strip()!r} has no '='")
                avas.append(f"{name.strip().upper()}={val.strip()}")
            rdns.append("+".join(avas))
        return x509.Name.from_rfc4514_string(",".join(rdns), _PARSE_NAMES)
    except ValueError as exc:
        raise ValueError(f"not a distinguished name {text!r}: {exc}") from None


def _canonical(name: x509.Name) -> list[frozenset[tuple[str, str]]]:
    return [
        frozenset((attr.oid.dotted_string, " ".join(str(attr.value).split()).casefold())
                  for attr in rdn)
        for rdn in name.rdns
    ]


def dn_matches(actual: str | x509.Name, expected: str | x509.Name) -> bool:
    """True when two DNs name the same subject (RFC 4517 §4.2.15 distinguishedNameMatch, with
    caseIgnoreMatch values and insignificant spaces, as directory servers compare them).

    Strings are read with :func:`parse_dn`; a string written in reverse order (``C=FR,…,CN=x``)
    also matches, since both orders circulate in configuration files.
    """
    try:
        a = actual if isinstance(actual, x509.Name) else parse_dn(actual)
        b = expected if isinstance(expected, x509.Name) else parse_dn(expected)
    except ValueError:
        return False
    ca, cb = _canonical(a), _canonical(b)
    return ca == cb or (not isinstance(expected, x509.Name) and ca == list(reversed(cb)))


def national_id_of(cert: bytes | x509.Certificate) -> str | None:
    """The professional national identifier (``8``+RPPS or ``0``+ADELI) in a certificate's
    subject: the CN (IGC-Santé), else ``serialNumber``; None when absent or invalid."""
    subject = load_certificate(cert).subject
    for oid in (NameOID.COMMON_NAME, NameOID.SERIAL_NUMBER):
        for attr in subject.get_attributes_for_oid(oid):
            value = str(attr.value).strip()
            try:
                parse_national_id(value)
            except RppsError:
                continue
            return value
    return None


def rpps_of(cert: bytes | x509.Certificate) -> str | None:
    """The 11-digit RPPS of a professional certificate, or None (not a professional, ADELI)."""
    national = national_id_of(cert)
    if national is None:
        return None
    kind, number = parse_national_id(national)
    return number if kind == "rpps" else None


def emails_of(cert: bytes | x509.Certificate) -> list[str]:
    """rfc822Name SANs (the mailbox a professional certificate was issued for)."""
    try:
        san = load_certificate(cert).extensions.get_extension_for_class(
            x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [e.lower() for e in san.value.get_values_for_type(x509.RFC822Name)]


@dataclass(frozen=True)
class PeerIdentity:
    """What the fronts need to know about a verified peer certificate."""

    subject: str
    issuer: str
    serial: str
    not_after: datetime
    national_id: str | None
    rpps: str | None
    emails: list[str]


def describe(cert: bytes | x509.Certificate) -> PeerIdentity:
    c = load_certificate(cert)
    return PeerIdentity(
        subject=format_dn(c.subject),
        issuer=format_dn(c.issuer),
        serial=format(c.serial_number, "X"),
        not_after=c.not_valid_after_utc,
        national_id=national_id_of(c),
        rpps=rpps_of(c),
        emails=emails_of(c),
    )


# ---------------------------------------------------------------- chains and CRLs


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def verify_chain(
    peer: bytes | x509.Certificate,
    ca_pem: bytes | Iterable[x509.Certificate],
    *,
    intermediates: Iterable[bytes | x509.Certificate] = (),
    crls: Iterable[x509.CertificateRevocationList] = (),
    at: datetime | None = None,
    max_depth: int = 5,
) -> list[x509.Certificate]:
    """Check that ``peer`` chains to a CA in ``ca_pem`` (RFC 5280 §6.1, simplified); returns the
    chain from the leaf to the trust anchor.

    Checks signatures, validity periods, that issuers are CAs, and revocation against ``crls``
    for every certificate whose issuer has a CRL among them. Raises :class:`ChainError`
    (:class:`CertificateRevoked`) saying which link failed. The TLS handshake has already
    verified the chain against everything the listener trusts; this narrows it to one domain's
    CA (policy P7).
    """
    leaf = load_certificate(peer)
    try:
        anchors = (list(x509.load_pem_x509_certificates(ca_pem)) if isinstance(ca_pem, bytes)
                   else list(ca_pem))
    except ValueError:
        anchors = []
    if not anchors:
        raise ChainError("no CA certificate to verify against")
    pool = [load_certificate(c) for c in intermediates]
    moment = at or datetime.now(UTC)
    crl_list = list(crls)
    chain = [leaf]
    current = leaf
    for _ in range(max_depth):
        _check_validity(current, moment)
        anchor = next((a for a in anchors if _signed_by(current, a)), None)
        if anchor is not None:
            _check_validity(anchor, moment)
            _check_revocation(current, anchor, crl_list, moment)
            chain.append(anchor)
            return chain
        issuer = next((c for c in pool if _is_ca(c) and _signed_by(current, c)), None)
        if issuer is None:
            raise ChainError(
                f"certificate {format_dn(current.subject)!r} is not issued by the expected CA "
                f"(issuer {format_dn(current.issuer)!r})"
            )
        _check_revocation(current, issuer, crl_list, moment)
        chain.append(issuer)
        current = issuer
    raise ChainError("certificate chain too long")


def _check_validity(cert: x509.Certificate, moment: datetime) -> None:
    if moment < cert.not_valid_before_utc:
        raise ChainError(f"certificate {format_dn(cert.subject)!r} is not valid yet")
    if moment >= cert.not_valid_after_utc:
        raise ChainError(f"certificate {format_dn(cert.subject)!r} has expired")


def crl_issued_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    """True when ``crl`` names ``issuer`` and carries a valid signature by its key."""
    if crl.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return crl.is_signature_valid(key)
    return False


def _check_revocation(cert: x509.Certificate, issuer: x509.Certificate,
                      crls: list[x509.CertificateRevocationList], moment: datetime) -> None:
    for crl in crls:
        if not crl_issued_by(crl, issuer):
            continue
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise CertificateRevoked(
                f"certificate {format_dn(cert.subject)!r} (serial "
                f"{cert.serial_number:X}) is revoked"
            )


def is_revoked(
    cert: bytes | x509.Certificate,
    issuers: Iterable[x509.Certificate],
    crls: Iterable[x509.CertificateRevocationList],
) -> bool:
    """True when a CRL signed by one of ``issuers`` lists ``cert`` (post-handshake check)."""
    leaf = load_certificate(cert)
    crl_list = list(crls)
    for issuer in issuers:
        if not _signed_by(leaf, issuer):
            continue
        try:
            _check_revocation(leaf, issuer, crl_list, datetime.now(UTC))
        except CertificateRevoked:
            return True
    return False


__all__ = [
    "PeerIdentity",
    "crl_issued_by",
    "describe",
    "dn_matches",
    "emails_of",
    "format_dn",
    "is_revoked",
    "load_certificate",
    "national_id_of",
    "parse_dn",
    "peer_certificate",
    "rpps_of",
    "subject_dn",
    "verify_chain",
]
