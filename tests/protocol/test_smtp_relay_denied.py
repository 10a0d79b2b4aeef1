"""No open relay (P1, P4, P7): unauthenticated mail, authenticated mail to outside the trust
space, and MX mail to non-local recipients are all refused, with smtplib and with Debian's
``swaks`` (a different client implementation, driven as a subprocess).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from smtp_harness import PASSWORD, SmtpEnv, message, send, smtp_env, stop_env

pytestmark = pytest.mark.asyncio(loop_scope="module")

SWAKS = shutil.which("swaks")
needs_swaks = pytest.mark.skipif(SWAKS is None, reason="swaks is not installed "
                                                       "(scripts/test-deps.sh)")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SmtpEnv]:
    e = await smtp_env(tmp_path_factory.mktemp("smtp-relay"))
    yield e
    await stop_env(e)


def swaks(*args: str) -> str:
    assert SWAKS is not None
    proc = subprocess.run([SWAKS, "--server", "127.0.0.1", "--helo", "swaks.test",
                           "--timeout", "20", *args],
                          capture_output=True, text=True, timeout=60, check=False)
    return proc.stdout + proc.stderr


def server_replies(output: str) -> list[str]:
    """Lines the server sent (swaks marks them ``<-`` or ``<~`` or, for errors, ``<**``)."""
    out = []
    for line in output.splitlines():
        for mark in ("<~* ", "<** ", "<~ ", "<- "):
            if line.startswith(mark):
                out.append(line[len(mark):].strip())
                break
    return out


async def test_unauthenticated_submission_refused(env: SmtpEnv) -> None:
    def run() -> tuple[int, str]:
        c = env.smtp()
        try:
            return send(c, "anyone@gmail.example", ["victim@yahoo.example"],
                        message("anyone@gmail.example", "victim@yahoo.example"))
        finally:
            c.close()

    assert await asyncio.to_thread(run) == (530, "5.7.0 Authentication required")


async def test_authenticated_to_outside_refused(env: SmtpEnv) -> None:
    def run() -> tuple[int, str]:
        c = env.login()
        try:
            return send(c, env.pro, ["victim@yahoo.example"],
                        message(env.pro, "victim@yahoo.example"))
        finally:
            c.close()

    code, text = await asyncio.to_thread(run)
    assert (code, text[:25]) == (550, "5.7.1 Relay denied: recip")


@needs_swaks
async def test_swaks_unauthenticated_refused(env: SmtpEnv) -> None:
    out = await asyncio.to_thread(swaks, "--port", str(env.ports["smtp_submission"]), "--tls",
                                  "--from", "a@gmail.example", "--to", "b@yahoo.example")
    assert "530 5.7.0 Authentication required" in server_replies(out), out


@needs_swaks
async def test_swaks_plaintext_refused_before_starttls(env: SmtpEnv) -> None:
    out = await asyncio.to_thread(swaks, "--port", str(env.ports["smtp_submission"]),
                                  "--from", env.pro, "--to", "b@yahoo.example")
    assert "530 5.7.0 Must issue a STARTTLS command first" in server_replies(out), out


@needs_swaks
async def test_swaks_authenticated_outside_refused_inside_accepted(env: SmtpEnv) -> None:
    common = ["--port", str(env.ports["smtp_submission_tls"]), "--tlsc", "--auth", "PLAIN",
              "--auth-user", env.pro, "--auth-password", PASSWORD, "--from", env.pro]
    out = await asyncio.to_thread(swaks, *common, "--to", "b@yahoo.example")
    replies = server_replies(out)
    assert any(r.startswith("550 5.7.1 Relay denied") for r in replies), out
    before = await env.mailbox_count(env.pro2)
    out = await asyncio.to_thread(swaks, *common, "--to", env.pro2,
                                  "--header", f"From: <{env.pro}>")
    assert any(r.startswith("250 2.0.0 Message accepted") for r in server_replies(out)), out
    assert await env.mailbox_count(env.pro2) == before + 1


@needs_swaks
async def test_swaks_mx_non_local_refused(env: SmtpEnv) -> None:
    peer = env.peers["peer.test"]
    out = await asyncio.to_thread(
        swaks, "--port", str(env.ports["smtp_mx"]), "--tls", "--tls-cert", str(peer.cert),
        "--tls-key", str(peer.key), "--from", "dr.who@peer.test", "--to", "x@gmail.example")
    assert ("550 5.7.1 Relay denied: this server only accepts mail for its own recipients"
            in server_replies(out)), out


@needs_swaks
async def test_swaks_mx_without_certificate_refused(env: SmtpEnv) -> None:
    out = await asyncio.to_thread(
        swaks, "--port", str(env.ports["smtp_mx"]), "--tls", "--from", "dr.who@peer.test",
        "--to", env.patient)
    assert ("550 5.7.1 A client certificate of a trust-space operator is required"
            in server_replies(out)), out
