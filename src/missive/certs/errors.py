"""Errors of the certificate authority and TLS layer.

Each message says what is wrong and what to do about it: the CLI prints it as is
(``missive certs …``), and the fronts log it when a listener cannot start.
"""

from __future__ import annotations

from missive.errors import MissiveError


class CertError(MissiveError):
    """A certificate operation failed for a reason the operator can fix."""


class CANotInitialised(CertError):
    """The operator CA does not exist yet (run ``missive certs init-ca`` or ``missive init``)."""


class CAExists(CertError):
    """``init-ca`` was asked to overwrite an existing CA."""


class UnknownCertificate(CertError):
    """No issued certificate has that serial number (or the prefix is ambiguous)."""


class InvalidRequest(CertError):
    """The subject data given for a certificate is invalid (bad SAN, bad RPPS, …)."""


class WrongPassword(CertError):
    """A PKCS#12 file could not be opened with the password given."""


class CertificateExpired(CertError):
    """A certificate (or CRL) needed to serve TLS has expired; it is never served silently."""


class ChainError(CertError):
    """A peer certificate does not chain to the CA it must chain to."""


class CertificateRevoked(ChainError):
    """A peer certificate is listed in a CRL we hold."""
