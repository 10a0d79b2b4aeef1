"""``missive admin patient activation-code INS [--reset]``: the code of the activation letter.

It stands for the letter or SMS a real operator sends: the command prints a single-use code and
its expiry; the patient types it on the webmail's activation page (``--reset``: the password
reset page). Issuing a code withdraws the patient's earlier unused code of the same kind.
Registered by ``missive.cli.admin`` through :func:`register_patient`.
"""

from __future__ import annotations

import argparse

from missive.cli import common


def register_patient(patient_sub: argparse._SubParsersAction) -> None:
    """Add ``activation-code`` under ``missive admin patient``."""
    p = patient_sub.add_parser(
        "activation-code", help="issue a one-time activation (or reset) code for the webmail")
    p.add_argument("ins", help="the patient's matricule INS (15 characters)")
    p.add_argument("--reset", action="store_true",
                   help="a password reset code instead of a first activation code")
    common.add_json(p)
    p.set_defaults(func=activation_code)


async def activation_code(args: argparse.Namespace) -> int:
    from missive.directory.patients import get_patient
    from missive.errors import MissiveError
    from missive.runtime import build_core
    from missive.webmail import codes

    settings = common.settings_from(args)
    common.require_initialised(settings)
    purpose = "reset" if args.reset else "activation"
    core = await build_core(settings, with_master_key=False)
    try:
        async with core.db.write() as s:
            try:
                patient = await get_patient(s, args.ins)
            except MissiveError as exc:
                raise common.CommandError(str(exc)) from None
            if patient.status == "closed":
                raise common.CommandError("this account is closed: it cannot be activated")
            if purpose == "activation" and patient.status != "pending":
                raise common.CommandError(
                    f"the patient is {patient.status}, not pending: use --reset for a password "
                    "reset code")
            if purpose == "reset" and patient.status != "active":
                raise common.CommandError(
                    f"the patient is {patient.status}: a reset code needs an active account")
            issued = await codes.issue_code(s, settings, patient.id, purpose)
            from missive.audit import log as audit

            await audit.append(s, f"admin.patient.{purpose}_code", actor="admin",
                               mailbox_id=patient.mailbox_id)
    finally:
        await core.close()
    data = {"ins": patient.matricule, "purpose": purpose, "code": issued.display,
            "expires_at": issued.expires_at.isoformat(),
            "url": (settings.webmail.base_url.rstrip("/") +
                    ("/activation" if purpose == "activation" else "/mot-de-passe-oublie"))}
    common.emit(data, as_json=args.json, human=(
        f"{'Activation' if purpose == 'activation' else 'Reset'} code for {patient.matricule}: "
        f"{issued.display}\nvalid until {issued.expires_at:%Y-%m-%d %H:%M} UTC; the patient "
        f"enters it at {data['url'] or '/activation'}"))
    return 0
