"""ablate: what does each training trick actually contribute?"""

from __future__ import annotations

__version__ = "0.1.0"
