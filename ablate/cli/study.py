"""``ablate sweep`` and ``ablate plan``: a study's spec, its help and ``--cfg``, then the sweep or plan."""

from __future__ import annotations

import argparse
import functools
import json
from typing import Any

from ablate.cli.common import config_dir_flag, optional_values, overrides_arg, print_flags, searchpath
from ablate.errors import AblateError


def add_study_command(sub: Any, name: str, summary: str, description: str) -> None:
    command = sub.add_parser(name, add_help=False, help=summary, description=description)
    command.add_argument("study", nargs="?", help="a study file's name (sweeps/<study>.yaml)")
    command.add_argument("--help", "-h", action="store_true",
                         help="with a study: its settings and what can be overridden")
    print_flags(command, "study spec")
    command.add_argument("--info", "-i", nargs="?", const="searchpath", metavar="searchpath",
                         help="print the folders searched for studies and config groups")
    config_dir_flag(command)
    overrides_arg(command, "study fields (n_trials=40 pruner=hyperband), params.K='interval(a,b)', "
                   "or a trial field fixed for every trial (trainer.epochs=5)")
    command.set_defaults(run=functools.partial(_study_command, name))


def _study_command(command: str, ns: argparse.Namespace) -> int:
    from ablate.config import CONF_DIR, user_conf_dirs
    from ablate.sweep.spec import available_studies, study_search_path

    optional_values(ns, {"cfg": ("job", "all"), "info": ("searchpath", "all")})
    if ns.study is not None and "=" in ns.study:  # `ablate sweep --cfg n_trials=3 x`: not a study name
        raise AblateError(f"study: {ns.study!r} is not allowed; give the study's name first: "
                          f"ablate {command} <study> [key=value ...]")
    overrides = searchpath(ns.overrides, ns.config_dir)
    if ns.info:
        print("studies: " + ", ".join(str(f) for f in study_search_path()))
        print("config groups: " + ", ".join(str(f) for f in [CONF_DIR, *user_conf_dirs()]))
        return 0
    if ns.study is None:
        print(f"usage: ablate {command} <study> [--help] [--cfg] [-cd DIR] [key=value ...]\n"
              "studies: " + ", ".join(available_studies()))
        return 0 if ns.help else 2
    from ablate.sweep.spec import compose_study

    spec = compose_study(ns.study, overrides)
    if ns.help:
        print(_study_help(command, spec), end="")
        return 0
    if ns.cfg:
        print(_spec_yaml(spec, ns.package), end="")
        return 0
    if command == "plan":
        from ablate.sweep.plan import run_plan

        return run_plan(ns.study, overrides)
    from ablate.sweep import run_sweep

    return run_sweep(ns.study, overrides)


def _spec_document(spec: Any) -> dict[str, Any]:
    """The spec as stored (passwords left out), as plain data."""
    doc: dict[str, Any] = json.loads(spec.to_json())
    return doc


def _spec_yaml(spec: Any, package: str | None = None) -> str:
    import yaml

    doc: Any = _spec_document(spec)
    if package:
        for part in package.split("."):
            if not isinstance(doc, dict) or part not in doc:
                raise AblateError(f"--package: {package!r} is not allowed; expected a key of the study spec "
                                  f"({', '.join(sorted(_spec_document(spec)))})")
            doc = doc[part]
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def _study_help(command: str, spec: Any) -> str:
    from ablate.sweep.schema import PRUNERS, SAMPLERS

    doc = _spec_document(spec)
    doc.pop("distributions", None)
    lines = [f"usage: ablate {command} {spec.name} [--cfg [-p KEY]] [-cd DIR] [key=value ...]", ""]
    lines.append(f"Study {spec.name}: " + (f"ablation design {spec.design}, {len(spec.arms)} arms"
                                           if spec.design else f"search over {len(spec.params)} parameters"))
    lines += ["", "== Settings (override any: key=value) =="]
    for key in ("n_trials", "workers", "timeout", "metric", "direction", "storage", "out_dir", "experiment",
                "tracking_uri", "devices", "trials_per_device", "max_failures", "heartbeat_interval",
                "grace_period", "seeds"):
        if key in doc:
            lines.append(f"  {key}: {json.dumps(doc[key])}")
    lines.append(f"  sampler: {doc['sampler'].get('name')}  (sampler=one of {', '.join(SAMPLERS)}; "
                 "sampler.seed=N ...)")
    lines.append(f"  pruner: {doc['pruner'].get('name')}  (pruner=one of {', '.join(PRUNERS)})")
    if spec.params:
        grammar = "choice, range, interval, tag(log, ...)"
        lines += ["", f"== Searched parameters (params.KEY='grammar': {grammar}) =="]
        lines += [f"  params.{k}: {v}" for k, v in spec.params.items()]
    if spec.arms:
        lines += ["", "== Arms =="]
        lines += [f"  {k}: {' '.join(v) or '(reference)'}" for k, v in spec.arms.items()]
    lines += ["", "== Fixed for every trial (fixed.KEY=value, or any trial field: trainer.epochs=5) =="]
    lines += [f"  {k}: {v}" for k, v in spec.fixed.items()] or ["  (none)"]
    lines += ["", "--cfg prints the whole composed spec; ablate plan <study> what it would run and cost."]
    return "\n".join(lines) + "\n"

