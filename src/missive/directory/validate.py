"""Checking and normalising directory input (CLI options, CSV cells, XML fields).

One function per field, each raising :class:`InvalidField` with the field name and a sentence
that says what is expected, so that the CLI, the CSV importer (which prefixes the line number)
and the webmail report the same reasons. Identifiers are checked by :mod:`missive.identity`
(INS key, OID for the deployment, RPPS Luhn digit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from missive.config import Settings
from missive.directory.errors import InvalidField
from missive.directory.models import (
    DELEGATE_RIGHTS,
    MAILBOX_TYPES,
    NOTIFY_CHANNELS,
    PRO_STATUSES,
)
from missive.identity.address import (
    AddressError,
    normalize_address,
    normalize_domain,
    split_address,
)
from missive.identity.ins import (
    OID_NIR,
    OID_TEST,
    InsError,
    check_oid,
    parse_matricule,
)
from missive.identity.rpps import (
    RppsError,
    national_id_from_adeli,
    national_id_from_rpps,
)

MAX_NAME = 200
_BIRTH_PLACE = re.compile(r"(?:[0-9]{5}|2[AB][0-9]{3})")
_E164 = re.compile(r"\+[1-9][0-9]{7,14}")
_FR_NATIONAL = re.compile(r"0[1-9][0-9]{8}")
_PHONE_SEPARATORS = re.compile(r"[ .\-()]")


def text(field: str, value: str | None, *, required: bool = True, limit: int = MAX_NAME) -> str:
    """A trimmed single-line text; empty only when not ``required``."""
    cleaned = (value or "").strip()
    if not cleaned:
        if required:
            raise InvalidField(field, "must not be empty")
        return ""
    if len(cleaned) > limit:
        raise InvalidField(field, f"must be at most {limit} characters, got {len(cleaned)}")
    if not cleaned.isprintable():
        raise InvalidField(field, "must be a single line of printable characters")
    return cleaned


def matricule(value: str) -> str:
    try:
        return parse_matricule(value.strip()).value
    except InsError as exc:
        raise InvalidField("ins", str(exc)) from None


def ins_oid(value: str | None, settings: Settings) -> str:
    """The OID of the INS; by default the test OID in test mode, the NIR OID otherwise."""
    oid = (value or "").strip() or (OID_TEST if settings.test_mode else OID_NIR)
    try:
        check_oid(oid, test_mode=settings.test_mode)
    except InsError as exc:
        raise InvalidField("oid", str(exc)) from None
    return oid


def birth_date(value: str, *, today: date | None = None) -> date:
    raw = value.strip()
    try:
        parsed = date.fromisoformat(raw)
    except ValueError:
        raise InvalidField("birth_date", f"must be a date YYYY-MM-DD, got {raw!r}") from None
    if len(raw) != 10:
        raise InvalidField("birth_date", f"must be a date YYYY-MM-DD, got {raw!r}")
    if parsed > (today or date.today()):
        raise InvalidField("birth_date", "must not be in the future")
    if parsed.year < 1870:
        raise InvalidField("birth_date", "must be after 1870")
    return parsed


def sex(value: str) -> str:
    cleaned = value.strip().upper()
    if cleaned not in ("M", "F"):
        raise InvalidField("sex", f"must be M or F, got {value.strip()!r}")
    return cleaned


def birth_place(value: str) -> str:
    cleaned = value.strip().upper()
    if not _BIRTH_PLACE.fullmatch(cleaned):
        raise InvalidField(
            "birth_place",
            "must be the 5-character INSEE code of the birth commune (e.g. 51215, 2A004) "
            f"or 99 + country code for a birth abroad, got {value.strip()!r}",
        )
    return cleaned


def phone(value: str | None) -> str | None:
    """A mobile number in E.164; French national numbers (06…, 07…) become +33…."""
    raw = (value or "").strip()
    if not raw:
        return None
    compact = _PHONE_SEPARATORS.sub("", raw)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if _FR_NATIONAL.fullmatch(compact):
        compact = "+33" + compact[1:]
    if not _E164.fullmatch(compact):
        raise InvalidField(
            "phone", f"must be an international number like +33612345678, got {raw!r}"
        )
    return compact


def domain(value: str, field: str = "domain") -> str:
    """A DNS domain name in lookup form: IDNA A-labels, lower-case, no trailing dot."""
    raw = value.strip().rstrip(".")
    try:
        name = normalize_domain(raw)
    except AddressError as exc:
        raise InvalidField(field, f"{raw!r} is not a valid domain name: {exc}") from None
    if "." not in name:
        raise InvalidField(field, f"{raw!r} is not a fully qualified domain name")
    return name


def email(value: str | None, field: str = "email") -> str | None:
    """A personal e-mail address ``local@domain``: the domain normalised, the local part kept."""
    raw = (value or "").strip()
    if not raw:
        return None
    try:
        local, dom = split_address(raw)
    except AddressError as exc:
        raise InvalidField(field, f"{raw!r} is not an e-mail address: {exc}") from None
    return f"{local}@{domain(dom, field)}"


def is_local_domain(name: str, settings: Settings) -> bool:
    """True for the operator domain and its sub-domains, except the patient domain."""
    if name == settings.patient_domain:
        return False
    return name == settings.domain or name.endswith("." + settings.domain)


def pro_address(value: str, settings: Settings, field: str = "address") -> str:
    """A professional mailbox address in normal form, in the operator domain or a sub-domain."""
    raw = value.strip()
    if not raw:
        raise InvalidField(field, "must not be empty")
    try:
        addr = normalize_address(raw)
    except AddressError as exc:
        raise InvalidField(field, f"{raw!r} is not a valid address: {exc}") from None
    dom = addr.rpartition("@")[2]
    if dom == settings.patient_domain:
        raise InvalidField(field, f"{dom} is the patient domain; use {settings.domain}")
    if not is_local_domain(dom, settings):
        raise InvalidField(
            field, f"must be in the operator domain {settings.domain} (or a sub-domain), got {dom}"
        )
    return addr


def national_id(rpps: str | None, adeli: str | None) -> tuple[str, str | None]:
    """``("8"+RPPS, RPPS)`` or ``("0"+ADELI, None)``; exactly one of the two must be given."""
    rpps = (rpps or "").strip()
    adeli = (adeli or "").strip()
    if rpps and adeli:
        raise InvalidField("rpps", "give either an RPPS or an ADELI number, not both")
    try:
        if rpps:
            return national_id_from_rpps(rpps), rpps
        if adeli:
            return national_id_from_adeli(adeli), None
    except RppsError as exc:
        raise InvalidField("rpps" if rpps else "adeli", str(exc)) from None
    raise InvalidField("rpps", "an RPPS (11 digits) or ADELI (9 digits) number is required")


def choice(field: str, value: str | None, allowed: tuple[str, ...], default: str) -> str:
    cleaned = (value or "").strip().lower() or default
    if cleaned not in allowed:
        raise InvalidField(field, f"must be one of {', '.join(allowed)}, got {cleaned!r}")
    return cleaned


def notify_channel(value: str | None, phone_number: str | None, mail: str | None) -> str:
    """The channel asked for, or the one the contacts allow; refuses a channel without contact."""
    if not (value or "").strip():
        if phone_number and mail:
            return "both"
        return "sms" if phone_number else "email" if mail else "none"
    chosen = choice("notify_channel", value, NOTIFY_CHANNELS, "none")
    if chosen in ("sms", "both") and not phone_number:
        raise InvalidField("notify_channel", f"{chosen} needs a phone number")
    if chosen in ("email", "both") and not mail:
        raise InvalidField("notify_channel", f"{chosen} needs an e-mail address")
    return chosen


def boolean(field: str, value: str | bool | None, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    cleaned = (value or "").strip().lower()
    if not cleaned:
        return default
    if cleaned in ("1", "true", "yes", "oui", "y", "o"):
        return True
    if cleaned in ("0", "false", "no", "non", "n"):
        return False
    raise InvalidField(field, f"must be true or false, got {cleaned!r}")


@dataclass(frozen=True)
class PatientInput:
    """A checked patient record, ready to insert."""

    matricule: str
    oid: str
    family_name: str
    given_names: str
    birth_date: date
    sex: str
    birth_place: str
    phone: str | None
    email: str | None
    notify_channel: str
    read_receipts: bool
    status: str
    #: Traits that disagree with the matricule (identity vigilance); not errors, see
    #: :func:`trait_warnings`.
    warnings: tuple[str, ...] = ()


def trait_warnings(matricule_value: str, born: date, sex_value: str, place: str) -> list[str]:
    """Where the identity traits disagree with what the NIR/NIA encodes.

    The matricule encodes the sex (odd first digit: male, even: female), the last two digits of
    the birth year, the birth month (01–12; other values are fictitious months) and the birth
    department + commune (or 99 + country). A disagreement is the classic sign of a mix-up
    between two patients, but real records have legitimate exceptions (corrected civil status,
    renamed communes), so these are warnings for the operator, never refusals.
    """
    found: list[str] = []
    expected_sex = "M" if int(matricule_value[0]) % 2 == 1 else "F"
    if sex_value != expected_sex:
        found.append(f"sex {sex_value} differs from the matricule (first digit "
                     f"{matricule_value[0]}: {expected_sex})")
    if matricule_value[1:3] != f"{born.year % 100:02d}":
        found.append(f"birth year {born.year} differs from the matricule "
                     f"(year digits {matricule_value[1:3]})")
    month = int(matricule_value[3:5])
    if 1 <= month <= 12 and month != born.month:
        found.append(f"birth month {born.month:02d} differs from the matricule "
                     f"(month digits {matricule_value[3:5]})")
    if 1 <= month <= 12 and matricule_value[5:10] != place:
        found.append(f"birth place {place} differs from the matricule "
                     f"(place digits {matricule_value[5:10]})")
    return found


def patient_input(
    settings: Settings,
    *,
    ins: str,
    oid: str | None,
    family_name: str,
    given_names: str,
    birth_date_text: str,
    sex_text: str,
    birth_place_text: str,
    phone_text: str | None = None,
    email_text: str | None = None,
    status: str | None = None,
    notify: str | None = None,
    read_receipts: str | bool | None = None,
) -> PatientInput:
    """Check every field of a new patient; the first invalid field raises InvalidField."""
    tel = phone(phone_text)
    mail = email(email_text)
    ins_value = matricule(ins)
    born = birth_date(birth_date_text)
    sex_value = sex(sex_text)
    place = birth_place(birth_place_text)
    return PatientInput(
        matricule=ins_value,
        oid=ins_oid(oid, settings),
        family_name=text("family_name", family_name),
        given_names=text("given_names", given_names),
        birth_date=born,
        sex=sex_value,
        birth_place=place,
        phone=tel,
        email=mail,
        notify_channel=notify_channel(notify, tel, mail),
        read_receipts=boolean("read_receipts", read_receipts, True),
        status=choice("status", status, ("pending", "active"), "pending"),
        warnings=tuple(trait_warnings(ins_value, born, sex_value, place)),
    )


@dataclass(frozen=True)
class ProfessionalInput:
    """A checked professional record, ready to insert (password still in clear)."""

    national_id: str
    rpps: str | None
    name: str
    profession: str
    specialty: str | None
    address: str
    mailbox_type: str
    status: str


def professional_input(
    settings: Settings,
    *,
    rpps: str | None,
    adeli: str | None = None,
    name: str,
    profession: str,
    specialty: str | None = None,
    address: str,
    mailbox_type: str | None = None,
    status: str | None = None,
) -> ProfessionalInput:
    nat, rpps_number = national_id(rpps, adeli)
    return ProfessionalInput(
        national_id=nat,
        rpps=rpps_number,
        name=text("name", name),
        profession=text("profession", profession),
        specialty=text("specialty", specialty, required=False) or None,
        address=pro_address(address, settings),
        mailbox_type=choice("mailbox_type", mailbox_type, MAILBOX_TYPES, "personal"),
        status=choice("status", status, PRO_STATUSES, "active"),
    )


def rights(value: str | None) -> str:
    return choice("rights", (value or "").replace("-", "_"), DELEGATE_RIGHTS, "read")
