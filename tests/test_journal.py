"""A journal file torn by a power loss or a kill mid-write: repaired on open, never appended onto.

Optuna's ``JournalFileBackend`` writes one JSON record per line, newline-terminated, under a lock. A
final line without its newline (or that is not JSON) is a torn write: ``open_storage`` moves its
bytes aside into ``journal.log.torn-<time>`` and truncates the journal to its last complete record.
A bad record before the last is damage ablate cannot guess around: refused, one line.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from tiny_studies import ABLATE, tiny_study

from ablate import records as R
from ablate.errors import AblateError
from ablate.sweep import open_storage


def _journal(tmp_path: Path, trials: int = 3) -> Path:
    """A real journal: a study with ``trials`` complete trials, written by Optuna itself."""
    path = tmp_path / "journal.log"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    for i in range(trials):
        trial = study.ask()
        trial.suggest_int("seed", 0, 9)
        study.tell(trial, float(i))
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _trials(storage) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=storage).trials


@pytest.mark.parametrize("cut", [1, 10, "line+5"], ids=["newline", "mid-line", "mid-previous-line"])
def test_a_torn_last_record_is_moved_aside_and_the_journal_ends_at_its_last_complete_one(
        tmp_path, capsys, cut):
    path = _journal(tmp_path)
    whole = path.read_bytes()
    last = _lines(path)[-1]
    n = len(last) + 5 if cut == "line+5" else int(cut)
    path.write_bytes(whole[:-n])
    kept = whole[:whole[:-n].rfind(b"\n") + 1]  # up to the last newline left

    storage = open_storage(str(path), heartbeat_interval=None)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "torn" in err[0] and str(path) in err[0], err
    assert path.read_bytes() == kept
    (backup,) = tmp_path.glob("journal.log.torn-*")
    assert backup.read_bytes() == whole[len(kept):-n]
    assert str(backup) in err[0]
    # The repaired journal takes new records on lines of their own, and every process reads them.
    trial = optuna.load_study(study_name="s", storage=storage).ask()
    trial.suggest_int("seed", 0, 9)
    optuna.load_study(study_name="s", storage=storage).tell(trial, 9.0)
    for line in _lines(path):
        assert line.endswith(b"\n") and isinstance(json.loads(line), dict)
    assert _trials(JournalStorage(JournalFileBackend(str(path))))[-1].state == TrialState.COMPLETE
    open_storage(str(path), heartbeat_interval=None)  # nothing more to repair: nothing said
    assert capsys.readouterr().err == ""
    assert len(list(tmp_path.glob("journal.log.torn-*"))) == 1


@pytest.mark.parametrize("tail", [b"", b"{\"op_code\":1,", b"\x00" * 64, b"not json\n"],
                         ids=["whole-lines", "half-record", "zero-filled", "garbage-line"])
def test_only_an_incomplete_or_unreadable_tail_is_torn(tmp_path, capsys, tail):
    path = _journal(tmp_path)
    whole = path.read_bytes()
    path.write_bytes(whole + tail)
    storage = open_storage(str(path), heartbeat_interval=None)
    assert path.read_bytes() == whole
    assert len(_trials(storage)) == 3
    err = capsys.readouterr().err
    backups = list(tmp_path.glob("journal.log.torn-*"))
    if tail:
        assert len(err.strip().splitlines()) == 1 and [b.read_bytes() for b in backups] == [tail]
    else:  # cut just after a newline: nothing torn, nothing moved, nothing said
        assert err == "" and backups == []


def test_each_repair_keeps_its_own_backup(tmp_path, capsys):
    path = _journal(tmp_path)
    whole = path.read_bytes()
    for tail in (b"{\"a\":", b"{\"b\":"):
        path.write_bytes(whole + tail)
        open_storage(str(path), heartbeat_interval=None)
    assert sorted(b.read_bytes() for b in tmp_path.glob("journal.log.torn-*")) == [b"{\"a\":", b"{\"b\":"]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty-line"])
def test_a_corrupt_record_before_the_last_is_refused_naming_the_file_and_line(tmp_path, damage):
    path = _journal(tmp_path)
    lines = _lines(path)
    bad = 4
    lines[bad] = {"garbage": b"#!?\n", "truncated": lines[bad][:20] + b"\n", "empty-line": b"\n"}[damage]
    path.write_bytes(b"".join(lines))
    before = path.read_bytes()
    with pytest.raises(AblateError) as caught:
        open_storage(str(path), heartbeat_interval=None)
    message = str(caught.value)
    offset = len(b"".join(lines[:bad]))
    assert "\n" not in message and str(path) in message
    assert f"line {bad + 1}" in message and f"byte {offset}" in message
    assert path.read_bytes() == before  # left as it was, for the user to look at
    assert list(tmp_path.glob("journal.log.torn-*")) == []


# --- end to end: a finished sweep torn, then the same command again --------------------------------

_TINY = tiny_study()


def _sweep(cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*ABLATE, "sweep", "tiny"], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_sweep_whose_journal_was_torn_resumes_to_exactly_n_trials(tmp_path):
    first = tmp_path / "first"
    (first / "sweeps").mkdir(parents=True)
    (first / "sweeps" / "tiny.yaml").write_text(_TINY)
    out = _sweep(first)
    _, stderr = out.communicate(timeout=300)
    assert out.returncode == 0, stderr
    whole = (first / "runs/tiny/journal.log").read_bytes()
    last = len(whole.splitlines(keepends=True)[-1])
    cuts = {"mid-line": 10, "newline": 1, "after-newline": last, "mid-previous-line": last + 7}
    folders = {}
    for name, cut in cuts.items():  # one copy of the finished sweep per tear, resumed in parallel
        cwd = tmp_path / name
        subprocess.run(["cp", "-a", str(first), str(cwd)], check=True)
        (cwd / "runs/tiny/journal.log").write_bytes(whole[:-cut])
        folders[name] = (cwd, _sweep(cwd))
    for name, (cwd, process) in folders.items():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, (name, stderr)
        assert "Traceback" not in stderr, (name, stderr)
        torn = [line for line in stderr.splitlines() if "torn" in line]
        assert len(torn) == (0 if name == "after-newline" else 1), (name, stderr)
        storage = JournalStorage(JournalFileBackend(str(cwd / "runs/tiny/journal.log")))
        trials = optuna.load_study(study_name="tiny", storage=storage).trials
        assert sum(t.state == TrialState.COMPLETE for t in trials) == 2, (name, trials)
        assert not any(t.state == TrialState.RUNNING for t in trials), name
        client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("tiny")
        parents = [r for r in client.search_runs([experiment.experiment_id])
                   if r.data.tags.get(R.TAG_KIND) == R.KIND_STUDY]
        assert [p.info.status for p in parents] == ["FINISHED"], name
