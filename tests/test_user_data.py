"""The user's own data: a file of arrays (.npz, .pt), an ImageFolder tree, a registered function;
split, scaled and cached as the built-in datasets are; one line for each thing that can be wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.config_store import ConfigStore
from PIL import Image

import ablate
from ablate import registry
from ablate.config import compose, register_configs
from ablate.data import load_dataset
from ablate.errors import ConfigError
from ablate.train import fit, load_data

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "_datasets", dict(registry._datasets))
    register_configs()
    repo = ConfigStore.instance().repo
    before = set(repo["data"])
    yield tmp_path
    for name in set(repo["data"]) - before:
        repo["data"].pop(name)


def _xy(n: int, shape: tuple[int, ...] = (2, 6), classes: int = 3,
        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(3.0, 2.0, size=(n, *shape)).astype(np.float32),
            rng.integers(0, classes, size=n).astype(np.int64))


# --- the three ways of naming a dataset ---------------------------------------------------------


def test_arrays_npz_with_a_test_split(folder):
    x, y = _xy(50)
    xt, yt = _xy(20, seed=1)
    np.savez(folder / "d.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    data = load_data(compose(["data=arrays", "data.path=d.npz", "data.val_fraction=0.2"]))
    assert (data.input_shape, data.num_classes) == ((2, 6), 3)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (40, 10, 20)
    assert torch.equal(data.y_test, torch.from_numpy(yt))
    # standard scaling, per channel, with training statistics
    assert data.x_train.mean(dim=(0, 2)).abs().max() < 1e-5
    assert data.x_train.std(dim=(0, 2), correction=0) == pytest.approx(torch.ones(2), abs=1e-4)


def test_arrays_pt_without_a_test_split_holds_out_test_fraction(folder):
    x, y = _xy(100, shape=(5,))
    torch.save({"x_train": torch.from_numpy(x), "y_train": torch.from_numpy(y)}, folder / "d.pt")
    cfg = compose(["data=arrays", "data.path=d.pt", "data.test_fraction=0.3", "data.num_classes=4"])
    data = load_data(cfg)
    assert (len(data.y_test), len(data.y_val), len(data.y_train)) == (30, 14, 56)
    assert data.num_classes == 4 and data.input_shape == (5,)
    again = load_data(cfg)  # same data_seed, same splits
    assert torch.equal(data.x_val, again.x_val)
    other = load_data(compose(["data=arrays", "data.path=d.pt", "data.data_seed=1"]))
    assert not torch.equal(data.y_test, other.y_test)


def _png(path: Path, value: int, size: tuple[int, int] = (6, 6), mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, color).save(path)


def test_an_imagefolder_tree_is_read_and_cached_under_root(folder):
    for cls, value in (("cat", 10), ("dog", 200)):
        for i in range(8):
            _png(folder / "pics" / cls / f"{i}.png", value + i)
    cfg = compose(["data=imagefolder", "data.path=pics", "data.scaling=none", "data.root=cache"])
    data = load_data(cfg)
    assert (data.input_shape, data.num_classes) == ((1, 6, 6), 2)
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 16
    # class folders in sorted order: cat = 0 with dark pixels, dog = 1 with light ones
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert bool(((x.mean(dim=(1, 2, 3)) > 100) == (y == 1)).all())
    cached = list((folder / "cache" / "imagefolder").glob("pics-*.pt"))
    assert len(cached) == 1
    _png(folder / "pics" / "dog" / "8.png", 250)  # a changed tree is read again, under a new key
    assert len(load_data(cfg).y_train) + len(load_data(cfg).y_val) + len(load_data(cfg).y_test) == 17
    assert len(list((folder / "cache" / "imagefolder").glob("pics-*.pt"))) == 2


def test_an_imagefolder_with_train_and_test_folders_keeps_them(folder):
    for split, n in (("train", 6), ("test", 3)):
        for cls, value in (("a", 0), ("b", 90), ("c", 180)):
            for i in range(n):
                _png(folder / "rgb" / split / cls / f"{i}.png", value, size=(5, 4), mode="RGB")
    data = load_data(compose(["data=imagefolder", "data.path=rgb", "data.root=cache"]))
    assert (data.input_shape, data.num_classes, len(data.y_test)) == ((3, 4, 5), 3, 9)
    assert fit(compose(["data=imagefolder", "data.path=rgb", "data.root=cache", "model=cnn",
                        "model.depth=1", "model.width=4", "trainer.epochs=1"])).epochs_run == 1


def test_a_registered_function_is_an_option(folder):
    x, y = _xy(40, shape=(1, 10))
    ablate.register_dataset("mine", lambda: (torch.from_numpy(x), torch.from_numpy(y)))
    cfg = compose(["data=mine", "model=mlp", "trainer.epochs=1"])
    assert cfg.data.function is None  # a lambda: found by name in this process only
    data = load_data(cfg)
    assert data.input_shape == (1, 10) and len(data.y_train) + len(data.y_val) + len(data.y_test) == 40
    assert fit(cfg, data=data).epochs_run == 1
    ablate.register_dataset("mapped", lambda: {"x_train": x, "y_train": y, "x_test": x[:5], "y_test": y[:5]})
    assert len(load_data(compose(["data=mapped"])).y_test) == 5


def test_register_dataset_refuses_a_builtin_name(folder):
    with pytest.raises(ConfigError, match=r"^data: 'digits' is not allowed"):
        ablate.register_dataset("digits", lambda: None)


# --- one line for each mistake ------------------------------------------------------------------


def _error(folder: Path, arrays: dict[str, np.ndarray], *extra: str) -> ConfigError:
    np.savez(folder / "bad.npz", **arrays)
    with pytest.raises(ConfigError) as err:
        load_data(compose(["data=arrays", "data.path=bad.npz", *extra]))
    assert "\n" not in str(err.value)
    return err.value


def test_a_missing_file_or_path_is_one_line(folder):
    with pytest.raises(ConfigError, match=r"^data.path: 'nope.npz' is not allowed; expected an existing "
                       r"\.npz or \.pt file \(there is no file at .*nope\.npz\)$"):
        load_data(compose(["data=arrays", "data.path=nope.npz"]))
    with pytest.raises(ConfigError, match=r"^data.path: None is not allowed; expected a \.npz or \.pt file"):
        compose(["data=arrays"])
    with pytest.raises(ConfigError, match=r"^data.path: 'nope' .*an existing folder of class folders"):
        load_data(compose(["data=imagefolder", "data.path=nope"]))
    (folder / "d.csv").write_text("1,2\n")
    with pytest.raises(ConfigError, match=r"^data.path: 'd.csv' .*a \.npz \(numpy\.savez\) or \.pt"):
        load_data(compose(["data=arrays", "data.path=d.csv"]))


def test_mismatched_lengths(folder):
    x, y = _xy(30)
    err = _error(folder, {"x_train": x, "y_train": y[:25]})
    assert err.field == "data.path" and "y_train shaped (30,)" in err.allowed and "(25,)" in err.allowed
    err = _error(folder, {"x_train": x, "y_train": y, "x_test": x[:4], "y_test": y[:3]})
    assert "y_test shaped (4,)" in err.allowed


def test_labels_out_of_range_or_not_integers(folder):
    x, y = _xy(30)
    err = _error(folder, {"x_train": x, "y_train": y - 1})
    assert "labels in 0..1" in err.allowed and "-1..1" in err.allowed
    err = _error(folder, {"x_train": x, "y_train": y}, "data.num_classes=2")
    assert "labels in 0..1 (data.num_classes = 2; they range over 0..2)" in err.allowed
    err = _error(folder, {"x_train": x, "y_train": y.astype(np.float32)})
    assert "integer class labels in y_train (it holds torch.float32" in err.allowed


def test_malformed_arrays(folder):
    x, y = _xy(30)
    assert "it holds: x, y" in _error(folder, {"x": x, "y": y}).allowed
    assert "x_train shaped (N, *example)" in _error(folder, {"x_train": x[:, 0, 0], "y_train": y}).allowed
    assert "x_test shaped like x_train" in _error(folder, {"x_train": x, "y_train": y, "x_test": x[:, :1],
                                                           "y_test": y}).allowed
    assert "y_test" in _error(folder, {"x_train": x, "y_train": y, "x_test": x}).allowed


def test_images_of_different_sizes_or_an_empty_tree(folder):
    _png(folder / "mixed" / "a" / "0.png", 1, size=(4, 4))
    _png(folder / "mixed" / "b" / "0.png", 1, size=(5, 5))
    with pytest.raises(ConfigError, match=r"^data.path: 'mixed' .*images of one size"):
        load_data(compose(["data=imagefolder", "data.path=mixed", "data.root=cache"]))
    (folder / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"^data.path: 'empty' .*holds no"):
        load_data(compose(["data=imagefolder", "data.path=empty"]))


def test_a_shape_the_model_cannot_take(folder):
    x, y = _xy(30, shape=(6,))
    np.savez(folder / "flat.npz", x_train=x, y_train=y)
    with pytest.raises(ConfigError, match=r"^model.name: 'cnn' is not allowed; expected mlp for flat inputs"):
        fit(compose(["data=arrays", "data.path=flat.npz", "model=cnn", "trainer.epochs=1"]))


def test_the_cli_says_one_line_and_exits_2(folder):
    np.savez(folder / "bad.npz", x_train=np.zeros((4, 3), np.float32), y_train=np.zeros(5, np.int64))
    bad = "data.path: 'bad.npz' is not allowed; expected y_train shaped (4,)"
    for args, line in ((["data=arrays", "data.path=missing.npz"], "data.path: 'missing.npz' is not allowed"),
                       (["data=arrays", "data.path=bad.npz"], bad)):
        job = subprocess.run([sys.executable, "-m", "ablate", "train", *args, "trainer.epochs=1"],
                             capture_output=True, text=True, cwd=folder, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        assert job.returncode == 2, job.stderr
        assert job.stderr.strip().splitlines()[-1].startswith(f"ablate: error: {line}")
    assert not (folder / "mlflow.db").exists()  # refused before a run (or its store) was created


def test_load_dataset_from_python_takes_a_path(folder):
    x, y = _xy(20)
    np.savez(folder / "d.npz", x_train=x, y_train=y)
    data = load_dataset("arrays", path=folder / "d.npz", scaling="unit")
    assert data.x_train.min() == 0 and data.x_train.max() == 1
