"""mnist1d: generated locally with the ``mnist1d`` package's default arguments and cached under
``<root>/mnist1d/``; its download helper is never used."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ablate.data.checks import check_loaded, one_line
from ablate.data.dataset import Raw

__all__ = ["read_mnist1d"]

# Bump when the layout of the mnist1d cache file changes, so stale files are regenerated.
_MNIST1D_CACHE_FORMAT = 1


def read_mnist1d(root: str, download: bool) -> Raw:
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
                f"data.root: cannot cache mnist1d at '{path}' ({one_line(error)}); "
                "it will be regenerated on every load",
                stacklevel=3,
            )
    raw = Raw(*(torch.from_numpy(arrays[k]) for k in ("x_train", "y_train", "x_test", "y_test")))
    return check_loaded("mnist1d", root, raw)


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
                f"data.root: ignoring unreadable mnist1d cache '{path}' ({one_line(error)})", stacklevel=4
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
