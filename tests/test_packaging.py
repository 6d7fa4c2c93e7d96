"""The wheel: built from the tree, installed (not editable) into a fresh virtualenv, used from a folder
that has nothing of the project in it.

The virtualenv reuses this one's dependencies (a ``.pth`` file naming its site-packages, written after
the wheel is installed so pip sees none of them) instead of installing torch again; no network is used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("ablate", "conf", "sweeps", "pyproject.toml", "README.md")  # what a build reads

pytestmark = pytest.mark.slow


def _run(command: list[str], *, cwd: Path,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False)


def _build_wheel(tmp_path: Path) -> Path:
    """``pip wheel`` of a copy of the tree (so the build leaves nothing in the checkout)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                  "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(src)], cwd=tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("ablate-*.whl")
    return wheel


def _venv_with(wheel: Path, tmp_path: Path) -> Path:
    """A fresh virtualenv holding the wheel, then this environment's packages through a ``.pth`` file."""
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                      "--no-index", "--disable-pip-version-check", str(wheel)], cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp_path)
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (Path(site.stdout.strip()) / "project-dependencies.pth").write_text("\n".join(ours) + "\n")
    return venv


def test_a_wheel_installed_into_a_fresh_venv_trains_sweeps_and_reports(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    tree = {p.relative_to(ROOT).as_posix() for p in (ROOT / "ablate").rglob("*.py")}
    assert tree <= names, f"modules missing from the wheel: {sorted(tree - names)[:5]}"
    for folder in ("conf", "sweeps"):
        shipped = {f"ablate/{p.relative_to(ROOT).as_posix()}" for p in (ROOT / folder).rglob("*.yaml")}
        missing = sorted(shipped - names)[:5]
        assert shipped and not missing, f"{folder}/ missing from the wheel: {missing}"

    venv = _venv_with(wheel, tmp_path)
    work = tmp_path / "elsewhere"  # no conf/, no sweeps/, no ablate/ here
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    ablate = str(venv / "bin" / "ablate")

    python = str(venv / "bin" / "python")
    where = _run([python, "-c", "import ablate; print(ablate.__file__)"], cwd=work, env=env)
    assert Path(where.stdout.strip()).resolve().is_relative_to(venv.resolve()), where.stdout + where.stderr

    job = _run([ablate, "train", "--cfg", "job"], cwd=work, env=env)
    assert job.returncode == 0, job.stdout + job.stderr
    assert "optimizer:" in job.stdout and "trainer:" in job.stdout

    listed = _run([ablate, "sweep"], cwd=work, env=env)
    assert "optimizers_digits" in listed.stdout, listed.stdout + listed.stderr

    swept = _run([ablate, "sweep", "optimizers_digits", "trainer.epochs=1", "n_trials=2", "workers=1"],
                 cwd=work, env=env)
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert (work / "runs" / "optimizers_digits" / "journal.log").is_file()

    reported = _run([ablate, "report", "optimizers_digits"], cwd=work, env=env)
    assert reported.returncode == 0, reported.stdout + reported.stderr
    assert (work / "reports" / "optimizers_digits" / "report.md").is_file()
    assert (work / "reports" / "optimizers_digits" / "report.html").is_file()
