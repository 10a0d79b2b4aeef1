"""Error types shared by the core and the fronts.

One protocol-facing error type separates what the client is told (``public_text``, never patient
data), the machine-readable code, and the logged cause (mox's shape). Fronts translate it: SMTP
to a reply code plus RFC 3463 enhanced status, IMAP to ``NO``/``BAD``, the web to a French page.
"""

from __future__ import annotations


class MissiveError(Exception):
    """Base of every error Missive raises on purpose."""


class SettingsError(MissiveError):
    """The configuration is invalid or unsafe; the message says what to fix."""


class KeyStoreUnavailable(MissiveError):
    """The master key is not available in this process (C2: SMTP front, or misconfiguration)."""


class NotFound(MissiveError):
    """An object does not exist, or the caller may not know it exists (no IDOR oracle)."""


class PolicyRefusal(MissiveError):
    """A policy rule refused an action.

    ``code`` is the SMTP reply code, ``enhanced`` the RFC 3463 status (``"5.7.1"``),
    ``public_text`` the sentence shown to the client, ``rule`` the SPEC rule (``"P4"``) and
    ``cause`` an operator-facing detail for logs (no content, no patient data).
    """

    def __init__(
        self, code: int, enhanced: str, public_text: str, rule: str, cause: str = ""
    ) -> None:
        super().__init__(f"{code} {enhanced} {public_text}")
        self.code = code
        self.enhanced = enhanced
        self.public_text = public_text
        self.rule = rule
        self.cause = cause or public_text

    @property
    def permanent(self) -> bool:
        return self.code >= 500
