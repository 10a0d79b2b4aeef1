"""TLS contexts for every listener and outgoing connection of Missive (SPEC §4 TLS).

Policy, the same everywhere:
- TLS 1.2 or newer only (RFC 8996 deprecates 1.0 and 1.1; RFC 9325 §3.1.1); no compression
  (CRIME), no renegotiation; TLS 1.2 suites limited to ECDHE with AES-GCM or ChaCha20-Poly1305
  (RFC 9325 §4.2), TLS 1.3 suites are OpenSSL's defaults (all AEAD).
- Client certificates (``client_auth="optional"|"required"``) are verified against our CA,
  ``certs.extra_ca_files`` (e.g. the IGC-Santé chain) and the CA PEMs a front passes in (the
  trust space's CAs for the MX), with the CRLs we hold (``crl.pem`` + ``certs.crl_files``).

Revocation: OpenSSL's ``VERIFY_CRL_CHECK_LEAF`` fails a handshake when the leaf's issuer has no
CRL loaded, so it is enabled only when every issuing CA we trust has a CRL (the normal case:
our own CA always has one). Otherwise the handshake checks the chain only and the front calls
:meth:`ServerTLS.check_peer` after it, which consults the CRLs we do hold; the condition is
logged once per (re)load.

Hot reload without a restart: an asyncio server is given its ``SSLContext`` once, at listen time.
The context returned here has an SNI callback (RFC 6066 §3; OpenSSL calls it for every
ClientHello, with or without a server name) that, at most every ``certs.reload_seconds``,
checks the certificate, key, CA and CRL files (path, inode, mtime, size) and, when one changed,
builds a complete new context and switches the connection to it (``ssl_object.context = new``).
The switch happens before the server sends its certificate and its CertificateRequest, so the
new certificate, CA store and CRLs (and the CRL flag) all apply to that handshake; the verify
mode stays the listener's (it is copied when the connection is created), which is why it is
fixed per listener.

An expired server certificate is never served: building a context from one raises
:class:`CertificateExpired`; if it expires while running, handshakes are refused with an
``internal_error`` alert and an error is logged at every check, and a warning is logged from
``certs.warn_days`` before.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from missive.certs import ca as ca_mod
from missive.certs import identity
from missive.certs.errors import CertError, CertificateExpired, CertificateRevoked
from missive.certs.files import CertsLayout
from missive.config import Settings

log = logging.getLogger(__name__)

ClientAuth = Literal["none", "optional", "required"]

#: TLS 1.2 cipher suites: forward secrecy and AEAD only (RFC 9325 §4.2).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!SHA1:!SHA256:!SHA384@SECLEVEL=2"

_VERIFY_MODES = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


def _harden(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE


@dataclass
class Trust:
    """The CAs and CRLs a context verifies peers with."""

    cas: list[x509.Certificate]
    crls: list[x509.CertificateRevocationList]

    @property
    def every_issuer_has_crl(self) -> bool:
        """True when each issuing CA (one that signs no other CA in the set) has a CRL."""
        issuing = [
            c for c in self.cas
            if not any(o is not c and o.subject != c.subject and o.issuer == c.subject
                       for o in self.cas)
        ]
        return all(self._has_crl(c) for c in issuing)

    def _has_crl(self, ca_cert: x509.Certificate) -> bool:
        return any(identity.crl_issued_by(crl, ca_cert) for crl in self.crls)

    def missing_crl(self) -> list[str]:
        return [identity.format_dn(c.subject) for c in self.cas if not self._has_crl(c)]

    def load_into(self, ctx: ssl.SSLContext) -> bool:
        """Load CAs and CRLs into ``ctx``; returns whether leaf CRL checking was enabled."""
        if self.cas:
            ctx.load_verify_locations(cadata="".join(
                c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in self.cas))
        if self.crls:
            # ``cadata`` takes certificates only; CRLs go through a (PEM) file.
            pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.crls)
            fd, tmp = tempfile.mkstemp(prefix="missive-crl-", suffix=".pem")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(pem)
                ctx.load_verify_locations(cafile=tmp)
            finally:
                os.unlink(tmp)
        if self.crls and self.every_issuer_has_crl:
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
            return True
        return False


def _load_crl(path: Path) -> x509.CertificateRevocationList:
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def load_trust(settings: Settings, extra_ca_pem: Iterable[bytes] = ()) -> Trust:
    """Our CA (when there is one), ``certs.extra_ca_files``, ``extra_ca_pem``, and the CRLs."""
    layout = CertsLayout.of(settings)
    cas: list[x509.Certificate] = []
    if layout.ca_cert.exists():
        cas.extend(x509.load_pem_x509_certificates(layout.ca_cert.read_bytes()))
    for path in settings.certs.extra_ca_files:
        try:
            cas.extend(x509.load_pem_x509_certificates(path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise CertError(f"cannot read CA bundle {path} (certs.extra_ca_files): {exc}") from None
    for pem in extra_ca_pem:
        try:
            cas.extend(x509.load_pem_x509_certificates(pem))
        except ValueError as exc:
            raise CertError(f"invalid extra CA PEM: {exc}") from None
    crls: list[x509.CertificateRevocationList] = []
    for path in [layout.crl, *settings.certs.crl_files]:
        if path == layout.crl and not path.exists():
            continue
        try:
            crls.append(_load_crl(path))
        except (OSError, ValueError) as exc:
            raise CertError(f"cannot read CRL {path}: {exc}") from None
    unique: dict[bytes, x509.Certificate] = {}
    for cert in cas:
        unique.setdefault(cert.fingerprint(hashes.SHA256()), cert)
    return Trust(list(unique.values()), crls)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _check_leaf(cert_file: Path, settings: Settings, *, what: str,
                now: datetime | None = None) -> x509.Certificate:
    try:
        chain = x509.load_pem_x509_certificates(cert_file.read_bytes())
    except FileNotFoundError:
        raise CertError(
            f"no {what} certificate at {cert_file}: run `missive init` or "
            "`missive certs issue-server`"
        ) from None
    except ValueError as exc:
        raise CertError(f"{cert_file} is not a PEM certificate chain: {exc}") from None
    leaf = chain[0]
    now = now or _utcnow()
    if leaf.not_valid_after_utc <= now:
        raise CertificateExpired(
            f"the {what} certificate {cert_file} ({identity.format_dn(leaf.subject)}) expired "
            f"on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: issue a new one with "
            "`missive certs issue-server` (listeners pick it up without a restart)"
        )
    if leaf.not_valid_after_utc - now <= timedelta(days=settings.certs.warn_days):
        log.warning(
            "certs: the %s certificate %s expires on %s UTC", what, cert_file,
            f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M}",
        )
    return leaf


def _fingerprint_files(paths: Sequence[Path]) -> tuple[object, ...]:
    out: list[object] = []
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            out.append((str(path), None))
            continue
        out.append((str(path), st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class ServerTLS:
    """A listener's TLS configuration that follows its files (see the module docstring).

    ``context`` is the ``ssl.SSLContext`` to give to ``asyncio.start_server`` / aiosmtpd /
    uvicorn; it stays the same object for the listener's life.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client_auth: ClientAuth = "none",
        extra_ca_pem: Iterable[bytes] = (),
        reload_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if client_auth not in _VERIFY_MODES:
            raise CertError(f"client_auth must be none, optional or required, not {client_auth!r}")
        self.settings = settings
        self.client_auth: ClientAuth = client_auth
        self._extra_ca_pem = [bytes(p) for p in extra_ca_pem]
        self._interval = settings.certs.reload_seconds if reload_seconds is None else reload_seconds
        self._clock = clock
        self._now = wall_clock
        self._trust = Trust([], [])
        self._leaf: x509.Certificate | None = None
        self._crl_in_handshake = False
        self._signature: tuple[object, ...] = ()
        self._checked_at = clock()
        self.reloads = 0
        self.context = self._build()
        self._current = self.context
        self.context.sni_callback = self._on_client_hello

    # -- building

    def _watched(self) -> list[Path]:
        layout = CertsLayout.of(self.settings)
        cert, key = ca_mod.active_server_files(self.settings)
        return [cert, key, layout.ca_cert, layout.crl, *self.settings.certs.extra_ca_files,
                *self.settings.certs.crl_files]

    def _build(self) -> ssl.SSLContext:
        signature = _fingerprint_files(self._watched())
        cert_file, key_file = ca_mod.active_server_files(self.settings)
        leaf = _check_leaf(cert_file, self.settings, what="server", now=self._now())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        _harden(ctx)
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise CertError(
                f"cannot load the server certificate {cert_file} with key {key_file}: {exc}"
            ) from None
        ctx.verify_mode = _VERIFY_MODES[self.client_auth]
        trust = load_trust(self.settings, self._extra_ca_pem)
        crl_in_handshake = False
        if self.client_auth != "none":
            crl_in_handshake = trust.load_into(ctx)
            if not crl_in_handshake and trust.cas:
                log.warning(
                    "certs: no CRL for %s; revocation of their clients is checked after the "
                    "handshake only", ", ".join(trust.missing_crl()) or "some CAs",
                )
        self._trust, self._leaf, self._crl_in_handshake = trust, leaf, crl_in_handshake
        self._signature = signature
        return ctx

    def reload(self, *, force: bool = False) -> bool:
        """Rebuild the context if a watched file changed (or ``force``); True when rebuilt.

        A failed rebuild (a half-installed or expired certificate) is logged and the previous
        context kept, unless the previous certificate has expired too.
        """
        self._checked_at = self._clock()
        try:
            if ca_mod.refresh_crl_if_due(self.settings):
                log.info("certs: CRL re-signed before its next update")
        except (OSError, ValueError, CertError) as exc:
            log.warning("certs: could not refresh the CRL: %s", exc)
        if not force and _fingerprint_files(self._watched()) == self._signature:
            return False
        try:
            fresh = self._build()
        except (CertError, OSError, ValueError, ssl.SSLError) as exc:
            log.error("certs: keeping the previous TLS configuration: %s", exc)
            return False
        self._current = fresh
        self.reloads += 1
        log.info("certs: TLS configuration reloaded (%s)", self._describe())
        return True

    def _describe(self) -> str:
        leaf = self._leaf
        subject = identity.format_dn(leaf.subject) if leaf else "?"
        return f"serving {subject}, CRL in handshake: {self._crl_in_handshake}"

    def set_extra_ca_pem(self, pems: Iterable[bytes]) -> None:
        """Replace the CAs passed in by the front (the trust space changed) and reload."""
        self._extra_ca_pem = [bytes(p) for p in pems]
        self.reload(force=True)

    @property
    def crl_in_handshake(self) -> bool:
        return self._crl_in_handshake

    @property
    def current(self) -> ssl.SSLContext:
        """The context new handshakes use (``context`` until the first reload)."""
        return self._current

    # -- per handshake

    def _on_client_hello(
        self, ssl_object: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext
    ) -> int | None:
        if self._clock() - self._checked_at >= self._interval:
            try:
                self.reload()
            except Exception:  # a reload problem must not take the listener down
                log.exception("certs: TLS reload failed; keeping the previous configuration")
        leaf = self._leaf
        if leaf is not None and leaf.not_valid_after_utc <= self._now():
            log.error(
                "certs: refusing TLS: the server certificate %s expired on %s UTC; issue a "
                "new one with `missive certs issue-server`", identity.format_dn(leaf.subject),
                f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M}",
            )
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        if self._current is not self.context:
            ssl_object.context = self._current
        return None

    def check_peer(self, ssl_object: ssl.SSLObject | ssl.SSLSocket) -> x509.Certificate | None:
        """After the handshake: the client's certificate (None if it sent none), refused with
        :class:`CertificateRevoked` when a CRL we hold lists it. Needed only when
        :attr:`crl_in_handshake` is False, harmless otherwise."""
        cert = identity.peer_certificate(ssl_object)
        if cert is None:
            return None
        if identity.is_revoked(cert, self._trust.cas, self._trust.crls):
            raise CertificateRevoked(
                f"client certificate {identity.format_dn(cert.subject)} is revoked"
            )
        return cert


