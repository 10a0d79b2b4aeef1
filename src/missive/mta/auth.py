"""SMTP AUTH on the submission listeners: PLAIN (RFC 4616), LOGIN, EXTERNAL (RFC 4422 App. A).

- Offered only over TLS (P1): the EHLO keyword is added by the submission handler once TLS is
  up, and aiosmtpd answers ``538 5.7.11`` (RFC 4954 §4) to AUTH on the STARTTLS listener before
  STARTTLS. ``mta.allow_plaintext_auth`` (development only, refused by the settings in
  production) lifts this.
- PLAIN and LOGIN check the password against the directory (Argon2id, the same cost for
  unknown logins). Suspended professionals never authenticate (P3). With
  ``mta.patient_submission`` an active patient may log in with the webmail password, by INS
  or patient address; a patient's mail still obeys P6.
- EXTERNAL: the identity is the national identifier in the verified client certificate
  (IGC-Santé "PS" certificate: ``CN=8<RPPS>``); the chain was verified by the TLS handshake
  against our CA and ``certs.extra_ca_files``, the CRLs were checked at the handshake or right
  after it (:meth:`ServerTLS.check_peer`). An authorization identity, when given, must be one
  of that professional's addresses.
- P10: failures are counted per (login, client address) and per address (:mod:`.limits`); a
  locked pair gets ``454 4.7.0`` without the password being checked, and a session with
  ``mta.auth_failures_per_session`` failures is closed with ``421 4.7.0``.

Implementation notes: the handler methods here replace aiosmtpd's built-in ``auth_PLAIN`` /
``auth_LOGIN`` (aiosmtpd prefers the handler's ``auth_<MECH>``). Secrets are never logged: the
exchange goes through aiosmtpd's ``challenge_auth`` (which does not log responses) and the
audit entries hold the login (truncated), the mechanism and the outcome only.
"""

from __future__ import annotations

import binascii
import logging
from base64 import b64decode
from typing import TYPE_CHECKING

from aiosmtpd.smtp import MISSING, SMTP, AuthResult

from missive.audit import log as audit
from missive.certs import identity
from missive.directory.passwords import verify_password
from missive.directory.patients import find_patient
from missive.directory.professionals import (
    authenticate_professional,
    find_professional,
    owned_addresses,
)
from missive.identity.address import AddressError, normalize_address, parse_patient_address
from missive.identity.ins import InsError, parse_matricule
from missive.mta import codes
from missive.mta.session import Principal, SmtpSession

if TYPE_CHECKING:
    from missive.mta.handlers import FrontContext

log = logging.getLogger(__name__)

_MAX_LOGIN = 320


def _b64(text: str) -> bytes | None:
    if text == "=":  # RFC 4954 §4: an empty initial response
        return b""
    try:
        return b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


