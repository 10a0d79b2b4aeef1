"""Content-free notifications (SPEC §6): patients learn that something arrived, never what.

The notification is the one part of Missive that leaves the trust space, so it carries nothing
that the trust space protects: no subject, body, attachment name, sender or sender specialty.
The worker never opens a mailbox and runs without the master key (C2).

Flow: the mailbox store's delivery transaction writes a ``notification_outbox`` row per patient
INBOX delivery (P11) → :mod:`.queue` folds a mailbox's pending rows into one notice per channel
once the coalescing window has passed (``notification_delivery`` rows, each with a stable
idempotency key, written before anything is sent) → :mod:`.worker` claims due notices
(``SKIP LOCKED``), renders them (:mod:`.templates`), sends them through :mod:`.channels`, and
records the outcome with an audit entry; failures are retried with exponential backoff and
jitter (:mod:`.schedule`) and become dead letters after ``notify.max_attempts``.

Modules: :mod:`.models` (table), :mod:`.queue` (all SQL), :mod:`.schedule` (quiet hours,
backoff), :mod:`.signing` (webhook HMAC), :mod:`.templates`, :mod:`.channels`, :mod:`.metrics`,
:mod:`.worker`.
"""
