"""The patient webmail (SPEC §5): FastAPI + Jinja2, server-rendered, usable without JavaScript.

- :mod:`.app` — ``create_app(settings, core)``: middleware, error pages, routers;
- :mod:`.server` — ``start(core)`` for ``missive serve`` (uvicorn on the running loop);
- :mod:`.routes` — one router per resource (auth, mailbox, compose, account, delegates, health);
- :mod:`.deps` — the session and the viewer (authorisation on every request);
- :mod:`.sessions`, :mod:`.codes`, :mod:`.invitations`, :mod:`.totp` — the webmail's own tables
  (:mod:`.models`); :mod:`.accounts` — login lookups in the directory;
- :mod:`.keys` — opened mailboxes per web session, in memory only (C6);
- :mod:`.render` — message display (text first, nh3-sanitised HTML, attachments, XDM);
- :mod:`.outgoing` — replies under policy P6 and RFC 8098 read receipts;
- :mod:`.security` — headers (CSP…) and CSRF; :mod:`.otp` — one-time codes by SMS / e-mail;
  :mod:`.passwords` — the password policy (zxcvbn).

See ``docs/webmail.md``.
"""
