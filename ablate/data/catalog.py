"""What each built-in dataset promises: the name error messages use, its classes and input shape."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SOURCES", "Source"]


class Source(NamedTuple):
    label: str  # how error messages name the dataset
    num_classes: int
    input_shape: tuple[int, ...]


SOURCES: dict[str, Source] = {
    "digits": Source("digits", 10, (1, 8, 8)),
    "mnist1d": Source("mnist1d", 10, (1, 40)),
    "mnist": Source("MNIST", 10, (1, 28, 28)),
    "fashion_mnist": Source("FashionMNIST", 10, (1, 28, 28)),
    "cifar10": Source("CIFAR-10", 10, (3, 32, 32)),
}
