"""The SMTP front on PostgreSQL (the multi-node backend): submission with AUTH into a patient
mailbox, a P5 refusal, MX delivery from a trust-space operator, relay queueing. The same
dialogue as on SQLite, against a private schema of the local PostgreSQL server."""

from __future__ import annotations

import asyncio
from pathlib import Path

from smtp_harness import message, send, smtp_env, stop_env


async def test_submission_and_mx_on_postgres(tmp_path: Path, pg_url: str) -> None:
    env = await smtp_env(tmp_path, database_url=pg_url)
    try:
        def submit() -> list[tuple[int, str]]:
            c = env.login()
            try:
                return [send(c, env.pro, [env.patient, "dr.who@peer.test"],
                             message(env.pro, env.patient)),
                        send(c, env.pro, [env.opposed], message(env.pro, env.opposed))]
            finally:
                c.close()

        def mx() -> tuple[int, str]:
            peer = env.peers["peer.test"]
            c = env.smtp(listener="mx", cert=peer.cert, key=peer.key)
            try:
                return send(c, "dr.who@peer.test", [env.pro2],
                            message("dr.who@peer.test", env.pro2))
            finally:
                c.close()

        accepted, refused = await asyncio.to_thread(submit)
        assert accepted[0] == 250, accepted
        assert refused == (550, "5.2.1 Recipient mailbox is not accepting messages")
        assert (await asyncio.to_thread(mx))[0] == 250
        assert await env.mailbox_count(env.patient) == 1
        assert await env.mailbox_count(env.pro2) == 1
        assert (await env.admin.store.stats())["relay_pending"] == 1
    finally:
        await stop_env(env)
