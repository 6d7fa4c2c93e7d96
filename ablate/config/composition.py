"""Composition of ``conf/`` with Hydra's compose API: schema registration, Hydra's global state,
``compose`` itself and the one-line recipe summary of a composed config.

Search path: the shipped ``conf/``, then ``./conf`` of the working folder, then the folders given
with ``--config-dir`` / ``hydra.searchpath`` (:data:`CONFIG_DIRS_ENV`); their groups add options of
the user's own (``conf/model/mynet.yaml`` is ``model=mynet``). A user option cannot replace a
shipped one of the same name (Hydra's first match would silently win): compose refuses it.
Registered and entry-point models and datasets (:mod:`ablate.registry`) are options too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ablate.config.rules import translate_compose_error, validate
from ablate.config.schema import GROUP_SCHEMAS, Config, DataConfig
from ablate.errors import AblateError
from ablate.menu import MODELS

__all__ = ["CONFIG_DIRS_ENV", "CONF_DIR", "compose", "config_dirs", "hydra_at", "is_group",
           "register_configs", "search_overrides", "shipped_folder", "store_schemas", "trick_summary",
           "user_conf_dir", "user_conf_dirs"]


def shipped_folder(name: str) -> Path:
    """A YAML folder that ships with ablate (``conf``, ``sweeps``), wherever ablate runs from.

    A wheel holds it as package data, ``ablate/<name>`` (see ``[tool.setuptools]`` in
    pyproject.toml); a checkout, and an editable install that runs from one, keep it at the top of
    the repository, beside ``ablate/``.
    """
    package = Path(__file__).resolve().parents[1]
    inside = package / name
    return inside if inside.is_dir() else package.parent / name


CONF_DIR = shipped_folder("conf")


_stored: set[str] = set()


def store_schemas(name: str, root: type, groups: dict[str, dict[str, type]]) -> None:
    """Register a root schema and its groups' schemas with Hydra's ConfigStore, once per process
    (``compose`` calls this every time: storing ~40 dataclass nodes again cost ~7 ms a compose)."""
    from hydra.core.config_store import ConfigStore

    if name in _stored:
        return
    _stored.add(name)
    cs = ConfigStore.instance()
    cs.store(name=name, node=root)
    for group, schemas in groups.items():
        for schema_name, schema in schemas.items():
            cs.store(group=group, name=schema_name, node=schema)


def register_configs() -> None:
    """Register every training schema with Hydra's ConfigStore, and an option for every registered
    or entry-point model and dataset (idempotent)."""
    from hydra.core.config_store import ConfigStore

    from ablate.registry import dataset_options, model_options

    store_schemas("base_config", Config, GROUP_SCHEMAS)
    cs = ConfigStore.instance()
    for name, node in model_options().items():
        cs.store(group="model", name=name, node=node)
    for name, function in dataset_options().items():
        cs.store(group="data", name=name, node=DataConfig(name=name, function=function))


def user_conf_dir(cwd: str | Path | None = None) -> Path | None:
    """The working folder's ``conf/``, searched after the shipped one, when there is one."""
    local = Path(cwd or Path.cwd()).resolve() / "conf"
    return local if local.is_dir() and local != CONF_DIR else None


CONFIG_DIRS_ENV = "ABLATE_CONFIG_DIRS"
"""Folders of the user's own config groups and studies (``--config-dir``), os.pathsep-separated;
an environment variable, so that the workers a sweep starts search them too."""


def config_dirs() -> list[Path]:
    """The folders given with ``--config-dir`` / ``hydra.searchpath`` (:data:`CONFIG_DIRS_ENV`)."""
    text = os.environ.get(CONFIG_DIRS_ENV, "")
    return [Path(p) for p in text.split(os.pathsep) if p]


def user_conf_dirs(cwd: str | Path | None = None) -> list[Path]:
    """Every folder of the user's own options: ``./conf`` (when there is one), then :func:`config_dirs`."""
    local = user_conf_dir(cwd)
    dirs = ([local] if local is not None else []) + [d.resolve() for d in config_dirs()]
    return [d for d in dict.fromkeys(dirs) if d != CONF_DIR]


