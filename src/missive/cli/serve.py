"""``missive serve`` and ``missive demo``.

``serve`` runs every front and worker in one process by default (``--only`` picks some). It
loads the master key only when a chosen front needs to open mailboxes: ``--only smtp`` runs with
public keys alone (C2). Once listening, it prints the ports and writes ``DIR/run/ports.json``;
SIGTERM or SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import os
import sys

from missive.cli import common
from missive.errors import MissiveError

#: Fronts that never open a mailbox: they can run without the master key (C2).
PUBLIC_KEY_ONLY = {"smtp", "notify", "ops"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the servers and workers")
    p.add_argument("--only", help="comma-separated subset: smtp,relay,imap,notify,web,ops")
    p.add_argument("--log-level", default=os.environ.get("MISSIVE_LOG_LEVEL", "INFO"))
    p.set_defaults(func=serve_command)
    d = sub.add_parser("demo", help="init + sample users and messages + serve (loopback)")
    d.add_argument("--log-level", default=os.environ.get("MISSIVE_LOG_LEVEL", "WARNING"))
    d.set_defaults(func=demo_command)


def _print_ports(ports: dict[str, int], bind: str) -> None:
    lines = ["Missive is running. Listening on:"]
    for name, port in sorted(ports.items()):
        lines.append(f"  {name:<22} {bind}:{port}")
    lines.append("Stop with Ctrl-C (SIGINT) or SIGTERM.")
    print("\n".join(lines), flush=True)


async def run_server(settings: object, only: list[str] | None,
                     banner: str | None = None) -> int:
    from missive.config import Settings
    from missive.db.schema import upgrade
    from missive.runtime import build_core, serve

    assert isinstance(settings, Settings)  # noqa: S101 - typed entry for callers
    needs_master = not only or bool(set(only) - PUBLIC_KEY_ONLY)
    try:
        core = await build_core(settings, with_master_key=needs_master)
    except MissiveError as exc:
        raise common.CommandError(str(exc)) from None
    try:
        await upgrade(core.db)
        if core.keystore is not None:
            # Keys of mailboxes closed while a crash interrupted the shredding (C3).
            await core.store.collect_keys()

        def ready(ports: dict[str, int]) -> None:
            _print_ports(ports, settings.mta.bind)
            if banner:
                print(banner, flush=True)

        await serve(core, only, ready=ready)
    except (ValueError, OSError, MissiveError) as exc:
        raise common.CommandError(str(exc)) from None
    finally:
        await core.close()
    return 0


async def serve_command(args: argparse.Namespace) -> int:
    from missive.logs import setup

    setup(args.log_level)
    settings = common.settings_from(args)
    common.require_initialised(settings)
    only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    return await run_server(settings, only)


async def demo_command(args: argparse.Namespace) -> int:
    from missive.cli.demo import DemoSmsGateway, prepare_demo
    from missive.logs import setup

    setup(args.log_level)
    try:
        settings, banner = await prepare_demo(args.data_dir)
    except MissiveError as exc:
        raise common.CommandError(str(exc)) from None
    gateway = DemoSmsGateway()
    if not settings.notify.sms_webhook_url:
        settings.notify.sms_webhook_url = await gateway.start()
        settings.notify.coalesce_seconds = min(settings.notify.coalesce_seconds, 10)
    sys.stdout.flush()
    try:
        return await run_server(settings, None, banner)
    finally:
        await gateway.stop()
