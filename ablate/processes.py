"""Processes of this machine: whether one still runs (for stale trials, locks and temporary files)."""

from __future__ import annotations

import os

__all__ = ["process_alive"]


def process_alive(pid: int) -> bool:
    """True when process ``pid`` of this machine exists (signal 0 probes it; another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
