"""SMTP: the submission and MX servers (aiosmtpd), AUTH, limits, and the outbound relay.

Server side (SPEC §2 P1–P12, §4 SMTP): :mod:`.server` starts the listeners; :mod:`.protocol`
is aiosmtpd's ``SMTP`` with strict framing, enhanced codes and DSN parameters;
:mod:`.handlers_submission` and :mod:`.handlers_mx` are the hooks of each role over the shared
:mod:`.handlers`; :mod:`.auth` the SASL mechanisms; :mod:`.limits` rate limits and lockout;
:mod:`.received` the trace header; :mod:`.codes` the named replies; :mod:`.framing` the P12
line checks; :mod:`.params` the RFC 3461 parameters. Outbound: :mod:`.relay`, :mod:`.dsn`,
:mod:`.client`. See ``docs/smtp.md``.
"""
