"""Bad input to every command: exit 2, one line on stderr, no traceback, nothing left behind.

One table (:data:`CASES`) of bad inputs across ``train``, ``sweep``, ``report``, ``worker`` and ``ui``;
each row is the command line, what to put in the working folder first, and what the one line must
name. Every selected row's process is started when the module begins (a few at a time: each pays
its imports) and a test waits for its own: add a row to check one more bad input.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ABLATE = [sys.executable, "-m", "ablate"]
NO_CUDA = None if not torch.cuda.is_available() else "this machine has CUDA"
NO_MPS = None if not torch.backends.mps.is_available() else "this machine has MPS"
NO_CUDA_7 = None if torch.cuda.device_count() < 8 else "this machine has 8 CUDA devices"
SECRET = "s3cret"
PG = f"postgresql://u:{SECRET}@127.0.0.1:9/x"  # nothing listens on port 9 (discard)
HTTP = "http://127.0.0.1:9"
UNSET = "${oc.env:NOPE_NOT_SET}"
TIMEOUT = 90  # a run that retries for minutes fails here
FAST = 30  # seconds an unreachable store may take to be refused, on a loaded machine

STUDY = """\
defaults:
  - base_study
  - sampler: random
  - pruner: none
  - _self_
n_trials: 2
workers: 1
fixed:
  trainer.epochs: 1
params:
  seed: range(0, 100)
"""

ABLATION = """\
defaults:
  - base_study
  - sampler: random
  - pruner: none
  - _self_
design: leave_one_out
seeds: 3
fixed:
  trainer.epochs: 1
