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
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import random
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, cast

import numpy as np
import torch

from ablate.errors import ConfigError, DataError
from ablate.menu import DATASETS, SCALINGS

__all__ = ["DATASETS", "SCALINGS", "Dataset", "fit_scaling", "load_dataset", "scale"]


# Bump when the layout of the mnist1d cache file changes, so stale files are regenerated.
_MNIST1D_CACHE_FORMAT = 1


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


# ---------------------------------------------------------------------------------------------
# Scaling


class _Scaler:
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
    _check_choice("data.scaling", scaling, SCALINGS)
    if scaling == "none":
        return _Scaler(scaling, None, None, None)
    if x_train.dim() < 2 or x_train.numel() == 0:
        raise ValueError(f"x_train must be a non-empty (N, C, ...) tensor, got shape {tuple(x_train.shape)}")
    x = x_train.to(torch.float32)
    if scaling in ("unit", "symmetric"):
        low, high = x.min(), x.max()
        span = high - low
        # A constant training set has no range to map; leave it at 0 rather than divide by 0.
        span = torch.where(span > 0, span, torch.ones_like(span))
        return _Scaler(scaling, low.cpu(), span.cpu(), None, symmetric=scaling == "symmetric")
    dims = [0, *range(2, x.dim())]
    var, mean = torch.var_mean(x, dim=dims, correction=0)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    broadcast = (1, x.shape[1]) + (1,) * (x.dim() - 2)
    return _Scaler(scaling, mean.reshape(broadcast).cpu(), std.reshape(broadcast).cpu(), x.shape[1])


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


# ---------------------------------------------------------------------------------------------
# Loading


class _Raw(NamedTuple):
    """Unsplit data as read from the source; ``x_test is None`` when there is no official test set."""

    x_train: torch.Tensor  # any numeric dtype; converted to float32 after splitting
    y_train: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None


class _Spec(NamedTuple):
    label: str  # how error messages name the dataset
    num_classes: int
    input_shape: tuple[int, ...]
    loader: Callable[[str, bool], _Raw]


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] = "data",
    download: bool = False,
    scaling: str = "standard",
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    data_seed: int = 0,
) -> Dataset:
    """Load a dataset, split it reproducibly and scale it with training statistics.

    The validation split is a random ``val_fraction`` of the official training set, drawn
    with a generator seeded by ``data_seed``. The test split is the official test set; for
    ``digits``, which has none, ``test_fraction`` of all examples is held out first with the
    same generator. Split sizes are ``round(n * fraction)``. Equal arguments give equal tensors.

    Args:
        name: One of ``DATASETS``.
        root: Folder holding the torchvision files (``MNIST/raw/...``, ``FashionMNIST/raw/...``,
            ``cifar-10-batches-py/...``) and the generated ``mnist1d/`` cache. Unused by ``digits``.
        download: Let torchvision fetch absent files (mnist, fashion_mnist, cifar10 only).
        scaling: One of ``SCALINGS``; see ``fit_scaling``.
        val_fraction: Share of the training set held out for validation, in (0, 1).
        test_fraction: Share of all examples held out for testing, in (0, 1); used only by
            ``digits`` but checked for every dataset so a bad config fails everywhere alike.
        data_seed: Seed of the split generator.

    Returns:
        A ``Dataset`` on the CPU with contiguous float32 inputs and int64 labels.

    Raises:
        ConfigError: ``name``, ``scaling`` or a fraction is not allowed, or a fraction leaves a
            split empty.
        DataError: Files are absent, unreadable or malformed, or a download failed.
    """
    _check_choice("data.name", name, DATASETS)
    _check_choice("data.scaling", scaling, SCALINGS)
    _check_fraction("data.val_fraction", val_fraction)
    _check_fraction("data.test_fraction", test_fraction)
    spec = _SPECS[name]
    raw = spec.loader(os.path.abspath(os.path.expanduser(os.fspath(root))), bool(download))

    generator = torch.Generator().manual_seed(data_seed)
    if raw.x_test is None or raw.y_test is None:
        test_idx, pool_idx = _carve(len(raw.y_train), test_fraction, "data.test_fraction", generator)
        x_test, y_test = raw.x_train[test_idx], raw.y_train[test_idx]
        x_pool, y_pool = raw.x_train[pool_idx], raw.y_train[pool_idx]
    else:
        x_test, y_test, x_pool, y_pool = raw.x_test, raw.y_test, raw.x_train, raw.y_train
    val_idx, train_idx = _carve(len(y_pool), val_fraction, "data.val_fraction", generator)

    # Splitting before the float conversion keeps uint8 sources (MNIST, CIFAR) cheap to index.
    x_train, x_val, x_test = (_as_float(x) for x in (x_pool[train_idx], x_pool[val_idx], x_test))
    scaler = fit_scaling(x_train, scaling)
    assert isinstance(scaler, _Scaler)
    for x in (x_train, x_val, x_test):
        scaler.apply_(x)  # in place: these tensors are fresh copies owned here
    return Dataset(
        name=name,
        x_train=x_train,
        y_train=_as_labels(y_pool[train_idx]),
        x_val=x_val,
        y_val=_as_labels(y_pool[val_idx]),
        x_test=x_test,
        y_test=_as_labels(y_test),
        num_classes=spec.num_classes,
        input_shape=spec.input_shape,
    )


