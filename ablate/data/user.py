"""The user's own data: a file of arrays, an ImageFolder tree, or a registered Python function.

Each reader returns unsplit tensors with the classes and input shape it found; ``load_dataset``
then splits and scales them exactly as it does the built-in datasets. Everything the user can get
wrong is one line naming the field, the value and what is allowed: a missing file, arrays of
mismatched lengths, labels that are not integers or lie outside ``0..num_classes-1``, inputs
without an example dimension. (A shape the model cannot take is found when the model is built,
by :func:`ablate.models.custom.build_user_model`.)

Relative ``data.path`` values are read from the working folder. Decoded ImageFolder images are
cached under ``<data.root>/imagefolder/``, keyed by every file's name, size and modification time,
so a changed tree is read again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ablate.data.catalog import check_path
from ablate.data.checks import one_line
from ablate.data.dataset import Raw
from ablate.errors import ConfigError, DataError

__all__ = ["ARRAY_KEYS", "UserData", "read_user"]

ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_CACHE_FORMAT = 1


class UserData(NamedTuple):
    raw: Raw
    num_classes: int
    input_shape: tuple[int, ...]


def read_user(name: str, *, path: Any, function: Any, num_classes: int | None, root: str) -> UserData:
    """Read the user's dataset ``name`` (``arrays``, ``imagefolder`` or a registered name), checked."""
    if name == "arrays":
        full = check_path(name, path)
        return _checked(_read_arrays(full, str(path)), num_classes, "data.path", str(path))
    if name == "imagefolder":
        full = check_path(name, path)
        return _checked(_read_imagefolder(full, str(path), root), num_classes, "data.path", str(path))
    from ablate.registry import dataset_function

    fn = dataset_function(name, function)
    try:
        out = fn()
    except Exception as exc:  # the user's code
        raise DataError(f"data.name: dataset {name!r} raised {one_line(exc)}") from exc
    return _checked(_as_arrays(out, "data.name", name), num_classes, "data.name", name)


