"""``missive admin queue list|retry|purge`` on an initialised data directory (SQLite).

The contract (exit codes, stdout/stderr, ``--json``) is checked through a real ``missive``
subprocess; the other cases call ``missive.cli.main`` in-process with the same arguments, which
avoids paying the interpreter start-up for every command.

The data directory is made by ``missive init --test-mode`` once per module; each test works on its
own copy, with relay queue rows written straight into its database (the command never opens their
sealed parts, so placeholder bytes stand in for them; the markers in those bytes must never reach
the output, nor may the master key).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from missive.audit.models import AuditEntry
from missive.db.base import utcnow
from missive.mailbox.models import RelayQueue

MISSIVE = str(Path(sys.executable).with_name("missive"))
SEALED_MARK = b"SEALED-ENVELOPE-rcpt-marie.curie"
BODY_MARK = b"Subject: Resultats confidentiels"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISSIVE_")}
    env["MISSIVE_ENVIRONMENT"] = "test"
    return env


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("admin-queue") / "template"
    done = subprocess.run([MISSIVE, "--data-dir", str(data), "init", "--test-mode"],
                          capture_output=True, text=True, env=_env(), timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return data


@pytest.fixture
def data_dir(initialised: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(initialised, data)
    return data


@pytest.fixture
def session(data_dir: Path) -> Iterator[Session]:
    engine = create_engine(f"sqlite:///{data_dir / 'missive.db'}")
    with Session(engine, expire_on_commit=False) as s:
        yield s
    engine.dispose()


def add_entry(s: Session, *, domain: str = "peer.test", state: str = "pending",
              changed: datetime | None = None, attempts: int = 0,
              last_error: str | None = None) -> int:
    now = utcnow()
    row = RelayQueue(domain=domain, state=state, attempts=attempts, suite="test-suite",
                     sealed_key=b"k" * 32, envelope=SEALED_MARK, body=BODY_MARK, size=1234,
                     created_at=now - timedelta(days=10),
                     next_attempt_at=changed or now + timedelta(hours=1),
                     delay_notified=False, last_error=last_error)
    s.add(row)
    s.commit()
    return row.id


Result = subprocess.CompletedProcess[str]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("MISSIVE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MISSIVE_ENVIRONMENT", "test")


@pytest.fixture
def run(clean_env: None, capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """``missive --data-dir DIR admin queue …`` in this process, like the subprocess."""
    from missive.cli import main

    def runner(data_dir: Path, *args: str) -> Result:
        capsys.readouterr()
        try:
            code = main(["--data-dir", str(data_dir), "admin", "queue", *args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return _checked(data_dir, Result(args, code, out, err))

    return runner


def missive(data_dir: Path, *args: str) -> Result:
    """The same through a real ``missive`` process."""
    done = subprocess.run([MISSIVE, "--data-dir", str(data_dir), "admin", "queue", *args],
                          capture_output=True, text=True, env=_env(), timeout=120, check=False)
    return _checked(data_dir, done)


def _checked(data_dir: Path, done: Result) -> Result:
    keys = [(data_dir / "keys" / name).read_text().strip() for name in ("master.key", "index.key")]
    for stream in (done.stdout, done.stderr):
        assert not any(key in stream for key in keys)
        assert SEALED_MARK.decode() not in stream and BODY_MARK.decode() not in stream
        assert "Traceback" not in stream
    return done


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


Run = Callable[..., Result]


def test_list_json_filters_and_shows_no_sealed_data(data_dir: Path, session: Session,
                                                    run: Run) -> None:
    waiting = add_entry(session, last_error="421 4.3.2 try later")
    sent = add_entry(session, state="sent", attempts=1)
    other = add_entry(session, domain="other.test", state="failed", attempts=3,
                      last_error="550 5.1.1 unknown mailbox")

    data = as_json(missive(data_dir, "list", "--json"))
    assert data["count"] == 3
    assert [e["id"] for e in data["entries"]] == [waiting, sent, other]
    first = data["entries"][0]
    assert first["domain"] == "peer.test" and first["state"] == "pending"
    assert first["size"] == 1234 and first["last_error"] == "421 4.3.2 try later"
    datetime.fromisoformat(first["next_attempt_at"])
    assert set(first) >= {"id", "domain", "state", "attempts", "created_at", "next_attempt_at"}

    by_state = as_json(run(data_dir, "list", "--state", "sent", "--state", "failed", "--json"))
    assert [e["id"] for e in by_state["entries"]] == [sent, other]
    by_domain = as_json(run(data_dir, "list", "--domain", "OTHER.test.", "--json"))
    assert [e["id"] for e in by_domain["entries"]] == [other]
    limited = as_json(run(data_dir, "list", "--limit", "1", "--json"))
    assert [e["id"] for e in limited["entries"]] == [waiting]


def test_list_human_table(data_dir: Path, session: Session, run: Run) -> None:
    add_entry(session, domain="peer.test", last_error="x" * 200)
    done = run(data_dir, "list")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "1 entry"
    assert lines[1].split()[:3] == ["ID", "DOMAIN", "STATE"]
    assert "peer.test" in lines[2] and "pending" in lines[2]
    assert "x" * 61 not in done.stdout  # long errors are cut in the table


def test_retry_one_and_all(data_dir: Path, session: Session, run: Run) -> None:
    first = add_entry(session)
    second = add_entry(session)
    sent = add_entry(session, state="sent")
    before = utcnow()

    assert as_json(run(data_dir, "retry", str(first), "--json")) == {"retried": 1, "id": first}
    entries = {e["id"]: e for e in as_json(run(data_dir, "list", "--json"))["entries"]}
    assert datetime.fromisoformat(entries[first]["next_attempt_at"]) <= utcnow()
    assert datetime.fromisoformat(entries[second]["next_attempt_at"]) > before

    refused = missive(data_dir, "retry", str(sent))
    assert refused.returncode == 1
    assert f"no pending queue entry with id {sent}" in refused.stderr
    assert refused.stdout == ""

    assert as_json(run(data_dir, "retry", "--json"))["retried"] == 2
    audited = session.scalars(select(AuditEntry.details)
                              .where(AuditEntry.action == "relay.retry_now")).all()
    assert len(audited) == 2


def test_purge_keeps_recent_and_unfinished(data_dir: Path, session: Session, run: Run) -> None:
    old = utcnow() - timedelta(days=3)
    old_sent = add_entry(session, state="sent", changed=old)
    old_failed = add_entry(session, state="failed", changed=old)
    recent_sent = add_entry(session, state="sent", changed=utcnow() - timedelta(hours=12))
    old_pending = add_entry(session, state="pending", changed=old)

    data = as_json(missive(data_dir, "purge", "--older-than", "1", "--json"))
    assert data["purged"] == 2 and data["older_than_days"] == 1
    left = [e["id"] for e in as_json(run(data_dir, "list", "--json"))["entries"]]
    assert left == [recent_sent, old_pending]
    assert old_sent not in left and old_failed not in left

    actions = session.scalars(select(AuditEntry.action)
                              .where(AuditEntry.action == "relay.purge")).all()
    assert actions == ["relay.purge"]
    again = run(data_dir, "purge", "--older-than", "1")
    assert again.returncode == 0 and again.stdout.startswith("0 finished entries")


def test_purge_defaults_to_configured_retention(data_dir: Path, session: Session,
                                                run: Run) -> None:
    add_entry(session, state="sent", changed=utcnow() - timedelta(days=40))
    kept = add_entry(session, state="sent", changed=utcnow() - timedelta(days=20))
    assert as_json(run(data_dir, "purge", "--json"))["older_than_days"] == 30
    assert [e["id"] for e in as_json(run(data_dir, "list", "--json"))["entries"]] == [kept]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["purge", "--older-than", "-1"], 1, "--older-than must be a number of days"),
    (["purge", "--older-than", "1e300"], 1, "too many days"),
    (["list", "--limit", "0"], 1, "--limit must be at least 1"),
    (["retry", "0"], 1, "positive queue entry id"),
    (["list", "--state", "lost"], 2, "invalid choice"),
    (["retry", "abc"], 2, "invalid int value"),
])
def test_usage_errors_say_what_to_fix(data_dir: Path, run: Run, args: list[str], code: int,
                                      message: str) -> None:
    done = run(data_dir, *args)
    assert done.returncode == code
    assert message in done.stderr
    assert done.stdout == ""


def test_uninitialised_directory(tmp_path: Path) -> None:
    done = subprocess.run([MISSIVE, "--data-dir", str(tmp_path / "none"), "admin", "queue",
                           "list", "--json"], capture_output=True, text=True, env=_env(),
                          timeout=120, check=False)
    assert done.returncode == 1
    assert "init" in json.loads(done.stderr)["error"]
    assert not (tmp_path / "none").exists()


def test_offered_in_admin_help(data_dir: Path, clean_env: None,
                               capsys: pytest.CaptureFixture[str]) -> None:
    from missive.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--data-dir", str(data_dir), "admin", "--help"])
    assert exited.value.code == 0
    assert "outbound relay queue" in capsys.readouterr().out