def _check_choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(field, value, "one of: " + ", ".join(allowed))


def _check_fraction(field: str, value: Any) -> None:
    # bool is a Real; a fraction of True is a config mistake, not 1.0. (typeshed's Real has no __gt__
    # for mypy; any Real compares with ints at run time.)
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < cast(float, value) < 1:
        raise ConfigError(field, value, "a number strictly between 0 and 1")


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


def _check_loaded(name: str, root: str, raw: _Raw) -> _Raw:
    """Reject files that parsed but do not hold what the dataset promises."""
    spec = _SPECS[name]
    for x, y in ((raw.x_train, raw.y_train), (raw.x_test, raw.y_test)):
        if x is None or y is None:
            continue
        if tuple(x.shape[1:]) != spec.input_shape or y.shape != (len(x),):
            raise DataError(
                f"data.root: {spec.label} files under '{root}' hold inputs shaped {tuple(x.shape)} "
                f"and labels shaped {tuple(y.shape)}, expected (N, {', '.join(map(str, spec.input_shape))}) "
                "and (N,); replace them with the original files"
            )
        if len(y) == 0:
            raise DataError(f"data.root: {spec.label} files under '{root}' hold no examples; replace them")
        if int(y.min()) < 0 or int(y.max()) >= spec.num_classes:
            raise DataError(
                f"data.root: {spec.label} labels under '{root}' range over {int(y.min())}..{int(y.max())}, "
                f"expected 0..{spec.num_classes - 1}; replace them with the original files"
            )
    return raw


