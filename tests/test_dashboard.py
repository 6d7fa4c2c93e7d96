"""``ablate dashboard <study>``: optuna-dashboard served on 127.0.0.1 for a real study's journal."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tiny_studies import tiny_study

ABLATE = [sys.executable, "-m", "ablate.cli"]


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding one tiny finished study, ``tiny`` (2 trials of 1 epoch on digits)."""
    cwd = tmp_path_factory.mktemp("dashboard")
    (cwd / "sweeps").mkdir()
    (cwd / "sweeps" / "tiny.yaml").write_text(tiny_study(fixed={"trainer.threads": 1}))
    out = subprocess.run([*ABLATE, "sweep", "tiny"], cwd=cwd, capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert "Optuna:  ablate dashboard tiny" in out.stdout  # what the summary tells users to run
    return cwd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read()) if response.status == 200 else None
    except OSError:
        return None


def test_ablate_dashboard_serves_the_study_with_its_metric_named(study_folder, tmp_path):
    port = _free_port()
    with (tmp_path / "dashboard.log").open("w") as log:
        server = subprocess.Popen([*ABLATE, "dashboard", "tiny", "--port", str(port)], cwd=study_folder,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while (found := _get(f"http://127.0.0.1:{port}/api/studies")) is None:
            log_text = (tmp_path / "dashboard.log").read_text()
            assert server.poll() is None and time.monotonic() < deadline, log_text
            time.sleep(0.3)
        (study,) = found["study_summaries"]
        assert study["study_name"] == "tiny"
        detail = _get(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}")
        assert detail is not None and len(detail["trials"]) == 2
        assert detail["objective_names"] == ["val_acc"]  # not "Objective 0"
        assert f"127.0.0.1:{port}" in (tmp_path / "dashboard.log").read_text()  # where to point a browser
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_ablate_dashboard_refuses_a_busy_port_in_one_line(study_folder):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([*ABLATE, "dashboard", "tiny", "--port", str(port)], cwd=study_folder,
                             capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--port" in out.stderr, out.stderr


def test_the_stored_spec_is_one_compact_line_that_reads_back(study_folder):
    """optuna-dashboard lists study attributes as they are stored: the recipe is one compact line
    (not a 75-200 line indented document), and every reader still gets the same spec from it."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from ablate import records as R
    from ablate.sweep import StudySpec
    from ablate.sweep.spec import compose_study

    storage = JournalStorage(JournalFileBackend(str(study_folder / "runs" / "tiny" / "journal.log")))
    text = optuna.load_study(study_name="tiny", storage=storage).user_attrs[R.ATTR_SPEC]
    assert "\n" not in text and text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    spec = StudySpec.from_json(text)
    assert spec.name == "tiny" and spec.to_json() == text
    design = compose_study("ablation_digits", [])
    assert StudySpec.from_json(design.to_json()).recipe == design.recipe
