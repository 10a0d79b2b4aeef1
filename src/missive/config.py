"""Typed settings: ``DIR/missive.toml`` overridden by ``MISSIVE_<SECTION>__<KEY>`` variables.

One settings object with a section per component (``mta``, ``imap``, ``store``, ``webmail``,
``notify``, ``certs``, ``audit``). Precedence, highest first: explicit keyword arguments (tests),
environment variables, the TOML file, the defaults below. ``MISSIVE_DATABASE_URL`` selects
PostgreSQL; ``MISSIVE_DATA_DIR`` the data directory.

Invariants:
- Secrets are ``SecretStr`` and never printed by ``repr``.
- Outside ``environment = "development"``, default or empty secrets and plaintext
  authentication are refused at load time (``SettingsError``), so that a production deployment
  cannot start with the values a developer used on a laptop.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from missive.errors import SettingsError

MiB = 1024 * 1024
#: Placeholder secret shipped in examples; refused outside development.
DEV_SECRET = "development-only-secret-change-me"  # noqa: S105 (a marker, not a credential)


def _default_attachment_types() -> list[str]:
    # The policy owns the list (one place); imported lazily to keep settings import light.
    from missive.policy.content import DEFAULT_ATTACHMENT_TYPES

    return sorted(DEFAULT_ATTACHMENT_TYPES)


class MtaSettings(BaseModel):
    """SMTP fronts (SPEC §4 SMTP, policy P1–P12)."""

    bind: str = Field("127.0.0.1", description="Address the SMTP listeners bind to.")
    hostname: str = Field("", description="Name in the greeting and Received: (default: domain).")
    submission_port: int = Field(5587, description="Submission with STARTTLS (0 = free port).")
    submission_tls_port: int = Field(5465, description="Submission with implicit TLS.")
    mx_port: int = Field(5025, description="Inbound MX for trust-space operators.")
    max_message_size: int = Field(20 * MiB, description="SIZE limit in bytes (P8).")
    max_recipients: int = Field(100, description="Recipients per transaction.")
    allow_plaintext_auth: bool = Field(
        False, description="Offer AUTH without TLS. Development only; refused elsewhere."
    )
    command_timeout: float = Field(
        300.0, gt=0, description="Seconds a client may stay silent between commands "
        "(RFC 5321 §4.5.3.2.7)."
    )
    data_timeout: float = Field(
        600.0, gt=0, description="Seconds a client has to send the whole message data after "
        "354 (RFC 5321 §4.5.3.2.6)."
    )
    max_errors: int = Field(
        10, ge=1, description="Syntax or sequence errors in one session before it is closed."
    )
    max_connections: int = Field(1000, ge=1, description="Open SMTP connections in total.")
    max_connections_per_address: int = Field(
        20, ge=1, description="Open SMTP connections from one client address (P10)."
    )
    rate_per_sender: float = Field(
        120.0, ge=0, description="Messages a minute per authenticated sender (0 = no limit)."
    )
    rate_per_address: float = Field(
        600.0, ge=0, description="Messages a minute per client address (0 = no limit)."
    )
    rate_burst: float = Field(
        60.0, ge=1, description="Messages a sender may send at once before the rate applies "
        "(five times this per client address)."
    )
    auth_lockout_threshold: int = Field(
        5, ge=1, description="Failed logins for one (login, client address) before a lockout."
    )
    auth_lockout_seconds: float = Field(
        30.0, ge=0, description="First lockout; each further one doubles (P10)."
    )
    auth_lockout_max_seconds: float = Field(
        900.0, ge=0, description="Longest lockout: a lockout never lasts longer than this."
    )
    auth_lockout_address_threshold: int = Field(
        30, ge=1, description="Failed logins from one client address, any login, before the "
        "address is locked out (password spraying)."
    )
    auth_failures_per_session: int = Field(
        3, ge=1, description="Failed AUTH commands before the session is closed with 421."
    )
    patient_submission: bool = Field(
        False, description="Let active patients authenticate on the submission ports with "
        "their webmail password (their mail still obeys P6: replies only)."
    )
    trust_refresh_seconds: float = Field(
        30.0, gt=0, description="How often the MX listener reloads the trust-space CAs."
    )
    processes: int = Field(
        1, ge=1, le=64, description="SMTP processes. 1 serves SMTP in the main process; N > 1 "
        "starts N worker processes that share the listening sockets (one per core helps on a "
        "busy node; rate limits, connection counts and lockouts then count per process)."
    )
    directory_cache_seconds: float = Field(
        5.0, ge=0, description="How long the SMTP front reuses a directory answer (account "
        "status, recipient lookup) on its hot path; a change takes effect within this delay "
        "(0 = always ask the directory)."
    )
    attachment_allowlist: list[str] = Field(
        default_factory=lambda: _default_attachment_types(),
        description="Attachment media types accepted (P9; `major/*` allowed). The default "
        "is policy.DEFAULT_ATTACHMENT_TYPES: documents, images, CDA/HL7/HPRIM/DICOM, IHE XDM "
        "zips, and the parts of DSNs, MDNs and S/MIME signatures.",
    )
    relay_static_routes: dict[str, str] = Field(
        default_factory=dict,
        description="domain -> host:port for outbound relay, bypassing MX lookup.",
    )
    relay_retry_days: float = Field(5.0, description="Give up on an outbound message after this.")
    relay_delay_warning_hours: float = Field(4.0, description="Send one delay DSN after this.")
    relay_port: int = Field(
        25, description="TCP port of a peer's MX found through DNS (static routes name theirs)."
    )
    relay_workers: int = Field(2, ge=1, description="Concurrent outbound relay workers.")
    relay_poll_seconds: float = Field(
        2.0, gt=0, description="How often an idle relay worker looks for due messages."
    )
    relay_backoff_base_seconds: float = Field(
        300.0, ge=0, description="Wait after the first failed attempt (then grows)."
    )
    relay_backoff_factor: float = Field(
        2.0, ge=1, description="Each further wait is this many times the previous one."
    )
    relay_backoff_max_seconds: float = Field(
        4 * 3600.0, ge=0, description="Longest wait between two attempts."
    )
    relay_lease_seconds: float = Field(
        900.0, gt=0,
        description="A claimed message returns to the queue after this if its worker died.",
    )
    relay_timeout_seconds: float = Field(
        120.0, gt=0, description="Timeout of each SMTP step when relaying (connect, DATA…)."
    )
    relay_dns_timeout_seconds: float = Field(10.0, gt=0, description="MX lookup timeout.")
    relay_keep_days: float = Field(
        30.0, ge=0, description="Delete finished relay queue entries (sent/failed) after this."
    )


class ImapSettings(BaseModel):
    """IMAP fronts (SPEC §4 IMAP)."""

    bind: str = Field("127.0.0.1", description="Address the IMAP listeners bind to.")
    port: int = Field(5143, description="IMAP with STARTTLS (0 = free port).")
    tls_port: int = Field(5993, description="IMAP with implicit TLS (0 = free port).")
    max_literal: int = Field(40 * MiB, description="Largest literal accepted (APPEND).")
    idle_timeout: int = Field(
        1800, description="Seconds before an idle authenticated session is closed (RFC 9051 "
        "§5.4: at least 30 minutes).")
    login_timeout: int = Field(
        60, description="Seconds a connection may stay unauthenticated and silent.")
    max_line: int = Field(
        64 * 1024, description="Longest command line in octets, literals excluded.")
    max_command: int = Field(
        1 * MiB, description="Largest command without its APPEND message, literals included.")
    max_unauth_literal: int = Field(
        8 * 1024, description="Largest literal accepted before authentication.")
    max_connections_per_user: int = Field(
        20, description="Simultaneous IMAP sessions per authenticated user.")
    max_connections_per_ip: int = Field(
        50, description="Simultaneous IMAP connections per client address.")
    auth_failure_delay: float = Field(
        2.0, description="Seconds to wait before answering a failed authentication.")


class StoreSettings(BaseModel):
    """Encrypted mailbox store (SPEC §3)."""

    suite: Literal["MLKEM768X25519-SHA256-AES256GCM", "X25519-SHA256-AES256GCM"] = Field(
        "MLKEM768X25519-SHA256-AES256GCM",
        description="HPKE suite for new mailbox keys (old mail keeps the suite it names).",
    )
    master_key_file: Path | None = Field(
        None, description="Master key file (0600); default DIR/keys/master.key."
    )
    master_key: SecretStr | None = Field(
        None, description="Master key, base64, instead of the file (MISSIVE_STORE__MASTER_KEY)."
    )
    keystore_url: str = Field(
        "", description="Key store database (per-mailbox KEKs); default DIR/keys/keystore.db. "
        "Must not be the mail database."
    )
    default_quota: int = Field(2048 * MiB, description="Mailbox quota in bytes.")


class WebmailSettings(BaseModel):
    """Patient webmail (SPEC §5)."""

    bind: str = Field("127.0.0.1", description="Address the web front binds to.")
    port: int = Field(8080, description="HTTP port (0 = free port).")
    base_url: str = Field("", description="Public URL of the webmail, used in notifications.")
    secret_key: SecretStr = Field(SecretStr(DEV_SECRET), description="Signs sessions and CSRF.")
    session_idle_minutes: int = Field(15, description="Idle timeout of a webmail session.")
    session_max_hours: int = Field(8, description="Absolute lifetime of a webmail session.")
    secure_cookies: bool = Field(True, description="Mark cookies Secure.")
    otp_minutes: int = Field(10, description="Lifetime of a one-time login code.")
    otp_max_attempts: int = Field(5, description="Wrong one-time codes before a new login.")
    activation_code_days: int = Field(
        30, description="Lifetime of an activation or reset code printed by the operator."
    )
    password_min_length: int = Field(12, description="Shortest password a patient may choose.")
    login_max_failures: int = Field(
        5, description="Failed logins on one account before a temporary lockout."
    )
    lockout_seconds: int = Field(
        60, description="First lockout; doubles with each further failure (see lockout_max)."
    )
    lockout_max_seconds: int = Field(3600, description="Longest lockout after failed logins.")
    page_size: int = Field(25, description="Messages per page in the mailbox lists.")


class NotifySettings(BaseModel):
    """Content-free notifications (SPEC §6): SMS webhook, e-mail relay, relay webhook."""

    sms_webhook_url: str = Field(
        "", description="SMS gateway webhook URL (JSON POST, HMAC-SHA256 signed); empty = no SMS."
    )
    sms_webhook_secret: SecretStr = Field(
        SecretStr(DEV_SECRET), description="Shared HMAC-SHA256 key of the SMS webhook signature."
    )
    relay_webhook_url: str = Field(
        "", description="Generic relay webhook URL for `message.delivered` events; empty = none."
    )
    relay_webhook_secret: SecretStr = Field(
        SecretStr(DEV_SECRET), description="Shared HMAC-SHA256 key of the relay webhook signature."
    )
    smtp_relay: str = Field(
        "", description="host:port of the SMTP relay for e-mail notices; empty = no e-mail."
    )
    smtp_username: str = Field("", description="Relay login (empty = no authentication).")
    smtp_password: SecretStr = Field(SecretStr(""), description="Relay password.")
    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        "starttls", description="Relay TLS: STARTTLS, implicit TLS, or none (tests only)."
    )
    smtp_ca_file: Path | None = Field(
        None, description="CA bundle that verifies the relay's certificate (default: system)."
    )
    sender: str = Field("", description="From: of e-mail notices (default: no-reply@domain).")
    service_name: str = Field(
        "Missive", description="Name of the service in the wording of notices."
    )
    templates_dir: Path | None = Field(
        None, description="Directory of Jinja2 templates overriding the packaged French ones."
    )
    coalesce_seconds: int = Field(
        300, ge=0, description="Messages to one mailbox within this window make one notice."
    )
    quiet_hours: str = Field(
        "21:00-08:00", description="No SMS in this local time range (HH:MM-HH:MM; empty = none)."
    )
    timezone: str = Field("Europe/Paris", description="Time zone of the quiet hours.")
    timeout_seconds: float = Field(10.0, gt=0, description="Webhook / relay timeout in seconds.")
    max_attempts: int = Field(8, ge=1, description="Attempts before a notice is a dead letter.")
    retry_base_seconds: float = Field(
        30.0, gt=0, description="First retry delay; doubles at each attempt, with jitter."
    )
    retry_max_seconds: float = Field(3600.0, gt=0, description="Longest delay between retries.")
    poll_seconds: float = Field(2.0, gt=0, description="How often the worker looks for work.")
    batch_size: int = Field(50, ge=1, description="Notices claimed per worker round.")
    lease_seconds: float = Field(
        0.0, ge=0,
        description="A claimed notice whose worker died is resent (same key) after this; "
                    "0 = 2 x timeout_seconds + 30. Must exceed the longest attempt.",
    )
    keep_days: int = Field(
        30, ge=1, description="Sent and skipped notices (and their outbox rows) are purged after "
        "this many days; dead letters are kept until retried or purged by hand.",
    )

    @model_validator(mode="after")
    def _check_notify(self) -> NotifySettings:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r} (e.g. Europe/Paris)") from None
        if self.quiet_hours.strip() and not re.fullmatch(
            r"([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]", self.quiet_hours.strip()
        ):
            raise ValueError(f"quiet_hours must look like 21:00-08:00, got {self.quiet_hours!r}")
        if self.smtp_relay and not re.fullmatch(r"\[?[^\s]+?\]?:[0-9]{1,5}", self.smtp_relay):
            raise ValueError(f"smtp_relay must be host:port, got {self.smtp_relay!r}")
        return self


class CertsSettings(BaseModel):
    """Operator CA and TLS material (SPEC §4 TLS)."""

    dir: Path | None = Field(None, description="Certificate directory; default DIR/certs.")
    extra_ca_files: list[Path] = Field(
        default_factory=list, description="Extra CA bundles trusted for clients and peers."
    )
    crl_files: list[Path] = Field(
        default_factory=list,
        description="Extra CRLs (PEM or DER), e.g. IGC-Santé's, checked with the extra CAs.",
    )
    server_cert_file: Path | None = Field(
        None, description="Server certificate chain (PEM) to serve; default DIR/certs/server."
    )
    server_key_file: Path | None = Field(None, description="Key of server_cert_file (PEM).")
    client_cert_file: Path | None = Field(
        None, description="Certificate presented to peers; default the operator certificate."
    )
    client_key_file: Path | None = Field(None, description="Key of client_cert_file (PEM).")
    crl_days: int = Field(30, description="Lifetime of the CRL the CA signs (re-signed early).")
    warn_days: int = Field(30, description="Warn this many days before a certificate expires.")
    reload_seconds: float = Field(
        2.0, description="Listeners re-check certificate, key and CRL files at most this often."
    )


class OpsSettings(BaseModel):
    """Operator endpoint: /metrics, /healthz, /readyz (SPEC §7)."""

    bind: str = Field("127.0.0.1", description="Address of the operations endpoint.")
    port: int = Field(9108, description="Port of /metrics, /healthz, /readyz (0 = free port).")


class AuditSettings(BaseModel):
    """Audit log retention (SPEC §7)."""

    retention_days: int = Field(183, description="Keep audit entries at least this long.")


class Settings(BaseSettings):
    """All of Missive's settings. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="MISSIVE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(Path("./data"), description="Data directory.")
    environment: Literal["development", "test", "production"] = Field(
        "development", description="Deployment kind; production refuses unsafe values."
    )
    domain: str = Field("missive.localhost", description="Operator domain of professionals.")
    patient_domain: str = Field("", description="Patient domain (default: patient.<domain>).")
    test_mode: bool = Field(False, description="Accept only INS test/demo OIDs (SPEC §1).")
    database_url: str = Field("", description="SQLAlchemy URL; default SQLite in DIR.")
    mta: MtaSettings = Field(default_factory=MtaSettings)  # type: ignore[arg-type]
    imap: ImapSettings = Field(default_factory=ImapSettings)  # type: ignore[arg-type]
    store: StoreSettings = Field(default_factory=StoreSettings)  # type: ignore[arg-type]
    webmail: WebmailSettings = Field(default_factory=WebmailSettings)  # type: ignore[arg-type]
    notify: NotifySettings = Field(default_factory=NotifySettings)  # type: ignore[arg-type]
    certs: CertsSettings = Field(default_factory=CertsSettings)  # type: ignore[arg-type]
    audit: AuditSettings = Field(default_factory=AuditSettings)  # type: ignore[arg-type]
    ops: OpsSettings = Field(default_factory=OpsSettings)  # type: ignore[arg-type]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _toml_path_hint
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None and toml_file.exists():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @model_validator(mode="after")
    def _derive_and_check(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        self.domain = self.domain.lower().rstrip(".")
        if not self.patient_domain:
            self.patient_domain = f"patient.{self.domain}"
        self.patient_domain = self.patient_domain.lower().rstrip(".")
        if not self.mta.hostname:
            self.mta.hostname = f"mail.{self.domain}"
        if not self.notify.sender:
            self.notify.sender = f"no-reply@{self.domain}"
        if self.environment == "production":
            self._refuse_unsafe()
        return self

    def _refuse_unsafe(self) -> None:
        problems: list[str] = []
        if self.mta.allow_plaintext_auth:
            problems.append("mta.allow_plaintext_auth must be false outside development")
        for name, secret in (
            ("webmail.secret_key", self.webmail.secret_key),
            ("notify.sms_webhook_secret", self.notify.sms_webhook_secret),
            ("notify.relay_webhook_secret", self.notify.relay_webhook_secret),
        ):
            value = secret.get_secret_value()
            if value == DEV_SECRET or len(value) < 16:
                problems.append(f"{name} must be set to a random value of 16+ characters")
        if problems:
            raise SettingsError("unsafe production settings: " + "; ".join(problems))

    # Derived paths: one place so that every component agrees on the layout of DIR.
    @property
    def config_file(self) -> Path:
        return self.data_dir / "missive.toml"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def master_key_path(self) -> Path:
        return self.store.master_key_file or self.keys_dir / "master.key"

    @property
    def keystore_path(self) -> Path:
        return self.keys_dir / "keystore.db"

    @property
    def index_key_path(self) -> Path:
        return self.keys_dir / "index.key"

    @property
    def certs_dir(self) -> Path:
        return self.certs.dir or self.data_dir / "certs"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'missive.db'}"


