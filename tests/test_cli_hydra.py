"""Hydra's command-line conventions under ``ablate``: flags anywhere among the overrides, ``--info``,
``--cfg`` / ``-p``, ``--config-dir`` and ``hydra.searchpath``, shell completion, ``--version`` and
``--help`` for every command. Each check runs the real console module in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from conftest import require_service
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from tiny_studies import run_ablate, tiny_study

from ablate.config import compose

ABLATE = [sys.executable, "-m", "ablate"]
COMMANDS = ("train", "sweep", "plan", "worker", "report", "ui", "studies", "completion")

OWN_OPTIMIZER = "defaults:\n  - base_sgd\n  - _self_\nname: sgd\nlr: 0.5\n"
OWN_STUDY = tiny_study(workers=None)


ablate = run_ablate


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"rc={done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


@pytest.fixture
def own(tmp_path: Path) -> Path:
    """A folder of the user's own: an optimizer option and a study file."""
    mine = tmp_path / "mine"
    (mine / "optimizer").mkdir(parents=True)
    (mine / "optimizer" / "fast.yaml").write_text(OWN_OPTIMIZER)
    (mine / "mystudy.yaml").write_text(OWN_STUDY)
    (tmp_path / "work").mkdir()
    return mine


def test_flags_after_overrides(tmp_path):
    """Was: ``unrecognized arguments: hydra.job.name=train``."""
    done = ablate(tmp_path, "train", "optimizer=adam", "--cfg", "job", "trainer.epochs=1")
    printed = yaml.safe_load(ok(done))
    assert printed == OmegaConf.to_container(compose(["optimizer=adam", "trainer.epochs=1"]))
    assert printed["optimizer"]["name"] == "adam" and printed["trainer"]["epochs"] == 1
    assert list(tmp_path.iterdir()) == []


def test_bare_info_and_info_searchpath(tmp_path):
    """Was: bare ``--info`` took ``hydra.job.name=train`` as its value and failed."""
    out = ok(ablate(tmp_path, "train", "--info"))
    assert "Config search path" in out and "Defaults List" in out
    out = ok(ablate(tmp_path, "train", "optimizer=adam", "--info", "searchpath"))
    assert "Config search path" in out and "Defaults List" not in out
    assert list(tmp_path.iterdir()) == []


def test_cfg_package_prints_one_part(tmp_path):
    done = ablate(tmp_path, "train", "--cfg", "job", "-p", "optimizer", "optimizer=adam")
    printed = yaml.safe_load(ok(done))
    assert printed == {"name": "adam", "lr": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-08}


@pytest.mark.parametrize("how", ["--config-dir", "-cd", "hydra.searchpath"])
def test_config_dir_adds_the_users_groups(own, how):
    work = own.parent / "work"
    given = ([f"hydra.searchpath=[file://{own}]"] if how == "hydra.searchpath" else [how, str(own)])
    printed = yaml.safe_load(ok(ablate(work, "train", "optimizer=fast", *given, "--cfg", "job")))
    assert printed["optimizer"] == {"name": "sgd", "lr": 0.5, "momentum": 0.0, "nesterov": False}
    help_text = ok(ablate(work, "train", *given, "--help"))
    assert "fast" in help_text.split("== Composed")[0]


def test_config_dir_trains_with_the_users_option(own):
    work = own.parent / "work"
    db = work / "mlflow.db"
    ok(ablate(work, "train", "-cd", str(own), "optimizer=fast", "trainer.epochs=1", "model.depth=1",
              f"tracking.uri=sqlite:///{db}"))
    [run] = MlflowClient(tracking_uri=f"sqlite:///{db}").search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()])
    assert run.data.params["optimizer.lr"] == "0.5" and run.info.status == "FINISHED"


