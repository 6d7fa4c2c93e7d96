"""mnist, fashion_mnist, cifar10: torchvision's readers over files under ``root``, checked first."""

from __future__ import annotations

import functools
import os
from typing import Any, ClassVar

import numpy as np
import torch

from ablate.data.catalog import SOURCES
from ablate.data.checks import check_loaded, one_line
from ablate.data.dataset import Raw
from ablate.errors import DataError

__all__ = ["read_torchvision"]


@functools.cache
def _torchvision_class(name: str) -> type[Any]:
    # Imported here: torchvision costs about two seconds to import.
    import torchvision.datasets as tvd

    cls: type[Any]  # torchvision ships no types (its classes are Any to mypy)
    if name == "mnist":
        cls = tvd.MNIST
        return cls
    if name == "fashion_mnist":
        cls = tvd.FashionMNIST
        return cls

    class _CIFAR10(tvd.CIFAR10):  # type: ignore[misc]  # subclassing Any: torchvision ships no types
        """CIFAR10 that checks its batch files for presence only.

        torchvision checks the md5 of every batch file on each load, which rejects any file
        a user prepared (a subset, a re-pickled copy, the tiny files of the tests). Integrity
        is still verified where it matters: ``download`` checks the archive's md5 before
        extracting it. ``batches.meta`` must exist too, as torchvision reads class names from it.
        """

        train_list: ClassVar[list[list[str | None]]] = [[f, None] for f, _ in tvd.CIFAR10.train_list]
        test_list: ClassVar[list[list[str | None]]] = [[f, None] for f, _ in tvd.CIFAR10.test_list]
        meta: ClassVar[dict[str, str | None]] = {**tvd.CIFAR10.meta, "md5": None}

    return _CIFAR10


def _expected_files(cls: type[Any]) -> list[str]:
    """Paths relative to root that torchvision's presence check wants for ``cls``."""
    if hasattr(cls, "resources"):  # the MNIST family: decompressed files in <Class>/raw/
        return [
            os.path.join(cls.__name__, "raw", os.path.splitext(os.path.basename(url))[0])
            for url, _ in cls.resources
        ]
    names = [filename for filename, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [os.path.join(cls.base_folder, filename) for filename in names]


def _missing_files(cls: type[Any], root: str) -> list[str]:
    if hasattr(cls, "resources"):
        # torchvision still reads the pre-0.9 processed/training.pt + test.pt pair when present.
        processed = os.path.join(root, cls.__name__, "processed")
        if all(os.path.isfile(os.path.join(processed, f)) for f in (cls.training_file, cls.test_file)):
            return []
    return [f for f in _expected_files(cls) if not os.path.isfile(os.path.join(root, f))]


def read_torchvision(name: str, root: str, download: bool) -> Raw:
    cls = _torchvision_class(name)
    label = SOURCES[name].label
    expected = _expected_files(cls)
    missing = _missing_files(cls, root)
    if missing and not download:
        if len(missing) == len(expected):
            what = f"no {label} files under '{root}' (expected {', '.join(expected)})"
        else:
            what = f"incomplete {label} files under '{root}' (missing {', '.join(missing)})"
        raise DataError(f"data.root: {what}; place them there or set data.download=true")
    if missing:
        try:
            cls(root, train=True, download=True)
        except Exception as error:  # torchvision raises RuntimeError, URLError, OSError, ...
            raise DataError(
                f"data.download: downloading {label} into '{root}' failed ({one_line(error)}); "
                "check the network or place the files under data.root yourself"
            ) from error
    try:
        train = cls(root, train=True, download=False)
        test = cls(root, train=False, download=False)
        raw = Raw(*_tensors(train), *_tensors(test))
    except Exception as error:  # a truncated or foreign file fails in many different ways
        raise DataError(
            f"data.root: cannot read the {label} files under '{root}' ({one_line(error)}); "
            "replace them with the original files"
        ) from error
    return check_loaded(name, root, raw)


def _tensors(split: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``(N, C, H, W)`` and int64 labels of a torchvision dataset object."""
    data, targets = split.data, split.targets
    if isinstance(data, np.ndarray):  # CIFAR keeps HWC NumPy arrays
        x = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    else:  # the MNIST family keeps (N, H, W) uint8 tensors
        x = data.unsqueeze(1)
    y = torch.as_tensor(targets, dtype=torch.int64)
    return x, y

