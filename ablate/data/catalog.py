"""What each built-in dataset promises: the name error messages use, its classes, input shape and files.

Pure data and path checks (no torch, no torchvision): ``ablate sweep`` asks :func:`check_files`
before it creates anything, without paying for those imports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

from ablate.errors import ConfigError, DataError

__all__ = ["SOURCES", "Source", "check_files", "check_path", "missing_files"]

_MNIST_RAW = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")
_CIFAR10 = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")


class Source(NamedTuple):
    label: str  # how error messages name the dataset
    num_classes: int
    input_shape: tuple[int, ...]
    # paths under data.root that torchvision's reader needs (what its own presence check wants);
    # () for a dataset that is bundled or generated
    files: tuple[str, ...] = ()
    legacy: tuple[str, ...] = ()  # an older layout torchvision still reads instead (MNIST's processed .pt)


SOURCES: dict[str, Source] = {
    "digits": Source("digits", 10, (1, 8, 8)),
    "mnist1d": Source("mnist1d", 10, (1, 40)),
    "mnist": Source("MNIST", 10, (1, 28, 28), tuple(f"MNIST/raw/{f}" for f in _MNIST_RAW),
                    ("MNIST/processed/training.pt", "MNIST/processed/test.pt")),
    "fashion_mnist": Source("FashionMNIST", 10, (1, 28, 28),
                            tuple(f"FashionMNIST/raw/{f}" for f in _MNIST_RAW),
                            ("FashionMNIST/processed/training.pt", "FashionMNIST/processed/test.pt")),
    "cifar10": Source("CIFAR-10", 10, (3, 32, 32), tuple(f"cifar-10-batches-py/{f}" for f in _CIFAR10)),
}


def missing_files(name: str, root: str | os.PathLike[str]) -> list[str]:
    """The files of dataset ``name`` absent under ``root`` (as paths relative to it)."""
    source = SOURCES[name]

    def present(path: str) -> bool:
        return os.path.isfile(os.path.join(root, *path.split("/")))

    if source.legacy and all(map(present, source.legacy)):
        return []
    return [path for path in source.files if not present(path)]


def check_files(name: str, root: str | os.PathLike[str], download: bool) -> None:
    """Refuse a dataset whose files are absent under ``root`` when it may not download them.

    Presence only: a file that is there but unreadable fails when a run reads it.

    Raises:
        DataError: naming ``data.root``, the files expected and what to do.
    """
    if name not in SOURCES or download:
        return
    source = SOURCES[name]
    missing = missing_files(name, root)
    if not missing:
        return
    if len(missing) == len(source.files):
        what = f"no {source.label} files under '{root}' (expected {', '.join(source.files)})"
    else:
        what = f"incomplete {source.label} files under '{root}' (missing {', '.join(missing)})"
    raise DataError(f"data.root: {what}; place them there or set data.download=true")


_ARRAY_SUFFIXES = (".npz", ".pt", ".pth")


def check_path(name: str, path: Any) -> Path:
    """The absolute ``data.path`` of dataset ``name`` (arrays, imagefolder), which must exist.

    Cheap (no read): ``ablate sweep`` calls it before it creates anything.

    Raises:
        ConfigError: field ``data.path``: no such file or folder, or the wrong kind of either.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ConfigError("data.path", path, f"the path of your data (data={name} data.path=...)")
    full = Path(os.path.expanduser(os.fspath(path))).resolve()
    if name == "arrays":
        if not full.is_file():
            raise ConfigError("data.path", str(path), "an existing .npz or .pt file (there is no file "
                              f"at {full})")
        if full.suffix.lower() not in _ARRAY_SUFFIXES:
            raise ConfigError("data.path", str(path), "a .npz (numpy.savez) or .pt (torch.save) file of "
                              "arrays x_train, y_train[, x_test, y_test]")
    elif not full.is_dir():
        raise ConfigError("data.path", str(path), "an existing folder of class folders (there is no "
                          f"folder at {full})")
    return full
