"""Where runs go and what produced them: the MLflow experiment and artifact location, the git
commit, library versions and hardware."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import socket
import subprocess
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ablate import records as R
from ablate.errors import AblateError
from ablate.processes import process_alive
from ablate.secrets import redact

__all__ = ["artifact_location", "check_store", "create_store", "environment", "get_or_create_experiment",
           "git_commit", "preload", "relocate_artifacts"]

PROBE_TIMEOUT = 5.0
"""Seconds a store's server may take to accept a connection before it is called unreachable."""

_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mariadb": 3306, "mssql": 1433,
          "http": 80, "https": 443}


@functools.lru_cache(maxsize=8)
def git_commit(cwd: str | Path | None = None) -> str | None:
    """The HEAD commit of the repository holding ``cwd`` (or this package), if any."""
    for where in (cwd, Path(__file__).resolve().parent):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                 text=True, timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    return None


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, str]:
    """Tags that say what produced a run: library versions and the hardware it trained on."""

    def v(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "absent"

    versions = ", ".join(f"{n} {v(n)}" for n in ("ablate", "torch", "optuna", "mlflow", "hydra-core"))
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    hardware = f"CPU: {cpu} ({os.cpu_count()} cores)"
    import torch  # already imported by whoever trains

    if torch.cuda.is_available():
        hardware = f"GPU: {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}; " + hardware
    return {R.TAG_VERSIONS: versions, R.TAG_HARDWARE: hardware, R.TAG_PYTHON: platform.python_version()}


def artifact_location(uri: str) -> str | None:
    """Artifacts of a local SQLite store go beside its database file, not into the working dir."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):]).expanduser().resolve()
        return (db.parent / "mlartifacts").as_uri()
    return None


def relocate_artifacts(uri: str) -> None:
    """Point a moved SQLite store's experiments and runs at the ``mlartifacts`` folder beside it.

    MLflow keeps artifact locations as absolute paths: given a relative one, it resolves it against
    the working folder when the experiment is created (``resolve_uri_if_local``), and a run's
    location is its experiment's plus its id. A project folder that was moved or copied (with
    its ``mlflow.db`` and ``mlartifacts/``) thus points at the old place, which is gone: previews in
    the UI and the report's ``study.json`` fail. An experiment whose location is
    ``<old>/mlartifacts[/...]``, that folder absent, while ``mlartifacts/`` lies beside the database,
    is pointed there with its runs. A location that exists, or is not a ``mlartifacts`` folder (a
    user's own artifact root, a server's), is left alone. Other stores: nothing to do.
    """
    db = sqlite_path(uri)
    here = artifact_location(uri)
    if db is None or here is None or not db.is_file() or not (db.resolve().parent / "mlartifacts").is_dir():
        return
    import sqlite3
    from urllib.parse import unquote

    moves = []
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        try:
            rows = con.execute("SELECT experiment_id, artifact_location FROM experiments").fetchall()
        except sqlite3.Error:
            return  # not (yet) an MLflow store
        for experiment_id, location in rows:
            location = str(location or "")
            head, sep, _ = (location + "/").partition("/mlartifacts/")
            old = head + sep.rstrip("/")  # the old mlartifacts folder, without what follows it
            if not sep or old == here:
                continue
            if Path(unquote(urlsplit(old).path) if old.startswith("file:") else old).exists():
                continue
            moves.append((experiment_id, old, here))
        if not moves:
            return
        with con:
            for experiment_id, old, new in moves:
                con.execute("UPDATE experiments SET artifact_location = ? || substr(artifact_location, ?) "
                            "WHERE experiment_id = ?", (new, len(old) + 1, experiment_id))
                con.execute("UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
                            "WHERE experiment_id = ? AND substr(artifact_uri, 1, ?) = ?",
                            (new, len(old) + 1, experiment_id, len(old), old))


def get_or_create_experiment(client: Any, name: str, uri: str) -> str:
    """The id of experiment ``name`` in the store at ``uri``, created if absent (safe against a race).

    It is a training experiment (``records.TAG_EXPERIMENT_KIND``), so MLflow's UI opens it on its
    runs table; an existing one without the tag gets it, and a moved store's artifact locations
    are brought along (:func:`relocate_artifacts`).
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name, artifact_location=artifact_location(uri),
                                                tags={R.TAG_EXPERIMENT_KIND: R.EXPERIMENT_KIND_TRAINING}))
        except Exception:  # another process created it between our look-up and create
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    experiment_id = str(experiment.experiment_id)
    if R.TAG_EXPERIMENT_KIND not in (getattr(experiment, "tags", None) or {}):
        client.set_experiment_tag(experiment_id, R.TAG_EXPERIMENT_KIND, R.EXPERIMENT_KIND_TRAINING)
    relocate_artifacts(uri)
    return experiment_id


