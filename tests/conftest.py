"""Shared test helpers: services a test needs are required in CI and skipped elsewhere with a reason."""

from __future__ import annotations

import os

import pytest


def require_service(available: bool, reason: str) -> None:
    """Skip with ``reason`` on a laptop without the service; fail in CI (``CI`` set), where
    ``.ci/run`` installs and starts every service the suite needs."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)")
    pytest.skip(reason)
