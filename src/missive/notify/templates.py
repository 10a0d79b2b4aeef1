"""Wording of notices: Jinja2 templates rendered from a context that holds no content.

Invariants (SPEC §6, shown by ``tests/unit/notify/test_templates.py``):

- The context is built by :func:`context_for` from a :class:`NoticeFacts` only (a count, the
  account state, the channel) plus settings: the subject, body, attachment names, sender and
  specialty are never in scope, because the worker never opens a mailbox. Templates run in an
  immutable sandbox with ``StrictUndefined``, so a template that names anything else
  (``{{ subject }}``) fails instead of printing an empty string, and cannot reach Python
  objects through attributes.
- Phishing hygiene: a notice points only to the configured webmail address and never asks for
  a password, a code or personal data. :func:`check_links` refuses rendered text with any other
  link, so an operator's custom template cannot add one by mistake.

Templates (``templates/``, overridable per file from ``notify.templates_dir``):
``sms_<kind>.txt.j2``, ``email_<kind>.subject.j2``, ``email_<kind>.txt.j2`` where ``kind`` is
``new`` (active account) or ``invitation`` (pending account: the patient must first activate).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from missive.config import NotifySettings, WebmailSettings
from missive.errors import MissiveError

#: The only names a template can use.
ALLOWED_VARIABLES = frozenset({"count", "invitation", "webmail_url", "service_name", "channel"})
KINDS = ("new", "invitation")
_LINK = re.compile(r"(?:https?://|www\.)[^\s<>\"']*", re.IGNORECASE)


class NotifyTemplateError(MissiveError):
    """A template could not be rendered or broke a wording rule (permanent failure)."""


@dataclass(frozen=True)
class NoticeFacts:
    """Everything a notice may say, as data: how many messages, for which kind of account."""

    count: int
    kind: str  # "new" | "invitation"
    channel: str  # "sms" | "email"


@dataclass(frozen=True)
class RenderedNotice:
    text: str
    subject: str = ""


def context_for(facts: NoticeFacts, notify: NotifySettings,
                webmail: WebmailSettings) -> dict[str, object]:
    """The template context: exactly :data:`ALLOWED_VARIABLES`."""
    return {
        "count": int(facts.count),
        "invitation": facts.kind == "invitation",
        "webmail_url": webmail.base_url.strip(),
        "service_name": notify.service_name,
        "channel": facts.channel,
    }


def check_links(text: str, webmail_url: str) -> None:
    """Refuse any link that is not the webmail address (phishing hygiene)."""
    base = webmail_url.strip().rstrip("/")
    for found in _LINK.findall(text):
        link = found.rstrip(".,;:!?)")
        if not base or not (link == base or link.startswith(base + "/")):
            raise NotifyTemplateError(
                "a notice may only link to the configured webmail address "
                f"(webmail.base_url); the template contains another link: {link[:80]!r}")


class Renderer:
    """Loads and renders the templates; one per worker."""

    def __init__(self, notify: NotifySettings, webmail: WebmailSettings) -> None:
        self.notify = notify
        self.webmail = webmail
        loaders: list[jinja2.BaseLoader] = []
        if notify.templates_dir is not None:
            loaders.append(jinja2.FileSystemLoader(str(Path(notify.templates_dir))))
        loaders.append(jinja2.PackageLoader("missive.notify", "templates"))
        self.env = ImmutableSandboxedEnvironment(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # plain text (SMS, text/plain e-mail), never HTML
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def _render(self, name: str, context: dict[str, object]) -> str:
        try:
            return self.env.get_template(name).render(context).strip()
        except jinja2.TemplateError as exc:
            raise NotifyTemplateError(f"template {name}: {exc}") from None

    def render(self, facts: NoticeFacts) -> RenderedNotice:
        if facts.kind not in KINDS:
            raise NotifyTemplateError(f"unknown notice kind {facts.kind!r}")
        context = context_for(facts, self.notify, self.webmail)
        if facts.channel == "sms":
            text = " ".join(self._render(f"sms_{facts.kind}.txt.j2", context).split())
            subject = ""
        elif facts.channel == "email":
            text = self._render(f"email_{facts.kind}.txt.j2", context) + "\n"
            subject = " ".join(self._render(f"email_{facts.kind}.subject.j2", context).split())
        else:
            raise NotifyTemplateError(f"no template for channel {facts.channel!r}")
        check_links(text + " " + subject, str(context["webmail_url"]))
        return RenderedNotice(text=text, subject=subject)
