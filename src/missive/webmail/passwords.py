"""Password policy for patients and caregivers (SPEC §5; NIST SP 800-63B §5.1.1.2 style).

Length first (``webmail.password_min_length``, default 12, at most 1024 characters, never
truncated), then a strength estimate by zxcvbn that knows common and breached-style passwords,
keyboard patterns, dates, and the user's own identifiers (INS, names, e-mail). No composition
rules (they push people to predictable patterns). Messages are plain French for the form.
"""

from __future__ import annotations

from collections.abc import Sequence

from missive.directory.passwords import MAX_PASSWORD_LENGTH

#: zxcvbn score required (0–4): 3 is "safely unguessable: moderate protection from offline
#: slow-hash scenario", right for Argon2id-hashed passwords.
MIN_SCORE = 3
#: zxcvbn's matching is quadratic in length; beyond this the estimate runs on a prefix (the
#: password itself is kept whole).
_ESTIMATE_CHARS = 100


def password_problem(password: str, *, min_length: int,
                     user_inputs: Sequence[str] = ()) -> str | None:
    """Why ``password`` cannot be used (a sentence for the form), or None if it is fine."""
    if len(password) < min_length:
        return (f"Le mot de passe doit contenir au moins {min_length} caractères "
                f"(il en contient {len(password)}). Une phrase de plusieurs mots convient bien.")
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"Le mot de passe doit contenir au plus {MAX_PASSWORD_LENGTH} caractères."
    if password.strip() == "":
        return "Le mot de passe ne peut pas être fait seulement d'espaces."
    from zxcvbn import zxcvbn

    result = zxcvbn(password[:_ESTIMATE_CHARS], user_inputs=[u for u in user_inputs if u])
    if int(result["score"]) < MIN_SCORE:
        return ("Ce mot de passe est trop facile à deviner (mot courant, suite de touches, "
                "date ou information personnelle). Choisissez par exemple quatre mots sans "
                "rapport entre eux.")
    return None
