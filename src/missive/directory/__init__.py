"""The directory: who exists, and who may exchange mail with us (SPEC §1).

Modules:

- :mod:`.models` — tables (patients, professionals and aliases, delegates, care teams, trust
  domains and their CA certificates); layout and invariants in its docstring;
- :mod:`.validate` — field checks shared by the CLI, the CSV importer and the webmail;
- :mod:`.patients`, :mod:`.professionals`, :mod:`.delegates`, :mod:`.trust` — async services
  taking the caller's session (one transaction per admin change, audited in it);
- :mod:`.recipients` — :func:`~.recipients.resolve_recipient`, the facts policy decides on;
- :mod:`.importers` — CSV imports and the national whitelist (``listeblanchemssante.xml``);
- :mod:`.passwords` — Argon2id hashing and constant-time-ish verification.

The directory never seals or opens mail: mailbox creation and crypto-shredding are delegated to
the mailbox store inside the same transaction.
"""
