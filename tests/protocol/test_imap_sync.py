"""Two-way synchronisation with mbsync (isync) and offlineimap over TLS, as professionals' own
tools do it: a full first sync of 500 messages with attachments, flag changes and deletions made
on either side propagate, and a second sync changes nothing."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_imap_clients import LOGIN, PASSWORD, Env, env, message  # noqa: F401 - fixture

COUNT = 500


async def _fill(e: Env, count: int) -> None:
    mbox = await e.core.store.open(e.mailbox_id)
    for i in range(count):
        await mbox.append("INBOX", message(i, attachment=i % 5 == 0, forwarded=i % 50 == 0))


async def _server_state(e: Env) -> dict[int, frozenset[str]]:
    mbox = await e.core.store.open(e.mailbox_id)
    return {m.uid: m.flags for m in await mbox.messages("INBOX")}


def _maildir(path: Path) -> dict[str, str]:
    """Message files of a maildir folder: Message-ID → maildir flags."""
    out: dict[str, str] = {}
    for sub in ("cur", "new"):
        d = path / sub
        if not d.is_dir():
            continue
        for f in d.iterdir():
            mid = next((line.split(b":", 1)[1].strip().decode() for line in
                        f.read_bytes().split(b"\r\n\r\n", 1)[0].splitlines()
                        if line.lower().startswith(b"message-id:")), f.name)
            out[mid] = f.name.rsplit(":2,", 1)[1] if ":2," in f.name else ""
    return out


def _find(path: Path, message_id: str) -> Path:
    for sub in ("cur", "new"):
        for f in (path / sub).iterdir():
            if f"<{message_id}>".encode() in f.read_bytes()[:2000]:
                return f
    raise AssertionError(f"{message_id} not in {path}")


async def _run(args: list[str], cwd: Path) -> str:
    proc = await asyncio.to_thread(subprocess.run, args, capture_output=True, timeout=300,
                                   check=False, cwd=cwd, env={**os.environ, "HOME": str(cwd)})
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode(errors="replace")[-3000:]
    return proc.stdout.decode(errors="replace")


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="isync (mbsync) is not installed")
async def test_mbsync_two_way(env: Env, tmp_path: Path) -> None:  # noqa: F811
    await _fill(env, COUNT)
    local = tmp_path / "Mail"
    local.mkdir()
    conf = tmp_path / "mbsyncrc"
    conf.write_text(f"""IMAPAccount missive
Host localhost
Port {env.port}
User {LOGIN}
Pass "{PASSWORD}"
SSLType IMAPS
CertificateFile {env.ca_file}

IMAPStore remote
Account missive

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel all
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
""")
    cmd = ["mbsync", "-c", str(conf), "-a"]
    await _run(cmd, tmp_path)
    inbox = _maildir(local / "INBOX")
    assert len(inbox) == COUNT
    assert (local / "Sent").is_dir() and (local / "Trash").is_dir()

    # Server side: flag one, delete another.
    mbox = await env.core.store.open(env.mailbox_id)
    await mbox.store_flags("INBOX", [1], ["\\Flagged"], "add")
    await mbox.store_flags("INBOX", [2], ["\\Deleted"], "add")
    await mbox.expunge("INBOX")
    # Local side: mark one seen, delete another.
    f3 = _find(local / "INBOX", "m3@example.org")
    f3.rename(f3.parent.parent / "cur" / (f3.name.split(":2,")[0] + ":2,S"))
    _find(local / "INBOX", "m4@example.org").unlink()
    await _run(cmd, tmp_path)

    inbox = _maildir(local / "INBOX")
    assert "F" in inbox["<m0@example.org>"]
    assert "<m1@example.org>" not in inbox
    assert "<m3@example.org>" not in inbox or "S" in inbox["<m3@example.org>"]
    state = await _server_state(env)
    assert len(state) == COUNT - 2
    assert "\\Seen" in state[4]
    assert 5 not in state

    before_server, before_local = state, _maildir(local / "INBOX")
    await _run(cmd, tmp_path)
    assert await _server_state(env) == before_server
    assert _maildir(local / "INBOX") == before_local


@pytest.mark.skipif(shutil.which("offlineimap") is None, reason="offlineimap is not installed")
async def test_offlineimap_two_way(env: Env, tmp_path: Path) -> None:  # noqa: F811
    await _fill(env, COUNT)
    local = tmp_path / "Mail"
    conf = tmp_path / "offlineimaprc"
    conf.write_text(f"""[general]
accounts = missive
metadata = {tmp_path}/meta

[Account missive]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {local}

[Repository remote]
type = IMAP
remotehost = localhost
remoteport = {env.port}
remoteuser = {LOGIN}
remotepass = {PASSWORD}
ssl = yes
sslcacertfile = {env.ca_file}
""")
    cmd = ["offlineimap", "-c", str(conf), "-u", "basic", "-o"]
    await _run(cmd, tmp_path)
    assert len(_maildir(local / "INBOX")) == COUNT

    mbox = await env.core.store.open(env.mailbox_id)
    await mbox.store_flags("INBOX", [1], ["\\Flagged"], "add")
    await mbox.store_flags("INBOX", [2], ["\\Deleted"], "add")
    await mbox.expunge("INBOX")
    f3 = _find(local / "INBOX", "m3@example.org")
    f3.rename(f3.parent.parent / "cur" / (f3.name.split(":2,")[0] + ":2,S"))
    _find(local / "INBOX", "m4@example.org").unlink()
    await _run(cmd, tmp_path)

    inbox = _maildir(local / "INBOX")
    assert "F" in inbox["<m0@example.org>"]
    assert "<m1@example.org>" not in inbox
    assert "S" in inbox["<m3@example.org>"]
    state = await _server_state(env)
    assert len(state) == COUNT - 2
    assert "\\Seen" in state[4]
    assert 5 not in state

    before_server, before_local = state, _maildir(local / "INBOX")
    await _run(cmd, tmp_path)
    assert await _server_state(env) == before_server
    assert _maildir(local / "INBOX") == before_local
