"""Tests for ablate.data: splits, scalings, the mnist1d cache and torchvision's real readers on tiny files."""

from __future__ import annotations

import math
import os
import random
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_datasets import write_cifar10, write_mnist

from ablate.data import DATASETS, SCALINGS, Dataset, fit_scaling, load_dataset, mnist1d_cache, scale
from ablate.errors import ConfigError, DataError

torch.set_num_threads(1)

SPLITS = ("train", "val", "test")


def rows(x: torch.Tensor, y: torch.Tensor) -> Counter:
    """Examples as a multiset of (pixel bytes, label), so duplicates in a dataset are counted, not merged."""
    flat = x.reshape(len(x), -1).numpy()
    return Counter((row.tobytes(), int(label)) for row, label in zip(flat, y.tolist(), strict=True))


def splits(dataset: Dataset) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {s: (getattr(dataset, f"x_{s}"), getattr(dataset, f"y_{s}")) for s in SPLITS}


def assert_well_formed(dataset: Dataset) -> None:
    for split, (x, y) in splits(dataset).items():
        assert x.dtype == torch.float32 and y.dtype == torch.int64, split
        assert x.device.type == "cpu" and x.is_contiguous() and y.is_contiguous(), split
        assert tuple(x.shape[1:]) == dataset.input_shape and y.shape == (len(x),), split
        assert int(y.min()) >= 0 and int(y.max()) < dataset.num_classes, split


