"""IMAP front (SPEC §4): parser, response encoding, session state machine and listeners.

See :mod:`missive.imap.server` for why this server is our own rather than pymap.
"""
