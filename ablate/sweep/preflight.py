"""What ``ablate sweep`` checks before it creates anything, beyond composing every trial config.

A trial can fail in ways a composed config does not show: the dataset's files are absent, the
device is not on this machine, the sampler or pruner refuses this space or these settings. Each is
cheap to check once here (no torch unless an accelerator is asked for, no dataset read) and would
otherwise fail every trial. What only a run can find (a file that is there but unreadable, a model
too large for the device) is left to the failure budget, ``max_failures``.
"""

from __future__ import annotations

from collections.abc import Iterable

from omegaconf import DictConfig
from optuna.distributions import CategoricalDistribution

from ablate.data.catalog import check_files, check_path
from ablate.errors import ConfigError
from ablate.menu import USER_DATASETS
from ablate.sweep.composer import Composed
from ablate.sweep.samplers import build_search
from ablate.sweep.spec import StudySpec

__all__ = ["check_before_start"]


def check_before_start(spec: StudySpec, composed: Composed) -> None:
    """Refuse, with one line, a study whose trials would all fail for a reason known now.

    Args:
        spec: The study.
        composed: Every config node a trial can need (:meth:`TrialComposer.composed`).

    Raises:
        AblateError: the sampler or pruner refuses its settings or this space; a dataset's files
            are absent under ``data.root`` (and ``data.download`` is off); a ``trainer.device``
            or ``devices`` entry this machine lacks (not checked for SLURM, whose supervisor runs
            where the GPUs are not).
    """
    base, nodes = composed
    build_search(spec.sampler, spec.pruner, spec.space.distributions, spec.params, epochs=base.trainer.epochs)
    configs = [base, *(node for (group, _), node in nodes.items() if group == "arm")]
    data = [cfg.data for cfg in configs] + [node for (group, _), node in nodes.items() if group == "data"]
    for node in _distinct(data):
        if node.name in USER_DATASETS:
            check_path(node.name, node.path)
        else:
            check_files(node.name, node.root, node.download)
    if spec.launcher.get("name") == "slurm":
        return
    devices = {str(cfg.trainer.device) for cfg in configs}
    searched = spec.space.distributions.get("trainer.device")
    if isinstance(searched, CategoricalDistribution):
        devices |= {str(choice) for choice in searched.choices}
    if spec.devices or devices - {"auto", "cpu"}:
        _check_devices(spec.devices, sorted(devices))


def _distinct(nodes: Iterable[DictConfig]) -> list[DictConfig]:
    seen: dict[tuple[str, str, bool, str], DictConfig] = {}
    for node in nodes:
        seen.setdefault((str(node.name), str(node.root), bool(node.download), str(node.get("path"))), node)
    return list(seen.values())


def _check_devices(indices: list[int], names: list[str]) -> None:
    """``devices: [i, ...]`` and every ``trainer.device`` name exist here (imports torch)."""
    import torch

    from ablate.train import check_device

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if indices and max(indices) >= count:
        have = f"this machine has {count} CUDA device{'s' if count != 1 else ''}"
        allowed = f"CUDA device indices 0 to {count - 1} ({have})" if count else f"[] ({have})"
        raise ConfigError("devices", indices, allowed)
    for name in names:
        check_device(name)
