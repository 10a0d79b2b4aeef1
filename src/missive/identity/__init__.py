"""Identities: patient INS matricules, professional RPPS/ADELI numbers, mail addresses.

Pure functions, no I/O (SPEC §1). Errors are ``ValueError`` subclasses whose message says exactly
what is wrong: :class:`InsError` (with a ``.french`` version for patients), :class:`RppsError`,
:class:`AddressError`.
"""

from missive.identity.address import (
    AddressError,
    normalize_address,
    normalize_domain,
    parse_patient_address,
    patient_address,
    split_address,
)
from missive.identity.ins import (
    OID_DEMO,
    OID_NIA,
    OID_NIR,
    OID_TEST,
    InsError,
    InsErrorReason,
    InsType,
    Matricule,
    check_oid,
    compute_key,
    ins_type,
    parse_matricule,
    validate_nir,
)
from missive.identity.rpps import (
    RPPS_SYSTEM_OID,
    RppsError,
    luhn_check_digit,
    luhn_valid,
    national_id_from_adeli,
    national_id_from_rpps,
    parse_adeli,
    parse_national_id,
    parse_rpps,
)

__all__ = [
    "OID_DEMO",
    "OID_NIA",
    "OID_NIR",
    "OID_TEST",
    "RPPS_SYSTEM_OID",
    "AddressError",
    "InsError",
    "InsErrorReason",
    "InsType",
    "Matricule",
    "RppsError",
    "check_oid",
    "compute_key",
    "ins_type",
    "luhn_check_digit",
    "luhn_valid",
    "national_id_from_adeli",
    "national_id_from_rpps",
    "normalize_address",
    "normalize_domain",
    "parse_adeli",
    "parse_matricule",
    "parse_national_id",
    "parse_patient_address",
    "parse_rpps",
    "patient_address",
    "split_address",
    "validate_nir",
]
