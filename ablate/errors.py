"""The one exception family users see: a single line naming the field, the value and what is allowed."""

from __future__ import annotations

from typing import Any

__all__ = ["AblateError", "ConfigError", "DataError"]


class AblateError(Exception):
    """An error caused by the user's input; the CLI prints ``str(error)`` as one line and exits 2."""


class ConfigError(AblateError):
    """A config field holds a value that is not allowed.

    Args:
        field: Dotted path of the field in the composed config (``optimizer.lr``).
        value: The value given.
        allowed: What is allowed, in words (``"a number > 0"``, ``"one of: none, batch, layer"``).
    """

    def __init__(self, field: str, value: Any, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}: {value!r} is not allowed; expected {allowed}")


class DataError(AblateError):
    """A dataset cannot be loaded (files absent, download off or failed, unknown name)."""
