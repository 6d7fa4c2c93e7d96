"""ablate: what does each training trick actually contribute?

``ablate.register_model`` and ``ablate.register_dataset`` add the user's own network and data to the
menu (:mod:`ablate.registry`).
"""

from __future__ import annotations

from ablate.registry import register_dataset, register_model

__all__ = ["register_dataset", "register_model"]

__version__ = "0.1.0"
