"""Scalings fitted on the training split only; validation and test are mapped with its statistics."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from ablate.data.checks import check_choice
from ablate.data.dataset import Dataset
from ablate.menu import SCALINGS

__all__ = ["Scaler", "fit_scaling", "scale"]


class Scaler:
    """An affine map ``(x - shift) / divisor``, optionally followed by ``2 * u - 1``.

    All four scalings are of this form; keeping them as one class lets ``load_dataset``
    apply them in place to tensors it owns while ``__call__`` never touches its input.
    """

    def __init__(
        self,
        scaling: str,
        shift: torch.Tensor | None,
        divisor: torch.Tensor | None,
        channels: int | None,
        symmetric: bool = False,
    ) -> None:
        self.scaling = scaling
        self._shift = shift
        self._divisor = divisor
        self._channels = channels
        self._symmetric = symmetric

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Scale ``x`` with the training statistics.

        Args:
            x: Inputs shaped like the training inputs, ``(N, C, ...)``.

        Returns:
            A float32 contiguous tensor; ``x`` itself is not modified.
        """
        if self._shift is None:
            return x.to(torch.float32, memory_format=torch.contiguous_format)
        return self.apply_(x.to(torch.float32, memory_format=torch.contiguous_format, copy=True))

    def apply_(self, x: torch.Tensor) -> torch.Tensor:
        """Scale a float32 tensor in place and return it."""
        if self._shift is None:
            return x
        if self._channels is not None and (x.dim() < 2 or x.shape[1] != self._channels):
            raise ValueError(
                f"{self.scaling} scaling was fitted on {self._channels} channels (dim 1), "
                f"got shape {tuple(x.shape)}"
            )
        assert self._divisor is not None
        x.sub_(self._shift.to(x.device)).div_(self._divisor.to(x.device))
        if self._symmetric:
            x.mul_(2.0).sub_(1.0)
        return x

    def __repr__(self) -> str:
        return f"<{self.scaling} scaling>"


def fit_scaling(x_train: torch.Tensor, scaling: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Fit a scaling on training inputs and return the function that applies it.

    Statistics come from ``x_train`` only; applying the result to validation or test inputs
    may land slightly outside the stated range, which is intended.

    Args:
        x_train: Training inputs shaped ``(N, C, ...)``; channel is dim 1.
        scaling: One of ``SCALINGS``:
            ``none`` keeps raw values;
            ``unit`` maps the training minimum and maximum (over all values) to 0 and 1;
            ``symmetric`` maps them to -1 and 1;
            ``standard`` gives each channel zero mean and unit (population) standard deviation
            over all training examples and positions; a constant channel is only centred.

    Returns:
        A function from a tensor shaped like ``x_train`` to a new float32 contiguous tensor.

    Raises:
        ConfigError: ``scaling`` is not one of ``SCALINGS`` (field ``data.scaling``).
        ValueError: ``x_train`` is empty or has no channel dimension.
    """
    check_choice("data.scaling", scaling, SCALINGS)
    if scaling == "none":
        return Scaler(scaling, None, None, None)
    if x_train.dim() < 2 or x_train.numel() == 0:
        raise ValueError(f"x_train must be a non-empty (N, C, ...) tensor, got shape {tuple(x_train.shape)}")
    x = x_train.to(torch.float32)
    if scaling in ("unit", "symmetric"):
        low, high = x.min(), x.max()
        span = high - low
        # A constant training set has no range to map; leave it at 0 rather than divide by 0.
        span = torch.where(span > 0, span, torch.ones_like(span))
        return Scaler(scaling, low.cpu(), span.cpu(), None, symmetric=scaling == "symmetric")
    dims = [0, *range(2, x.dim())]
    var, mean = torch.var_mean(x, dim=dims, correction=0)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    broadcast = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    return Scaler(scaling, mean.reshape(broadcast).cpu(), std.reshape(broadcast).cpu(), x.shape[1])


def scale(dataset: Dataset, scaling: str) -> Dataset:
    """Scale all three splits of ``dataset`` with statistics of its training split.

    Args:
        dataset: Usually one loaded with ``scaling="none"``.
        scaling: One of ``SCALINGS``; see ``fit_scaling``.

    Returns:
        A new ``Dataset``; ``dataset`` is not modified.

    Raises:
        ConfigError: ``scaling`` is not one of ``SCALINGS``.
    """
    scaler = fit_scaling(dataset.x_train, scaling)
    return dataclasses.replace(
        dataset,
        x_train=scaler(dataset.x_train),
        x_val=scaler(dataset.x_val),
        x_test=scaler(dataset.x_test),
    )
