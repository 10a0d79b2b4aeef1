"""Templates: the context holds no content, wording rules (links, credentials), sandbox."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pytest
from jinja2 import meta

from missive.config import load_settings
from missive.notify.templates import (
    ALLOWED_VARIABLES,
    NoticeFacts,
    NotifyTemplateError,
    Renderer,
    check_links,
    context_for,
)

TEMPLATES = Path(__file__).resolve().parents[3] / "src/missive/notify/templates"
WEBMAIL = "https://messagerie.example.fr"
#: Wording that would ask the patient for credentials or personal data (phishing hygiene).
ASKS_FOR_SECRETS = re.compile(
    r"(saisi|entre[rz]|communique|indique|envoye|transmet|confirme|répond)\w*\s+"
    r"(votre|vos|le|les|ton)\s+(mot de passe|code|identifiant|numéro|carte)",
    re.IGNORECASE)


def renderer(tmp_path: Path, url: str = WEBMAIL, templates_dir: Path | None = None) -> Renderer:
    settings = load_settings(tmp_path, webmail={"base_url": url},
                             notify={"templates_dir": templates_dir})
    return Renderer(settings.notify, settings.webmail)


def test_packaged_templates_use_only_allowed_variables() -> None:
    env = jinja2.Environment()  # noqa: S701 - parsing only
    names = sorted(p.name for p in TEMPLATES.glob("*.j2"))
    assert len(names) == 6
    for name in names:
        used = meta.find_undeclared_variables(env.parse((TEMPLATES / name).read_text()))
        assert used <= ALLOWED_VARIABLES, (name, used - ALLOWED_VARIABLES)


def test_context_is_exactly_the_allowed_variables(tmp_path: Path) -> None:
    settings = load_settings(tmp_path)
    ctx = context_for(NoticeFacts(2, "new", "sms"), settings.notify, settings.webmail)
    assert set(ctx) == ALLOWED_VARIABLES
    assert all(isinstance(v, str | int | bool) for v in ctx.values())


@pytest.mark.parametrize("name", ["subject", "body", "attachments", "filename", "sender",
                                  "specialty", "from_name", "message", "patient", "settings"])
def test_a_template_cannot_reach_content(tmp_path: Path, name: str) -> None:
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "sms_new.txt.j2").write_text(f"Nouveau : {{{{ {name} }}}}")
    r = renderer(tmp_path, templates_dir=custom)
    with pytest.raises(NotifyTemplateError, match="undefined"):
        r.render(NoticeFacts(1, "new", "sms"))


def test_sandbox_blocks_python_internals(tmp_path: Path) -> None:
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "sms_new.txt.j2").write_text("{{ count.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(NotifyTemplateError):
        renderer(tmp_path, templates_dir=custom).render(NoticeFacts(1, "new", "sms"))


def test_custom_template_with_a_foreign_link_is_refused(tmp_path: Path) -> None:
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "sms_new.txt.j2").write_text("Lisez-le sur https://evil.example/login")
    with pytest.raises(NotifyTemplateError, match="webmail"):
        renderer(tmp_path, templates_dir=custom).render(NoticeFacts(1, "new", "sms"))


@pytest.mark.parametrize(("text", "ok"), [
    (f"voir {WEBMAIL}", True),
    (f"voir {WEBMAIL}/connexion.", True),
    (f"voir {WEBMAIL}.evil.example/", False),
    ("voir www.example.org", False),
    ("voir http://messagerie.example.fr", False),
    ("aucun lien", True),
])
def test_check_links(text: str, ok: bool) -> None:
    if ok:
        check_links(text, WEBMAIL)
    else:
        with pytest.raises(NotifyTemplateError):
            check_links(text, WEBMAIL)


@pytest.mark.parametrize("url", [WEBMAIL, ""])
@pytest.mark.parametrize("kind", ["new", "invitation"])
@pytest.mark.parametrize("channel", ["sms", "email"])
@pytest.mark.parametrize("count", [1, 4])
def test_default_wording(tmp_path: Path, url: str, kind: str, channel: str, count: int) -> None:
    notice = renderer(tmp_path, url).render(NoticeFacts(count, kind, channel))
    text = notice.subject + "\n" + notice.text
    assert not ASKS_FOR_SECRETS.search(text), text
    links = re.findall(r"https?://\S+", text)
    assert links == ([url] if url else []) or all(link.startswith(url) for link in links)
    if url:
        assert url in text
    if count > 1:
        assert str(count) in text
    if kind == "invitation":
        assert "activez" in text
    else:
        assert "activ" not in text
    if channel == "sms":
        assert "\n" not in notice.text and len(notice.text) <= 320
        assert notice.subject == ""
    else:
        assert notice.subject and "\n" not in notice.subject


def test_every_packaged_template_is_french_plain_text(tmp_path: Path) -> None:
    notice = renderer(tmp_path).render(NoticeFacts(1, "new", "email"))
    assert "Bonjour" in notice.text and "<" not in notice.text
