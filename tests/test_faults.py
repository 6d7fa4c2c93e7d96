"""The fault-injection campaign of ``benchmarks/faults.py`` in a small form: kills, interrupts and
torn journals at random moments, each resumed, on the embedded stores and (where it runs) PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
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