def assert_same(a: Dataset, b: Dataset) -> None:
    for (xa, ya), (xb, yb) in zip(splits(a).values(), splits(b).values(), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# --- digits and splitting --------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_raw() -> Dataset:
    return load_dataset("digits", scaling="none")


def test_digits_shapes_sizes_and_types(digits_raw: Dataset) -> None:
    assert digits_raw.name == "digits"
    assert digits_raw.num_classes == 10 and digits_raw.input_shape == (1, 8, 8)
    # 1797 examples: round(0.2 * 1797) = 359 test, then round(0.2 * 1438) = 288 validation.
    assert (len(digits_raw.y_train), len(digits_raw.y_val), len(digits_raw.y_test)) == (1150, 288, 359)
    assert_well_formed(digits_raw)
    assert float(digits_raw.x_train.min()) == 0.0 and float(digits_raw.x_train.max()) == 16.0
    assert set(digits_raw.y_train.tolist()) == set(range(10))


def test_digits_splits_partition_the_dataset(digits_raw: Dataset) -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    source = rows(torch.tensor(bunch.data, dtype=torch.float32), torch.tensor(bunch.target))
    seen = Counter()
    for x, y in splits(digits_raw).values():
        seen += rows(x, y)
    # Equal multisets with sizes summing to 1797: every example lands in exactly one split.
    assert seen == source and sum(seen.values()) == 1797


def test_same_arguments_give_identical_tensors(digits_raw: Dataset) -> None:
    assert_same(digits_raw, load_dataset("digits", scaling="none"))
    assert_same(load_dataset("digits", data_seed=3), load_dataset("digits", data_seed=3))


def test_data_seed_changes_the_split_but_not_the_sizes(digits_raw: Dataset) -> None:
    other = load_dataset("digits", scaling="none", data_seed=1)
    for (xa, _), (xb, _) in zip(splits(digits_raw).values(), splits(other).values(), strict=True):
        assert xa.shape == xb.shape and not torch.equal(xa, xb)


def test_fractions_set_split_sizes() -> None:
    dataset = load_dataset("digits", scaling="none", val_fraction=0.5, test_fraction=0.1)
    # round(0.1 * 1797) = 180 test; round(0.5 * 1617) = 808 validation.
    assert (len(dataset.y_train), len(dataset.y_val), len(dataset.y_test)) == (809, 808, 180)


def test_val_is_carved_from_train_only(digits_raw: Dataset) -> None:
    # Changing val_fraction must not move examples into or out of the test split.
    other = load_dataset("digits", scaling="none", val_fraction=0.5)
    assert torch.equal(other.x_test, digits_raw.x_test)


# --- scaling -----------------------------------------------------------------------------------


def make_channels(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, 4, 5) values with very different per-channel centres and spreads."""
    g = torch.Generator().manual_seed(seed)
    spread = torch.tensor([1.0, 10.0, 0.1]).view(1, 3, 1, 1)
    centre = torch.tensor([3.0, -20.0, 5.0]).view(1, 3, 1, 1)
    return torch.rand(n, 3, 4, 5, generator=g) * spread + centre


@pytest.mark.parametrize("scaling,low,high", [("unit", 0.0, 1.0), ("symmetric", -1.0, 1.0)])
def test_range_scalings_map_training_min_max_exactly(scaling: str, low: float, high: float) -> None:
    x_train = make_channels(50)
    before = x_train.clone()
    f = fit_scaling(x_train, scaling)
    out = f(x_train)
    assert torch.equal(x_train, before)  # the input is left alone
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert float(out.min()) == low and float(out.max()) == high
    lo, hi = float(x_train.min()), float(x_train.max())
    # Values outside the training range land outside the target range, by the training map.
    x_val = torch.full((2, 3, 4, 5), lo - 5.0)
    x_val[1] = hi + 5.0
    unit = (x_val - lo) / (hi - lo)
    expected = unit if scaling == "unit" else 2 * unit - 1
    torch.testing.assert_close(f(x_val), expected)
    assert float(f(x_val).min()) < low and float(f(x_val).max()) > high


def test_standard_scaling_uses_per_channel_training_moments() -> None:
    x_train = make_channels(64)
    f = fit_scaling(x_train, "standard")
    out = f(x_train)
    torch.testing.assert_close(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-5, rtol=0)
    # A validation set with its own, different moments is mapped with the training ones.
    x_val = make_channels(8, seed=1) * 3 + 100
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), correction=0, keepdim=True)
    torch.testing.assert_close(f(x_val), (x_val - mean) / std)
    assert float(f(x_val).mean()) > 10


def test_standard_scaling_only_centres_a_constant_channel() -> None:
    x_train = make_channels(10)
    x_train[:, 1] = 7.0
    out = fit_scaling(x_train, "standard")(x_train)
    assert torch.isfinite(out).all()
    assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1]))


def test_none_scaling_keeps_raw_values() -> None:
    x = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4)
    out = fit_scaling(x, "none")(x)
    assert out.dtype == torch.float32 and torch.equal(out, x.float())


@pytest.mark.parametrize("scaling", SCALINGS)
def test_load_dataset_scales_every_split_with_training_statistics(scaling: str, digits_raw: Dataset) -> None:
    dataset = load_dataset("digits", scaling=scaling)
    assert_well_formed(dataset)
    f = fit_scaling(digits_raw.x_train, scaling)
    for (x, _), (raw, _) in zip(splits(dataset).values(), splits(digits_raw).values(), strict=True):
        torch.testing.assert_close(x, f(raw), atol=1e-6, rtol=1e-6)
    assert_same(dataset, scale(digits_raw, scaling))
    train = dataset.x_train
    if scaling == "unit":
        assert (float(train.min()), float(train.max())) == (0.0, 1.0)
    elif scaling == "symmetric":
        assert (float(train.min()), float(train.max())) == (-1.0, 1.0)
    elif scaling == "standard":
        assert abs(float(train.mean())) < 1e-5 and abs(float(train.std(correction=0)) - 1) < 1e-5


def test_dataset_to_and_repr(digits_raw: Dataset) -> None:
    moved = digits_raw.to("cpu")
    assert isinstance(moved, Dataset) and moved.input_shape == digits_raw.input_shape
    assert_same(moved, digits_raw)
    assert "train=1150" in repr(digits_raw) and len(repr(digits_raw)) < 200


def test_dataset_rejects_malformed_tensors(digits_raw: Dataset) -> None:
    with pytest.raises(ValueError, match="x_val"):
        Dataset(**{**vars(digits_raw), "x_val": digits_raw.x_val.double()})
    with pytest.raises(ValueError, match="y_test"):
        Dataset(**{**vars(digits_raw), "y_test": digits_raw.y_test[:-1]})


# --- config errors -----------------------------------------------------------------------------


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_unknown_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as error:
        load_dataset("imagenet")
    assert one_line(error).startswith("data.name: 'imagenet'") and "digits" in str(error.value)


def test_unknown_scaling_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as error:
        load_dataset("digits", scaling="minmax")
    assert one_line(error).startswith("data.scaling:") and "standard" in str(error.value)
    with pytest.raises(ConfigError, match=r"^data\.scaling"):
        fit_scaling(torch.zeros(2, 1, 3), "zscore")


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, -0.1, 1.5, math.nan, True, "0.2", None])
@pytest.mark.parametrize("field", ["val_fraction", "test_fraction"])
def test_fraction_outside_open_unit_interval_is_a_config_error(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as error:
        load_dataset("digits", **{field: value})
    assert one_line(error).startswith(f"data.{field}:")


def test_fraction_leaving_a_split_empty_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^data\.val_fraction:"):
        load_dataset("digits", val_fraction=1e-4)


def test_names_and_scalings_are_public() -> None:
    assert DATASETS == ("digits", "mnist1d", "mnist", "fashion_mnist", "cifar10")
    assert SCALINGS == ("none", "unit", "symmetric", "standard")


# --- mnist1d -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist1d_first_load(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset, bool]:
    """Generate mnist1d once (seconds) and report whether the global RNG states survived."""
    root = tmp_path_factory.mktemp("mnist1d_root")
    random.seed(123)
    np.random.seed(123)
    states = random.getstate(), np.random.get_state()
    dataset = load_dataset("mnist1d", root=root, scaling="none")
    after = random.getstate(), np.random.get_state()
    preserved = after[0] == states[0] and all(
        np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
        for a, b in zip(after[1], states[1], strict=True)
    )
    return root, dataset, preserved


def test_mnist1d_shapes_and_sizes(mnist1d_first_load: tuple[Path, Dataset, bool]) -> None:
    _, dataset, _ = mnist1d_first_load
    assert dataset.input_shape == (1, 40) and dataset.num_classes == 10
    # The generator's defaults: 5000 examples, 4000 train / 1000 official test; 800 of 4000 for validation.
    assert (len(dataset.y_train), len(dataset.y_val), len(dataset.y_test)) == (3200, 800, 1000)
    assert_well_formed(dataset)
    assert set(dataset.y_test.tolist()) == set(range(10))


def test_mnist1d_generation_leaves_global_rng_state_alone(
    mnist1d_first_load: tuple[Path, Dataset, bool],
) -> None:
    assert mnist1d_first_load[2]


def test_mnist1d_cache_is_written_once_and_reused(
    mnist1d_first_load: tuple[Path, Dataset, bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mnist1d.data

    root, first, _ = mnist1d_first_load
    cached = sorted((root / "mnist1d").iterdir())
    assert len(cached) == 1 and cached[0].suffix == ".npz"  # and no temp file left behind
    stamp = cached[0].stat().st_mtime_ns

    def no_generation(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached mnist1d must not be regenerated")

    monkeypatch.setattr(mnist1d.data, "make_dataset", no_generation)
    again = load_dataset("mnist1d", root=root, scaling="none")
    assert_same(first, again)
    assert cached[0].stat().st_mtime_ns == stamp
    scaled = load_dataset("mnist1d", root=root, scaling="standard", data_seed=5)
    assert abs(float(scaled.x_train.mean())) < 1e-5


def test_mnist1d_cache_reader_ignores_foreign_or_damaged_files(tmp_path: Path) -> None:
    path = tmp_path / "mnist1d-x.npz"
    path.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="data.root"):
        assert mnist1d_cache._read_mnist1d_cache(path, "key") is None
    mnist1d_cache._write_atomically(path, {"x_train": np.zeros((1, 1, 40), np.float32)}, key="other")
    assert mnist1d_cache._read_mnist1d_cache(path, "key") is None
    assert mnist1d_cache._read_mnist1d_cache(tmp_path / "absent.npz", "key") is None


# --- torchvision datasets on tiny real files -----------------------------------------------------


def check_round_trip(dataset: Dataset, written) -> None:
    """Test split in file order; train and val together are the training file, each image with its label."""
    x_test = torch.from_numpy(written.x_test.reshape(len(written.x_test), *dataset.input_shape)).float()
    assert torch.equal(dataset.x_test, x_test)
    assert torch.equal(dataset.y_test, torch.from_numpy(written.y_test))
    source = rows(torch.from_numpy(written.x_train).float(), torch.from_numpy(written.y_train))
    assert rows(dataset.x_train, dataset.y_train) + rows(dataset.x_val, dataset.y_val) == source


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_round_trips_pixels_and_labels(name: str, folder: str, tmp_path: Path) -> None:
    written = write_mnist(tmp_path, folder=folder, n_train=20, n_test=10)
    dataset = load_dataset(name, root=tmp_path, scaling="none")
    assert dataset.input_shape == (1, 28, 28) and dataset.num_classes == 10
    assert (len(dataset.y_train), len(dataset.y_val), len(dataset.y_test)) == (16, 4, 10)
    assert_well_formed(dataset)
    check_round_trip(dataset, written)
    assert_same(dataset, load_dataset(name, root=str(tmp_path), scaling="none"))


def test_cifar10_round_trips_pixels_labels_and_channel_order(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path, per_batch=4, n_test=10)
    dataset = load_dataset("cifar10", root=tmp_path, scaling="none")
    assert dataset.input_shape == (3, 32, 32) and dataset.num_classes == 10
    assert (len(dataset.y_train), len(dataset.y_val), len(dataset.y_test)) == (16, 4, 10)
    assert_well_formed(dataset)
    check_round_trip(dataset, written)
    standard = load_dataset("cifar10", root=tmp_path)
    means = standard.x_train.mean(dim=(0, 2, 3))
    torch.testing.assert_close(means, torch.zeros(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "name,expected",
    [
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("fashion_mnist", "FashionMNIST/raw/t10k-labels-idx1-ubyte"),
        ("cifar10", "cifar-10-batches-py/data_batch_1"),
    ],
)
def test_absent_files_without_download_name_data_root(name: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        load_dataset(name, root=tmp_path / "empty")
    text = one_line(error)
    assert text.startswith("data.root: no ") and expected in text and "data.download=true" in text
    assert str(tmp_path / "empty") in text
    assert not (tmp_path / "empty").exists()  # a failed look must not create folders


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_the_catalog_lists_the_files_torchvision_wants(name: str) -> None:
    # The catalog's lists (what ablate sweep checks without importing torch) follow torchvision's own
    import torchvision.datasets as tvd

    from ablate.data.catalog import SOURCES

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    if hasattr(cls, "resources"):
        wanted = [f"{cls.__name__}/raw/{os.path.splitext(os.path.basename(url))[0]}"
                  for url, _ in cls.resources]
        legacy = [f"{cls.__name__}/processed/{f}" for f in (cls.training_file, cls.test_file)]
    else:
        files = [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        wanted, legacy = [f"{cls.base_folder}/{f}" for f in files], []
    assert sorted(SOURCES[name].files) == sorted(wanted) and list(SOURCES[name].legacy) == legacy


def test_incomplete_files_name_the_missing_ones(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(DataError) as error:
        load_dataset("cifar10", root=tmp_path)
    text = one_line(error)
    assert text.startswith("data.root: incomplete CIFAR-10 files") and "batches.meta" in text
    assert "data_batch_1" not in text


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_failed_download_is_one_line_naming_data_download(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cut the network at urllib so this stays offline even on a machine that has one.
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network disabled by the test")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as error:
        load_dataset(name, root=tmp_path, download=True)
    text = one_line(error)
    assert text.startswith("data.download: downloading ") and "network disabled by the test" in text


def test_damaged_files_are_a_data_error(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError) as error:
        load_dataset("mnist", root=tmp_path)
    assert one_line(error).startswith("data.root: cannot read the MNIST files")


def test_labels_outside_the_classes_are_a_data_error(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    from tiny_datasets import write_idx

    write_idx(tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.full(10, 12, np.uint8))
    with pytest.raises(DataError) as error:
        load_dataset("mnist", root=tmp_path)
    assert one_line(error).startswith("data.root: MNIST labels") and "0..9" in str(error.value)