def server_tls(
    settings: Settings,
    *,
    client_auth: ClientAuth = "none",
    extra_ca_pem: Iterable[bytes] = (),
    reload_seconds: float | None = None,
    wall_clock: Callable[[], datetime] = _utcnow,
) -> ServerTLS:
    """A :class:`ServerTLS` (use when the front also needs ``check_peer`` / trust updates).

    ``wall_clock`` is injectable so that tests can move time past a certificate's expiry.
    """
    return ServerTLS(settings, client_auth=client_auth, extra_ca_pem=extra_ca_pem,
                     reload_seconds=reload_seconds, wall_clock=wall_clock)


def server_context(
    settings: Settings,
    *,
    client_auth: ClientAuth = "none",
    extra_ca_pem: Iterable[bytes] = (),
    reload_seconds: float | None = None,
) -> ssl.SSLContext:
    """The ``SSLContext`` of a listener: our server certificate, TLS 1.2+, client certificates
    per ``client_auth`` verified against our CA + extra CAs (+ CRLs), hot-reloaded.

    Raises :class:`CertificateExpired` when the server certificate has expired and
    :class:`CertError` when it is missing or unreadable.
    """
    return server_tls(settings, client_auth=client_auth, extra_ca_pem=extra_ca_pem,
                      reload_seconds=reload_seconds).context


def client_context(
    settings: Settings,
    *,
    client_cert: bool = True,
    extra_ca_pem: Iterable[bytes] = (),
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """The ``SSLContext`` for outgoing connections (relay to peers, tests).

    Verifies the server against our CA + extra CAs + ``extra_ca_pem`` (the peer domain's CA),
    with its host name (RFC 6125) unless ``check_hostname`` is False, and with the CRLs we hold.
    With ``client_cert`` it presents our operator certificate (else the server certificate,
    which also carries clientAuth), as inter-operator SMTP requires (policy P7).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(ctx)
    ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    trust = load_trust(settings, extra_ca_pem)
    if not trust.cas:
        raise CertError(
            "no CA to verify servers with: run `missive certs init-ca` or set "
            "certs.extra_ca_files"
        )
    trust.load_into(ctx)
    if client_cert:
        files = ca_mod.active_client_files(settings)
        if files is None:
            raise CertError(
                "no client certificate to present: run `missive certs issue-operator DOMAIN`"
            )
        cert_file, key_file = files
        _check_leaf(cert_file, settings, what="client")
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise CertError(f"cannot load the client certificate {cert_file}: {exc}") from None
    return ctx