@pytest.mark.parametrize("how", ["--config-dir", "hydra.searchpath"])
def test_config_dir_holds_the_users_studies(own, how):
    work = own.parent / "work"
    given = ([f"hydra.searchpath=[file://{own}]"] if how == "hydra.searchpath" else [how, str(own)])
    printed = yaml.safe_load(ok(ablate(work, "sweep", "mystudy", *given, "--cfg", "n_trials=3")))
    assert printed["n_trials"] == 3 and printed["params"] == {"seed": "range(0, 100)"}
    assert printed["fixed"] == {"trainer.epochs": 1}
    assert not (work / "runs").exists()
    bare = ablate(work, "sweep", "--config-dir", str(own))  # no study: the list of them, exit 2
    assert bare.returncode == 2 and "mystudy" in bare.stdout


def test_sweep_cfg_prints_the_composed_spec(tmp_path):
    """Was: ``--cfg`` refused as an override."""
    from ablate.sweep.spec import compose_study

    printed = yaml.safe_load(ok(ablate(tmp_path, "sweep", "tricks_digits", "--cfg", "workers=3")))
    expected = json.loads(compose_study("tricks_digits", ["workers=3"], cwd=tmp_path).to_json())
    assert printed == expected
    assert yaml.safe_load(ok(ablate(tmp_path, "sweep", "tricks_digits", "--cfg", "-p", "sampler"))) == \
        expected["sampler"]
    assert list(tmp_path.iterdir()) == []


def test_sweep_study_help_shows_its_settings_and_overrides(tmp_path):
    """Was: ``--help`` after the study was refused as an override."""
    out = ok(ablate(tmp_path, "sweep", "tricks_digits", "--help", "n_trials=7"))
    assert out.startswith("usage: ablate sweep tricks_digits")
    assert "n_trials: 7" in out and "workers: 2" in out
    assert "params.optimizer: choice(" in out and "pruner=one of none, median" in out
    assert list(tmp_path.iterdir()) == []


def test_version(tmp_path):
    assert ok(ablate(tmp_path, "--version")).strip() == f"ablate {version('ablate')}"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(tmp_path, command):
    out = ok(ablate(tmp_path, command, "--help"))
    assert out.startswith(f"usage: ablate {command}"), out[:200]
    assert list(tmp_path.iterdir()) == []


def test_top_level_help_lists_every_command(tmp_path):
    out = ok(ablate(tmp_path, "--help"))
    for command in COMMANDS:
        assert command in out


# --- shell completion --------------------------------------------------------------------------------


def _complete(script: Path, line: str, cwd: Path) -> list[str]:
    """Run the completion function in a real bash, as a Tab at the end of ``line`` would."""
    code = (f'source {script}\nCOMP_LINE={json.dumps(line)}\nCOMP_POINT=${{#COMP_LINE}}\n'
            'COMP_WORDS=($COMP_LINE)\nCOMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n'
            '_ablate_complete\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ABLATE_"))}
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", code], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return [w for w in done.stdout.splitlines() if w]


@pytest.mark.parametrize("how", [("completion", "bash"), ("train", "-sc", "install=bash")])
def test_bash_completion_script_is_valid_and_completes(tmp_path, how):
    """Was: ``-sc install=bash`` (advertised by --hydra-help) failed; there was no completion."""
    script = tmp_path / "ablate.bash"
    script.write_text(ok(ablate(tmp_path, *how)))
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "train" in _complete(script, "ablate tr", tmp_path)
    assert _complete(script, "ablate tr", tmp_path) == ["train"]
    assert "optimizer=" in _complete(script, "ablate train opt", tmp_path)
    options = _complete(script, "ablate train optimizer=ad", tmp_path)
    assert options == ["adagrad", "adam", "adamw"]  # bash replaces what follows the '='
    assert "--cfg" in _complete(script, "ablate train optimizer=adam --c", tmp_path)
    assert "tricks_digits" in _complete(script, "ablate sweep tri", tmp_path)
    assert _complete(script, "ablate sweep tricks_digits pruner=hyper", tmp_path) == ["hyperband",
                                                                                       "hyperband_eta5"]


def test_zsh_completion_script_is_valid(tmp_path):
    require_service(shutil.which("zsh") is not None,
                    "zsh is not installed: apt-get install zsh (.ci/run does)")
    script = tmp_path / "ablate.zsh"
    script.write_text(ok(ablate(tmp_path, "completion", "zsh")))
    subprocess.run(["zsh", "-n", str(script)], check=True)