def _read_arrays(full: Path, shown: str) -> dict[str, Any]:
    try:
        if full.suffix.lower() == ".npz":
            with np.load(full, allow_pickle=False) as npz:
                loaded: Any = {key: npz[key] for key in npz.files}
        else:
            loaded = torch.load(full, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign, pickled objects...
        raise DataError(f"data.path: cannot read '{shown}' ({one_line(exc)}); expected a .npz or .pt "
                        "file of arrays x_train, y_train[, x_test, y_test]") from exc
    return _as_arrays(loaded, "data.path", shown)


def _as_arrays(out: Any, field: str, shown: str) -> dict[str, Any]:
    """A mapping with x_train, y_train[, x_test, y_test], or a tuple of 2 or 4 arrays."""
    if isinstance(out, (tuple, list)) and len(out) in (2, 4):
        out = dict(zip(ARRAY_KEYS, out, strict=False))
    if not isinstance(out, Mapping):
        raise ConfigError(field, shown, "data holding x_train, y_train[, x_test, y_test] (a mapping with "
                          f"those keys, or a tuple of 2 or 4 arrays; got {type(out).__name__})")
    keys = sorted(map(str, out))
    if "x_train" not in out or "y_train" not in out or (("x_test" in out) != ("y_test" in out)):
        raise ConfigError(field, shown, "data holding x_train, y_train and optionally both x_test, y_test "
                          f"(it holds: {', '.join(keys) or 'nothing'})")
    return {key: out[key] for key in ARRAY_KEYS if key in out}


def _tensor(value: Any, key: str, field: str, shown: str) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    except Exception as exc:
        raise ConfigError(field, shown, f"numeric arrays ({key} is {type(value).__name__}: "
                          f"{one_line(exc)})") from exc
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise ConfigError(field, shown, f"real numeric arrays ({key} is {tensor.dtype})")
    return tensor.detach().cpu()


def _checked(arrays: dict[str, Any], num_classes: int | None, field: str, shown: str) -> UserData:
    t = {key: _tensor(value, key, field, shown) for key, value in arrays.items()}
    pairs = [("train", t["x_train"], t["y_train"])]
    if "x_test" in t:
        pairs.append(("test", t["x_test"], t["y_test"]))
    example = tuple(t["x_train"].shape[1:])
    for split, x, y in pairs:
        if x.dim() < 2:
            raise ConfigError(field, shown, f"x_{split} shaped (N, *example), e.g. (N, features) or "
                              f"(N, C, H, W) (it is shaped {tuple(x.shape)})")
        if y.dim() != 1 or len(y) != len(x):
            raise ConfigError(field, shown, f"y_{split} shaped ({len(x)},), one label per row of x_{split} "
                              f"(x_{split} has {len(x)} rows, y_{split} is shaped {tuple(y.shape)})")
        if len(y) == 0:
            raise ConfigError(field, shown, f"at least one example in x_{split} (it has none)")
        if tuple(x.shape[1:]) != example:
            raise ConfigError(field, shown, "x_test shaped like x_train, "
                              f"(N, {', '.join(map(str, example))}) (it is shaped {tuple(x.shape)})")
        if y.dtype.is_floating_point:
            raise ConfigError(field, shown, f"integer class labels in y_{split} (it holds {y.dtype}; "
                              "save them as integers 0..num_classes-1)")
    labels = torch.cat([y for _, _, y in pairs])
    low, high = int(labels.min()), int(labels.max())
    classes = num_classes if num_classes is not None else high + 1
    if low < 0 or high >= classes:
        bound = (f"data.num_classes = {num_classes}" if num_classes is not None
                 else "labels counted from 0")
        raise ConfigError(field, shown, f"labels in 0..{classes - 1} ({bound}; they range over "
                          f"{low}..{high})")
    if classes < 2:
        raise ConfigError(field, shown, f"labels of at least 2 classes (all are {low})")
    raw = Raw(t["x_train"], t["y_train"], t.get("x_test"), t.get("y_test"))
    return UserData(raw, classes, example)


def _images(folder: Path) -> list[tuple[Path, str]]:
    return [(p, cls.name) for cls in sorted(c for c in folder.iterdir() if c.is_dir())
            for p in sorted(cls.rglob("*")) if p.suffix.lower() in _IMAGE_SUFFIXES and p.is_file()]


def _read_imagefolder(full: Path, shown: str, root: str) -> dict[str, Any]:
    """Images of ``<path>/<class>/...`` (or ``<path>/{train,test}/<class>/...``) as uint8 tensors."""
    split = (full / "train").is_dir() and (full / "test").is_dir()
    folders = {"train": full / "train", "test": full / "test"} if split else {"train": full}
    listed = {key: _images(folder) for key, folder in folders.items()}
    for key, files in listed.items():
        if not files:
            raise ConfigError("data.path", shown, f"a folder of class folders holding images ({folders[key]} "
                              f"holds no {', '.join(_IMAGE_SUFFIXES[:3])}... files one folder down)")
    classes = sorted({cls for files in listed.values() for _, cls in files})
    extra = sorted({c for _, c in listed["test"]} - {c for _, c in listed["train"]}) if split else []
    if extra:
        raise ConfigError("data.path", shown, f"test classes that are also training classes (test/ has "
                          f"{', '.join(extra)} that train/ lacks)")
    stamp = hashlib.sha256(repr((_CACHE_FORMAT, str(full), [
        (str(p), p.stat().st_size, p.stat().st_mtime_ns) for files in listed.values() for p, _ in files
    ])).encode()).hexdigest()[:16]
    cache = Path(root) / "imagefolder" / f"{full.name}-{stamp}.pt"
    cached = _read_cache(cache)
    if cached is not None:
        return cached
    index = {cls: i for i, cls in enumerate(classes)}
    arrays: dict[str, Any] = {}
    for key, files in listed.items():
        arrays[f"x_{key}"] = _decode([p for p, _ in files], shown)
        arrays[f"y_{key}"] = torch.tensor([index[c] for _, c in files], dtype=torch.int64)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(arrays, cache)
    except OSError:  # a read-only root only costs decoding again next time
        pass
    return arrays


def _read_cache(cache: Path) -> dict[str, Any] | None:
    if not cache.is_file():
        return None
    try:
        cached: dict[str, Any] = torch.load(cache, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  # a torn or foreign cache file: read the images again
        return None
    return cached


def _decode(paths: list[Path], shown: str) -> torch.Tensor:
    from PIL import Image

    images: list[np.ndarray] = []
    for p in paths:
        try:
            with Image.open(p) as image:
                # torchvision's ImageFolder loader converts to RGB; keep grayscale as one channel.
                mode = "L" if image.mode in ("1", "L", "I;16", "I", "F") else "RGB"
                array = np.asarray(image.convert(mode))
        except Exception as exc:
            raise DataError(f"data.path: cannot read the image {p} ({one_line(exc)}); remove or "
                            "replace it") from exc
        images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    shapes = sorted({a.shape for a in images})
    if len(shapes) > 1:
        raise ConfigError("data.path", shown, "images of one size and mode (found "
                          f"{', '.join('x'.join(map(str, s)) for s in shapes[:3])} as C x H x W)")
    return torch.from_numpy(np.stack(images))
