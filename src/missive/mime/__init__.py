"""Pure helpers over RFC 5322 / MIME messages: summaries, parts, IHE XDM. No I/O."""
