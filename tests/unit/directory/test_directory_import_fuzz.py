"""Hostile import files never crash the importers: a file-level error or per-row reasons."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from missive.config import Settings
from missive.directory import importers, validate
from missive.directory.importers import ImportFileError, ImportReport

HEADER = "ins,family_name,given_names,birth_date,sex,birth_place,phone,email\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_whitelist_random_bytes(data: bytes) -> None:
    try:
        parsed = importers.parse_whitelist(data)
    except ImportFileError as exc:
        assert str(exc)
    else:
        assert all(e.line >= 1 for e in parsed.errors)


cells = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(cells, min_size=1, max_size=9), max_size=6),
       sep=st.sampled_from([",", ";"]))
def test_patient_csv_random_rows(settings: Settings, rows: list[list[str]], sep: str) -> None:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, delimiter=sep).writerows(rows)
    text = HEADER.replace(",", sep) + buf.getvalue()
    report = ImportReport()

    def build(r: dict[str, str]) -> validate.PatientInput:
        return validate.patient_input(
            settings, ins=r["ins"], oid=None, family_name=r["family_name"],
            given_names=r["given_names"], birth_date_text=r["birth_date"], sex_text=r["sex"],
            birth_place_text=r["birth_place"], phone_text=r.get("phone"),
            email_text=r.get("email"))

    try:
        good = importers._check_rows(text, importers.PATIENT_COLUMNS, build, report)
    except ImportFileError as exc:
        assert str(exc).startswith("line ")
        return
    non_blank = [r for r in rows if any(c.strip() for c in r)]
    # Every non-blank row is either accepted or reported with a reason and a line number.
    assert len(good) + len(report.errors) == len(non_blank)
    assert all(e.line >= 2 and e.reason for e in report.errors)
