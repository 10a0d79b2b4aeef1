"""Who may open which mailbox over IMAP: the :class:`Authenticator` protocol and its
directory-backed implementation (SPEC §4: AUTH PLAIN / EXTERNAL, LOGIN only after TLS; C6).

The session never looks at passwords or certificates itself: it hands them to an authenticator
and gets back a :class:`Principal` (which mailbox to open) or ``None``. Tests inject their own;
:class:`DirectoryAuthenticator` asks :mod:`missive.directory` (P3: suspended professionals never
authenticate; client certificates carry the national id ``8`` + RPPS, RFC 4422 §A EXTERNAL).
Every attempt is written to the audit log with its outcome, never with the password.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from missive.audit import log as audit

if TYPE_CHECKING:
    from cryptography import x509

    from missive.runtime import Core

__all__ = ["Authenticator", "DirectoryAuthenticator", "Principal"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    """An authenticated user: the login shown in logs and the mailbox the session opens."""

    login: str
    mailbox_id: int


class Authenticator(Protocol):
    async def password(self, login: str, password: str) -> Principal | None:
        """RFC 3501 §6.2.3 LOGIN and RFC 4616 PLAIN."""

    async def certificate(self, cert: x509.Certificate,
                          authzid: str | None) -> Principal | None:
        """RFC 4422 Appendix A EXTERNAL, from a verified TLS client certificate."""


class DirectoryAuthenticator:
    """Professionals from the directory; each attempt audited (SPEC §7)."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def password(self, login: str, password: str) -> Principal | None:
        from missive.directory.professionals import authenticate_professional

        async with self.core.db.write() as s:
            pro = await authenticate_professional(s, login, password,
                                                  settings=self.core.settings)
            actor = self.core.store.actor_hash(login)
            await audit.append(s, "auth.imap", actor=actor,
                               mailbox_id=pro.mailbox_id if pro else None,
                               outcome="ok" if pro else "refused",
                               reason=None if pro else "bad credentials",
                               details={"mechanism": "password"})
        return Principal(pro.address, pro.mailbox_id) if pro is not None else None

    async def certificate(self, cert: x509.Certificate,
                          authzid: str | None) -> Principal | None:
        from missive.certs.identity import rpps_of
        from missive.directory.professionals import find_professional

        rpps = rpps_of(cert)
        async with self.core.db.write() as s:
            pro = await find_professional(s, rpps) if rpps else None
            if pro is not None and (pro.status != "active" or (
                    authzid and authzid.lower() != pro.address.lower())):
                pro = None
            await audit.append(s, "auth.imap", mailbox_id=pro.mailbox_id if pro else None,
                               outcome="ok" if pro else "refused",
                               reason=None if pro else "certificate not linked to an account",
                               details={"mechanism": "external"})
        return Principal(pro.address, pro.mailbox_id) if pro is not None else None
