"""The operator's certificate authority: issuance, revocation, CRL, export (RFC 5280).

The CA stands in for the national health PKI (IGC-Santé) so that a deployment and its tests run
without any outside service. Its certificates follow IGC-Santé's naming where it matters to
the rest of Missive (see ``docs/certificates.md``):

- **professional** (client authentication, like the authentication certificate of a CPS card):
  subject ``C=FR, title=<profession>, SN=<surname> + GN=<given name> + CN=8<RPPS>`` — the
  national identifier ``8`` + RPPS in the CN of a multi-valued RDN, as in IGC-Santé "PS"
  certificates (rendered ``CN=810001234565+GN=Marie+SN=Curie,T=Médecin,C=FR``);
- **operator** (inter-operator SMTP, both ends): subject ``C=FR, ST=…, O=…, OU=…, CN=<domain>``,
  as IGC-Santé "ORG" certificates; its RFC 4514 subject is what the trust space records
  (``DNCertificatOperateur``);
- **server**: SANs for the DNS names and IP addresses given (RFC 6125), CN the first name.

Implementation notes:
- Keys: ECDSA P-256 by default, RSA 3072 as an option (``init_ca(algorithm="rsa")``); leaf keys
  use the CA's algorithm. Signatures SHA-256. Serial numbers are random 159-bit integers
  (RFC 5280 §4.1.2.2: positive, at most 20 octets), shown in upper-case hex.
- ``not_before`` is set five minutes in the past to tolerate clock skew between hosts.
- Every write happens under the directory lock (:func:`missive.certs.files.locked`) and is
  atomic; private keys are written 0600 from the start, never logged.
- ``revoke`` regenerates the CRL at once, so a listener (which reloads the CRL when the file
  changes) refuses the certificate at its next handshake.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from missive.certs import files, identity
from missive.certs.errors import (
    CAExists,
    CANotInitialised,
    CertError,
    InvalidRequest,
    UnknownCertificate,
    WrongPassword,
)
from missive.certs.files import CertInfo, CertsLayout, Kind
from missive.config import Settings
from missive.identity.rpps import RppsError, national_id_from_rpps, parse_national_id

log = logging.getLogger(__name__)

Algorithm = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_DAYS = 3650
SERVER_DAYS = 397  # the CA/Browser Forum's ceiling; short lives keep rotation exercised
OPERATOR_DAYS = 1095  # IGC-Santé ORG certificates last three years
PROFESSIONAL_DAYS = 1095  # CPS cards last three years
CLOCK_SKEW = timedelta(minutes=5)

#: Revocation reasons accepted by ``revoke`` (RFC 5280 §5.3.1), CLI spelling → enum.
REASONS: dict[str, x509.ReasonFlags] = {
    flag.name: flag for flag in x509.ReasonFlags if flag is not x509.ReasonFlags.remove_from_crl
}

# RFC 1035 §2.3.1 / RFC 5890 A-labels; a leading "*." wildcard is allowed (RFC 6125 §6.4.3).
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def _now() -> datetime:
    return datetime.now(UTC)


def _serial_hex(value: int) -> str:
    return format(value, "X")


# ---------------------------------------------------------------- keys and files


def _new_key(algorithm: str) -> PrivateKey:
    if algorithm == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise InvalidRequest(f"unknown key algorithm {algorithm!r}: use 'ec' (P-256) or 'rsa' (3072)")


def _algorithm_of(key: PrivateKey) -> Algorithm:
    return "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ec"


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_ca(settings: Settings) -> tuple[x509.Certificate, PrivateKey]:
    """The CA certificate and key; :class:`CANotInitialised` when there is none."""
    layout = CertsLayout.of(settings)
    if not layout.ca_cert.exists() or not layout.ca_key.exists():
        raise CANotInitialised(
            f"no CA in {layout.root}: run `missive certs init-ca` (or `missive init`) first"
        )
    cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertError(f"{layout.ca_key} holds an unsupported key type")
    return cert, key


def ca_exists(settings: Settings) -> bool:
    layout = CertsLayout.of(settings)
    return layout.ca_cert.exists() and layout.ca_key.exists()


def _info(cert: x509.Certificate, kind: Kind, cert_file: Path, key_file: Path | None,
          key_algorithm: str) -> CertInfo:
    names: list[str] = []
    ips: list[str] = []
    emails: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = list(san.get_values_for_type(x509.DNSName))
        ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        emails = list(san.get_values_for_type(x509.RFC822Name))
    except x509.ExtensionNotFound:
        pass
    national_id = identity.national_id_of(cert) if kind == "professional" else None
    rpps = national_id[1:] if national_id and national_id.startswith("8") else None
    return CertInfo(
        serial=_serial_hex(cert.serial_number),
        kind=kind,
        subject=identity.format_dn(cert.subject),
        issuer=identity.format_dn(cert.issuer),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
        cert_file=str(cert_file),
        key_file=str(key_file) if key_file else None,
        names=names,
        ips=ips,
        emails=emails,
        national_id=national_id,
        rpps=rpps,
        key_algorithm=key_algorithm,
    )


# ---------------------------------------------------------------- the CA


def init_ca(
    settings: Settings,
    *,
    algorithm: Algorithm = "ec",
    cn: str | None = None,
    organisation: str | None = None,
    days: int = CA_DAYS,
) -> CertInfo:
    """Create the CA key and self-signed certificate, and an empty CRL.

    Refuses (:class:`CAExists`) when a CA is already there: re-creating it would silently
    invalidate every certificate it issued.
    """
    layout = CertsLayout.of(settings)
    _check_days(days)
    with files.locked(layout):
        if layout.ca_cert.exists() or layout.ca_key.exists():
            raise CAExists(
                f"a CA already exists in {layout.root}; remove that directory to start over "
                "(every certificate it issued will stop being trusted)"
            )
        files.ensure_dirs(layout)
        key = _new_key(algorithm)
        org = organisation or f"Missive {settings.domain}"
        subject = x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn or f"Missive CA {settings.domain}"),
        ])
        now = _now()
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + timedelta(days=days))
            # RFC 5280 §4.2.1.9: a CA that issues only end-entity certificates.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        files.write_atomic(layout.ca_key, _key_pem(key), mode=0o600)
        files.write_atomic(layout.ca_cert, _cert_pem(cert))
        info = _info(cert, "ca", layout.ca_cert, layout.ca_key, algorithm)
        info.active = True
        if layout.index.exists():
            # Left over from a removed CA: its certificates mean nothing to the new one.
            stamp = _now().strftime("%Y%m%dT%H%M%S")
            layout.index.rename(layout.index.with_name(f"index-{stamp}.json.old"))
        files.write_index(layout, [info])
        _write_crl(settings, cert, key, [])
    log.info("certs: CA created", extra={"serial": info.serial, "algorithm": algorithm})
    return info


def _check_days(days: int) -> None:
    if days < 1 or days > 36500:
        raise InvalidRequest(f"validity must be between 1 and 36500 days, got {days}")


def _issue(
    settings: Settings,
    *,
    kind: Kind,
    subject: x509.Name,
    san: list[x509.GeneralName],
    eku: list[x509.ObjectIdentifier],
    days: int,
) -> tuple[CertInfo, x509.Certificate, PrivateKey]:
    _check_days(days)
    ca_cert, ca_key = load_ca(settings)
    layout = CertsLayout.of(settings)
    algorithm = _algorithm_of(ca_key)
    key = _new_key(algorithm)
    now = _now()
    not_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=algorithm == "rsa", data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if san:
        # RFC 5280 §4.2.1.6: critical only when the subject is empty; ours never is.
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    serial = _serial_hex(cert.serial_number)
    with files.locked(layout):
        files.ensure_dirs(layout)
        files.write_atomic(layout.issued_key(serial), _key_pem(key), mode=0o600)
        files.write_atomic(layout.issued_cert(serial), _cert_pem(cert))
        info = _info(cert, kind, layout.issued_cert(serial), layout.issued_key(serial), algorithm)
        entries = files.read_index(layout)
        entries.append(info)
        files.write_index(layout, entries)
    log.info("certs: issued", extra={"kind": kind, "serial": serial})
    return info, cert, key


def _activate(settings: Settings, info: CertInfo, cert: x509.Certificate, key: PrivateKey,
              role: Literal["server", "operator"]) -> None:
    """Install ``cert`` as the active server/operator certificate (leaf + CA chain, key)."""
    layout = CertsLayout.of(settings)
    ca_cert, _ = load_ca(settings)
    cert_path, key_path = (
        (layout.server_cert, layout.server_key) if role == "server"
        else (layout.operator_cert, layout.operator_key)
    )
    with files.locked(layout):
        # Key first: a listener that sees the new certificate must find its key.
        files.write_atomic(key_path, _key_pem(key), mode=0o600)
        files.write_atomic(cert_path, _cert_pem(cert) + _cert_pem(ca_cert))
        entries = files.read_index(layout)
        for entry in entries:
            if entry.kind == role:
                entry.active = entry.serial == info.serial
        files.write_index(layout, entries)
    info.active = True


def _dns_name(name: str) -> str:
    text = name.strip().rstrip(".").lower()
    try:
        ascii_name = text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError:
        raise InvalidRequest(f"invalid DNS name {name!r} for a certificate SAN") from None
    labels = ascii_name.split(".")
    if labels and labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            raise InvalidRequest(f"wildcard {name!r} must cover a name with 2+ labels")
    if not labels or len(ascii_name) > 253 or not all(_LABEL.fullmatch(lb) for lb in labels):
        raise InvalidRequest(
            f"invalid DNS name {name!r} for a certificate SAN: use letters, digits and "
            "hyphens in dot-separated labels (e.g. mail.example.fr); put IP addresses in --ip"
        )
    return ascii_name


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        raise InvalidRequest(f"invalid IP address {value!r} for a certificate SAN") from None


def issue_server(
    settings: Settings,
    names: list[str],
    ips: list[str] | None = None,
    *,
    days: int = SERVER_DAYS,
    activate: bool = True,
) -> CertInfo:
    """Issue a TLS server certificate for DNS ``names`` and ``ips`` (RFC 6125 SANs).

    With ``activate`` (default) it becomes the certificate every listener serves (reloaded by
    running listeners without a restart). It also carries ``clientAuth``: an MTA relaying to a
    peer presents it when no operator certificate exists.
    """
    dns = list(dict.fromkeys(_dns_name(n) for n in names if n.strip()))
    addrs = list(dict.fromkeys(_ip(i) for i in (ips or []) if i.strip()))
    if not dns and not addrs:
        raise InvalidRequest("a server certificate needs at least one --name or --ip")
    cn = dns[0] if dns else str(addrs[0])
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    san += [x509.IPAddress(a) for a in addrs]
    subject = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Missive {settings.domain}"),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ])
    info, cert, key = _issue(
        settings, kind="server", subject=subject, san=san,
        eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], days=days,
    )
    if activate:
        _activate(settings, info, cert, key, "server")
    return info


def issue_operator(
    settings: Settings,
    domain: str,
    *,
    organisation: str | None = None,
    unit: str | None = None,
    state: str | None = None,
    names: list[str] | None = None,
    days: int = OPERATOR_DAYS,
    activate: bool = True,
) -> CertInfo:
    """Issue the operator certificate presented to (and by) other operators over SMTP.

    Subject ``C=FR[, ST=state], O=organisation[, OU=unit], CN=domain`` like an IGC-Santé ORG
    certificate; ``info.subject`` is the RFC 4514 string to register in the peers' trust space
    (``DNCertificatOperateur``). SANs: the domain and ``names`` (MTA host names).
    """
    cn = _dns_name(domain)
    extra = [_dns_name(n) for n in (names or []) if n.strip()]
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")]
    if state:
        attrs.append(x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, _text(state, "state")))
    attrs.append(x509.NameAttribute(
        NameOID.ORGANIZATION_NAME, _text(organisation or f"Missive {settings.domain}", "O")))
    if unit:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _text(unit, "OU")))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys([cn, *extra])]
    info, cert, key = _issue(
        settings, kind="operator", subject=x509.Name(attrs), san=san,
        eku=[ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH], days=days,
    )
    if activate:
        _activate(settings, info, cert, key, "operator")
    return info


def _text(value: str, what: str, limit: int = 64) -> str:
    text = " ".join(value.split())
    # RFC 5280 Appendix A upper bounds: ub-common-name / ub-organization-name = 64.
    if not text or len(text) > limit:
        raise InvalidRequest(f"{what} must be 1 to {limit} characters, got {len(text)}")
    return text


def issue_professional(
    settings: Settings,
    rpps: str,
    name: str,
    *,
    given_name: str | None = None,
    surname: str | None = None,
    profession: str | None = None,
    email: str | None = None,
    days: int = PROFESSIONAL_DAYS,
) -> CertInfo:
    """Issue a professional's client certificate carrying the national id ``8`` + RPPS.

    ``rpps`` is the 11-digit RPPS (Luhn-checked) or the national id ``8`` + RPPS. ``name`` is
    the display name; ``given_name`` / ``surname`` default to its first word / the rest.
    ``email`` (the professional's mailbox) goes in an rfc822Name SAN, for SASL EXTERNAL.
    """
    try:
        if len(rpps) == 12:
            kind, number = parse_national_id(rpps)
            if kind != "rpps":
                raise RppsError("only RPPS professionals get certificates here")
            national_id = "8" + number
        else:
            national_id = national_id_from_rpps(rpps)
    except RppsError as exc:
        raise InvalidRequest(f"invalid RPPS {rpps!r}: {exc}") from None
    display = " ".join(name.split())
    if not display:
        raise InvalidRequest("a professional certificate needs a --name")
    first, _, rest = display.partition(" ")
    given = _text(given_name or first, "given name")
    family = _text(surname or rest or first, "surname")
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "FR")]
    if profession:
        attrs.append(x509.NameAttribute(NameOID.TITLE, _text(profession, "profession")))
    subject = x509.Name([
        *(x509.RelativeDistinguishedName([a]) for a in attrs),
        # IGC-Santé "PS" certificates: one multi-valued RDN SN + GN + CN=<national id>.
        x509.RelativeDistinguishedName([
            x509.NameAttribute(NameOID.SURNAME, family),
            x509.NameAttribute(NameOID.GIVEN_NAME, given),
            x509.NameAttribute(NameOID.COMMON_NAME, national_id),
        ]),
    ])
    san: list[x509.GeneralName] = []
    if email:
        address = email.strip()
        if address.count("@") != 1 or not address.split("@")[0]:
            raise InvalidRequest(f"invalid e-mail address {email!r}")
        local, domain = address.split("@")
        san.append(x509.RFC822Name(f"{local}@{_dns_name(domain)}"))
    info, _, _ = _issue(
        settings, kind="professional", subject=subject, san=san,
        eku=[ExtendedKeyUsageOID.CLIENT_AUTH], days=days,
    )
    return info


# ---------------------------------------------------------------- lookup, revocation, CRL


def list_certs(settings: Settings, *, kind: Kind | None = None) -> list[CertInfo]:
    """Every certificate in the index (the CA first), optionally of one kind."""
    entries = files.read_index(CertsLayout.of(settings))
    return [e for e in entries if kind is None or e.kind == kind]


def find_cert(settings: Settings, serial: str) -> CertInfo:
    """The index entry for ``serial`` (hex, case and colons ignored; a unique prefix of 6+)."""
    wanted = serial.strip().upper().replace(":", "").removeprefix("0X")
    if not wanted or not re.fullmatch(r"[0-9A-F]+", wanted):
        raise UnknownCertificate(
            f"{serial!r} is not a serial number: give it in hex, as `missive certs list` shows"
        )
    wanted = wanted.lstrip("0") or "0"
    entries = files.read_index(CertsLayout.of(settings))
    exact = [e for e in entries if e.serial == wanted]
    if exact:
        return exact[0]
    matches = [e for e in entries if len(wanted) >= 6 and e.serial.startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UnknownCertificate(f"serial prefix {serial!r} is ambiguous: give more digits")
    raise UnknownCertificate(
        f"no certificate with serial {serial!r} was issued here (see `missive certs list`)"
    )


def parse_reason(reason: str) -> x509.ReasonFlags:
    key = re.sub(r"(?<!^)(?=[A-Z])", "_", reason.strip()).replace("-", "_").lower()
    key = key.replace("__", "_")
    if key not in REASONS:
        raise InvalidRequest(
            f"unknown revocation reason {reason!r}: use one of {', '.join(sorted(REASONS))}"
        )
    return REASONS[key]


def revoke(
    settings: Settings, serial: str, reason: str = "unspecified", *, regenerate_crl: bool = True
) -> CertInfo:
    """Mark a certificate revoked with an RFC 5280 §5.3.1 reason, and (by default) re-sign
    the CRL so that listeners refuse it at their next handshake."""
    flag = parse_reason(reason)
    layout = CertsLayout.of(settings)
    target = find_cert(settings, serial)
    if target.kind == "ca":
        raise InvalidRequest("the CA cannot revoke itself; create a new CA instead")
    with files.locked(layout):
        entries = files.read_index(layout)
        for entry in entries:
            if entry.serial == target.serial:
                if entry.status != "revoked":
                    entry.status = "revoked"
                    entry.revoked_at = _now()
                    entry.revocation_reason = flag.name
                target = entry
        files.write_index(layout, entries)
    log.info("certs: revoked", extra={"serial": target.serial, "reason": flag.name})
    if regenerate_crl:
        generate_crl(settings)
    return target


def generate_crl(settings: Settings, *, days: int | None = None) -> Path:
    """Sign a fresh CRL listing every revoked certificate; returns its path (``crl.pem``)."""
    ca_cert, ca_key = load_ca(settings)
    layout = CertsLayout.of(settings)
    with files.locked(layout):
        _write_crl(settings, ca_cert, ca_key, files.read_index(layout), days=days)
    return layout.crl


def _write_crl(settings: Settings, ca_cert: x509.Certificate, ca_key: PrivateKey,
               entries: list[CertInfo], *, days: int | None = None) -> None:
    now = _now()
    lifetime = timedelta(days=days if days is not None else settings.certs.crl_days)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - CLOCK_SKEW)
        .next_update(now + lifetime)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        # RFC 5280 §5.2.3: a monotonically increasing CRL number (time-based here).
        .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
    )
    for entry in entries:
        if entry.status != "revoked" or entry.kind == "ca":
            continue
        revoked = x509.RevokedCertificateBuilder().serial_number(int(entry.serial, 16))
        revoked = revoked.revocation_date(entry.revoked_at or now)
        reason = REASONS.get(entry.revocation_reason or "unspecified")
        if reason is not None and reason is not x509.ReasonFlags.unspecified:
            revoked = revoked.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    crl = builder.sign(ca_key, hashes.SHA256())
    files.write_atomic(CertsLayout.of(settings).crl, crl.public_bytes(serialization.Encoding.PEM))


def refresh_crl_if_due(settings: Settings) -> bool:
    """Re-sign the CRL when a third of its lifetime is left (or it is missing); True if done.

    Called by listeners when they check their files, so that an idle deployment never ends up
    refusing every client because nobody ran ``missive certs crl`` in time.
    """
    layout = CertsLayout.of(settings)
    if not ca_exists(settings):
        return False
    if layout.crl.exists():
        crl = x509.load_pem_x509_crl(layout.crl.read_bytes())
        next_update = crl.next_update_utc
        last_update = crl.last_update_utc
        if next_update is not None:
            remaining = next_update - _now()
            if remaining > (next_update - last_update) / 3:
                return False
    ca_cert, ca_key = load_ca(settings)
    try:
        with files.locked(layout, blocking=False):
            _write_crl(settings, ca_cert, ca_key, files.read_index(layout))
    except BlockingIOError:
        return False  # a CLI command is writing; the next check will do it
    return True


# ---------------------------------------------------------------- export and import


def _load_issued(settings: Settings, info: CertInfo) -> tuple[x509.Certificate, PrivateKey | None]:
    cert = x509.load_pem_x509_certificate(Path(info.cert_file).read_bytes())
    key: PrivateKey | None = None
    if info.key_file and Path(info.key_file).exists():
        loaded = serialization.load_pem_private_key(Path(info.key_file).read_bytes(), None)
        if isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            key = loaded
    return cert, key


def export_pem(settings: Settings, serial: str, *, include_key: bool = False) -> bytes:
    """The certificate and CA chain in PEM (``serial`` may be ``"ca"``), key appended on
    request."""
    if serial.lower() == "ca":
        ca_cert, _ = load_ca(settings)
        return _cert_pem(ca_cert)
    info = find_cert(settings, serial)
    cert, key = _load_issued(settings, info)
    ca_cert, _ = load_ca(settings)
    out = _cert_pem(cert) + (_cert_pem(ca_cert) if info.kind != "ca" else b"")
    if include_key:
        if key is None:
            raise CertError(f"the private key of {info.serial} is not stored here")
        out += _key_pem(key)
    return out


def export_pkcs12(settings: Settings, serial: str, password: bytes | str) -> bytes:
    """A password-protected PKCS#12 (RFC 7292) with the key, certificate and CA certificate.

    Encrypted with PBES2 / AES-256-CBC and a SHA-256 MAC, which OpenSSL 3, Firefox/Thunderbird,
    macOS and Windows open (the legacy RC2/3DES defaults are refused by OpenSSL 3).
    """
    secret = password.encode("utf-8") if isinstance(password, str) else password
    if len(secret) < 8:
        raise InvalidRequest("a PKCS#12 password must have at least 8 characters")
    info = find_cert(settings, serial)
    if info.kind == "ca":
        raise InvalidRequest("the CA key is never exported; export the CA certificate as PEM")
    cert, key = _load_issued(settings, info)
    if key is None:
        raise CertError(f"the private key of {info.serial} is not stored here")
    ca_cert, _ = load_ca(settings)
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(100_000)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(secret)
    )
    friendly = info.national_id or (info.names[0] if info.names else info.serial)
    return pkcs12.serialize_key_and_certificates(
        name=friendly.encode("utf-8"),
        key=key,
        cert=cert,
        cas=[ca_cert],
        encryption_algorithm=encryption,
    )


def import_pkcs12(
    settings: Settings,
    data: bytes,
    password: bytes | str | None,
    *,
    role: Literal["server", "operator"] = "server",
) -> CertInfo:
    """Install a certificate issued elsewhere (e.g. an IGC-Santé server or ORG certificate,
    delivered as PKCS#12) as the active server or operator certificate."""
    secret = password.encode("utf-8") if isinstance(password, str) else password
    try:
        key, cert, chain = pkcs12.load_key_and_certificates(data, secret or None)
    except ValueError as exc:
        text = str(exc).lower()
        if "password" in text or "mac" in text or "decrypt" in text:
            raise WrongPassword(
                "the PKCS#12 file could not be opened with that password: check it and retry"
            ) from None
        raise InvalidRequest(f"not a PKCS#12 file: {exc}") from None
    if cert is None or key is None:
        raise InvalidRequest("the PKCS#12 file must hold a certificate and its private key")
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidRequest("only EC and RSA keys are supported")
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise InvalidRequest("the private key does not match the certificate")
    if cert.not_valid_after_utc <= _now():
        raise InvalidRequest(
            f"the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}: import a valid one"
        )
    layout = CertsLayout.of(settings)
    cert_path, key_path = (
        (layout.server_cert, layout.server_key) if role == "server"
        else (layout.operator_cert, layout.operator_key)
    )
    with files.locked(layout):
        files.ensure_dirs(layout)
        files.write_atomic(key_path, _key_pem(key), mode=0o600)
        files.write_atomic(cert_path, _cert_pem(cert) + b"".join(_cert_pem(c) for c in chain))
        info = _info(cert, role, cert_path, key_path, _algorithm_of(key))
        info.active = True
        # Ours no longer serve; if it is one of ours (re-imported), mark that one active.
        entries = files.read_index(layout)
        for entry in entries:
            if entry.kind == role:
                entry.active = entry.serial == info.serial
        files.write_index(layout, entries)
    return info


# ---------------------------------------------------------------- expiry


@dataclass(frozen=True)
class ExpiryItem:
    """One certificate or CRL the deployment depends on, and how long it has left."""

    role: str  # ca, server, operator, professional, crl, extra-ca
    serial: str
    subject: str
    path: str
    not_after: datetime
    days_left: float
    state: Literal["ok", "warning", "expired"]

    def to_dict(self) -> dict[str, object]:
        return {
            "role": self.role, "serial": self.serial, "subject": self.subject,
            "path": self.path, "not_after": self.not_after.isoformat(),
            "days_left": round(self.days_left, 1), "state": self.state,
        }


@dataclass(frozen=True)
class ExpiryReport:
    warn_days: int
    items: list[ExpiryItem]

    @property
    def worst(self) -> Literal["ok", "warning", "expired"]:
        states = {i.state for i in self.items}
        return "expired" if "expired" in states else "warning" if "warning" in states else "ok"

    def to_dict(self) -> dict[str, object]:
        return {"warn_days": self.warn_days, "state": self.worst,
                "items": [i.to_dict() for i in self.items]}


def _item(role: str, cert: x509.Certificate, path: Path, now: datetime,
          warn_days: int) -> ExpiryItem:
    left = (cert.not_valid_after_utc - now).total_seconds() / 86400
    state: Literal["ok", "warning", "expired"] = (
        "expired" if left <= 0 else "warning" if left <= warn_days else "ok")
    return ExpiryItem(role, _serial_hex(cert.serial_number), identity.format_dn(cert.subject),
                      str(path), cert.not_valid_after_utc, left, state)


def active_server_files(settings: Settings) -> tuple[Path, Path]:
    """Certificate chain and key the listeners serve (settings override our own files)."""
    layout = CertsLayout.of(settings)
    return (settings.certs.server_cert_file or layout.server_cert,
            settings.certs.server_key_file or layout.server_key)


def active_client_files(settings: Settings) -> tuple[Path, Path] | None:
    """Certificate and key presented to peers: configured, else operator, else server."""
    layout = CertsLayout.of(settings)
    if settings.certs.client_cert_file and settings.certs.client_key_file:
        return settings.certs.client_cert_file, settings.certs.client_key_file
    if layout.operator_cert.exists() and layout.operator_key.exists():
        return layout.operator_cert, layout.operator_key
    cert, key = active_server_files(settings)
    if cert.exists() and key.exists():
        return cert, key
    return None


def check_expiry(
    settings: Settings,
    warn_days: int | None = None,
    *,
    now: datetime | None = None,
    log_warnings: bool = True,
) -> ExpiryReport:
    """Expiry of what the deployment depends on: the CA, the served server certificate, the
    presented operator/client certificate, the CRL, the extra CAs; and of professional
    certificates that are still valid but expire within ``warn_days`` (already expired ones
    are history, shown by ``list``)."""
    warn = settings.certs.warn_days if warn_days is None else warn_days
    moment = now or _now()
    layout = CertsLayout.of(settings)
    items: list[ExpiryItem] = []
    if layout.ca_cert.exists():
        items.append(_item("ca", x509.load_pem_x509_certificate(layout.ca_cert.read_bytes()),
                           layout.ca_cert, moment, warn))
    server_cert, _ = active_server_files(settings)
    if server_cert.exists():
        chain = x509.load_pem_x509_certificates(server_cert.read_bytes())
        items.append(_item("server", chain[0], server_cert, moment, warn))
    client = active_client_files(settings)
    if client is not None and client[0] != server_cert:
        chain = x509.load_pem_x509_certificates(client[0].read_bytes())
        items.append(_item("operator", chain[0], client[0], moment, warn))
    if layout.crl.exists():
        crl = x509.load_pem_x509_crl(layout.crl.read_bytes())
        nxt = crl.next_update_utc or moment
        left = (nxt - moment).total_seconds() / 86400
        # A CRL lives days, not months: warn when less than a third of its lifetime is left.
        lifetime = (nxt - crl.last_update_utc).total_seconds() / 86400
        crl_state: Literal["ok", "warning", "expired"] = (
            "expired" if left <= 0 else "warning" if left <= lifetime / 3 else "ok")
        items.append(ExpiryItem("crl", "", identity.format_dn(crl.issuer), str(layout.crl),
                                nxt, left, crl_state))
    for extra in settings.certs.extra_ca_files:
        if extra.exists():
            for cert in x509.load_pem_x509_certificates(extra.read_bytes()):
                items.append(_item("extra-ca", cert, extra, moment, warn))
    for entry in files.read_index(layout):
        if entry.kind == "professional" and entry.status == "valid":
            left = (entry.not_after - moment).total_seconds() / 86400
            if 0 < left <= warn:
                items.append(ExpiryItem("professional", entry.serial, entry.subject,
                                        entry.cert_file, entry.not_after, left, "warning"))
    for item in items if log_warnings else []:
        if item.state != "ok":
            log.warning("certs: %s %s %s (%.1f days left)", item.role, item.subject,
                        item.state, item.days_left)
    return ExpiryReport(warn, items)


# ---------------------------------------------------------------- first start


def ensure_initialised(settings: Settings) -> None:
    """Idempotent: create the CA, its CRL and a server certificate when missing.

    The server certificate covers ``settings.mta.hostname``, ``settings.domain``,
    ``localhost`` and ``127.0.0.1``. Called by ``missive init``.
    """
    layout = CertsLayout.of(settings)
    if not ca_exists(settings):
        init_ca(settings)
    if not layout.crl.exists():
        generate_crl(settings)
    server_cert, server_key = active_server_files(settings)
    if not (server_cert.exists() and server_key.exists()):
        names = [settings.mta.hostname, settings.domain, "localhost"]
        issue_server(settings, names, ["127.0.0.1"])
