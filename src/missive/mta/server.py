"""The SMTP front: submission (STARTTLS and implicit TLS) and MX listeners (SPEC §4 SMTP).

``start(core)`` is what ``missive serve`` calls (``runtime.FRONTS["smtp"]``). It needs only
public keys (C2: ``build_core(settings, with_master_key=False)`` is enough) and the TLS
material of ``certs/`` (``missive init`` creates it). Ports set to 0 pick a free port; the
returned :class:`SmtpFront` reports the real ones under ``smtp_submission``,
``smtp_submission_tls`` and ``smtp_mx``.

Listeners (each connection is a :class:`~missive.mta.protocol.MissiveSMTP`):

============== ============ =================== =========================================
name           TLS          client certificate  handler
============== ============ =================== =========================================
submission     STARTTLS     optional (EXTERNAL) :class:`~.handlers_submission.SubmissionHandler`
submission_tls implicit     optional (EXTERNAL) :class:`~.handlers_submission.SubmissionHandler`
mx             STARTTLS     optional, checked   :class:`~.handlers_mx.MxHandler`
============== ============ =================== =========================================

With ``mta.processes`` = N > 1, this process binds the listeners but does not accept on them:
N worker processes (:mod:`missive.mta.workers`) each run this same front on the inherited
sockets, so that SMTP uses more than one core.

The MX listener trusts, besides our CA and ``certs.extra_ca_files``, the CA certificates of
the trust space; they are reloaded every ``mta.trust_refresh_seconds`` (a domain added with
``missive admin trust add`` is accepted without a restart).

aiosmtpd logs each data line at DEBUG level ("DATA readline"): a filter on its logger drops
those records, so that message content never reaches a log whatever the level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from missive.certs.tls import ServerTLS, load_trust
from missive.directory.trust import trusted_ca_pems
from missive.mta.handlers import BaseHandler, FrontContext
from missive.mta.handlers_mx import MxHandler
from missive.mta.handlers_submission import SubmissionHandler
from missive.mta.limits import Limits
from missive.mta.protocol import MissiveSMTP

if TYPE_CHECKING:
    from missive.mta.workers import WorkerPool
    from missive.runtime import Core

log = logging.getLogger(__name__)

PORT_NAMES = {"submission": "smtp_submission", "submission_tls": "smtp_submission_tls",
              "mx": "smtp_mx"}


class _NoContent(logging.Filter):
    """Drops aiosmtpd's per-line DATA records (message content), AUTH transcripts, and its
    deprecation notice for ``Session.login_data`` (which aiosmtpd itself sets at each AUTH)."""

    _DROP = ("DATA readline", "auth_", "challenge", "_handle_client readline",
             "login_data is deprecated")

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not any(marker in msg for marker in self._DROP)


def _install_log_filter() -> None:
    logger = logging.getLogger("mail.log")
    if not any(isinstance(f, _NoContent) for f in logger.filters):
        logger.addFilter(_NoContent())


@dataclass
class SmtpFront:
    """The running SMTP front: its ports and how to stop it."""

    ctx: FrontContext
    servers: dict[str, asyncio.Server]
    ports: dict[str, int] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    handlers: list[BaseHandler] = field(default_factory=list)
    #: The worker processes that serve the listeners (``mta.processes`` > 1), or None.
    pool: WorkerPool | None = None

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.stop()
        pending = [t for h in self.handlers for t in h.background_tasks()]
        if pending:
            await asyncio.wait(pending, timeout=10)
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for server in self.servers.values():
            server.close()
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)


async def _trust_pems(core: Core) -> list[bytes]:
    async with core.db.read() as s:
        return await trusted_ca_pems(s)


async def _refresh_trust(ctx: FrontContext, mx_tls: ServerTLS, current: list[bytes]) -> None:
    """Reload the trust space's CAs (and our CRLs) into the MX listener now and then."""
    known = list(current)
    while True:
        await asyncio.sleep(ctx.settings.mta.trust_refresh_seconds)
        try:
            pems = await _trust_pems(ctx.core)
            ctx.crls = load_trust(ctx.settings).crls
            if pems != known:
                mx_tls.set_extra_ca_pem(pems)
                known = pems
                log.info("smtp: MX trust space reloaded", extra={"cas": len(pems)})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("smtp: could not reload the trust space")


def _factory(handler: BaseHandler, ctx: FrontContext, listener: str, tls: ServerTLS,
             *, implicit: bool, auth: bool) -> MissiveSMTP:
    with warnings.catch_warnings():
        # aiosmtpd warns about AUTH without STARTTLS; on the implicit-TLS listener every byte
        # is already encrypted.
        warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
        return _protocol(handler, ctx, listener, tls, implicit=implicit, auth=auth)