class AuthMechanisms:
    """``auth_PLAIN``, ``auth_LOGIN`` and ``auth_EXTERNAL`` for a handler with ``ctx``."""

    ctx: FrontContext

    # --- mechanisms ---------------------------------------------------------------------------

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        session = _session(server)
        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
            assert isinstance(blob, bytes)  # noqa: S101 - challenge_auth returns bytes
        else:
            decoded = _b64(args[1])
            if decoded is None:
                await server.push(codes.AUTH_BAD_BASE64)
                return AuthResult(success=False, handled=True)
            blob = decoded
        pieces = blob.split(b"\x00")
        if len(pieces) != 3:
            await server.push(codes.AUTH_BAD_PLAIN)
            return AuthResult(success=False, handled=True)
        authzid, login, password = (p.decode("utf-8", "replace") for p in pieces)
        if authzid and authzid.lower() != login.lower():
            # Proxy authorization (acting as someone else) is not offered.
            return await self._failed(server, session, login, "PLAIN", "authzid differs")
        return await self._password(server, session, login, password, "PLAIN")

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        session = _session(server)
        if len(args) == 1:
            first = await server.challenge_auth("Username:")
            if first is MISSING:
                return AuthResult(success=False, handled=True)
            assert isinstance(first, bytes)  # noqa: S101
            user = first
        else:
            decoded = _b64(args[1])
            if decoded is None:
                await server.push(codes.AUTH_BAD_BASE64)
                return AuthResult(success=False, handled=True)
            user = decoded
        secret = await server.challenge_auth("Password:")
        if secret is MISSING:
            return AuthResult(success=False, handled=True)
        assert isinstance(secret, bytes)  # noqa: S101
        return await self._password(server, session, user.decode("utf-8", "replace"),
                                    secret.decode("utf-8", "replace"), "LOGIN")

    async def auth_EXTERNAL(self, server: SMTP, args: list[str]) -> AuthResult:
        session = _session(server)
        authzid = ""
        if len(args) > 1:
            decoded = _b64(args[1])
            if decoded is None:
                await server.push(codes.AUTH_BAD_BASE64)
                return AuthResult(success=False, handled=True)
            authzid = decoded.decode("utf-8", "replace")
        cert = session.tls.peer_cert if session.tls is not None else None
        if cert is None or session.revoked:
            await self._audit(session, "EXTERNAL", None, "refused", "no client certificate")
            return AuthResult(success=False, handled=False, message=codes.EXTERNAL_NO_CERT)
        national = identity.national_id_of(cert)
        principal: Principal | None = None
        if national is not None:
            async with self.ctx.core.db.read() as s:
                pro = await find_professional(s, national)
                if pro is not None and pro.status == "active":
                    owned = await owned_addresses(s, pro)
                    principal = Principal(kind="professional", login=pro.address,
                                          addresses=owned, mechanism="EXTERNAL",
                                          mailbox_id=pro.mailbox_id, professional_id=pro.id)
        if principal is not None and authzid:
            try:
                wanted = normalize_address(authzid)
            except AddressError:
                wanted = ""
            if wanted not in principal.addresses:
                principal = None
        if principal is None:
            return await self._failed(server, session, national or "certificate", "EXTERNAL",
                                      "certificate does not identify an active account",
                                      message=codes.EXTERNAL_UNKNOWN)
        return await self._succeeded(session, principal)

    # --- shared -------------------------------------------------------------------------------

    async def _password(self, server: SMTP, session: SmtpSession, login: str, password: str,
                        mechanism: str) -> AuthResult:
        login = login.strip()[:_MAX_LOGIN]
        lockout = self.ctx.limits.lockout
        if lockout.retry_after(login, session.client_ip) > 0:
            await self._audit(session, mechanism, login, "refused", "P10: locked out")
            return AuthResult(success=False, handled=False, message=codes.AUTH_LOCKED)
        try:
            principal = await self._check_password(login, password, mechanism)
        except Exception:
            log.exception("smtp: authentication backend failed")
            return AuthResult(success=False, handled=False, message=codes.AUTH_TEMP_FAILURE)
        if principal is None:
            lockout.failure(login, session.client_ip)
            return await self._failed(server, session, login, mechanism, "bad credentials")
        lockout.success(login, session.client_ip)
        return await self._succeeded(session, principal)

    async def _check_password(self, login: str, password: str,
                              mechanism: str) -> Principal | None:
        settings = self.ctx.settings
        patient_login = self._patient_matricule(login)
        async with self.ctx.core.db.read() as s:
            if patient_login is None:
                pro = await authenticate_professional(s, login, password, settings=settings)
                if pro is None:
                    return None
                owned = await owned_addresses(s, pro)
                return Principal(kind="professional", login=pro.address, addresses=owned,
                                 mechanism=mechanism, mailbox_id=pro.mailbox_id,
                                 professional_id=pro.id)
            patient = await find_patient(s, patient_login)
            stored = (patient.password_hash
                      if patient is not None and patient.status == "active" else None)
            check = await verify_password(settings, stored, password)
            if not check.ok or patient is None:
                return None
            address = f"{patient.matricule.lower()}@{settings.patient_domain}"
            return Principal(kind="patient", login=address, addresses=frozenset([address]),
                             mechanism=mechanism, mailbox_id=patient.mailbox_id,
                             patient_id=patient.id)

    def _patient_matricule(self, login: str) -> str | None:
        """The matricule when ``login`` names a patient and patients may submit, else None."""
        settings = self.ctx.settings
        if not settings.mta.patient_submission:
            return None
        try:
            if "@" in login:
                found = parse_patient_address(login, settings.patient_domain)
                return found.value if found is not None else None
            return parse_matricule(login.upper()).value
        except (AddressError, InsError):
            return None

    async def _failed(self, server: SMTP, session: SmtpSession, login: str, mechanism: str,
                      cause: str, *, message: str = codes.CREDENTIALS_INVALID) -> AuthResult:
        session.auth_failures += 1
        await self._audit(session, mechanism, login, "refused", cause)
        if session.auth_failures >= self.ctx.settings.mta.auth_failures_per_session:
            await server.push(codes.AUTH_TOO_MANY)
            if server.transport is not None:
                server.transport.close()
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message=message)

    async def _succeeded(self, session: SmtpSession, principal: Principal) -> AuthResult:
        session.principal = principal
        await self._audit(session, principal.mechanism, principal.login, "ok", None)
        return AuthResult(success=True, handled=False, auth_data=principal,
                          message=codes.AUTH_OK)

    async def _audit(self, session: SmtpSession, mechanism: str, login: str | None,
                     outcome: str, reason: str | None) -> None:
        try:
            async with self.ctx.core.db.write() as s:
                await audit.append(
                    s, "smtp.auth", actor=(login or None) and login[:100], outcome=outcome,
                    reason=reason,
                    details={"mechanism": mechanism, "listener": session.listener,
                             "client": session.client_ip, "session": session.id},
                )
        except Exception:
            log.exception("smtp: could not audit an authentication")


def _session(server: SMTP) -> SmtpSession:
    session = server.session
    assert isinstance(session, SmtpSession)  # noqa: S101 - our protocol creates them
    return session