_CREATING = ".creating-"
"""Marks the temporary name a new SQLite store is made under: ``.<db name>.creating-<pid>-<random>``."""


def create_store(uri: str) -> None:
    """Make a missing SQLite MLflow store whole, or not at all; other stores are left to MLflow.

    MLflow creates a missing database in place, running its migrations one after another: a process
    killed meanwhile (Ctrl-C twice, kill -9, a power loss) leaves a half-made database on which
    every later command fails ("duplicate column name: step"). Here the database is made under a
    temporary name in the same folder and linked into place once complete; a link never replaces a
    store another process made meanwhile (theirs is whole too). Temporary databases of processes
    that died while making one are removed.
    """
    db = sqlite_path(uri)
    if db is None or db.exists():
        return
    folder = db.parent
    for stale in folder.glob(f".{db.name}{_CREATING}*"):
        pid = stale.name[len(f".{db.name}{_CREATING}"):].split("-", 1)[0]
        if not pid.isdigit() or not process_alive(int(pid)):
            with contextlib.suppress(OSError):
                stale.unlink()
    fd, tmp = tempfile.mkstemp(prefix=f".{db.name}{_CREATING}{os.getpid()}-", dir=folder)
    os.close(fd)
    os.unlink(tmp)  # SQLite makes the file (or the template is copied); MLflow's migrations fill it
    try:
        template = _store_template()
        if template is None or not _copy_template(template, Path(tmp)):
            from mlflow.tracking import MlflowClient

            MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments(max_results=1)
            if template is not None:
                _save_template(Path(tmp), template)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, db)
    finally:
        for path in (tmp, f"{tmp}-journal", f"{tmp}-wal", f"{tmp}-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _store_template() -> Path | None:
    """Where an empty store made by this MLflow version is kept for copying, or None (no cache folder).

    MLflow makes a store by running its migrations one by one (about a second and a half here, on
    the path of every new study); an empty store of the same MLflow version is the same database
    but for the default experiment's artifact folder and times, so later stores are copies.
    """
    try:
        mlflow_version = version("mlflow")
    except PackageNotFoundError:
        return None
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ablate"
    return cache / f"mlflow-{mlflow_version}-empty-store.db"


def _copy_template(template: Path, target: Path) -> bool:
    """Copy the empty store to ``target`` with the default experiment's folder and times of now
    (as MLflow sets them: ``mlruns/0`` under the working folder); False when there is none to copy."""
    import shutil
    import sqlite3
    import time

    try:
        shutil.copyfile(template, target)
        now = int(time.time() * 1000)
        with contextlib.closing(sqlite3.connect(target, timeout=30)) as con, con:
            con.execute("UPDATE experiments SET artifact_location = ?, creation_time = ?, "
                        "last_update_time = ? WHERE experiment_id = 0",
                        (str(Path.cwd().resolve() / "mlruns" / "0"), now, now))
    except (OSError, sqlite3.Error):
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        return False
    return True


def _save_template(store: Path, template: Path) -> None:
    """Keep a copy of a store MLflow just made (and nothing has written to) as the template."""
    import shutil

    with contextlib.suppress(OSError):
        template.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{template.name}.", dir=template.parent)
        os.close(fd)
        try:
            shutil.copyfile(store, tmp)
            os.replace(tmp, template)  # whole or not at all, as the stores made from it
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def preload() -> None:
    """Import MLflow's client and SQL store now (a standby worker pays its imports while the
    supervisor checks, not in its first trial)."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working folder), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path).expanduser()


def check_store(uri: str, *, read: bool = False) -> None:
    """Refuse, at once and in one line, an MLflow store that cannot be used.

    MLflow itself retries an unreachable database or server for minutes, then raises a traceback
    that may hold the password; this looks first. A ``sqlite:///`` store must be writable (its
    folder: the database and its journal are written there), or with ``read`` (``ablate report``,
    ``ablate ui``) exist, as MLflow would create an empty one. A database or HTTP server must accept
    a TCP connection within :data:`PROBE_TIMEOUT` seconds. Other URIs are left to MLflow.

    Raises:
        AblateError: naming ``tracking.uri`` (its password hidden) and what is wrong.
    """
    db = sqlite_path(uri)
    if db is not None:
        _check_sqlite(uri, db, read=read)
        return
    scheme = uri.partition("://")[0].split("+", 1)[0].lower()
    if scheme not in _PORTS:
        return
    shown = redact(uri)
    try:
        parts = urlsplit(shown)  # the password, hidden, can hold nothing that misleads the parser
        host, port = parts.hostname, parts.port or _PORTS[scheme]
    except ValueError as exc:
        raise AblateError(f"tracking.uri: {shown!r} is not a URL ({exc})") from None
    if not host:
        return  # a local socket, named in the query: MLflow's driver knows how to reach it
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT).close()
    except OSError as exc:
        timed_out = isinstance(exc, TimeoutError)
        reason = f"no answer within {PROBE_TIMEOUT:g} s" if timed_out else exc.strerror or str(exc)
        raise AblateError(f"tracking.uri: cannot reach {shown} ({host}:{port}: {reason}); is the server "
                          "running?") from None


def _revision(db: Path) -> str | None:
    """The schema revision an SQLite MLflow store records (``alembic_version``), None without one."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as con:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


