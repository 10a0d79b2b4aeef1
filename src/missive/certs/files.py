"""On-disk layout of the operator CA under ``settings.certs_dir``, and its JSON index.

Layout (directory 0700, private keys 0600, everything else 0644)::

    certs/
      ca/ca.key  ca/ca.pem        the CA key and self-signed certificate
      crl.pem                     the CA's current CRL (RFC 5280 §5)
      issued/<SERIAL>.pem|.key    every certificate issued, by serial (hex, upper case)
      server/cert.pem|key.pem     the active server certificate (leaf + CA chain) and key
      operator/cert.pem|key.pem   the active operator certificate, presented to peers
      index.json                  what was issued, to whom, and its status
      .lock                       serialises writers (CLI and the server's CRL refresh)

Invariants:
- Every file is written to a temporary name in the same directory and renamed over the old one
  (``os.replace``), so a reader (a listener reloading its certificate) never sees half a file,
  and a reloading listener can tell a new file by its inode.
- The index is operator data, not health data: names and RPPS of professionals who hold a
  client certificate are public directory data (Annuaire Santé).
- Writers hold an exclusive ``flock`` on ``.lock`` around read-modify-write of the index.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from missive.config import Settings

Kind = Literal["ca", "server", "operator", "professional"]
INDEX_VERSION = 1


@dataclass(frozen=True)
class CertsLayout:
    """Paths of the files under one certificate directory."""

    root: Path

    @classmethod
    def of(cls, settings: Settings) -> CertsLayout:
        return cls(settings.certs_dir)

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca.pem"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def issued(self) -> Path:
        return self.root / "issued"

    def issued_cert(self, serial: str) -> Path:
        return self.issued / f"{serial}.pem"

    def issued_key(self, serial: str) -> Path:
        return self.issued / f"{serial}.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server" / "cert.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server" / "key.pem"

    @property
    def operator_cert(self) -> Path:
        return self.root / "operator" / "cert.pem"

    @property
    def operator_key(self) -> Path:
        return self.root / "operator" / "key.pem"

    @property
    def index(self) -> Path:
        return self.root / "index.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"


@dataclass
class CertInfo:
    """One issued certificate as recorded in the index (``to_dict`` is the ``--json`` form)."""

    serial: str
    kind: Kind
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str
    cert_file: str
    key_file: str | None = None
    names: list[str] = field(default_factory=list)
    ips: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    national_id: str | None = None
    rpps: str | None = None
    key_algorithm: str = ""
    status: Literal["valid", "revoked"] = "valid"
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    active: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("not_before", "not_after", "revoked_at"):
            value = data[name]
            data[name] = value.isoformat() if value is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CertInfo:
        values = dict(data)
        for name in ("not_before", "not_after", "revoked_at"):
            if values.get(name):
                values[name] = datetime.fromisoformat(values[name])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})

    def state(self, now: datetime) -> str:
        """``revoked``, ``expired`` or ``valid`` at ``now``."""
        if self.status == "revoked":
            return "revoked"
        return "expired" if self.not_after <= now else "valid"


def ensure_dirs(layout: CertsLayout) -> None:
    for path in (layout.root, layout.ca_key.parent, layout.issued,
                 layout.server_cert.parent, layout.operator_cert.parent):
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically with permissions ``mode`` from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(layout: CertsLayout, *, blocking: bool = True) -> Iterator[None]:
    """Exclusive lock for writers of the index and the CRL.

    With ``blocking=False`` raises :class:`BlockingIOError` at once when another process holds
    it (listeners use that: they must never stall their event loop on a CLI command).
    """
    layout.root.mkdir(parents=True, exist_ok=True)
    with open(layout.lock, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def read_index(layout: CertsLayout) -> list[CertInfo]:
    if not layout.index.exists():
        return []
    data = json.loads(layout.index.read_text(encoding="utf-8"))
    return [CertInfo.from_dict(item) for item in data.get("certificates", [])]


def write_index(layout: CertsLayout, entries: list[CertInfo]) -> None:
    payload = {
        "version": INDEX_VERSION,
        "certificates": [entry.to_dict() for entry in entries],
    }
    text = json.dumps(payload, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    write_atomic(layout.index, text.encode("utf-8"), mode=0o600)