_toml_path_hint: Path | None = None


def load_settings(data_dir: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings for ``data_dir`` (or ``$MISSIVE_DATA_DIR``, or ``./data``).

    ``overrides`` are keyword arguments with the highest precedence (used by tests).
    Raises :class:`SettingsError` with a readable message on invalid values.
    """
    global _toml_path_hint
    chosen = Path(data_dir or os.environ.get("MISSIVE_DATA_DIR") or "./data").expanduser()
    _toml_path_hint = chosen / "missive.toml"
    try:
        from pydantic import ValidationError

        try:
            return Settings(data_dir=chosen, **overrides)
        except ValidationError as exc:
            lines = [
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            ]
            raise SettingsError("invalid settings: " + "; ".join(lines)) from None
    finally:
        _toml_path_hint = None


def example_toml() -> str:
    """An example ``missive.toml`` generated from the field descriptions."""
    out: list[str] = ["# Missive configuration. Every key can be overridden by an environment",
                      "# variable MISSIVE_<SECTION>__<KEY> (e.g. MISSIVE_MTA__MX_PORT=25).", ""]
    top_sections: list[tuple[str, type[BaseModel]]] = []
    for name, field in Settings.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            top_sections.append((name, ann))
            continue
        if name == "data_dir":
            continue
        out.append(f"# {field.description}")
        out.append(f"# {name} = {_toml_value(field.get_default(call_default_factory=True))}")
    for section, model in top_sections:
        out.extend(["", f"[{section}]"])
        for name, field in model.model_fields.items():
            out.append(f"# {field.description}")
            out.append(f"# {name} = {_toml_value(field.get_default(call_default_factory=True))}")
    return "\n".join(out) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return '"<secret>"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return '""'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{ " + ", ".join(
            f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + " }"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
