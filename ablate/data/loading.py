"""``load_dataset``: check the arguments, read the source, split, scale, in that order."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from ablate.data.catalog import SOURCES
from ablate.data.checks import check_choice, check_fraction
from ablate.data.dataset import Dataset, Raw, Splits, split
from ablate.data.digits import read_digits
from ablate.data.mnist1d_cache import read_mnist1d
from ablate.data.scaling import Scaler, fit_scaling
from ablate.data.torchvision_files import read_torchvision
from ablate.data.user import read_user
from ablate.errors import ConfigError
from ablate.menu import DATASETS, SCALINGS

__all__ = ["load_dataset"]

# Each reader takes the absolute root and the download flag and returns checked, unsplit tensors.
_READERS: dict[str, Callable[[str, bool], Raw]] = {
    "digits": read_digits,
    "mnist1d": read_mnist1d,
    "mnist": functools.partial(read_torchvision, "mnist"),
    "fashion_mnist": functools.partial(read_torchvision, "fashion_mnist"),
    "cifar10": functools.partial(read_torchvision, "cifar10"),
}


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] = "data",
    download: bool = False,
    scaling: str = "standard",
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    data_seed: int = 0,
    path: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    function: str | None = None,
) -> Dataset:
    """Load a dataset, split it reproducibly and scale it with training statistics.

    The validation split is a random ``val_fraction`` of the official training set, drawn
    with a generator seeded by ``data_seed``. The test split is the official test set; for
    ``digits``, which has none, ``test_fraction`` of all examples is held out first with the
    same generator. Split sizes are ``round(n * fraction)``. Equal arguments give equal tensors.

    Args:
        name: One of ``DATASETS``; ``arrays`` or ``imagefolder`` (read from ``path``); or a dataset
            registered with :func:`ablate.register_dataset` or an ``ablate.datasets`` entry point.
        root: Folder holding the torchvision files (``MNIST/raw/...``, ``FashionMNIST/raw/...``,
            ``cifar-10-batches-py/...``) and the generated ``mnist1d/`` cache. Unused by ``digits``.
        download: Let torchvision fetch absent files (mnist, fashion_mnist, cifar10 only).
        scaling: One of ``SCALINGS``; see ``fit_scaling``.
        val_fraction: Share of the training set held out for validation, in (0, 1).
        test_fraction: Share of all examples held out for testing, in (0, 1); used only by
            ``digits`` but checked for every dataset so a bad config fails everywhere alike.
        data_seed: Seed of the split generator.
        path: The user's file of arrays (``arrays``) or folder of class folders (``imagefolder``).
        num_classes: The user's data only: the number of classes; None = the largest label + 1.
        function: A registered dataset's ``module:function``, for a process that did not register it.

    Returns:
        A ``Dataset`` on the CPU with contiguous float32 inputs and int64 labels.

    Raises:
        ConfigError: ``name``, ``scaling`` or a fraction is not allowed, or a fraction leaves a
            split empty.
        DataError: Files are absent, unreadable or malformed, or a download failed.
    """
    _check_arguments(name, scaling, val_fraction, test_fraction)
    absolute_root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    if name not in SOURCES:  # the user's own, checked by its reader
        user = read_user(name, path=path, function=function, num_classes=num_classes, root=absolute_root)
        splits = split(user.raw, val_fraction, test_fraction, data_seed)
        return _scaled(name, splits, scaling, user.num_classes, user.input_shape)
    # Called here, not in a helper: the readers' warnings name load_dataset's caller (stacklevel).
    raw = _READERS[name](absolute_root, bool(download))
    source = SOURCES[name]
    return _scaled(name, split(raw, val_fraction, test_fraction, data_seed), scaling, source.num_classes,
                   source.input_shape)


def _check_arguments(name: str, scaling: str, val_fraction: float, test_fraction: float) -> None:
    if not isinstance(name, str) or not name:
        raise ConfigError("data.name", name, "one of: " + ", ".join(DATASETS) + ", arrays, imagefolder, "
                          "or a registered dataset's name")
    check_choice("data.scaling", scaling, SCALINGS)
    check_fraction("data.val_fraction", val_fraction)
    check_fraction("data.test_fraction", test_fraction)


def _scaled(name: str, splits: Splits, scaling: str, num_classes: int,
            input_shape: tuple[int, ...]) -> Dataset:
    """The ``Dataset`` of ``splits``, scaled in place with statistics of its training split."""
    scaler = fit_scaling(splits.x_train, scaling)
    assert isinstance(scaler, Scaler)
    for x in (splits.x_train, splits.x_val, splits.x_test):
        scaler.apply_(x)  # in place: split() made these tensors fresh copies owned here
    return Dataset(name=name, **splits._asdict(), num_classes=num_classes, input_shape=input_shape)
