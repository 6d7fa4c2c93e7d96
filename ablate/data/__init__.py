"""Datasets as whole in-memory tensors, split and scaled the same way for every run.

Every dataset here is small enough to hold in memory, so ``load_dataset`` returns plain
tensors rather than a ``torch.utils.data.Dataset``: batching is then a matter of indexing,
which is far faster than a per-example loader for models this size.

Splits depend only on ``data_seed`` (never on the model seed), so runs that differ in a
training trick or in their model seed see exactly the same examples. Scaling statistics
come from the training split only; validation and test are mapped with them.

Sources:

* ``digits``: scikit-learn's bundled 8x8 digits (1797 examples, no official test set, so
  ``test_fraction`` of them is held out first).
* ``mnist1d``: generated locally with the ``mnist1d`` package's default arguments and cached
  under ``<root>/mnist1d/``; its download helper is never used.
* ``mnist``, ``fashion_mnist``, ``cifar10``: torchvision's readers over files under ``root``.

Modules (this facade re-exports the public names; import them from ``ablate.data``):

===========================================  ======================================================
module                                       job
===========================================  ======================================================
:mod:`ablate.data.dataset`                   the ``Dataset`` type, raw tensors, reproducible splits
:mod:`ablate.data.catalog`                   each built-in dataset's label, classes and input shape
:mod:`ablate.data.checks`                    argument and loaded-file checks, one-line error text
:mod:`ablate.data.scaling`                   ``fit_scaling`` and ``scale``: training-split statistics
:mod:`ablate.data.digits`                    reads scikit-learn's bundled digits
:mod:`ablate.data.mnist1d_cache`             generates mnist1d and caches it under ``root``
:mod:`ablate.data.torchvision_files`         reads MNIST, FashionMNIST and CIFAR-10 files
:mod:`ablate.data.loading`                   ``load_dataset``: check, read, split, scale
===========================================  ======================================================
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ablate.menu import DATASETS, SCALINGS

if TYPE_CHECKING:
    from ablate.data.dataset import Dataset
    from ablate.data.loading import load_dataset
    from ablate.data.scaling import fit_scaling, scale

__all__ = ["DATASETS", "SCALINGS", "Dataset", "fit_scaling", "load_dataset", "scale"]

# The torch-backed names load on first use: a sweep's supervisor imports ablate.data.catalog (names,
# shapes, files to check) and must not pay for torch, which only its workers need.
_LAZY = {"Dataset": "ablate.data.dataset", "load_dataset": "ablate.data.loading",
         "fit_scaling": "ablate.data.scaling", "scale": "ablate.data.scaling"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ablate.data' has no attribute {name!r}")
