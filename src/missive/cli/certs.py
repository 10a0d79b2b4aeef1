"""``missive certs …``: the operator CA from the command line (SPEC §7, SPEC §4 TLS).

Sub-commands: ``init-ca``, ``issue-server``, ``issue-operator``, ``issue-pro``, ``revoke``,
``crl``, ``list``, ``check``, ``export``, ``import``. Each has ``--json``; each error says what
to fix (missing CA, unknown serial, bad SAN, wrong password). Passwords are read from stdin or
a file, never from the command line (it shows in ``ps`` and shell history).

``check`` exits 0 when nothing needs attention, 1 when something expires within the warning
window, 2 when something has expired (the usual monitoring-plugin convention).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from missive.certs import ca
from missive.certs.errors import CertError
from missive.certs.files import CertInfo
from missive.cli import common
from missive.config import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "certs", help="operator CA: certificates, revocation, expiry",
        description="Manage the operator CA and its certificates (SPEC §4 TLS).",
    )
    sub = parser.add_subparsers(dest="certs_command", metavar="ACTION", required=True)

    p = sub.add_parser("init-ca", help="create the CA (ECDSA P-256 by default)")
    p.add_argument("--algorithm", choices=["ec", "rsa"], default="ec",
                   help="ec = ECDSA P-256 (default), rsa = RSA 3072")
    p.add_argument("--cn", help="CA common name (default: Missive CA <domain>)")
    p.add_argument("--organisation", help="CA organisation (O)")
    p.add_argument("--days", type=int, default=ca.CA_DAYS, help="validity in days")
    common.add_json(p)
    p.set_defaults(func=cmd_init_ca)

    p = sub.add_parser("issue-server", help="issue (and activate) a TLS server certificate")
    p.add_argument("--name", action="append", default=[], metavar="DNS",
                   help="DNS name (repeat; default: the MTA host name, the domain, localhost)")
    p.add_argument("--ip", action="append", default=[], metavar="IP", help="IP address SAN")
    p.add_argument("--days", type=int, default=ca.SERVER_DAYS, help="validity in days")
    p.add_argument("--no-activate", action="store_true",
                   help="issue only; do not make it the certificate listeners serve")
    common.add_json(p)
    p.set_defaults(func=cmd_issue_server)

    p = sub.add_parser("issue-operator", help="issue the operator certificate for peer SMTP")
    p.add_argument("domain", help="operator domain (the certificate's CN)")
    p.add_argument("--organisation", help="O (default: Missive <domain>)")
    p.add_argument("--unit", help="OU, e.g. the structure's SIRET/FINESS as IGC-Santé does")
    p.add_argument("--state", help='ST, e.g. "Paris (75)"')
    p.add_argument("--name", action="append", default=[], metavar="DNS",
                   help="extra DNS name SAN (the MTA host names)")
    p.add_argument("--days", type=int, default=ca.OPERATOR_DAYS, help="validity in days")
    p.add_argument("--no-activate", action="store_true",
                   help="issue only; do not present it on outgoing connections")
    common.add_json(p)
    p.set_defaults(func=cmd_issue_operator)

    p = sub.add_parser("issue-pro", help="issue a professional client certificate (RPPS)")
    p.add_argument("--rpps", required=True, help="11-digit RPPS (or national id 8+RPPS)")
    p.add_argument("--name", required=True, help='display name, e.g. "Marie Curie"')
    p.add_argument("--given-name", help="given name (default: first word of --name)")
    p.add_argument("--surname", help="surname (default: the rest of --name)")
    p.add_argument("--profession", help='profession, the subject title, e.g. "Médecin"')
    p.add_argument("--email", help="mailbox address, put in an rfc822Name SAN")
    p.add_argument("--days", type=int, default=ca.PROFESSIONAL_DAYS, help="validity in days")
    common.add_json(p)
    p.set_defaults(func=cmd_issue_pro)

    p = sub.add_parser("revoke", help="revoke a certificate and re-sign the CRL")
    p.add_argument("serial", help="serial number in hex (see `missive certs list`)")
    p.add_argument("--reason", default="unspecified",
                   help="RFC 5280 reason: " + ", ".join(sorted(ca.REASONS)))
    p.add_argument("--no-crl", action="store_true", help="do not re-sign the CRL now")
    common.add_json(p)
    p.set_defaults(func=cmd_revoke)

    p = sub.add_parser("crl", help="re-sign the CRL")
    p.add_argument("--days", type=int, help="CRL lifetime (default: certs.crl_days)")
    common.add_json(p)
    p.set_defaults(func=cmd_crl)

    p = sub.add_parser("list", help="list issued certificates")
    p.add_argument("--kind", choices=["ca", "server", "operator", "professional"])
    common.add_json(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("check", help="warn about certificates and CRL close to expiry")
    p.add_argument("--warn-days", type=int, help="warning window (default: certs.warn_days)")
    common.add_json(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("export", help="export a certificate as PEM or password-protected PKCS#12")
    p.add_argument("serial", help='serial in hex, or "ca" for the CA certificate')
    p.add_argument("--format", choices=["pem", "p12"], default="pem")
    p.add_argument("--out", required=True, type=Path, help="file to write (- for stdout, PEM)")
    p.add_argument("--with-key", action="store_true", help="PEM: append the private key")
    _add_password(p)
    common.add_json(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="install a PKCS#12 certificate issued elsewhere")
    p.add_argument("file", type=Path, help="PKCS#12 file (.p12/.pfx), e.g. from IGC-Santé")
    p.add_argument("--role", choices=["server", "operator"], default="server")
    _add_password(p)
    common.add_json(p)
    p.set_defaults(func=cmd_import)


def _add_password(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--password-stdin", action="store_true",
                       help="read the PKCS#12 password from the first line of stdin")
    group.add_argument("--password-file", type=Path, help="read the PKCS#12 password from FILE")


def _password(args: argparse.Namespace, *, required: bool) -> str | None:
    if args.password_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    elif args.password_file:
        try:
            value = args.password_file.read_text(encoding="utf-8").splitlines()[0]
        except (OSError, IndexError):
            raise common.CommandError(
                f"cannot read a password from {args.password_file}") from None
    else:
        if required:
            raise common.CommandError(
                "a PKCS#12 file needs a password: give --password-stdin or --password-file")
        return None
    if required and not value:
        raise common.CommandError("the password is empty")
    return value


def _settings(args: argparse.Namespace) -> Settings:
    return common.settings_from(args)


def _describe(info: CertInfo) -> str:
    lines = [
        f"{info.kind} certificate {info.serial}",
        f"  subject:   {info.subject}",
        f"  valid:     {info.not_before:%Y-%m-%d} → {info.not_after:%Y-%m-%d}",
        f"  file:      {info.cert_file}",
    ]
    if info.names or info.ips:
        lines.append(f"  names:     {', '.join([*info.names, *info.ips])}")
    if info.national_id:
        lines.append(f"  national id: {info.national_id}")
    if info.status == "revoked":
        lines.append(f"  revoked:   {info.revoked_at:%Y-%m-%d %H:%M} ({info.revocation_reason})")
    return "\n".join(lines)


def _run(fn: Any, *a: Any, **kw: Any) -> Any:
    try:
        return fn(*a, **kw)
    except CertError as exc:
        raise common.CommandError(str(exc)) from None


def cmd_init_ca(args: argparse.Namespace) -> int:
    s = _settings(args)
    info = _run(ca.init_ca, s, algorithm=args.algorithm, cn=args.cn,
                organisation=args.organisation, days=args.days)
    common.emit(info.to_dict(), as_json=args.json, human=lambda _: _describe(info))
    return 0


def cmd_issue_server(args: argparse.Namespace) -> int:
    s = _settings(args)
    names = args.name or ([] if args.ip else [s.mta.hostname, s.domain, "localhost"])
    info = _run(ca.issue_server, s, names, args.ip, days=args.days,
                activate=not args.no_activate)
    common.emit(info.to_dict(), as_json=args.json, human=lambda _: _describe(info))
    return 0


def cmd_issue_operator(args: argparse.Namespace) -> int:
    s = _settings(args)
    info = _run(ca.issue_operator, s, args.domain, organisation=args.organisation,
                unit=args.unit, state=args.state, names=args.name, days=args.days,
                activate=not args.no_activate)
    common.emit(info.to_dict(), as_json=args.json,
                human=lambda _: _describe(info) + "\n  register this subject DN with peers "
                "(trust space DNCertificatOperateur)")
    return 0


def cmd_issue_pro(args: argparse.Namespace) -> int:
    s = _settings(args)
    info = _run(ca.issue_professional, s, args.rpps, args.name, given_name=args.given_name,
                surname=args.surname, profession=args.profession, email=args.email,
                days=args.days)
    common.emit(info.to_dict(), as_json=args.json, human=lambda _: _describe(info))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    s = _settings(args)
    _run(ca.load_ca, s)
    info = _run(ca.revoke, s, args.serial, args.reason, regenerate_crl=not args.no_crl)
    common.emit(info.to_dict(), as_json=args.json, human=lambda _: _describe(info))
    return 0


def cmd_crl(args: argparse.Namespace) -> int:
    s = _settings(args)
    path = _run(ca.generate_crl, s, days=args.days)
    revoked = [e.serial for e in ca.list_certs(s) if e.status == "revoked"]
    data = {"crl": str(path), "revoked": revoked}
    common.emit(data, as_json=args.json,
                human=f"CRL written to {path} ({len(revoked)} revoked certificate(s))")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    s = _settings(args)
    _run(ca.load_ca, s)
    entries = ca.list_certs(s, kind=args.kind)
    now = datetime.now(UTC)
    rows = [{
        "serial": e.serial, "kind": e.kind, "state": e.state(now),
        "active": "yes" if e.active else "",
        "not_after": f"{e.not_after:%Y-%m-%d}", "subject": e.subject,
    } for e in entries]
    common.emit([{**e.to_dict(), "state": e.state(now)} for e in entries], as_json=args.json,
                human=lambda _: common.table(
                    rows, ["serial", "kind", "state", "active", "not_after", "subject"]))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    s = _settings(args)
    _run(ca.load_ca, s)
    report = _run(ca.check_expiry, s, args.warn_days)
    rows = [{
        "role": i.role, "state": i.state, "days_left": f"{i.days_left:.1f}",
        "not_after": f"{i.not_after:%Y-%m-%d %H:%M}", "subject": i.subject,
    } for i in report.items]
    common.emit(report.to_dict(), as_json=args.json,
                human=lambda _: common.table(
                    rows, ["role", "state", "days_left", "not_after", "subject"])
                + f"\noverall: {report.worst}")
    return {"ok": 0, "warning": 1, "expired": 2}[report.worst]


def cmd_export(args: argparse.Namespace) -> int:
    s = _settings(args)
    _run(ca.load_ca, s)
    if args.format == "p12":
        password = _password(args, required=True)
        assert password is not None  # noqa: S101 (required=True guarantees it)
        data = _run(ca.export_pkcs12, s, args.serial, password)
    else:
        data = _run(ca.export_pem, s, args.serial, include_key=args.with_key)
    if str(args.out) == "-":
        if args.format == "p12":
            raise common.CommandError("PKCS#12 is binary: give a file with --out")
        sys.stdout.write(data.decode("ascii"))
        return 0
    private = args.format == "p12" or args.with_key
    try:
        from missive.certs.files import write_atomic

        write_atomic(args.out, data, mode=0o600 if private else 0o644)
    except OSError as exc:
        raise common.CommandError(f"cannot write {args.out}: {exc.strerror}") from None
    result = {"serial": args.serial, "format": args.format, "file": str(args.out),
              "bytes": len(data)}
    common.emit(result, as_json=args.json, human=f"wrote {args.out} ({args.format})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    s = _settings(args)
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise common.CommandError(f"cannot read {args.file}: {exc.strerror}") from None
    password = _password(args, required=False)
    info = _run(ca.import_pkcs12, s, data, password, role=args.role)
    common.emit(info.to_dict(), as_json=args.json, human=lambda _: _describe(info))
    return 0
