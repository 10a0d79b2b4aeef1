"""Professional identifiers: RPPS and ADELI (SPEC §1).

- **RPPS** (Répertoire partagé des professionnels de santé): 11 digits, the last one a Luhn
  check digit (ISO/IEC 7812-1 Annex B) over the first ten. The national identifier used in
  the health PKI and in directories is ``"8" + RPPS``; its system OID is
  ``1.2.250.1.71.4.2.1``.
- **ADELI**: 9 characters, national identifier ``"0" + ADELI``. The ADELI number carries a
  check character, but its algorithm is not published in any reliable public source we could
  find (the ANS documents describe the structure — department, profession, order — and not the
  key), so :func:`parse_adeli` validates the structure only (9 ASCII digits) and says so. A
  typo in an ADELI number is therefore caught by the directory lookup, not here.

Identifiers are parsed exactly: no spaces are stripped (they come from certificates, CSV
imports and the CLI, where a stray character is an error worth reporting).
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = [
    "RPPS_SYSTEM_OID",
    "RppsError",
    "luhn_check_digit",
    "luhn_valid",
    "national_id_from_adeli",
    "national_id_from_rpps",
    "parse_adeli",
    "parse_national_id",
    "parse_rpps",
]

RPPS_SYSTEM_OID = "1.2.250.1.71.4.2.1"

_DIGITS = re.compile(r"[0-9]+")


class RppsError(ValueError):
    """An RPPS, ADELI or national professional identifier is invalid; the message says why."""


def _digits(text: str) -> bool:
    return _DIGITS.fullmatch(text) is not None


def luhn_check_digit(payload: str) -> str:
    """The Luhn digit that makes ``payload + digit`` valid (used for test and demo data)."""
    if not _digits(payload):
        raise RppsError("Luhn payload must contain only digits")
    total = 0
    # Double every second digit starting from the rightmost digit of the payload (which will
    # be second from the right once the check digit is appended).
    for i, ch in enumerate(reversed(payload)):
        d = ord(ch) - 48
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    """True when ``number`` (digits) ends with its Luhn check digit."""
    return len(number) >= 2 and _digits(number) and luhn_check_digit(number[:-1]) == number[-1]


def parse_rpps(text: str) -> str:
    """Check an 11-digit RPPS number (Luhn) and return it."""
    if len(text) != 11:
        raise RppsError(f"RPPS must have 11 digits, got {len(text)} characters")
    if not _digits(text):
        raise RppsError("RPPS must contain only digits")
    expected = luhn_check_digit(text[:10])
    if text[10] != expected:
        raise RppsError(f"RPPS check digit should be {expected}, got {text[10]}")
    return text


def national_id_from_rpps(rpps: str) -> str:
    """National identifier of an RPPS professional: ``"8" + RPPS`` (checked)."""
    return "8" + parse_rpps(rpps)


def parse_adeli(text: str) -> str:
    """Check an ADELI number's structure (9 ASCII digits) and return it.

    The check character is not verified: no reliable public rule (see module docstring).
    """
    if len(text) != 9:
        raise RppsError(f"ADELI must have 9 digits, got {len(text)} characters")
    if not _digits(text):
        raise RppsError("ADELI must contain only digits")
    return text


def national_id_from_adeli(adeli: str) -> str:
    """National identifier of an ADELI professional: ``"0" + ADELI`` (checked)."""
    return "0" + parse_adeli(adeli)


def parse_national_id(text: str) -> tuple[Literal["rpps", "adeli"], str]:
    """Split a national professional identifier into its kind and the bare number.

    ``"8" + 11-digit RPPS`` → ``("rpps", rpps)``; ``"0" + 9-digit ADELI`` → ``("adeli", adeli)``.
    """
    if text.startswith("8") and len(text) == 12:
        return "rpps", parse_rpps(text[1:])
    if text.startswith("0") and len(text) == 10:
        return "adeli", parse_adeli(text[1:])
    raise RppsError(
        "national identifier must be 8 followed by an 11-digit RPPS, "
        f"or 0 followed by a 9-digit ADELI (got {len(text)} characters)"
    )
