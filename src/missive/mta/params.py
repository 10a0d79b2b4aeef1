"""ESMTP parameters of MAIL and RCPT that aiosmtpd does not know: the DSN extension (RFC 3461).

aiosmtpd 1.4.6 refuses every RCPT parameter and every MAIL parameter except SIZE, BODY and
SMTPUTF8, and upper-cases their values (ENVID and ORCPT are case-sensitive xtext). The front
therefore takes the DSN parameters out of the command line before aiosmtpd parses it
(:func:`split_dsn`), checks them here, and hands the rest to aiosmtpd unchanged.

Values are kept as they were sent (xtext-encoded, RFC 3461 §4): a relaying MTA passes ENVID
and ORCPT on unchanged (§5.2), and the DSN writer decodes them with :func:`xtext_decode`.

- ``RET=FULL|HDRS`` and ``ENVID=<xtext, at most 100 chars>`` on MAIL (§4.3, §4.4);
- ``NOTIFY=NEVER|SUCCESS,FAILURE,DELAY`` and ``ORCPT=<addr-type>;<xtext>`` (at most 500 chars)
  on RCPT (§4.1, §4.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_XTEXT = re.compile(r"^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$")
_ADDR_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})
MAIL_DSN = frozenset({"RET", "ENVID"})
RCPT_DSN = frozenset({"NOTIFY", "ORCPT"})


class ParamError(ValueError):
    """A DSN parameter is malformed or repeated; ``reply`` is the SMTP reply."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass
class MailDsn:
    ret: str | None = None
    envid: str | None = None


@dataclass
class RcptDsn:
    notify: list[str] = field(default_factory=list)
    orcpt: str | None = None


def _path_end(arg: str) -> int:
    """Index just after the path of ``FROM:<…>`` / ``TO:<…>`` (quotes and escapes honoured)."""
    colon = arg.find(":")
    i = colon + 1 if colon >= 0 else 0
    while i < len(arg) and arg[i] == " ":
        i += 1
    if i < len(arg) and arg[i] == "<":
        quoted = False
        j = i + 1
        while j < len(arg):
            ch = arg[j]
            if ch == "\\":
                j += 2
                continue
            if ch == '"':
                quoted = not quoted
            elif ch == ">" and not quoted:
                return j + 1
            j += 1
        return len(arg)
    space = arg.find(" ", i)
    return len(arg) if space < 0 else space


def split_dsn(arg: str | None, names: frozenset[str]) -> tuple[str | None, dict[str, str]]:
    """Remove the parameters ``names`` from a MAIL/RCPT argument.

    Returns the argument without them (for aiosmtpd) and their values as sent, keyed by the
    upper-cased name. Raises :class:`ParamError` for a repeated parameter.
    """
    if arg is None:
        return None, {}
    end = _path_end(arg)
    head, rest = arg[:end], arg[end:]
    kept: list[str] = []
    found: dict[str, str] = {}
    for token in rest.split():
        name, eq, value = token.partition("=")
        key = name.upper()
        if key in names:
            if key in found:
                raise ParamError(f"501 5.5.4 Duplicate {key} parameter")
            found[key] = value if eq else ""
        else:
            kept.append(token)
    return (head + (" " + " ".join(kept) if kept else "")), found


def parse_mail_dsn(values: dict[str, str]) -> MailDsn:
    out = MailDsn()
    if "RET" in values:
        ret = values["RET"].upper()
        if ret not in ("FULL", "HDRS"):
            raise ParamError("501 5.5.4 RET must be FULL or HDRS")
        out.ret = ret
    if "ENVID" in values:
        envid = values["ENVID"]
        if not envid or len(envid) > 100 or not _XTEXT.match(envid):
            raise ParamError("501 5.5.4 ENVID must be xtext of 1 to 100 characters")
        out.envid = envid
    return out


def parse_rcpt_dsn(values: dict[str, str]) -> RcptDsn:
    out = RcptDsn()
    if "NOTIFY" in values:
        words = [w.upper() for w in values["NOTIFY"].split(",")]
        if words == ["NEVER"]:
            out.notify = ["NEVER"]
        elif words and all(w in _NOTIFY_WORDS for w in words) and len(set(words)) == len(words):
            out.notify = words
        else:
            raise ParamError(
                "501 5.5.4 NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY"
            )
    if "ORCPT" in values:
        orcpt = values["ORCPT"]
        addr_type, semi, addr = orcpt.partition(";")
        if (not semi or not addr or len(orcpt) > 500 or not _ADDR_TYPE.match(addr_type)
                or not _XTEXT.match(addr)):
            raise ParamError("501 5.5.4 ORCPT must be <addr-type>;<xtext address>")
        out.orcpt = orcpt
    return out


def xtext_decode(value: str) -> str:
    """Decode RFC 3461 §4 xtext (``+XX`` hexadecimal escapes)."""
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)
