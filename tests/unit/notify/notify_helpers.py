"""Helpers for notify tests: patients in the directory, deliveries with content markers, a
settable clock and a recording channel (no network; the protocol tests use real servers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from missive.directory import patients
from missive.identity.ins import compute_key
from missive.notify.channels import ChannelFailure, Notice

#: Put in the subject, body, attachment name and sender specialty of every test message; no
#: notice may ever contain one of them.
MARKERS = ("SUBJ-MARKER-7f3a", "BODY-MARKER-91c2", "ATTACH-MARKER-5d0e", "Cardiologue-MARKER")


def ins_number(n: int) -> str:
    nir = f"279035121{n:04d}"
    return nir + compute_key(nir)


def message_with_markers(n: int = 0) -> bytes:
    return (
        "From: Dr Marie Curie (Cardiologue-MARKER) <marie.curie@test.missive.localhost>\r\n"
        "To: patient@patient.test.missive.localhost\r\n"
        f"Subject: SUBJ-MARKER-7f3a resultats {n}\r\n"
        f"Message-ID: <m{n}-{id(object())}@test>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n'
        "\r\n"
        "--b\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        "BODY-MARKER-91c2 Bonjour, voici vos resultats.\r\n"
        "--b\r\n"
        "Content-Type: application/pdf\r\n"
        'Content-Disposition: attachment; filename="ATTACH-MARKER-5d0e.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
        "JVBERi0xLjQK\r\n"
        "--b--\r\n"
    ).encode()


async def make_patient(core: Any, n: int = 1, *, phone: str | None = "+33612345678",
                       email: str | None = "patient@example.org", notify: str | None = None,
                       status: str = "active") -> int:
    async with core.db.write() as s:
        p = await patients.add_patient(
            s, core.store, core.settings, actor="test", ins=ins_number(n),
            oid="1.2.250.1.213.1.4.10", family_name="DUPONT", given_names="Marie",
            birth_date_text="1979-03-05", sex_text="F", birth_place_text="51215",
            phone_text=phone, email_text=email, notify=notify, status=status)
        return int(p.mailbox_id)


async def deliver(core: Any, mailbox_id: int, n: int = 0) -> None:
    d = core.store.delivery(sender="marie.curie@test.missive.localhost", source="test")
    d.add_local(mailbox_id)
    await d.commit(message_with_markers(n))


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 3, 10, 10, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Recorder:
    """A channel that records notices; ``fail`` is a list of outcomes to play first."""

    name: str
    sent: list[Notice] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)
    fail: list[ChannelFailure] = field(default_factory=list)

    async def send(self, notice: Notice) -> None:
        self.attempts.append(notice.key)
        if self.fail:
            raise self.fail.pop(0)
        self.sent.append(notice)


def configure(core: Any, **notify: Any) -> None:
    """Replace notify settings of this test's core (quiet hours off unless given)."""
    values = {"coalesce_seconds": 60, "quiet_hours": "", **notify}
    core.settings.notify = core.settings.notify.model_copy(update=values)
