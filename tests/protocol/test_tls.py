"""TLS listeners built by ``missive.certs.tls``, driven by real clients (OpenSSL's s_client and
Python's ``ssl``) over sockets on 127.0.0.1 (SPEC §4 TLS, issue #3 acceptance).

Each test runs an asyncio TLS server on port 0 that greets with ``hello`` once the handshake is
done; a client that reads ``hello`` was accepted. With TLS 1.3 the server checks a client
certificate after the client considers the handshake finished, so refusal shows on the first
read (an alert), not at connect.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from missive.certs import ca, tls
from missive.certs.errors import CertificateRevoked
from missive.certs.files import CertsLayout
from missive.config import Settings

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="openssl is not installed (scripts/test-deps.sh)")

GREETING = b"hello\n"


@pytest.fixture
def pki(settings: Settings) -> Settings:
    ca.ensure_initialised(settings)
    return settings


class Listener:
    def __init__(self, server: asyncio.Server, server_tls: tls.ServerTLS) -> None:
        self.server = server
        self.tls = server_tls
        self.port: int = server.sockets[0].getsockname()[1]


async def _start(settings: Settings, client_auth: tls.ClientAuth) -> Listener:
    server_tls = tls.server_tls(settings, client_auth=client_auth, reload_seconds=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(GREETING)
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_tls.context)
    return Listener(server, server_tls)


@pytest.fixture
async def listener(pki: Settings) -> AsyncIterator[Listener]:
    lst = await _start(pki, "none")
    yield lst
    lst.server.close()
    await lst.server.wait_closed()


@pytest.fixture
async def mtls_listener(pki: Settings) -> AsyncIterator[Listener]:
    lst = await _start(pki, "required")
    yield lst
    lst.server.close()
    await lst.server.wait_closed()


async def s_client(port: int, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-ign_eof", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(b""), 30)
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


def _ca_file(settings: Settings) -> str:
    return str(CertsLayout.of(settings).ca_cert)


def _write_pem(settings: Settings, serial: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{serial}.pem"
    path.write_bytes(ca.export_pem(settings, serial, include_key=True))
    return path


async def _python_read(port: int, ctx: ssl.SSLContext, server_hostname: str) -> bytes:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=server_hostname)
    try:
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


async def _refused(port: int, ctx: ssl.SSLContext) -> bool:
    """True when the server did not let the client in (alert, reset or EOF before greeting).

    asyncio closes the transport on a failed server handshake without flushing OpenSSL's
    alert, so the client may see EOF rather than the alert; the reason is asserted on the
    server side in :func:`_server_side_error`.
    """
    try:
        return await _python_read(port, ctx, "localhost") != GREETING
    except (ssl.SSLError, ConnectionError):
        return True


def _server_side_error(context: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """Handshake once with a blocking server on ``context``; the server's error text, or ''."""
    import socket
    import threading

    errors: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]

        def serve() -> None:
            conn, _ = sock.accept()
            try:
                with context.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.sendall(GREETING)
            except (ssl.SSLError, OSError) as exc:
                errors.append(str(exc))

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with socket.create_connection(("127.0.0.1", port)) as raw, \
                    client.wrap_socket(raw, server_hostname="localhost") as conn:
                conn.recv(100)
        except (ssl.SSLError, OSError):
            pass
        thread.join(10)
    return errors[0] if errors else ""


def _client_ctx(settings: Settings, cert: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=_ca_file(settings))
    if cert is not None:
        ctx.load_cert_chain(cert)
    return ctx


async def test_openssl_verifies_the_chain(listener: Listener, pki: Settings) -> None:
    rc, out, err = await s_client(listener.port, "-verify_return_error",
                                  "-CAfile", _ca_file(pki), "-servername", "localhost",
                                  "-verify_hostname", "localhost")
    assert rc == 0, err
    assert "Verify return code: 0 (ok)" in out
    assert "hello" in out


async def test_openssl_refuses_with_another_ca(listener: Listener, pki: Settings,
                                               tmp_path: Path) -> None:
    other = Settings(**{**pki.model_dump(), "data_dir": tmp_path / "other"})
    ca.init_ca(other)
    rc, out, _ = await s_client(listener.port, "-verify_return_error",
                                "-CAfile", _ca_file(other))
    assert rc != 0
    assert "hello" not in out


