"""examples/own_model end to end, as a user runs it: copied to a fresh folder outside the repository,
its data generated there, then its search and ablation swept and reported with the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "own_model"


def _run(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    job = subprocess.run([sys.executable, *args], cwd=folder, env=env, capture_output=True, text=True,
                         timeout=300)
    assert job.returncode == 0, f"{args}: {job.stdout[-2000:]}\n{job.stderr[-2000:]}"
    return job


@pytest.mark.slow
def test_the_example_sweeps_ablates_and_reports_from_a_fresh_folder(tmp_path):
    folder = tmp_path / "work"
    shutil.copytree(EXAMPLE, folder)
    assert not folder.resolve().is_relative_to(REPO)
    _run(folder, "make_data.py", "--train", "150", "--test", "60")
    assert (folder / "waves.npz").is_file()

    tiny = ["trainer.epochs=1", "workers=1", "trainer.threads=1"]
    search = _run(folder, "-m", "ablate", "sweep", "search_waves", "n_trials=2", *tiny)
    assert "ablate train data=waves model=tinyconv" in search.stdout  # the best trial, to train again
    ablation = _run(folder, "-m", "ablate", "sweep", "ablation_waves", "seeds=1", *tiny)
    assert "Best val_acc" in ablation.stdout
    for study in ("search_waves", "ablation_waves"):
        _run(folder, "-m", "ablate", "report", study)
    report = (folder / "reports" / "ablation_waves" / "report.md").read_text()
    for trick in ("norm=batch", "dropout=0.1", "optimizer=adam", "clip=norm", "schedule=cosine",
                  "averaging=ema", "init=kaiming", "weight_decay=0.0001"):
        assert trick in report, trick
    assert "tinyconv" in report and "arrays" in report
    assert (folder / "reports" / "search_waves" / "report.html").is_file()
    # Everything the user made lives in their folder: nothing was written into the repository.
    assert (folder / "runs" / "ablation_waves" / "journal.log").is_file() and (folder / "mlflow.db").is_file()


def test_the_example_refuses_a_knob_its_network_does_not_take(tmp_path):
    folder = tmp_path / "work"
    shutil.copytree(EXAMPLE, folder)
    _run(folder, "make_data.py", "--train", "60", "--test", "20")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    job = subprocess.run([sys.executable, "-m", "ablate", "train", "data=waves", "model=tinyconv",
                          "+model.residual=true"], cwd=folder, env=env, capture_output=True, text=True,
                         timeout=300)
    assert job.returncode == 2
    assert job.stderr.strip().splitlines()[-1].startswith(
        "ablate: error: model.residual=true: model 'tinyconv' does not take 'residual'")
    assert not (folder / "mlflow.db").exists()
