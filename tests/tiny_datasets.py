"""Writers of tiny MNIST, FashionMNIST and CIFAR-10 files in exactly the formats torchvision reads.

Tests import these (``from tiny_datasets import write_mnist``) to exercise the real torchvision
readers offline. Each writer returns the arrays it wrote so a test can check the round trip.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["TinySplits", "write_cifar10", "write_idx", "write_mnist"]


class TinySplits(NamedTuple):
    """What a writer put on disk: uint8 images (N, H, W) or (N, C, H, W) and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX ("ubyte") file, the format of the MNIST family.

    Args:
        path: File to create; parent folders are created.
        array: uint8 array of 1 to 3 dimensions.
    """
    array = np.ascontiguousarray(array, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Magic: two zero bytes, type code 0x08 (unsigned byte), number of dimensions; then each
    # dimension as a big-endian uint32, then the raw bytes.
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


def write_mnist(
    root: Path, folder: str = "MNIST", n_train: int = 20, n_test: int = 10, seed: int = 0
) -> TinySplits:
    """Write ``<root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``.

    Args:
        root: The ``data.root`` the loader will be given.
        folder: ``"MNIST"`` or ``"FashionMNIST"`` (torchvision's class name).
        n_train: Training examples; labels cycle through 0..9.
        n_test: Test examples.
        seed: Seed of the random pixels.

    Returns:
        The images (N, 28, 28) and labels written.
    """
    rng = np.random.default_rng(seed)
    raw = Path(root) / folder / "raw"
    splits = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = ((np.arange(n) + (3 if prefix == "t10k" else 0)) % 10).astype(np.int64)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))
        splits += [images, labels]
    return TinySplits(*splits)


def write_unreadable_mnist(root: Path, folder: str = "MNIST") -> None:
    """Every MNIST file present under ``<root>/<folder>/raw`` but unreadable (a download cut short):
    a presence check passes and each run that reads them fails."""
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(b"\x00\x00\x08")


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 10, seed: int = 0) -> TinySplits:
    """Write ``<root>/cifar-10-batches-py/`` with five training batches, a test batch and the meta file.

    The files are pickled dicts like the originals: ``data`` is uint8 (N, 3072) holding each
    image's red, green and blue 32x32 planes in turn, ``labels`` a list of ints.

    Args:
        root: The ``data.root`` the loader will be given.
        per_batch: Examples in each of the five training batches.
        n_test: Test examples.
        seed: Seed of the random pixels.

    Returns:
        The images (N, 3, 32, 32) and labels written, training batches concatenated in order.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def batch(filename: str, n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
        images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        labels = ((np.arange(n) + offset) % 10).astype(np.int64)
        entry = {
            "batch_label": filename,
            "labels": [int(label) for label in labels],
            "data": images.reshape(n, 3 * 32 * 32),
            "filenames": [f"{filename}_{i}.png" for i in range(n)],
        }
        (folder / filename).write_bytes(pickle.dumps(entry, protocol=2))
        return images, labels

    train = [batch(f"data_batch_{i}", per_batch, offset=i) for i in range(1, 6)]
    x_test, y_test = batch("test_batch", n_test, offset=7)
    meta = {
        "label_names": [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ],
        "num_cases_per_batch": per_batch,
        "num_vis": 3 * 32 * 32,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return TinySplits(
        np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_test, y_test
    )