def _protocol(handler: BaseHandler, ctx: FrontContext, listener: str, tls: ServerTLS,
              *, implicit: bool, auth: bool) -> MissiveSMTP:
    mta = ctx.settings.mta
    return MissiveSMTP(
        handler,
        listener=listener,
        server_tls=tls,
        data_timeout=mta.data_timeout,
        max_errors=mta.max_errors,
        hostname=mta.hostname,
        ident="Missive ESMTP",
        tls_context=None if implicit else tls.context,
        # Development only (settings refuse it in production): plaintext AUTH and MAIL.
        require_starttls=not implicit and not (auth and mta.allow_plaintext_auth),
        timeout=mta.command_timeout,
        data_size_limit=mta.max_message_size,
        enable_SMTPUTF8=True,
        decode_data=False,
        auth_required=auth,
        auth_require_tls=not implicit and not mta.allow_plaintext_auth,
        auth_exclude_mechanism=None if auth else ["PLAIN", "LOGIN"],
    )


#: GIL switch interval while the SMTP front runs (CPython's default is 5 ms).
SWITCH_INTERVAL = 0.0005


async def start(core: Core, *,
                inherited: dict[str, list[socket.socket]] | None = None) -> SmtpFront:
    """Start the three listeners; see the module docstring.

    With ``mta.processes`` > 1 this process only binds the listening sockets and hands them to
    that many worker processes (:mod:`missive.mta.workers`), which serve them; ``inherited``
    is how a worker gets them back (sockets by listener name).
    """
    _install_log_filter()
    settings = core.settings
    mta = settings.mta
    workers = mta.processes if inherited is None else 1
    loop = asyncio.get_running_loop()
    if workers > 1:
        # The SMTP CPU (TLS, MIME, sealing) goes to the workers; this process's loop stays
        # free for the other fronts and never accepts an SMTP connection.
        servers: dict[str, asyncio.Server] = {}
        front = SmtpFront(ctx=FrontContext(core=core, limits=Limits.from_settings(mta),
                                           crls=[]), servers=servers)
        try:
            for name, port in (("submission", mta.submission_port),
                               ("submission_tls", mta.submission_tls_port),
                               ("mx", mta.mx_port)):
                servers[name] = await loop.create_server(
                    asyncio.Protocol, host=mta.bind, port=port, start_serving=False)
                front.ports[PORT_NAMES[name]] = servers[name].sockets[0].getsockname()[1]
            from missive.mta.workers import WorkerPool

            front.pool = WorkerPool(core, {name: [sock.fileno() for sock in server.sockets]
                                           for name, server in servers.items()}, workers)
            await front.pool.start()
        except BaseException:
            await front.stop()
            raise
        log.info("smtp: listening in %d worker processes", workers,
                 extra={k: v for k, v in front.ports.items()})
        return front
    # The store's group-commit writer runs its SQLite transaction in a worker thread while this
    # loop does TLS and MIME parsing; with the default 5 ms switch interval each statement of
    # the writer waits for the GIL behind the loop (a convoy), and commits take ~3x longer
    # (measured with bench/smtp.py). A shorter interval keeps the writer moving.
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
    limits = Limits.from_settings(mta)
    ctx = FrontContext(core=core, limits=limits, crls=load_trust(settings).crls)
    submission_tls = ServerTLS(settings, client_auth="optional")
    pems = await _trust_pems(core)
    mx_tls = ServerTLS(settings, client_auth="optional", extra_ca_pem=pems)
    ctx.tls = {"submission": submission_tls, "mx": mx_tls}
    submission = SubmissionHandler(ctx)
    mx = MxHandler(ctx)
    servers = {}
    front = SmtpFront(ctx=ctx, servers=servers, handlers=[submission, mx])
    plan = [
        ("submission", mta.submission_port, submission, submission_tls, False, True),
        ("submission_tls", mta.submission_tls_port, submission, submission_tls, True, True),
        ("mx", mta.mx_port, mx, mx_tls, False, False),
    ]
    try:
        for name, port, handler, tls, implicit, auth in plan:
            def factory(handler: BaseHandler = handler, name: str = name, tls: ServerTLS = tls,
                        implicit: bool = implicit, auth: bool = auth) -> MissiveSMTP:
                return _factory(handler, ctx, name, tls, implicit=implicit, auth=auth)

            tls_args: dict[str, Any] = {
                "ssl": tls.context if implicit else None,
                "ssl_handshake_timeout": 30 if implicit else None}
            socks = inherited.get(name, []) if inherited is not None else []
            for i, sock in enumerate(socks):
                servers[name if i == 0 else f"{name}.{i}"] = await loop.create_server(
                    factory, sock=sock, **tls_args)
            if inherited is None:
                servers[name] = await loop.create_server(factory, host=mta.bind, port=port,
                                                         **tls_args)
            if name in servers:
                front.ports[PORT_NAMES[name]] = servers[name].sockets[0].getsockname()[1]
    except BaseException:
        await front.stop()
        raise
    front.tasks.append(asyncio.create_task(_refresh_trust(ctx, mx_tls, pems)))
    log.info("smtp: listening", extra={k: v for k, v in front.ports.items()})
    return front
