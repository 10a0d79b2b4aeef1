"""Mail addresses: syntax (RFC 5321 §4.1.2, RFC 6531 §3.3), normal form, patient addresses.

Syntax accepted by :func:`split_address` (a *Mailbox* of RFC 5321 §4.1.2, without the angle
brackets of a Path):

- local part: a Dot-string (atoms of ``atext`` separated by single dots) or a Quoted-string;
  with SMTPUTF8 (RFC 6531 §3.3) ``atext`` and ``qtextSMTP`` also admit any non-ASCII UTF-8
  character, and the domain may contain U-labels;
- domain: dot-separated labels of letters, digits and hyphens (not starting or ending with a
  hyphen), or U-labels; address literals (``[192.0.2.1]``) are refused: nobody in a trust space
  is addressed by IP;
- sizes (RFC 5321 §4.5.3.1): local part at most 64 octets, domain at most 255 octets, the whole
  address at most 254 octets (a Path is at most 256 octets including ``<`` and ``>``). Octets are
  counted in UTF-8.

Normal form (:func:`normalize_address`) is the *lookup key* of an address, not what is written
on the wire: the domain is IDNA-normalised (UTS #46) to its ASCII A-label form, lowercased; the
local part is NFC-normalised (RFC 6532 §3.1), unquoted when the quotes are unnecessary
(RFC 5321 §4.1.2 says both forms are equivalent) and lowercased. RFC 5321 §2.4 lets a server
treat local parts case-sensitively, but every local part we own (professional mailboxes,
patient matricules whose only letters are the Corsican ``2A``/``2B``) is case-insensitive by
decision, so lookups and ownership checks compare normal forms. Addresses relayed to other
operators are passed on as written.
"""

from __future__ import annotations

import re
import unicodedata

import idna

from missive.identity.ins import Matricule, parse_matricule

__all__ = [
    "AddressError",
    "normalize_address",
    "normalize_domain",
    "parse_patient_address",
    "patient_address",
    "split_address",
]

MAX_LOCAL_OCTETS = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN_OCTETS = 255  # RFC 5321 §4.5.3.1.2
MAX_ADDRESS_OCTETS = 254  # RFC 5321 §4.5.3.1.3: Path ≤ 256 octets including "<" and ">"

# RFC 5322 §3.2.3 atext, extended by RFC 6531 §3.3 with UTF8-non-ascii.
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]"
_DOT_STRING = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
# RFC 5321 §4.1.2 qtextSMTP (%d32-33 / %d35-91 / %d93-126) and quoted-pairSMTP (%d92 %d32-126),
# plus UTF8-non-ascii (RFC 6531 §3.3).
_QUOTED_STRING = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"')
_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SURROGATES = re.compile(r"[\ud800-\udfff]")


class AddressError(ValueError):
    """An address is syntactically invalid; the message says what is wrong."""


def _octets(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def split_address(addr: str) -> tuple[str, str]:
    """Split a Mailbox into ``(local_part, domain)``, both as written (quotes kept).

    Raises :class:`AddressError` for empty parts, bad syntax or excessive length.
    """
    if not addr:
        raise AddressError("address is empty")
    if _SURROGATES.search(addr):
        raise AddressError("address contains invalid Unicode (surrogates)")
    if _octets(addr) > MAX_ADDRESS_OCTETS:
        raise AddressError(
            f"address is {_octets(addr)} octets long, more than {MAX_ADDRESS_OCTETS}"
        )
    at = addr.rfind("@")
    if at < 0:
        raise AddressError("address has no @")
    local, domain = addr[:at], addr[at + 1 :]
    if not local:
        raise AddressError("local part (before @) is empty")
    if not domain:
        raise AddressError("domain (after @) is empty")
    if _octets(local) > MAX_LOCAL_OCTETS:
        raise AddressError(
            f"local part is {_octets(local)} octets long, more than {MAX_LOCAL_OCTETS}"
        )
    if not (_DOT_STRING.fullmatch(local) or _QUOTED_STRING.fullmatch(local)):
        raise AddressError("local part is not a valid dot-string or quoted string")
    _check_domain(domain)
    return local, domain


def _check_domain(domain: str) -> None:
    if domain.startswith("["):
        raise AddressError("address literals (domain in brackets) are not accepted")
    if _octets(domain) > MAX_DOMAIN_OCTETS:
        raise AddressError(f"domain is longer than {MAX_DOMAIN_OCTETS} octets")
    labels = domain.split(".")
    for label in labels:
        if not label:
            raise AddressError("domain has an empty label (two dots, or a leading/trailing dot)")
        if label.isascii():
            if not _LDH_LABEL.fullmatch(label):
                raise AddressError(
                    "domain label must be letters, digits and inner hyphens, at most 63 long"
                )
        else:
            # RFC 6531 §3.3: sub-domain =/ U-label (checked by IDNA when normalising).
            try:
                idna.encode(label, uts46=True)
            except (idna.IDNAError, UnicodeError, ValueError) as exc:
                raise AddressError(
                    f"domain label is not a valid internationalised label: {exc}"
                ) from None


def normalize_domain(domain: str) -> str:
    """The lookup form of a domain: UTS #46 IDNA mapping, ASCII (A-labels), lowercase."""
    _check_domain(domain)
    try:
        ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError) as exc:
        raise AddressError(
            f"domain is not a valid (internationalised) domain name: {exc}"
        ) from None
    return ascii_domain.lower()


def _normalize_local(local: str) -> str:
    if local.startswith('"'):
        inner = re.sub(r"\\(.)", r"\1", local[1:-1])
        if _DOT_STRING.fullmatch(inner):
            local = inner
        else:
            escaped = inner.replace("\\", "\\\\").replace('"', '\\"')
            local = f'"{escaped}"'
    return unicodedata.normalize("NFC", local).lower()


def normalize_address(addr: str) -> str:
    """The lookup key of an address (see the module docstring); :class:`AddressError` if bad."""
    local, domain = split_address(addr)
    return f"{_normalize_local(local)}@{normalize_domain(domain)}"


def patient_address(matricule: Matricule, patient_domain: str) -> str:
    """The address of a patient, in normal form (``<matricule lowercased>@<domain>``)."""
    return f"{matricule.value.lower()}@{normalize_domain(patient_domain)}"


def parse_patient_address(addr: str, patient_domain: str) -> Matricule | None:
    """The matricule of a patient address, or None when ``addr`` is not in the patient domain.

    Raises :class:`AddressError` when ``addr`` is not an address at all, and
    :class:`~missive.identity.ins.InsError` when it is in the patient domain but its local part
    is not a valid matricule (wrong length, characters, structure or key).
    """
    local, domain = split_address(addr)
    if normalize_domain(domain) != normalize_domain(patient_domain):
        return None
    return parse_matricule(local)
