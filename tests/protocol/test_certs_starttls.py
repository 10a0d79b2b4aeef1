"""The listener context also works behind STARTTLS (aiosmtpd, RFC 3207), where the connection is
wrapped mid-stream: certificate rotation and client-certificate revocation apply without a
restart, as on implicit-TLS listeners (tests/protocol/test_tls.py)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509

from missive.certs import ca, tls
from missive.certs.files import CertsLayout
from missive.config import Settings


class Handler:
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 OK"


@pytest.fixture
async def smtp_port(settings: Settings) -> AsyncIterator[tuple[int, tls.ServerTLS]]:
    ca.ensure_initialised(settings)
    server_tls = tls.server_tls(settings, client_auth="optional", reload_seconds=0)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Handler(), hostname="localhost", tls_context=server_tls.context,
                     require_starttls=True),
        "127.0.0.1", 0,
    )
    yield server.sockets[0].getsockname()[1], server_tls
    server.close()
    await server.wait_closed()


async def _starttls(settings: Settings, port: int, cert: Path | None = None) -> int:
    """STARTTLS, then EHLO (the first command the server answers under TLS); the serial of
    the certificate the server presented."""
    ctx = ssl.create_default_context(cafile=str(CertsLayout.of(settings).ca_cert))
    if cert is not None:
        ctx.load_cert_chain(cert)
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                             tls_context=ctx, timeout=10)
    await client.connect()
    try:
        await client.starttls(server_hostname="localhost")
        await client.ehlo()
        transport = client.transport
        assert transport is not None
        der = transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number
    finally:
        client.close()


async def test_starttls_rotation_and_revocation(
    smtp_port: tuple[int, tls.ServerTLS], settings: Settings, tmp_path: Path
) -> None:
    port, server_tls = smtp_port
    first = await _starttls(settings, port)
    fresh = ca.issue_server(settings, ["localhost"], ["127.0.0.1"])
    assert await _starttls(settings, port) == int(fresh.serial, 16) != first

    pro = ca.issue_professional(settings, "10001234565", "Marie Curie")
    cert = tmp_path / "pro.pem"
    cert.write_bytes(ca.export_pem(settings, pro.serial, include_key=True))
    assert await _starttls(settings, port, cert) == int(fresh.serial, 16)
    ca.revoke(settings, pro.serial)
    with pytest.raises((aiosmtplib.SMTPException, ssl.SSLError, ConnectionError)):
        await _starttls(settings, port, cert)
    assert server_tls.reloads >= 2
