"""Composition of ``conf/`` with Hydra's compose API: schema registration, Hydra's global state,
``compose`` itself and the one-line recipe summary of a composed config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ablate.config.rules import translate_compose_error, validate
from ablate.config.schema import GROUP_SCHEMAS, Config

__all__ = ["CONF_DIR", "compose", "hydra_at", "is_group", "register_configs", "shipped_folder",
           "store_schemas", "trick_summary"]


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


def store_schemas(name: str, root: type, groups: dict[str, dict[str, type]]) -> None:
    """Register a root schema and its groups' schemas with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name=name, node=root)
    for group, schemas in groups.items():
        for schema_name, schema in schemas.items():
            cs.store(group=group, name=schema_name, node=schema)


def register_configs() -> None:
    """Register every training schema with Hydra's ConfigStore (idempotent)."""
    store_schemas("base_config", Config, GROUP_SCHEMAS)

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
    return "." not in key and (CONF_DIR / key).is_dir()


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
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
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
    return validate(cfg)


def trick_summary(cfg: DictConfig) -> str:
    """One line naming the recipe, e.g. ``mlp d2 w128 relu | init=kaiming | norm=batch | adam lr=0.001``."""
    m = cfg.model
    parts = [f"{cfg.data.name}/{cfg.data.scaling}",
             f"{m.name} d{m.depth} w{m.width} {m.activation}{' +res' if m.residual else ''}",
             f"init={cfg.init.name}", f"norm={cfg.norm}"]
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
