"""``ablate train``: one recipe (or, with ``-m``, every combination) through Hydra's own ``main``."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
from typing import Any

from ablate.cli.common import (
    INFO_CHOICES,
    config_dir_flag,
    fail,
    optional_values,
    overrides_arg,
    print_flags,
    searchpath,
)
from ablate.cli.completion import completion_install
from ablate.errors import AblateError


def _parse(overrides: Sequence[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ablate.config import translate_compose_error

    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except Exception as exc:
        err = translate_compose_error(exc)
        raise (err or AblateError(" ".join(str(exc).split()))) from exc


def check_train_overrides(overrides: Sequence[str], multirun: bool) -> list[Any]:
    """Refuse a search space under ``ablate train`` (``interval(...)`` and ``tag(...)``: ``ablate sweep``
    searches them), and a list of values without ``-m``: one line naming the key.

    ``choice(...)``, ``range(...)`` and ``a,b`` are lists Hydra's ``-m`` runs one by one, as ablate's.
    """
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, ValueType

    parsed = _parse(overrides)
    for text, o in zip(overrides, parsed, strict=True):
        if not o.is_sweep_override():
            continue
        key, value = o.get_key_element(), text.partition("=")[2]
        sweep = o._value
        shuffled = isinstance(sweep, ChoiceSweep) and sweep.shuffle
        if isinstance(sweep, IntervalSweep) or sweep.tags or shuffled:
            raise AblateError(f"{key}: {value!r} is a search space, which ablate train does not search; "
                              f"search it with ablate sweep <study> params.{key}='{value}'")
        if not multirun:
            kind = "list" if o.value_type == ValueType.SIMPLE_CHOICE_SWEEP else "sweep"
            raise AblateError(f"{key}: {value!r} is a {kind} of values; add -m to train each one, or "
                              f"search it with ablate sweep <study> params.{key}='{value}'")
    return parsed


def _expand(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Every combination a multirun will launch (a single one otherwise)."""
    parsed = check_train_overrides(overrides, multirun)
    if not multirun:
        return [overrides]
    choices = []
    for o in parsed:
        key = o.get_key_element()
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        choices.append([f"{key}={v}" for v in values])
    return [list(c) for c in itertools.product(*choices)]


def _validate_all(overrides: list[str], multirun: bool) -> None:
    """Compose every run a (multi)run will launch: a typo, a device this machine lacks or a store that
    cannot be written fails before the first run starts."""
    from ablate.config import compose

    combos = _expand(overrides, multirun)
    devices, uris = set(), set()
    for combo in combos[:256]:
        cfg = compose(combo)
        devices.add(cfg.trainer.device)
        uris.add(cfg.tracking.uri)
    if devices - {"auto", "cpu"}:
        from ablate.train import check_device  # torch: paid only when a run asks for an accelerator

        for device in sorted(devices):
            check_device(device)
    from ablate.tracking.store import check_store

    for uri in sorted(uris):
        check_store(uri)


def _train_help(overrides: list[str]) -> int:
    """The trick menu (every group's options, from conf/) and the config the overrides compose."""
    from omegaconf import OmegaConf

    from ablate.config import CONF_DIR, compose, user_conf_dirs
    from ablate.menu import CLIP_TARGETS, NORMS

    cfg = compose(overrides)
    print("usage: ablate train [-m] [--cfg job [-p KEY]] [--info] [-cd DIR] [key=value ...]\n")
    print("Train one recipe and record it in MLflow. Pick one option per trick family (group=option),")
    print("set any field (optimizer.lr=0.01); with -m, comma lists (or choice(...), range(...)) run every")
    print("combination. Hydra's flags work anywhere among the overrides: --cfg job prints the composed")
    print("config, -p KEY one part of it, --info what Hydra searched, -cd DIR adds your own groups,")
    print("--hydra-help Hydra's own help, -sc install=bash the shell completion.\n")
    print("== Trick families (group: options) ==")
    local = user_conf_dirs()
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir()):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        own = sorted(f.stem for d in local for f in (d / group.name).glob("*.yaml"))
        yours = f"; yours ({', '.join(str(d) for d in local)}): {', '.join(own)}" if own else ""
        print(f"  {group.name}: {', '.join(options)}{yours}")
    # Plain fields (no config group), listed from the menu.
    print(f"  norm: {', '.join(NORMS)}")
    print(f"  clip.to: {', '.join(CLIP_TARGETS)} "
          "(with clip=norm: above clip.threshold, rescale to it or to 1)\n")
    print("== Composed config (every field can be overridden) ==")
    print(OmegaConf.to_yaml(cfg), end="")
    return 0


def add_train(sub: Any) -> None:
    train = sub.add_parser("train", add_help=False, help="train one recipe (Hydra overrides)",
                           description="Train one recipe and record it in MLflow.")
    train.add_argument("--help", "-h", action="store_true", help="the trick menu and the composed config")
    train.add_argument("--hydra-help", action="store_true", help="Hydra's own help")
    train.add_argument("--multirun", "-m", action="store_true", help="run every combination of comma lists")
    print_flags(train, "config")
    train.add_argument("--info", "-i", nargs="?", const="all", metavar="|".join(INFO_CHOICES),
                       help="print Hydra's information (search path, defaults) instead of running")
    train.add_argument("--run", "-r", action="store_true", help="run one job (the default)")
    train.add_argument("--shell-completion", "-sc", action="store_true",
                       help="with install=bash or install=zsh: print the shell completion script")
    config_dir_flag(train)
    for flag, short in (("--config-name", "-cn"), ("--config-path", "-cp")):  # refused, with a reason
        train.add_argument(flag, short, help=argparse.SUPPRESS)
    overrides_arg(train, "Hydra overrides: optimizer=adam norm=batch optimizer.lr=0.01")
    train.set_defaults(run=_train)


def _train(ns: argparse.Namespace) -> int:
    optional_values(ns, {"cfg": ("job", "hydra", "all"), "info": INFO_CHOICES})
    for flag, value in (("-cn/--config-name", ns.config_name), ("-cp/--config-path", ns.config_path)):
        if value is not None:
            raise AblateError(f"{flag}: {value!r} is not allowed; ablate composes its own primary config: "
                              "add your own groups with --config-dir DIR")
    overrides: list[str] = ns.overrides
    if ns.shell_completion:
        return completion_install(overrides)
    overrides = searchpath(overrides, ns.config_dir)
    if ns.help:
        check_train_overrides(overrides, ns.multirun)
        return _train_help(overrides)
    if ns.info is None and not ns.hydra_help:
        _validate_all(overrides, ns.multirun)

    import hydra
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import DictConfig

    from ablate.config import CONF_DIR, register_configs, search_overrides

    register_configs()
    GlobalHydra.instance().clear()  # compose() above leaves Hydra initialised; hydra.main initialises its own

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
    def job(cfg: DictConfig) -> None:
        from ablate.run import train_one

        try:
            train_one(cfg)
        except AblateError as exc:
            raise SystemExit(fail(str(exc))) from None

    # Hydra's own parser takes its overrides in one block: ours first, then the flags, in its order.
    flags = ["--hydra-help"] if ns.hydra_help else []
    flags += ["-m"] if ns.multirun else []
    flags += ["--cfg", ns.cfg] if ns.cfg else []
    flags += ["--package", ns.package] if ns.package else []
    flags += ["--resolve"] if ns.resolve else []
    flags += ["--info", ns.info] if ns.info else []
    saved = sys.argv
    sys.argv = ["ablate train", *overrides, *search_overrides(), "hydra.job.name=train", *flags]
    try:
        job()
    finally:
        sys.argv = saved
    return 0