async def test_python_ssl_verifies_chain_and_name(listener: Listener, pki: Settings) -> None:
    assert await _python_read(listener.port, _client_ctx(pki), "localhost") == GREETING
    # Python 3.13+ clients verify in RFC 5280 strict mode by default: our chain passes it.
    strict = _client_ctx(pki)
    strict.verify_flags |= ssl.VERIFY_X509_STRICT
    assert await _python_read(listener.port, strict, "127.0.0.1") == GREETING
    with pytest.raises(ssl.SSLCertVerificationError):
        await _python_read(listener.port, _client_ctx(pki), "not-in-the-sans.example")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_context_refuses_below_tls12(pki: Settings) -> None:
    ctx = tls.server_context(pki)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
async def test_openssl_old_protocols_refused(listener: Listener, pki: Settings,
                                             flag: str) -> None:
    # SECLEVEL=0 lets the client offer TLS 1.0/1.1 at all, so the refusal is our server's.
    rc, out, _ = await s_client(listener.port, flag, "-cipher", "DEFAULT@SECLEVEL=0",
                                "-CAfile", _ca_file(pki))
    assert rc != 0
    assert "hello" not in out
    # Control: the same client with TLS 1.2 gets in.
    rc, out, err = await s_client(listener.port, "-tls1_2", "-CAfile", _ca_file(pki),
                                  "-verify_return_error")
    assert rc == 0, err
    assert "hello" in out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