def _one_line(error: BaseException) -> str:
    """An exception as one line: torchvision's download errors span several."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# --- digits -------------------------------------------------------------------------------


def _load_digits(root: str, download: bool) -> _Raw:
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
    return _check_loaded("digits", "<scikit-learn>", _Raw(x, y, None, None))


# --- mnist1d ------------------------------------------------------------------------------


def _load_mnist1d(root: str, download: bool) -> _Raw:
    del download  # generated locally; the package's downloader is deliberately never used
    # Imported here: mnist1d pulls in matplotlib and requests.
    import mnist1d.data
    import mnist1d.utils

    args = mnist1d.data.get_dataset_args(as_dict=True)
    key = _mnist1d_cache_key(args)
    path = Path(root) / "mnist1d" / f"mnist1d-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    arrays = _read_mnist1d_cache(path, key)
    if arrays is None:
        arrays = _generate_mnist1d(mnist1d.utils.ObjectView(dict(args)))
        try:
            _write_atomically(path, arrays, key)
        except OSError as error:
            # The data is in hand; a read-only root only costs regeneration next time.
            warnings.warn(
                f"data.root: cannot cache mnist1d at '{path}' ({_one_line(error)}); "
                "it will be regenerated on every load",
                stacklevel=3,
            )
    raw = _Raw(*(torch.from_numpy(arrays[k]) for k in ("x_train", "y_train", "x_test", "y_test")))
    return _check_loaded("mnist1d", root, raw)


def _mnist1d_cache_key(args: dict[str, Any]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        package_version = version("mnist1d")
    except PackageNotFoundError:
        package_version = "unknown"
    # The URL only matters to the downloader; the version guards against generator changes.
    generator_args = {k: v for k, v in args.items() if k != "url"}
    return json.dumps(
        {"format": _MNIST1D_CACHE_FORMAT, "mnist1d": package_version, "args": generator_args}, sort_keys=True
    )


def _generate_mnist1d(args: Any) -> dict[str, np.ndarray]:
    import mnist1d.data

    # make_dataset reseeds the global `random` and NumPy generators; restore them so a
    # cache miss leaves the caller's RNG state exactly as a cache hit would.
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        data = mnist1d.data.make_dataset(args)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    return {
        "x_train": np.ascontiguousarray(data["x"], dtype=np.float32).reshape(-1, 1, 40),
        "y_train": np.ascontiguousarray(data["y"], dtype=np.int64),
        "x_test": np.ascontiguousarray(data["x_test"], dtype=np.float32).reshape(-1, 1, 40),
        "y_test": np.ascontiguousarray(data["y_test"], dtype=np.int64),
    }


def _read_mnist1d_cache(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """Return the cached arrays, or None when the cache is absent, foreign or damaged."""
    names = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if str(archive["key"]) != key:
                return None
            return {name: archive[name] for name in names}
    except (OSError, ValueError, KeyError, EOFError) as error:
        if not isinstance(error, FileNotFoundError) and path.exists():
            warnings.warn(
                f"data.root: ignoring unreadable mnist1d cache '{path}' ({_one_line(error)})", stacklevel=4
            )
        return None


def _write_atomically(path: Path, arrays: dict[str, np.ndarray], key: str) -> None:
    # A temp file in the same folder plus os.replace means a concurrent reader sees either no
    # file or a whole one, and concurrent writers simply race to install identical content.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            # mypy matches **arrays against savez's allow_pickle: bool; its keys are array names.
            np.savez(handle, key=np.array(key), **arrays)  # type: ignore[arg-type]
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --- torchvision --------------------------------------------------------------------------


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


def _load_torchvision(name: str, root: str, download: bool) -> _Raw:
    cls = _torchvision_class(name)
    label = _SPECS[name].label
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
                f"data.download: downloading {label} into '{root}' failed ({_one_line(error)}); "
                "check the network or place the files under data.root yourself"
            ) from error
    try:
        train = cls(root, train=True, download=False)
        test = cls(root, train=False, download=False)
        raw = _Raw(*_tensors(train), *_tensors(test))
    except Exception as error:  # a truncated or foreign file fails in many different ways
        raise DataError(
            f"data.root: cannot read the {label} files under '{root}' ({_one_line(error)}); "
            "replace them with the original files"
        ) from error
    return _check_loaded(name, root, raw)


def _tensors(split: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images ``(N, C, H, W)`` and int64 labels of a torchvision dataset object."""
    data, targets = split.data, split.targets
    if isinstance(data, np.ndarray):  # CIFAR keeps HWC NumPy arrays
        x = torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()
    else:  # the MNIST family keeps (N, H, W) uint8 tensors
        x = data.unsqueeze(1)
    y = torch.as_tensor(targets, dtype=torch.int64)
    return x, y


_SPECS: dict[str, _Spec] = {
    "digits": _Spec("digits", 10, (1, 8, 8), _load_digits),
    "mnist1d": _Spec("mnist1d", 10, (1, 40), _load_mnist1d),
    "mnist": _Spec("MNIST", 10, (1, 28, 28), functools.partial(_load_torchvision, "mnist")),
    "fashion_mnist": _Spec(
        "FashionMNIST", 10, (1, 28, 28), functools.partial(_load_torchvision, "fashion_mnist")
    ),
    "cifar10": _Spec("CIFAR-10", 10, (3, 32, 32), functools.partial(_load_torchvision, "cifar10")),
}
