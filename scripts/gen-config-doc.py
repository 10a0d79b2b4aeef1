"""Rewrite the example block of docs/configuration.md from missive.config.example_toml().

Run after changing settings: ``.venv/bin/python scripts/gen-config-doc.py``
(tests/unit/test_config.py fails while the page is stale).
"""

from pathlib import Path

from missive.config import example_toml

doc = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
text = doc.read_text()
head, _, _ = text.partition("```toml\n")
doc.write_text(head + "```toml\n" + example_toml() + "```\n")
