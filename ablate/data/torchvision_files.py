"""mnist, fashion_mnist, cifar10: torchvision's readers over files under ``root``, checked first."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np
import torch

from ablate.data.catalog import SOURCES, check_files, missing_files
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


def read_torchvision(name: str, root: str, download: bool) -> Raw:
    cls = _torchvision_class(name)
    label = SOURCES[name].label
    check_files(name, root, download)
    if missing_files(name, root):  # and download is on
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

