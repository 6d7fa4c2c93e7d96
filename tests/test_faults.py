"""The fault-injection campaign of ``benchmarks/faults.py`` in a small form: kills, interrupts and
torn journals at random moments, each resumed, on the embedded stores and (where it runs) PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "faults.py"
CLEAN = "resumed {n}, trials lost 0, duplicate runs 0, runs left RUNNING 0"


def _campaign(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--folder", str(tmp_path), "--epochs", "2",
                           "--max-delay", "6", *args],
                          capture_output=True, text=True, timeout=540, check=False)


@pytest.mark.slow
def test_faults_on_the_embedded_stores_lose_and_duplicate_nothing(tmp_path):
    out = _campaign(tmp_path, "--faults", "4", "--seed", "3")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "faults injected 4, " + CLEAN.format(n=4)


@pytest.mark.slow
def test_faults_on_postgresql_lose_and_duplicate_nothing(tmp_path):
    from conftest import require_service

    url = os.environ.get("ABLATE_TEST_POSTGRES_URL", "")
    require_service(bool(url), "no PostgreSQL server: set ABLATE_TEST_POSTGRES_URL (.ci/run starts one)")
    out = _campaign(tmp_path, "--faults", "2", "--seed", "5", "--storage", url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1] == "faults injected 2, " + CLEAN.format(n=2)


@pytest.mark.slow
@pytest.mark.parametrize("into", [0.3, 0.6])
def test_a_sweep_killed_while_mlflow_makes_its_store_leaves_none_half_made(tmp_path, into):
    # MLflow made a missing SQLite store in place, one migration after another (about a second
    # here): a sweep killed meanwhile left a half-made mlflow.db, and every later command failed
    # with a traceback ("duplicate column name: step"). Found by the PostgreSQL fault campaign.
    from tiny_studies import ABLATE, tiny_study

    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "t.yaml").write_text(tiny_study())
    sweep = subprocess.Popen([*ABLATE, "sweep", "t"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sweep.poll() is None:
        if [*tmp_path.glob("mlflow.db"), *tmp_path.glob(".mlflow.db.creating-*")]:
            break
        time.sleep(0.002)
    time.sleep(into)  # seconds into MLflow's migrations
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait()
    again = subprocess.run([*ABLATE, "sweep", "t"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr
    assert list(tmp_path.glob(".mlflow.db.creating-*")) == []  # the dead sweep's half-made copy is gone