reference: {norm: batch}
tricks: {norm: null}
"""


def assert_one_line_error(rc: int, stderr: str, before: list[str], after: list[str],
                          names: str = "") -> None:
    """Exit 2, exactly one non-empty stderr line starting ``ablate: error:`` that holds ``names``,
    no traceback, no password, and the working folder as it was (no store, runs/ or report)."""
    assert "Traceback" not in stderr, stderr
    assert rc == 2, f"rc={rc}\n{stderr}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and len(stderr.strip().splitlines()) == 1, stderr
    assert lines[0].startswith("ablate: error: "), lines[0]
    assert names in lines[0], lines[0]
    assert SECRET not in stderr
    assert after == before, f"files left: {sorted(set(after) - set(before))}"


# --- what a row puts in its working folder -----------------------------------------------------------


def _study(body: str = STUDY, name: str = "x") -> Callable[[Path], None]:
    def setup(cwd: Path) -> None:
        (cwd / "sweeps").mkdir(exist_ok=True)
        (cwd / "sweeps" / f"{name}.yaml").write_text(body)
    return setup


def _file(name: str, text: str = "not a folder\n") -> Callable[[Path], None]:
    return lambda cwd: (cwd / name).write_text(text)


def _empty_store(cwd: Path) -> None:
    (cwd / "sub").mkdir()


def _corrupt_journal(cwd: Path) -> None:
    """A journal whose second record is damaged (not the last one: no torn write)."""
    _study()(cwd)
    (cwd / "runs" / "x").mkdir(parents=True)
    records = ['{"op_code":0,"worker_id":"w","study_name":"x","directions":[1]}',
               '{"op_code":4,"worker_id":"w","study_id":0,"datet',
               '{"op_code":4,"worker_id":"w","study_id":0,"datetime_start":"2025-01-01T00:00:00"}']
    (cwd / "runs" / "x" / "journal.log").write_text("\n".join(records) + "\n")


def _other_study_journal(cwd: Path) -> None:
    """A sound journal holding study ``other`` only."""
    record = '{"op_code":0,"worker_id":"w","study_name":"other","directions":[1]}'
    (cwd / "journal.log").write_text(record + "\n")


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    names: str = ""  # what the one line must hold (the field, the file)
    setup: Callable[[Path], None] | None = None
    read_only: bool = False  # the working folder is read-only while the command runs
    fast: bool = False  # must be refused within FAST seconds (a store that does not answer)
    skip: str | None = None  # why the row does not apply on this machine (it has the device asked for)


def _c(*args: str, names: str = "", **kw) -> Case:
    return Case(tuple(args), names, **kw)


CASES: dict[str, Case] = {
    # ablate train: a bad field value, option, type or group, checked before anything is written
    "train-unknown-optimizer": _c("train", "optimizer=nope", names="optimizer"),
    "train-unknown-group-option": _c("train", "data=nope", names="data"),
    "train-unknown-averaging": _c("train", "averaging=nope", names="averaging"),
    "train-unknown-init": _c("train", "init=nope", names="init"),
    "train-unknown-field": _c("train", "nope.field=1", names="nope"),
    "train-negative-lr": _c("train", "optimizer.lr=-1", names="optimizer.lr"),
    "train-lr-not-a-number": _c("train", "optimizer.lr=abc", names="optimizer.lr"),
    "train-depth-zero": _c("train", "model.depth=0", names="model.depth"),
    "train-epochs-zero": _c("train", "trainer.epochs=0", names="trainer.epochs"),
    "train-batch-zero": _c("train", "trainer.batch_size=0", names="trainer.batch_size"),
    "train-negative-seed": _c("train", "seed=-1", names="seed"),
    "train-seed-not-a-number": _c("train", "seed=abc", names="seed"),
    "train-seed-float": _c("train", "seed=1.5", names="seed"),
    "train-bad-norm": _c("train", "norm=bogus", names="norm"),
    "train-dropout-above-one": _c("train", "dropout=1.5", names="dropout"),
    "train-bad-clip-target": _c("train", "clip.to=nowhere", names="clip.to"),
    "train-gamma-zero": _c("train", "schedule=exponential", "schedule.gamma=0", names="schedule.gamma"),
    "train-bad-monitor": _c("train", "early_stopping.monitor=test_acc", names="early_stopping.monitor"),
    "train-val-fraction": _c("train", "data.val_fraction=1.5", names="data.val_fraction"),
    "train-flush-negative": _c("train", "tracking.flush_every=-1", names="tracking.flush_every"),
    "train-bad-override-grammar": _c("train", "optimizer.lr=[1", names="override"),
    "train-multirun-bad-option": _c("train", "-m", "optimizer=sgd,nope", names="optimizer"),
    "train-bad-device-name": _c("train", "trainer.device=tpu", names="trainer.device"),
    "train-cuda-without-cuda": _c("train", "trainer.device=cuda", names="trainer.device", skip=NO_CUDA),
    "train-cuda-index-absent": _c("train", "trainer.device=cuda:7", names="trainer.device", skip=NO_CUDA_7),
    "train-mps-without-mps": _c("train", "trainer.device=mps", names="trainer.device", skip=NO_MPS),
    "train-multirun-cuda": _c("train", "-m", "trainer.device=cpu,cuda", names="trainer.device",
                              skip=NO_CUDA),
    "train-unset-env": _c("train", f"tracking.uri={UNSET}", names="NOPE_NOT_SET"),
    "train-unset-env-field": _c("train", f"optimizer.lr={UNSET}", names="NOPE_NOT_SET"),
    "train-postgres-unreachable": _c("train", f"tracking.uri={PG}", names="tracking.uri", fast=True),
    "train-http-unreachable": _c("train", f"tracking.uri={HTTP}", names="127.0.0.1:9", fast=True),
    "train-sqlite-missing-folder": _c("train", "tracking.uri=sqlite:///nowhere/mlflow.db",
                                      names="nowhere", fast=True),
    "train-sqlite-under-a-file": _c("train", "tracking.uri=sqlite:///f/mlflow.db", names="f",
                                    setup=_file("f"), fast=True),
    "train-read-only-folder": _c("train", "trainer.epochs=1", names="tracking.uri", read_only=True,
                                 fast=True),
    # a search space under ablate train points to ablate sweep; a list needs -m
    "train-multirun-interval": _c("train", "-m", "optimizer.lr=interval(0.001,0.1)", names="ablate sweep"),
    "train-interval": _c("train", "optimizer.lr=interval(0.001,0.1)", names="optimizer.lr"),
    "train-multirun-tag-log": _c("train", "-m", "optimizer.lr=tag(log,interval(0.001,0.1))",
                                 names="ablate sweep"),
    "train-multirun-shuffle": _c("train", "-m", "seed=shuffle(1,2)", names="seed"),
    "train-choice-without-m": _c("train", "optimizer=choice(sgd,adam)", names="-m"),
    "train-range-without-m": _c("train", "seed=range(0,3)", names="seed"),
    "train-list-without-m": _c("train", "seed=1,2", names="seed"),
    # Hydra's flags
    "train-info-bad": _c("train", "--info", "nope", names="--info"),
    "train-cfg-bad": _c("train", "--cfg", "nope", names="--cfg"),
    "train-config-dir-missing": _c("train", "-cd", "nowhere", "--cfg", "job", names="nowhere"),
    "train-searchpath-pkg": _c("train", "hydra.searchpath=[pkg://x]", names="hydra.searchpath"),
    "train-searchpath-not-a-list": _c("train", "hydra.searchpath=file://x", names="hydra.searchpath"),
    "train-config-dir-shadows": _c("train", "-cd", "mine", names="optimizer=adam",
                                   setup=lambda cwd: ((cwd / "mine" / "optimizer").mkdir(parents=True),
                                                      (cwd / "mine" / "optimizer" / "adam.yaml").write_text(
                                                          "name: adam\n"))),
    "train-shell-completion-bad": _c("train", "-sc", "install=fish", names="--shell-completion"),
    "train-config-name-refused": _c("train", "-cn", "other", names="-cn"),
    "completion-bad-shell": _c("completion", "fish", names="fish"),
    "sweep-cfg-bad-package": _c("sweep", "x", "--cfg", "-p", "nope", names="--package", setup=_study()),
    "sweep-override-before-study": _c("sweep", "n_trials=3", "x", names="study", setup=_study()),
    # ablate sweep
    "sweep-bad-yaml": _c("sweep", "x", names="x.yaml", setup=_study(STUDY + "n_trials: [2\n  bad: : x\n")),
    "sweep-bad-yaml-tab": _c("sweep", "x", names="x.yaml", setup=_study(STUDY + "\tworkers: 2\n")),
    "sweep-yaml-not-a-mapping": _c("sweep", "x", names="x", setup=_study("- a\n- b\n")),
    "sweep-unset-env-in-file": _c("sweep", "x", names="NOPE_NOT_SET",
                                  setup=_study(STUDY + f"timeout: {UNSET}\n")),
    "sweep-unset-env": _c("sweep", "x", f"tracking.uri={UNSET}", names="NOPE_NOT_SET", setup=_study()),
    "sweep-unset-env-study-field": _c("sweep", "x", f"n_trials={UNSET}", names="NOPE_NOT_SET",
                                      setup=_study()),
    "sweep-no-such-study": _c("sweep", "nope", names="study"),
    "sweep-name-is-a-path": _c("sweep", "../evil", names="study"),
    "sweep-bad-sampler": _c("sweep", "x", "sampler=annealing", names="sampler", setup=_study()),
    "sweep-bad-pruner": _c("sweep", "x", "pruner=wall", names="pruner", setup=_study()),
    # the sampler and pruner are built once by the supervisor, before anything is created
    "sweep-grid-over-interval": _c("sweep", "x", "sampler=grid", names="params.optimizer.lr",
                                   setup=_study(STUDY + "  optimizer.lr: interval(0.001, 0.1)\n")),
    "sweep-bruteforce-over-interval": _c("sweep", "x", "sampler=bruteforce", names="params.optimizer.lr",
                                         setup=_study(STUDY + "  optimizer.lr: interval(0.001, 0.1)\n")),
    "sweep-threshold-without-bounds": _c("sweep", "x", "pruner=threshold", "pruner.lower=null",
                                         names="pruner", setup=_study()),
    "sweep-pruner-option-refused": _c("sweep", "x", "pruner=median", "pruner.n_startup_trials=-1",
                                      names="n_startup_trials", setup=_study()),
    "sweep-sampler-option-refused": _c("sweep", "x", "sampler=qmc", "sampler.qmc_type=nope",
                                       names="qmc_type", setup=_study()),
    "sweep-data-files-absent": _c("sweep", "x", "+fixed.data=mnist", names="data.root", setup=_study()),
    "sweep-cuda-without-cuda": _c("sweep", "x", "+fixed.trainer.device=cuda", names="trainer.device",
                                  setup=_study(), skip=NO_CUDA),
    "sweep-devices-absent": _c("sweep", "x", "devices=[7]", names="devices", setup=_study(), skip=NO_CUDA_7),
    "sweep-seeds-zero": _c("sweep", "x", "seeds=0", names="seeds", setup=_study(ABLATION)),
    "sweep-seeds-not-a-schedule": _c("sweep", "x", "seeds={start:3,step:2}", names="seeds",
                                     setup=_study(ABLATION)),
    "sweep-seeds-start-one": _c("sweep", "x", "seeds={start:1,step:2,max:9}", names="seeds.start",
                                setup=_study(ABLATION)),
    "sweep-seeds-step-zero": _c("sweep", "x", "seeds={start:3,step:0,max:9}", names="seeds.step",
                                setup=_study(ABLATION)),
    "sweep-seeds-max-below-start": _c("sweep", "x", "seeds={start:5,step:2,max:3}", names="seeds.max",
                                      setup=_study(ABLATION)),
    "sweep-seeds-adaptive-factorial": _c("sweep", "x", "design=factorial", "seeds={start:3,step:2,max:9}",
                                         names="seeds", setup=_study(ABLATION)),
    "sweep-fuse-seeds-zero": _c("sweep", "x", "fuse_seeds=0", names="fuse_seeds", setup=_study(ABLATION)),
    "sweep-fuse-seeds-word": _c("sweep", "x", "fuse_seeds=many", names="fuse_seeds", setup=_study(ABLATION)),
    "sweep-fuse-seeds-on-a-search": _c("sweep", "x", "fuse_seeds=4", names="fuse_seeds", setup=_study()),
    "sweep-repeats-zero": _c("sweep", "x", "repeats=0", names="repeats", setup=_study()),
    "sweep-repeats-on-an-ablation": _c("sweep", "x", "repeats=3", names="repeats", setup=_study(ABLATION)),
    "sweep-repeats-over-a-searched-seed": _c("sweep", "x", "repeats=3", names="repeats", setup=_study()),
    "sweep-zero-trials": _c("sweep", "x", "n_trials=0", names="n_trials", setup=_study()),
    "sweep-zero-workers": _c("sweep", "x", "workers=0", names="workers", setup=_study()),
    "sweep-bad-direction": _c("sweep", "x", "direction=sideways", names="direction", setup=_study()),
    "sweep-negative-timeout": _c("sweep", "x", "timeout=-1", names="timeout", setup=_study()),
    "sweep-heartbeat-zero": _c("sweep", "x", "heartbeat_interval=0", names="heartbeat_interval",
                               setup=_study()),
    "sweep-bad-param-range": _c("sweep", "x", "params.dropout=interval(0.0, 1.5)", names="params.dropout",
                                setup=_study()),
    "sweep-bad-fixed-option": _c("sweep", "x", "optimizer=nope", names="optimizer", setup=_study()),
    "sweep-bad-name": _c("sweep", "x", "name=a/b", names="name", setup=_study()),
    "sweep-storage-unreachable": _c("sweep", "x", f"storage={PG}", names="storage", setup=_study(),
                                    fast=True),
    "sweep-tracking-unreachable": _c("sweep", "x", f"tracking.uri={HTTP}", names="tracking.uri",
                                     setup=_study(), fast=True),
    "sweep-corrupt-journal": _c("sweep", "x", names="journal.log", setup=_corrupt_journal),
    "sweep-read-only-folder": _c("sweep", "x", names="tracking.uri", setup=_study(), read_only=True),
    "sweep-bad-device-name": _c("sweep", "x", "trainer.device=tpu", names="trainer.device", setup=_study()),
    # ablate report
    "report-no-store": _c("report", "x", names="mlflow.db"),
    "report-no-store-experiment": _c("report", "--experiment", "e", names="mlflow.db"),
    "report-no-study-nor-selection": _c("report", names="study"),
    "report-unset-env": _c("report", "x", f"tracking.uri={UNSET}", names="NOPE_NOT_SET"),
    "report-out-is-a-file": _c("report", "x", "--out", "f", names="--out", setup=_file("f")),
    "report-out-under-a-file": _c("report", "x", "--out", "f/reports", names="--out", setup=_file("f")),
    "report-out-read-only": _c("report", "x", "--out", ".", names="--out", read_only=True),
    "report-bad-format": _c("report", "x", "--format", "pdf", names="format"),
    "report-bad-target": _c("report", "x", "--target", "2", names="target"),
    "report-target-not-a-number": _c("report", "x", "--target", "abc", names="--target"),
    "report-bad-tag": _c("report", "--tag", "novalue", names="tag"),
    "report-postgres-unreachable": _c("report", "x", f"tracking.uri={PG}", names="tracking.uri", fast=True),
    "report-http-unreachable": _c("report", "x", f"tracking.uri={HTTP}", names="tracking.uri", fast=True),
    "report-sqlite-missing": _c("report", "x", "tracking.uri=sqlite:///sub/other.db", names="other.db",
                                setup=_empty_store),
    # ablate worker
    # ablate plan: the study is composed and checked as sweep does; nothing is created
    "plan-unknown-study": _c("plan", "nope", names="study"),
    "plan-name-is-a-path": _c("plan", "../evil", names="study"),
    "plan-seeds-zero": _c("plan", "x", "seeds=0", names="seeds", setup=_study(ABLATION)),
    "plan-bad-schedule": _c("plan", "x", "seeds={start:1,step:2,max:5}", names="seeds.start",
                            setup=_study(ABLATION)),
    "plan-corrupt-journal": _c("plan", "x", names="journal.log", setup=_corrupt_journal),
    "worker-name-is-a-path": _c("worker", "../evil", "--storage", "journal.log", names="study"),
    "worker-no-journal": _c("worker", "x", "--storage", "journal.log", names="journal.log"),
    "worker-no-journal-folder": _c("worker", "x", "--storage", "nowhere/journal.log", names="storage"),
    "worker-storage-unreachable": _c("worker", "x", "--storage", PG, names="storage", fast=True),
    "worker-index-not-a-number": _c("worker", "x", "--index", "abc", names="--index"),
    "worker-deadline-not-a-number": _c("worker", "x", "--deadline", "soon", names="--deadline"),
    "worker-no-study": _c("worker", names="study"),
    "worker-study-not-in-journal": _c("worker", "x", "--storage", "journal.log", names="'x'",
                                      setup=_other_study_journal),
    # ablate ui
    "ui-port-too-big": _c("ui", "--port", "99999", names="--port"),
    "ui-port-zero": _c("ui", "--port", "0", names="--port"),
    "ui-port-negative": _c("ui", "--port", "-5", names="--port"),
    "ui-port-not-a-number": _c("ui", "--port", "abc", names="--port"),
    "ui-port-in-use": _c("ui", "--port", "{busy_port}", names="{busy_port}"),
    "ui-no-store": _c("ui", "--port", "{free_port}", names="mlflow.db"),
    "ui-unset-env": _c("ui", "--port", "{free_port}", f"tracking.uri={UNSET}", names="NOPE_NOT_SET"),
    "ui-postgres-unreachable": _c("ui", "--port", "{free_port}", f"tracking.uri={PG}", names="tracking.uri",
                                  fast=True),
    "ui-unknown-option": _c("ui", "--bogus", names="--bogus"),
    # ablate dashboard
    "dashboard-absent": _c("dashboard", "nope", "--port", "{free_port}", names="nope"),
    "dashboard-no-name": _c("dashboard", names="study"),
    "dashboard-name-is-a-path": _c("dashboard", "../evil", names="study"),
    "dashboard-not-in-storage": _c("dashboard", "nope", "--storage", "journal.log", "--port", "{free_port}",
                                   names="nope", setup=_other_study_journal),
    "dashboard-storage-missing": _c("dashboard", "x", "--storage", "nowhere/journal.log", names="storage"),
    "dashboard-port-in-use": _c("dashboard", "other", "--storage", "journal.log", "--port", "{busy_port}",
                                names="{busy_port}", setup=_other_study_journal),
    "dashboard-port-not-a-number": _c("dashboard", "x", "--port", "abc", names="--port"),
    # ablate studies
    "studies-show-absent": _c("studies", "show", "nope", names="nope"),
    "studies-show-no-name": _c("studies", "show", names="study"),
    "studies-bad-action": _c("studies", "rename", "x", names="rename"),
    "studies-name-is-a-path": _c("studies", "show", "../evil", names="study"),
    "studies-delete-absent": _c("studies", "delete", "nope", "--yes", names="nope"),
    "studies-storage-unreachable": _c("studies", "--storage", PG, names="storage", fast=True),
    "studies-storage-missing": _c("studies", "--storage", "nowhere/journal.log", names="storage"),
    "studies-delete-without-yes": _c("studies", "delete", "other", "--storage", "journal.log", names="--yes",
                                     setup=_other_study_journal),
    # the command itself
    "unknown-command": _c("bogus", names="bogus"),
}


# --- running the table -------------------------------------------------------------------------------


@dataclass
class Outcome:
    rc: int
    stderr: str
    before: list[str]
    after: list[str]
    seconds: float
    names: str


def _listing(cwd: Path) -> list[str]:
    return sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*"))


@contextlib.contextmanager
def _read_only(cwd: Path) -> Iterator[None]:
    """``cwd`` read-only: its mode for a user, a read-only bind mount for root (who ignores modes)."""
    if os.geteuid() != 0:
        cwd.chmod(0o555)
        try:
            yield
        finally:
            cwd.chmod(0o755)
        return
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(cwd), str(cwd)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot make a read-only folder as root: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(cwd)], check=False)


def _run(case: Case, cwd: Path, ports: dict[str, int]) -> Outcome:
    if case.setup is not None:
        case.setup(cwd)
    def fill(text: str) -> str:
        for name, port in ports.items():
            text = text.replace(f"{{{name}}}", str(port))
        return text

    args = [fill(a) for a in case.args]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ABLATE_"))}
    env.pop("NOPE_NOT_SET", None)
    before = _listing(cwd)
    guard = _read_only(cwd) if case.read_only else contextlib.nullcontext()
    with guard:
        started = time.monotonic()
        try:
            done = subprocess.run([*ABLATE, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=TIMEOUT, check=False)
            rc, stderr = done.returncode, done.stderr
        except subprocess.TimeoutExpired as exc:
            rc, stderr = -1, f"still running after {TIMEOUT} s\n{exc.stderr or ''}"
        seconds = time.monotonic() - started
    return Outcome(rc, stderr, before, _listing(cwd), seconds, fill(case.names))


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> Iterator[dict[str, Future[Outcome]]]:
    """Every selected row started now, four processes at a time; each test waits for its own."""
    selected = [item.callspec.params["case"] for item in request.session.items
                if getattr(item, "module", None) is request.module and hasattr(item, "callspec")
                and "case" in item.callspec.params]
    with socket.socket() as busy, socket.socket() as free:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        free.bind(("127.0.0.1", 0))
        ports = {"busy_port": busy.getsockname()[1], "free_port": free.getsockname()[1]}
        free.close()  # a port nobody holds (the command must fail on something else first)
        root = tmp_path_factory.mktemp("errors")
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {}
            for name in dict.fromkeys(selected):
                if CASES[name].skip:
                    continue
                cwd = root / name
                cwd.mkdir()
                futures[name] = pool.submit(_run, CASES[name], cwd, ports)
            yield {name: futures[name] for name in futures}
            for future in futures.values():
                future.cancel()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(outcomes, case):
    if CASES[case].skip:
        pytest.skip(CASES[case].skip)
    outcome = outcomes[case].result()
    assert_one_line_error(outcome.rc, outcome.stderr, outcome.before, outcome.after, outcome.names)
    if CASES[case].fast:
        assert outcome.seconds < FAST, f"refused after {outcome.seconds:.0f} s"


def test_the_table_is_large():
    assert len(CASES) >= 60


@pytest.mark.skipif(NO_CUDA is not None, reason=NO_CUDA or "")
def test_train_one_refuses_cuda_before_loading_data_or_opening_a_run(tmp_path):
    from ablate.config import compose
    from ablate.errors import ConfigError
    from ablate.run import train_one

    db = tmp_path / "mlflow.db"
    cfg = compose(["trainer.device=cuda", f"tracking.uri=sqlite:///{db}", f"data.root={tmp_path / 'data'}"])
    with pytest.raises(ConfigError, match=r"trainer\.device"):
        train_one(cfg)
    assert list(tmp_path.iterdir()) == []