async def test_python_old_protocols_refused(listener: Listener, pki: Settings,
                                            version: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(_ca_file(pki))
    ctx.set_ciphers("DEFAULT@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = getattr(ssl.TLSVersion, version)
    assert await _refused(listener.port, ctx)
    error = _server_side_error(listener.tls.current, ctx)
    assert "unsupported protocol" in error.lower()


async def test_professional_certificate_accepted_then_refused_after_revoke(
    mtls_listener: Listener, pki: Settings, tmp_path: Path
) -> None:
    pro = ca.issue_professional(pki, "10001234565", "Marie Curie", profession="Médecin")
    cert = _write_pem(pki, pro.serial, tmp_path)
    assert mtls_listener.tls.crl_in_handshake

    rc, out, err = await s_client(mtls_listener.port, "-verify_return_error",
                                  "-CAfile", _ca_file(pki), "-cert", str(cert))
    assert rc == 0, err
    assert "hello" in out
    assert await _python_read(mtls_listener.port, _client_ctx(pki, cert), "localhost") \
        == GREETING

    ca.revoke(pki, pro.serial, "keyCompromise", regenerate_crl=False)
    ca.generate_crl(pki)

    # Same listener, no restart: the new CRL is picked up at the next handshake.
    rc, out, _ = await s_client(mtls_listener.port, "-verify_return_error",
                                "-CAfile", _ca_file(pki), "-cert", str(cert))
    assert "hello" not in out
    assert await _refused(mtls_listener.port, _client_ctx(pki, cert))
    assert mtls_listener.tls.reloads >= 1
    error = _server_side_error(mtls_listener.tls.current, _client_ctx(pki, cert))
    assert "certificate revoked" in error

    # Another professional's certificate is still accepted.
    other = ca.issue_professional(pki, "99700367917", "Jean Test")
    other_cert = _write_pem(pki, other.serial, tmp_path)
    assert await _python_read(mtls_listener.port, _client_ctx(pki, other_cert),
                              "localhost") == GREETING


async def test_client_without_certificate_refused_when_required(
    mtls_listener: Listener, pki: Settings
) -> None:
    assert await _refused(mtls_listener.port, _client_ctx(pki))
    error = _server_side_error(mtls_listener.tls.current, _client_ctx(pki))
    assert "certificate required" in error or "did not return a certificate" in error


async def test_certificate_from_another_ca_refused(
    mtls_listener: Listener, pki: Settings, tmp_path: Path
) -> None:
    other = Settings(**{**pki.model_dump(), "data_dir": tmp_path / "other"})
    ca.init_ca(other)
    stranger = ca.issue_professional(other, "10001234565", "Marie Curie")
    cert = _write_pem(other, stranger.serial, tmp_path)
    assert await _refused(mtls_listener.port, _client_ctx(pki, cert))
    error = _server_side_error(mtls_listener.tls.current, _client_ctx(pki, cert))
    assert "certificate verify failed" in error


async def _served_serial(port: int, ca_file: str, *extra: str) -> int:
    rc, out, err = await s_client(port, "-verify_return_error", "-CAfile", ca_file,
                                  "-showcerts", *extra)
    assert rc == 0, err
    pem = out[out.index("-----BEGIN CERTIFICATE-----"):]
    pem = pem[: pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


@pytest.mark.parametrize("sni", [(), ("-noservername",)], ids=["sni", "no-sni"])
async def test_server_certificate_reloaded_without_restart(
    listener: Listener, pki: Settings, sni: Sequence[str]
) -> None:
    before = await _served_serial(listener.port, _ca_file(pki), *sni)
    fresh = ca.issue_server(pki, ["localhost", "mail.test.missive.localhost"], ["127.0.0.1"])
    after = await _served_serial(listener.port, _ca_file(pki), *sni)
    assert after != before
    assert after == int(fresh.serial, 16)


async def test_client_context_presents_operator_certificate(
    mtls_listener: Listener, pki: Settings
) -> None:
    ca.issue_operator(pki, "test.missive.localhost", organisation="Hôpital Test",
                      unit="12345678900011", state="Paris (75)")
    ctx = tls.client_context(pki)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert await _python_read(mtls_listener.port, ctx, "localhost") == GREETING


async def test_revocation_checked_after_handshake_when_a_ca_has_no_crl(
    pki: Settings, tmp_path: Path
) -> None:
    # A trust-space CA without a CRL: OpenSSL's leaf CRL check would refuse all its clients,
    # so the check moves after the handshake (check_peer), and still uses our CRL.
    peer = Settings(**{**pki.model_dump(), "data_dir": tmp_path / "peer"})
    ca.init_ca(peer, cn="Peer operator CA")
    CertsLayout.of(peer).crl.unlink()
    server_tls = tls.server_tls(pki, client_auth="required", reload_seconds=0,
                                extra_ca_pem=[CertsLayout.of(peer).ca_cert.read_bytes()])
    assert not server_tls.crl_in_handshake
    pro = ca.issue_professional(pki, "10001234565", "Marie Curie")
    cert = _write_pem(pki, pro.serial, tmp_path)
    ca.revoke(pki, pro.serial)
    outcome: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        try:
            server_tls.check_peer(ssl_object)
            outcome.append("accepted")
            writer.write(GREETING)
        except CertificateRevoked:
            outcome.append("revoked")
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_tls.context)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await _refused(port, _client_ctx(pki, cert))
        operator = ca.issue_operator(peer, "peer.example.fr")
        peer_cert = _write_pem(peer, operator.serial, tmp_path)
        assert await _python_read(port, _client_ctx(pki, peer_cert), "localhost") == GREETING
    finally:
        server.close()
        await server.wait_closed()
    assert outcome == ["revoked", "accepted"]


async def test_certificate_expiring_while_running_is_not_served(
    pki: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    clock = {"now": datetime.now(UTC)}
    server_tls = tls.server_tls(pki, reload_seconds=3600, wall_clock=lambda: clock["now"])

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(GREETING)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_tls.context)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await _python_read(port, _client_ctx(pki), "localhost") == GREETING
        clock["now"] += timedelta(days=ca.SERVER_DAYS + 1)
        with caplog.at_level(logging.ERROR, logger="missive.certs.tls"):
            assert await _refused(port, _client_ctx(pki))
        assert any("expired" in r.getMessage() for r in caplog.records)
    finally:
        server.close()
        await server.wait_closed()


async def test_rsa_ca_listener(settings: Settings, tmp_path: Path) -> None:
    ca.init_ca(settings, algorithm="rsa")
    ca.ensure_initialised(settings)
    pro = ca.issue_professional(settings, "10001234565", "Marie Curie")
    lst = await _start(settings, "required")
    try:
        rc, out, err = await s_client(lst.port, "-verify_return_error", "-CAfile",
                                      _ca_file(settings), "-tls1_2",
                                      "-cert", str(_write_pem(settings, pro.serial, tmp_path)))
        assert rc == 0, err
        assert "hello" in out and "ECDHE-RSA-AES256-GCM-SHA384" in out
    finally:
        lst.server.close()
        await lst.server.wait_closed()
