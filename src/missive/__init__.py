"""Missive: an open-source secure health-messaging server (MSSanté-style).

The package is laid out as ../shared/ARCHITECTURE.md describes: fronts (``mta``, ``imap``,
``webmail``, ``notify``, ``cli``) call the core (``policy``, ``directory``, ``mailbox``,
``audit``), which stands on ``identity`` and ``db``. Nothing here does I/O at import time.
"""

__version__ = "0.1.0"
