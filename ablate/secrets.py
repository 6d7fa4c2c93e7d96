"""Passwords in the URLs a user gives ablate, shown as ``***`` wherever ablate writes or prints.

The URLs are the Optuna storage (``postgresql://user:pw@host/db``, any SQLAlchemy URL) and the
MLflow tracking URI (an SQLAlchemy URL too, or ``http(s)://user:pw@host``). The password is read the
way SQLAlchemy's ``make_url`` reads it, not as ``urllib.parse.urlsplit`` does: after
``scheme://user:`` (a user name holds no ``:`` or ``/``), up to an ``@``, so it may hold ``:``,
``/``, ``?``, ``#``, ``[``, ``]``, ``%`` and spaces, raw or percent-encoded. SQLAlchemy stops at the
first ``@``; a user who wrote a raw ``@`` in a password meant the last one before the host, so
everything up to the LAST ``@`` is hidden (what either reading takes as the password). An ``@`` in
the query of a URL with a password then hides a little more than needed, never less.

Nothing here raises, and nothing imports torch, Optuna or MLflow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote

__all__ = ["MASK", "password", "redact", "redact_text", "redact_values"]

MASK = "***"

_USERINFO = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/]*:)"  # scheme://user:  (SQLAlchemy's user: no ":" or "/")
    r"(?P<password>.*)"  # greedy: up to the last "@"
    r"(?P<tail>@[^@]*)",
    re.DOTALL,
)


def _split(url: str) -> tuple[str, str, str] | None:
    """``(head, password as written, tail)``, or None when ``url`` has no (non-empty) password."""
    if not isinstance(url, str):
        return None
    match = _USERINFO.fullmatch(url)
    if match is None or not match["password"]:
        return None
    return match["head"], match["password"], match["tail"]


def password(url: str) -> str | None:
    """The password of ``url``, percent-decoded (all that :func:`redact` hides), or None."""
    parts = _split(url)
    return None if parts is None else unquote(parts[1])


def redact(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``; others unchanged."""
    parts = _split(url)
    if parts is None:
        return url
    head, _, tail = parts
    return f"{head}{MASK}{tail}"


def _forms(written: str) -> set[str]:
    """The password as written, percent-decoded, and percent-encoded (also ``+`` for spaces)."""
    decoded = unquote(written)
    forms = {written, decoded}
    for text in (written, decoded):
        forms |= {quote(text, safe=""), quote_plus(text, safe="")}
    return forms


def redact_text(text: str, *urls: str) -> str:
    """``text`` (an error message, a log line) with the password of each URL, in any form, as ``***``.

    The forms are the password as written in ``url``, percent-decoded and percent-encoded, and,
    when it holds a raw ``@``, the part before its first ``@`` (what SQLAlchemy sends; three
    characters at least, so that a fragment does not mangle the text).
    """
    if not isinstance(text, str):
        return text
    secrets: set[str] = set()
    for url in urls:
        parts = _split(url)
        if parts is None:
            continue
        written = parts[1]
        secrets |= _forms(written)
        pieces = written.split("@")
        for i in range(1, len(pieces)):
            prefix = "@".join(pieces[:i])
            if len(unquote(prefix)) >= 3:
                secrets |= _forms(prefix)
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact_values(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """``mapping`` with every string value passed through :func:`redact` (``fixed.tracking.uri``)."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in mapping.items()}
