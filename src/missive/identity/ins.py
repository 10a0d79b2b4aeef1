"""The matricule INS: the patient's national health identifier (SPEC §1).

A matricule INS is 15 characters: a 13-character NIR (or NIA) followed by a 2-digit key,
``key = 97 - (N mod 97)`` where N is the 13 characters read as an integer after replacing the
Corsican departments ``2A`` by ``19`` and ``2B`` by ``18``. It is the local part of a patient's
address, so this module must be exact (no stripping of spaces, no guessing) and its errors must
say precisely what is wrong, in English for operators (``str(err)``) and in plain French for
patients (``err.french``).

Structure checks (INSEE rules for the NIR, applied leniently: a real patient refused by an over-
strict check cannot receive mail, whereas a typo is caught by the key anyway):

- position 1, sex: ``1``/``2`` (NIR), ``3``/``4`` (old provisional numbers for people born
  abroad), ``7``/``8`` (provisional/waiting numbers: NIA, NTT);
- positions 2–3, year: any two digits;
- positions 4–5, month: ``01``–``12``; ``20``–``42`` (fictitious months INSEE assigns when the
  civil-status record is incomplete) and ``50``–``99`` (used in provisional numbers) are accepted;
  ``00``, ``13``–``19`` and ``43``–``49`` are refused;
- positions 6–7, department: ``01``–``99`` (``20`` is still found for people born in Corsica
  before 1976, ``96`` for pre-independence Tunisia, ``97``/``98`` overseas, ``99`` abroad) or
  ``2A``/``2B``; ``00`` and any other letters are refused;
- positions 8–10 (commune or country code): digits, not checked further (codes change over time);
- positions 11–13, order number: ``001``–``999``;
- key: ``01``–``97`` and equal to the computed key.

NIR and NIA share this format: what tells them apart is the OID that comes with the matricule
(``OID_NIR`` vs ``OID_NIA``), never the digits themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "OID_DEMO",
    "OID_NIA",
    "OID_NIR",
    "OID_TEST",
    "InsError",
    "InsErrorReason",
    "InsType",
    "Matricule",
    "check_oid",
    "compute_key",
    "ins_type",
    "parse_matricule",
    "validate_nir",
]

OID_NIR = "1.2.250.1.213.1.4.8"
OID_NIA = "1.2.250.1.213.1.4.9"
OID_TEST = "1.2.250.1.213.1.4.10"
OID_DEMO = "1.2.250.1.213.1.4.11"

InsType = Literal["NIR", "NIA", "TEST", "DEMO"]
InsErrorReason = Literal["length", "characters", "structure", "key", "oid"]

_OID_TYPES: dict[str, InsType] = {
    OID_NIR: "NIR",
    OID_NIA: "NIA",
    OID_TEST: "TEST",
    OID_DEMO: "DEMO",
}
_PRODUCTION_OIDS = frozenset({OID_NIR, OID_NIA})
_TEST_OIDS = frozenset({OID_TEST, OID_DEMO})

_SEX_DIGITS = frozenset("123478")
# ASCII digits only: str.isdigit() accepts "²" or Arabic-Indic digits, which int() may then
# read or reject; a matricule is plain ASCII.
_DIGITS = re.compile(r"[0-9]+")


class InsError(ValueError):
    """A matricule INS or an INS OID is invalid.

    ``str(err)`` is an English sentence for operators and logs; ``err.french`` a plain-French
    sentence that can be shown to a patient. Neither repeats the whole matricule. ``reason``
    classifies the error for callers that must not echo details (SMTP public texts): ``length``,
    ``characters``, ``structure`` (sex, month, department, order number), ``key`` or ``oid``.
    """

    def __init__(self, message: str, french: str, reason: InsErrorReason = "structure") -> None:
        super().__init__(message)
        self.french = french
        self.reason: InsErrorReason = reason


@dataclass(frozen=True)
class Matricule:
    """A checked matricule INS: 13-character NIR/NIA (uppercase) plus its 2-digit key."""

    nir: str
    key: str

    @property
    def value(self) -> str:
        """The 15-character matricule, as used in addresses."""
        return self.nir + self.key

    @property
    def is_corsican(self) -> bool:
        return self.nir[5:7] in ("2A", "2B")

    def __str__(self) -> str:
        return self.value


def _is_ascii_digits(text: str) -> bool:
    return _DIGITS.fullmatch(text) is not None


def _numeric(nir13: str) -> int:
    """N of SPEC §1: the 13 characters as an integer, 2A→19 and 2B→18."""
    dept = nir13[5:7]
    if dept == "2A":
        nir13 = nir13[:5] + "19" + nir13[7:]
    elif dept == "2B":
        nir13 = nir13[:5] + "18" + nir13[7:]
    return int(nir13)


def validate_nir(nir13: str) -> str:
    """Check the structure of a 13-character NIR/NIA and return it uppercased.

    Raises :class:`InsError` naming the first problem found (see the module docstring for the
    rules). Lowercase ``2a``/``2b`` are accepted (addresses are case-insensitive).
    """
    if len(nir13) != 13:
        raise InsError(
            f"NIR must have 13 characters, got {len(nir13)}",
            f"Le numéro doit comporter 13 caractères avant la clé ; il en a {len(nir13)}.",
            reason="length",
        )
    nir = nir13.upper()
    dept = nir[5:7]
    rest_ok = _is_ascii_digits(nir[:5]) and _is_ascii_digits(nir[7:])
    if not rest_ok:
        raise InsError(
            "NIR must contain only digits (letters allowed only in the department 2A/2B)",
            "Le numéro ne doit contenir que des chiffres (sauf 2A ou 2B pour la Corse).",
            reason="characters",
        )
    if dept not in ("2A", "2B") and not _is_ascii_digits(dept):
        raise InsError(
            f"department {_printable(dept)} is not valid (expected 01-99, 2A or 2B)",
            "Le département de naissance (6e et 7e caractères) n'est pas valide.",
            reason="structure",
        )
    if nir[0] not in _SEX_DIGITS:
        raise InsError(
            f"sex digit should be 1, 2, 3, 4, 7 or 8, got {nir[0]}",
            "Le premier chiffre du numéro doit être 1, 2, 3, 4, 7 ou 8.",
            reason="structure",
        )
    month = int(nir[3:5])
    if not (1 <= month <= 12 or 20 <= month <= 42 or month >= 50):
        raise InsError(
            f"month of birth {nir[3:5]} is not valid (expected 01-12, 20-42 or 50-99)",
            "Le mois de naissance (4e et 5e chiffres) n'est pas valide.",
            reason="structure",
        )
    if dept == "00":
        raise InsError(
            "department 00 is not valid",
            "Le département de naissance (6e et 7e caractères) n'est pas valide.",
            reason="structure",
        )
    if nir[10:13] == "000":
        raise InsError(
            "order number 000 is not valid (expected 001-999)",
            "Le numéro d'ordre (11e au 13e chiffre) n'est pas valide.",
            reason="structure",
        )
    return nir


def compute_key(nir13: str) -> str:
    """The 2-digit key of a 13-character NIR/NIA: ``97 - (N mod 97)`` (SPEC §1).

    Only the characters are required to be well-formed enough to compute N (digits, or 2A/2B in
    the department); the INSEE structure is checked by :func:`validate_nir`.
    """
    if len(nir13) != 13:
        raise InsError(
            f"NIR must have 13 characters, got {len(nir13)}",
            f"Le numéro doit comporter 13 caractères avant la clé ; il en a {len(nir13)}.",
            reason="length",
        )
    nir = nir13.upper()
    if not (_is_ascii_digits(nir[:5]) and _is_ascii_digits(nir[7:])) or not (
        nir[5:7] in ("2A", "2B") or _is_ascii_digits(nir[5:7])
    ):
        raise InsError(
            "NIR must contain only digits (letters allowed only in the department 2A/2B)",
            "Le numéro ne doit contenir que des chiffres (sauf 2A ou 2B pour la Corse).",
            reason="characters",
        )
    return f"{97 - (_numeric(nir) % 97):02d}"


def parse_matricule(text: str) -> Matricule:
    """Parse a 15-character matricule INS exactly as given (no spaces stripped).

    Lowercase ``2a``/``2b`` are accepted and uppercased. Raises :class:`InsError` with the exact
    reason: length, characters, structure of the NIR, or wrong key.
    """
    if len(text) != 15:
        raise InsError(
            f"matricule INS must have 15 characters, got {len(text)}",
            f"Le matricule INS doit comporter 15 caractères ; il en a {len(text)}.",
            reason="length",
        )
    nir = validate_nir(text[:13])
    key = text[13:]
    if not _is_ascii_digits(key):
        raise InsError(
            "INS key must be 2 digits",
            "La clé (2 derniers caractères) doit être composée de 2 chiffres.",
            reason="characters",
        )
    expected = compute_key(nir)
    if key != expected:
        raise InsError(
            f"INS key should be {expected}, got {key}",
            "La clé (2 derniers chiffres) ne correspond pas au numéro : vérifiez le numéro saisi.",
            reason="key",
        )
    return Matricule(nir=nir, key=key)


def ins_type(oid: str) -> InsType:
    """The kind of INS an OID designates, or :class:`InsError` if it is not an INS OID."""
    try:
        return _OID_TYPES[oid]
    except KeyError:
        raise InsError(
            f"OID {_printable(oid)} is not an INS OID "
            f"(expected {OID_NIR}, {OID_NIA}, {OID_TEST} or {OID_DEMO})",
            "Le type d'identifiant (OID) n'est pas reconnu.",
            reason="oid",
        ) from None


def check_oid(oid: str, *, test_mode: bool) -> None:
    """Refuse an OID that does not fit the deployment (SPEC §1).

    A test-mode deployment accepts only the test and demonstration OIDs; a production deployment
    only the NIR and NIA OIDs.
    """
    kind = ins_type(oid)
    if test_mode and oid not in _TEST_OIDS:
        raise InsError(
            f"OID {oid} ({kind}) is refused in test mode: use {OID_TEST} or {OID_DEMO}",
            "Cette installation de test n'accepte que des identités de test.",
            reason="oid",
        )
    if not test_mode and oid not in _PRODUCTION_OIDS:
        raise InsError(
            f"OID {oid} ({kind}) is a test/demo OID, refused in production",
            "Une identité de test ne peut pas être utilisée ici.",
            reason="oid",
        )


def _printable(text: str, limit: int = 40) -> str:
    """A short, safe rendering of operator-supplied text for error messages."""
    shown = text[:limit]
    return repr(shown) if not shown.isprintable() or len(text) > limit else shown
