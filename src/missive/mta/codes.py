"""Named SMTP replies of the Missive fronts, and the enhanced status codes added to aiosmtpd's.

Every reply Missive sends carries an RFC 3463 enhanced status code (RFC 2034 §3:
ENHANCEDSTATUSCODES applies to every reply except the greeting, the EHLO lines and AUTH
challenges). Replies we compose are the constants below; replies composed by aiosmtpd's state
machine (syntax errors, sequence errors, size and line-length limits) are rewritten by
:func:`enhance` just before they are written: a few exact texts get our wording (so that P8 and
P12 refusals are the same whichever layer noticed them), the others get the enhanced code of
their reply code.

Codes chosen where the RFCs leave a choice (documented in ``docs/smtp.md``):

- bare CR or LF in a command line: ``500 5.5.2`` (RFC 5321 §2.3.8: lines end with CRLF only);
- bare CR or LF, or an over-long line, inside the message data: ``554 5.6.0`` (the message
  framing is broken: a content error reported after the end of data, RFC 5321 §4.2.5);
- command line over 512 octets (RFC 5321 §4.5.3.1.4): ``500 5.5.2``;
- AUTH exchange line too long: ``500 5.5.6`` (RFC 4954 §6);
- authentication lockout: ``454 4.7.0``; session closed after repeated failures: ``421 4.7.0``;
- message rate per sender or client address exceeded: ``450 4.7.1``;
- too many connections from one address: ``421 4.7.0``; too many recipients ``452 4.5.3``.
"""

from __future__ import annotations

import re
from typing import Final

from missive.errors import PolicyRefusal

# --- success ---------------------------------------------------------------------------------
SENDER_OK: Final = "250 2.1.0 Sender OK"
RECIPIENT_OK: Final = "250 2.1.5 Recipient OK"
RECIPIENT_HELD: Final = "250 2.1.5 Recipient OK (kept until the patient activates the mailbox)"
AUTH_OK: Final = "235 2.7.0 Authentication successful"


def accepted(queue_id: str) -> str:
    """The reply after DATA once the delivery transaction committed (P11)."""
    return f"250 2.0.0 Message accepted, id {queue_id}"


# --- transient failures --------------------------------------------------------------------
LOCAL_ERROR: Final = "451 4.3.0 Temporary local problem, try again later"
AUTH_LOCKED: Final = "454 4.7.0 Too many authentication failures, try again later"
AUTH_TEMP_FAILURE: Final = "454 4.7.0 Temporary authentication failure"
AUTH_TOO_MANY: Final = "421 4.7.0 Too many authentication failures, closing connection"
TOO_MANY_CONNECTIONS: Final = "421 4.7.0 Too many connections from your address, try later"
SERVER_BUSY: Final = "421 4.3.2 Too many connections, try later"
TOO_MANY_ERRORS: Final = "421 4.7.0 Too many errors, closing connection"
SENDER_RATE: Final = "450 4.7.1 Too many messages from this sender, try again later"
ADDRESS_RATE: Final = "450 4.7.1 Too many messages from your address, try again later"
TOO_MANY_RECIPIENTS: Final = "452 4.5.3 Too many recipients"
TIMEOUT: Final = "421 4.4.2 Timeout, closing connection"

# --- permanent failures --------------------------------------------------------------------
BARE_LINE_ENDING_COMMAND: Final = (
    "500 5.5.2 Syntax error: a command line must end with CRLF, bare CR or LF refused"
)
BARE_LINE_ENDING_DATA: Final = (
    "554 5.6.0 Message refused: bare CR or LF in the message data (lines must end with CRLF)"
)
DATA_LINE_TOO_LONG: Final = (
    "554 5.6.0 Message refused: a line is longer than 1000 octets (RFC 5321 §4.5.3.1.6)"
)
COMMAND_TOO_LONG: Final = "500 5.5.2 Line too long (RFC 5321 §4.5.3.1.4: 512 octets at most)"
AUTH_LINE_TOO_LONG: Final = "500 5.5.6 Authentication exchange line is too long"
MESSAGE_TOO_BIG: Final = "552 5.3.4 Message size exceeds fixed maximum message size"
CREDENTIALS_INVALID: Final = "535 5.7.8 Authentication credentials invalid"
AUTH_ENCRYPTION_REQUIRED: Final = (
    "538 5.7.11 Encryption required for requested authentication mechanism"
)
AUTH_CANCELLED: Final = "501 5.7.0 Authentication cancelled"
AUTH_BAD_BASE64: Final = "501 5.5.2 Cannot decode base64"
AUTH_BAD_PLAIN: Final = "501 5.5.2 Cannot split PLAIN credentials"
EXTERNAL_NO_CERT: Final = "535 5.7.8 No client certificate was presented for EXTERNAL"
EXTERNAL_UNKNOWN: Final = "535 5.7.8 The client certificate does not identify an active account"


def refusal(err: PolicyRefusal) -> str:
    """The SMTP reply for a policy refusal: ``f"{code} {enhanced} {public_text}"``."""
    text = " ".join(err.public_text.split())
    return f"{err.code} {err.enhanced} {text}"


# --- rewriting aiosmtpd's replies --------------------------------------------------------------

_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
_CODE = re.compile(r"^(\d{3})([ -])(.*)$", re.DOTALL)

#: aiosmtpd texts replaced by ours (exact match).
_REWRITE: dict[str, str] = {
    "500 Command line too long": COMMAND_TOO_LONG,
    "500 Line too long (see RFC5321 4.5.3.1.6)": DATA_LINE_TOO_LONG,
    "552 Error: Too much mail data": MESSAGE_TOO_BIG,
    "552 Error: message size exceeds fixed maximum message size": MESSAGE_TOO_BIG,
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "554 Command refused due to lack of security": "554 5.7.0 TLS negotiation failed",
    "501 5.5.2 Can't decode base64": AUTH_BAD_BASE64,
    "501 5.5.2 Can't split auth value": AUTH_BAD_PLAIN,
    "501 5.7.0 Auth aborted": AUTH_CANCELLED,
    "221 Bye": "221 2.0.0 Bye",
    "250 OK": "250 2.0.0 OK",
}

#: Enhanced status for a reply code when aiosmtpd composed the reply (RFC 3463 §3).
_BY_CODE: dict[str, str] = {
    "211": "2.0.0",
    "214": "2.0.0",
    "221": "2.0.0",
    "250": "2.0.0",
    "252": "2.5.0",
    "421": "4.3.0",
    "450": "4.2.0",
    "451": "4.3.0",
    "452": "4.3.1",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}
#: Replies never given an enhanced code (RFC 2034 §3, RFC 4954 §4: 334 carries base64).
_UNTOUCHED = frozenset({"220", "334", "354"})


def enhance(reply: str) -> str:
    """``reply`` with our wording for known aiosmtpd texts, and an enhanced status code."""
    rewritten = _REWRITE.get(reply)
    if rewritten is not None:
        return rewritten
    if reply.startswith('500 Error: command "') and reply.endswith('" not recognized'):
        return "500 5.5.1 Command not recognized"
    if _ENHANCED.match(reply):
        return reply
    match = _CODE.match(reply)
    if match is None:
        return reply
    code, sep, text = match.groups()
    if code in _UNTOUCHED:
        return reply
    enhanced = _BY_CODE.get(code, f"{code[0]}.0.0")
    text = text.removeprefix("Error: ")
    return f"{code}{sep}{enhanced} {text}".rstrip()


def reply_code(reply: str) -> int:
    """The 3-digit code of a reply (0 when the text does not start with one)."""
    head = reply[:3]
    return int(head) if head.isdigit() else 0
