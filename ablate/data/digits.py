"""digits: scikit-learn's bundled 8x8 digits (1797 examples, no official test set)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from ablate.data.checks import check_loaded
from ablate.data.dataset import Raw

__all__ = ["read_digits"]


def read_digits(root: str, download: bool) -> Raw:
    del root, download  # bundled with scikit-learn
    # Read scikit-learn's bundled file directly: importing sklearn.datasets costs about 1.5 s in
    # every process (each sweep worker included) for a 1797-row CSV. load_digits() reads the same
    # file, so this stays the same data; the fallback covers a layout change.
    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec else []
    bundled = [Path(f) / "datasets" / "data" / "digits.csv.gz" for f in folders]
    if bundled and bundled[0].is_file():
        table = np.loadtxt(bundled[0], delimiter=",", dtype=np.float32)
        data, target = table[:, :-1], table[:, -1]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        data, target = bunch.data, bunch.target
    x = torch.from_numpy(np.asarray(data, dtype=np.float32).reshape(-1, 1, 8, 8))
    y = torch.from_numpy(np.asarray(target, dtype=np.int64))
    return check_loaded("digits", "<scikit-learn>", Raw(x, y, None, None))
