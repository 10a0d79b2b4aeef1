"""Named SMTP reply codes of the policy (RFC 5321 §4.2, RFC 3463 §3) and the refusal helper."""

from __future__ import annotations

from missive.errors import PolicyRefusal

SENDER_NOT_ALLOWED = (553, "5.7.1")
NOT_AUTHORISED = (550, "5.7.1")
BAD_MAILBOX = (550, "5.1.1")
BAD_RECIPIENT_SYNTAX = (501, "5.1.3")
MAILBOX_DISABLED = (550, "5.2.1")
TOO_BIG = (552, "5.3.4")
AUTH_REQUIRED = (530, "5.7.0")
CREDENTIALS_REFUSED = (535, "5.7.8")
LOCAL_ERROR = (451, "4.3.0")


def refuse(reply: tuple[int, str], text: str, rule: str, cause: str = "") -> PolicyRefusal:
    """A :class:`PolicyRefusal` with the reply code and enhanced status of ``reply``."""
    return PolicyRefusal(reply[0], reply[1], text, rule, cause)
