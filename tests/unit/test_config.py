"""Settings: TOML and environment precedence, derived values, unsafe production values refused,
and the documented example kept in step with the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from missive.config import example_toml, load_settings
from missive.errors import SettingsError


def test_toml_then_environment_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "missive.toml").write_text(
        'domain = "Example.ORG."\n[mta]\nmx_port = 2525\nsubmission_port = 2587\n')
    monkeypatch.setenv("MISSIVE_MTA__MX_PORT", "25")
    s = load_settings(tmp_path)
    assert s.domain == "example.org"
    assert s.patient_domain == "patient.example.org"
    assert s.mta.hostname == "mail.example.org"
    assert s.mta.mx_port == 25  # environment wins over the file
    assert s.mta.submission_port == 2587  # file wins over the default
    assert s.sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'missive.db'}"


def test_database_url_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISSIVE_DATABASE_URL", "postgresql+asyncpg://u@h/db")
    assert load_settings(tmp_path).sqlalchemy_url == "postgresql+asyncpg://u@h/db"


def test_invalid_values_are_named(tmp_path: Path) -> None:
    (tmp_path / "missive.toml").write_text('[mta]\nmx_port = "twenty-five"\n')
    with pytest.raises(SettingsError, match=r"mta\.mx_port"):
        load_settings(tmp_path)


def test_unknown_keys_are_refused(tmp_path: Path) -> None:
    (tmp_path / "missive.toml").write_text("domian = \"typo.example\"\n")
    with pytest.raises(SettingsError, match="domian"):
        load_settings(tmp_path)


def test_production_refuses_default_secrets_and_plaintext_auth(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"webmail\.secret_key") as err:
        load_settings(tmp_path, environment="production")
    assert "sms_webhook_secret" in str(err.value)
    good = {"webmail": {"secret_key": "x" * 32},
            "notify": {"sms_webhook_secret": "y" * 32, "relay_webhook_secret": "z" * 32}}
    assert load_settings(tmp_path, environment="production", **good).environment == "production"
    with pytest.raises(SettingsError, match="allow_plaintext_auth"):
        load_settings(tmp_path, environment="production",
                      mta={"allow_plaintext_auth": True}, **{k: v for k, v in good.items()
                                                              if k != "mta"})


def test_secrets_do_not_appear_in_repr(tmp_path: Path) -> None:
    s = load_settings(tmp_path, webmail={"secret_key": "very-secret-value-123456"})
    assert "very-secret-value-123456" not in repr(s)


def test_documented_example_matches_the_code() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    assert example_toml().strip() in doc, (
        "docs/configuration.md is stale: regenerate its example from missive.config.example_toml()")
