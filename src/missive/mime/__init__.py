"""Pure helpers over RFC 5322 / MIME messages: summaries, parts, IHE XDM. No I/O.

:func:`analyze` gives a message's summary and its leaf parts from one parse (the SMTP path).
"""

from missive.mime.analysis import analyze

__all__ = ["analyze"]
