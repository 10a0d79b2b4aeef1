"""No secret, key, certificate or database is committed (BRIEF: "Never commit secrets, generated
keys/certificates, databases, venvs or downloaded code"; SPEC C4: the master key lives outside
the database and outside the repository).

Checked on what git tracks (and on untracked files that ``.gitignore`` does not hide, which are
one ``git add`` away), on every path in the history (a key committed then deleted is still
published), on the content of the files (a PEM private key block pasted into a test or a
document), and on ``.gitignore`` itself: the files ``missive init`` writes must be ignored.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: File names that are keys, certificates, keystores or databases.
SENSITIVE = re.compile(
    r"(\.(pem|key|p12|pfx|jks|keystore|crt|cer|der|csr|p8|pk8|gpg|asc"
    r"|db|db-wal|db-shm|db-journal|sqlite|sqlite3)$"
    r"|(^|/)(id_rsa|id_ecdsa|id_ed25519|\.env|\.netrc|\.pgpass)$"
    r"|(^|/)(\.venv|venv|node_modules|site-packages)/)",
    re.IGNORECASE,
)
#: A PEM private key block: the BEGIN line *and* a base64 body (a mere mention in code or in a
#: document is not a key). Built in two pieces so that this file does not match itself.
PEM_PRIVATE = re.compile(
    "-----" + r"BEGIN ([A-Z0-9]+ )*PRIVATE KEY-----\r?\n"
    r"([A-Za-z0-9-]+: [^\n]*\r?\n)*\r?\n?"  # RFC 1421 headers of old encrypted keys
    r"([A-Za-z0-9+/=]{16,}\r?\n){2,}"
)
#: What ``missive init`` and the tests write into a data directory, relative to the repository.
GENERATED = (
    "data/keys/master.key", "data/keys/index.key", "data/keys/keystore.db", "data/missive.db",
    "data/certs/ca/ca.key", "data/certs/ca/ca.pem", "data/missive.toml", "demo-data/missive.db",
    "missive.db", "migration-scratch.db", "server.pem", "client.key", "operator.p12",
)


def git(*args: str) -> list[str]:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                          timeout=120, check=True)
    return [line for line in done.stdout.splitlines() if line]


@pytest.fixture(scope="module", autouse=True)
def _repository() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout (e.g. an unpacked sdist): nothing to inspect")


def candidates() -> list[str]:
    return sorted(set(git("ls-files")) | set(git("ls-files", "--others", "--exclude-standard")))


def test_no_sensitive_file_is_tracked() -> None:
    files = candidates()
    assert "pyproject.toml" in files  # the listing works
    assert [f for f in files if SENSITIVE.search(f)] == []


def test_no_sensitive_file_in_history() -> None:
    ever = set(git("log", "--all", "--name-only", "--pretty=format:"))
    assert "pyproject.toml" in ever
    assert sorted(f for f in ever if SENSITIVE.search(f)) == []


def test_no_private_key_block_in_any_file() -> None:
    found = []
    for name in candidates():
        path = REPO / name
        if not path.is_file() or path.stat().st_size > 5_000_000:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        for match in PEM_PRIVATE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{name}:{line}")
    assert found == [], "PEM private key blocks (generate test keys at run time instead)"


def test_generated_files_are_ignored() -> None:
    ignored = set(git("check-ignore", "--no-index", *GENERATED))
    assert sorted(set(GENERATED) - ignored) == []


def test_patterns_catch_what_they_should() -> None:
    for bad in ("tests/data/ca.key", "x/server.PEM", "keys/keystore.db", "a/missive.sqlite",
                "op.p12", ".venv/bin/python", "deploy/.env", "home/id_ed25519"):
        assert SENSITIVE.search(bad), bad
    for good in ("src/missive/certs/ca.py", "docs/certificates.md", "tests/unit/db_test.py",
                 "src/missive/mailbox/keys.py", "src/missive/mailbox/keystore.py"):
        assert not SENSITIVE.search(good), good
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )

    key = ec.generate_private_key(ec.SECP256R1())
    for fmt in (PrivateFormat.PKCS8, PrivateFormat.TraditionalOpenSSL):
        pem = key.private_bytes(Encoding.PEM, fmt, NoEncryption()).decode()
        assert PEM_PRIVATE.search("x = '''\n" + pem + "'''\n")
        assert PEM_PRIVATE.search(pem.replace("\n", "\r\n"))
    assert not PEM_PRIVATE.search("-----" + "BEGIN PRIVATE KEY-----\nnot a key\n")