def search_overrides(cwd: str | Path | None = None) -> list[str]:
    """The Hydra override that adds ``./conf`` and the ``--config-dir`` folders to the search path
    (none without any).

    Raises:
        AblateError: a file in one of them has the name of a shipped option of its group.
    """
    dirs = user_conf_dirs(cwd)
    for local in dirs:
        for path in sorted(local.glob("*/*.yaml")):
            shipped = CONF_DIR / path.parent.name / path.name
            if shipped.is_file():
                raise AblateError(f"{path}: {path.parent.name}={path.stem} is a shipped option; give "
                                  "your own a name of its own")
    if not dirs:
        return []
    return ["hydra.searchpath=[" + ",".join(_quoted("file://" + str(d)) for d in dirs) + "]"]


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def hydra_at(config_dir: Path | str) -> None:
    """Point Hydra's global state at ``config_dir`` once; re-initialising costs more than composing."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    global _initialized_at
    hydra = GlobalHydra.instance()
    if hydra.is_initialized() and _initialized_at == str(config_dir):
        return
    if hydra.is_initialized():
        hydra.clear()
    initialize_config_dir(config_dir=str(config_dir), version_base=None)  # kept, not used as `with`
    _initialized_at = str(config_dir)


_initialized_at: str | None = None


def is_group(key: str) -> bool:
    """True when ``key`` names a config group (``optimizer``), not a field (``optimizer.lr``)."""
    if "." in key:
        return False
    return (CONF_DIR / key).is_dir() or any((d / key).is_dir() for d in user_conf_dirs())


def compose(overrides: Sequence[str] = (), *, config_name: str = "config") -> DictConfig:
    """Compose ``conf/`` with Hydra's compose API, then validate.

    Usable from Python without the CLI::

        cfg = compose(["data=digits", "optimizer=adam", "trainer.epochs=5"])

    Raises:
        ConfigError: an unknown option, a wrong type or an out-of-range value, as one line.
    """
    from hydra import compose as hydra_compose

    register_configs()
    try:
        hydra_at(CONF_DIR)
        cfg = hydra_compose(config_name=config_name, overrides=[*overrides, *search_overrides()])
    except Exception as exc:  # Hydra wraps everything; translate what we can, re-raise the rest
        translated = translate_compose_error(exc)
        if translated is None:
            raise
        raise translated from exc
    if "hydra" in cfg:
        with_hydra = OmegaConf.to_container(cfg, resolve=False)
        assert isinstance(with_hydra, dict)
        with_hydra.pop("hydra", None)
        cfg = OmegaConf.create(with_hydra)
    return check_model(validate(cfg))


def check_model(cfg: DictConfig) -> DictConfig:
    """Resolve a user's model factory and check the recipe against its signature, now rather than
    when the run starts (imports the user's module; the built-in models need nothing)."""
    model = cfg.get("model")
    if model is not None and model.get("name") not in MODELS:
        from ablate.registry import model_call

        model_call(OmegaConf.to_container(model, resolve=True), norm=cfg.get("norm"),  # type: ignore[arg-type]
                   dropout=cfg.get("dropout"))
    return cfg


def trick_summary(cfg: DictConfig) -> str:
    """One line naming the recipe, e.g. ``mlp d2 w128 relu | init=kaiming | norm=batch | adam lr=0.001``."""
    m = cfg.model
    if m.name in MODELS:
        model = f"{m.name} d{m.depth} w{m.width} {m.activation}{' +res' if m.residual else ''}"
    else:  # the user's: its name (or factory) and every field it is given
        given = [f"{k}={v}" for k, v in m.items() if k not in ("name", "factory") and v is not None]
        model = " ".join([str(m.factory if m.name == "custom" else m.name), *given])
    parts = [f"{cfg.data.name}/{cfg.data.scaling}", model, f"init={cfg.init.name}", f"norm={cfg.norm}"]
    if cfg.dropout:
        parts.append(f"dropout={cfg.dropout:g}")
    parts.append(f"{cfg.optimizer.name} lr={cfg.optimizer.lr:g}")
    if cfg.weight_decay:
        parts.append(f"wd={cfg.weight_decay:g}")
    if cfg.l1:
        parts.append(f"l1={cfg.l1:g}")
    if cfg.clip.name != "none":
        to_unit = cfg.clip.get("to") == "unit"
        parts.append(f"clip={cfg.clip.name}({cfg.clip.threshold:g}{' to 1' if to_unit else ''})")
    if cfg.schedule.name != "constant":
        parts.append(f"schedule={cfg.schedule.name}")
    if cfg.early_stopping.patience:
        parts.append(f"early_stop={cfg.early_stopping.patience}")
    if cfg.averaging.name != "none":
        parts.append(f"avg={cfg.averaging.name}")
    return " | ".join(parts)