def _check_schema(uri: str, db: Path) -> None:
    """Refuse, in one line, an SQLite store whose schema is not this MLflow version's whole one.

    MLflow would fail on it later with a traceback (``no such column: metrics.step``): a store left
    half-made by a process killed while MLflow created it (before :func:`create_store` made creation
    whole or nothing), made by another MLflow version, or not an MLflow store at all. The expected
    revision is the empty store this MLflow version made (:func:`_store_template`), made once if need
    be; without a cache folder nothing is checked.
    """
    if db.stat().st_size == 0:
        return  # an empty file: MLflow makes its tables in it
    template = _store_template()
    if template is None:
        return
    if not template.exists():
        with tempfile.TemporaryDirectory() as tmp:
            create_store(f"sqlite:///{Path(tmp) / 'empty.db'}")  # keeps its copy as the template
    expected = _revision(template) if template.exists() else None
    found = _revision(db)
    if expected is None or found == expected:
        return
    if found is None:
        raise AblateError(f"tracking.uri: {db} ({redact(uri)}) is not an MLflow store (it has no schema "
                          "revision); move it aside or pass tracking.uri=sqlite:///another.db")
    raise AblateError(f"tracking.uri: {db} ({redact(uri)}) is not a complete store of this MLflow version "
                      f"(schema revision {found}, expected {expected}): left half-made by an interrupted "
                      f"run (move it aside) or made by another MLflow version (upgrade it with: mlflow db "
                      f"upgrade {redact(uri)})")


def _check_sqlite(uri: str, db: Path, *, read: bool) -> None:
    if read:
        if not db.is_file():
            raise AblateError(f"tracking.uri: no MLflow store at {db} ({uri}): nothing was recorded there; "
                              "run ablate train or ablate sweep first, or pass tracking.uri=...")
        _check_schema(uri, db)
        return
    folder = db.parent
    if not folder.is_dir():
        raise AblateError(f"tracking.uri: the folder {folder} of {uri} "
                          f"{'is not a folder' if folder.exists() else 'does not exist'}")
    if db.exists() and not db.is_file():
        raise AblateError(f"tracking.uri: {db} ({uri}) is not a file")
    if db.exists():
        _check_schema(uri, db)
    try:
        tempfile.TemporaryFile(dir=folder).close()  # the modes are not the whole story (root, ro mounts)
        if db.exists():
            open(db, "r+b").close()
    except OSError as exc:
        raise AblateError(f"tracking.uri: cannot write the MLflow store {uri} in the folder "
                          f"{folder.resolve()} ({exc.strerror or exc}); run from a writable folder or pass "
                          "tracking.uri=sqlite:////a/writable/path/mlflow.db") from None
