"""The ``Dataset`` type, the raw tensors a loader returns, and reproducible splits of them.

Splits depend only on ``data_seed`` (never on the model seed), so runs that differ in a
training trick or in their model seed see exactly the same examples.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ablate.errors import ConfigError

__all__ = ["Dataset", "Raw", "Splits", "split"]


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Train, validation and test splits of one dataset as whole tensors.

    Attributes:
        name: The dataset's name (one of ``DATASETS`` when made by ``load_dataset``).
        x_train: Training inputs, float32, shaped ``(N, *input_shape)``.
        y_train: Training labels, int64, shaped ``(N,)``.
        x_val: Validation inputs, carved from the official training set.
        y_val: Validation labels.
        x_test: Test inputs (the official test set where the dataset has one).
        y_test: Test labels.
        num_classes: Number of classes; labels lie in ``[0, num_classes)``.
        input_shape: Shape of one example, channels first (``(1, 8, 8)`` for digits).
    """

    # eq=False: dataclass equality would compare tensors elementwise and then fail on bool().
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        # Catch a malformed Dataset where it is built, not deep inside a training step.
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != torch.float32 or tuple(x.shape[1:]) != self.input_shape:
                raise ValueError(
                    f"x_{split} must be float32 shaped (N, *{self.input_shape}), "
                    f"got {x.dtype} shaped {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
                raise ValueError(
                    f"y_{split} must be int64 shaped ({len(x)},), got {y.dtype} shaped {tuple(y.shape)}"
                )

    def to(self, device: torch.device | str) -> Dataset:
        """Return a copy with all six tensors on ``device``.

        Args:
            device: Target device, e.g. ``"cuda"`` or ``torch.device("cpu")``.

        Returns:
            A new ``Dataset``; this one is left unchanged.
        """
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_val=self.x_val.to(device),
            y_val=self.y_val.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def __repr__(self) -> str:
        # The default repr would print every tensor element.
        return (
            f"Dataset(name={self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, "
            f"test={len(self.y_test)}, input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"device={self.x_train.device})"
        )


class Raw(NamedTuple):
    """Unsplit data as read from the source; ``x_test is None`` when there is no official test set."""

    x_train: torch.Tensor  # any numeric dtype; converted to float32 after splitting
    y_train: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None


class Splits(NamedTuple):
    """The three splits as fresh contiguous float32 inputs and int64 labels, not yet scaled."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def split(raw: Raw, val_fraction: float, test_fraction: float, data_seed: int) -> Splits:
    """Split ``raw`` reproducibly with a generator seeded by ``data_seed``.

    The validation split is a random ``val_fraction`` of the official training set. The test split
    is the official test set; where there is none, ``test_fraction`` of all examples is held out
    first with the same generator. Split sizes are ``round(n * fraction)``.

    Raises:
        ConfigError: A fraction leaves a split empty.
    """
    generator = torch.Generator().manual_seed(data_seed)
    if raw.x_test is None or raw.y_test is None:
        test_idx, pool_idx = _carve(len(raw.y_train), test_fraction, "data.test_fraction", generator)
        x_test, y_test = raw.x_train[test_idx], raw.y_train[test_idx]
        x_pool, y_pool = raw.x_train[pool_idx], raw.y_train[pool_idx]
    else:
        x_test, y_test, x_pool, y_pool = raw.x_test, raw.y_test, raw.x_train, raw.y_train
    val_idx, train_idx = _carve(len(y_pool), val_fraction, "data.val_fraction", generator)

    # Splitting before the float conversion keeps uint8 sources (MNIST, CIFAR) cheap to index.
    return Splits(
        x_train=_as_float(x_pool[train_idx]),
        y_train=_as_labels(y_pool[train_idx]),
        x_val=_as_float(x_pool[val_idx]),
        y_val=_as_labels(y_pool[val_idx]),
        x_test=_as_float(x_test),
        y_test=_as_labels(y_test),
    )


def _carve(
    n: int, fraction: float, field: str, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into a random held-out part of ``round(n * fraction)`` and the rest.

    Both parts are sorted so each split keeps the source order.
    """
    held = round(n * fraction)
    if not 0 < held < n:
        raise ConfigError(field, fraction, f"a fraction that leaves both parts of {n} examples non-empty")
    perm = torch.randperm(n, generator=generator)
    return perm[:held].sort().values, perm[held:].sort().values


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32, memory_format=torch.contiguous_format, copy=True)


def _as_labels(y: torch.Tensor) -> torch.Tensor:
    return y.to(torch.int64, memory_format=torch.contiguous_format)
