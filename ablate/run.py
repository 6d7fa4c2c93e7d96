"""One tracked training run: validate, load data, open the MLflow run, fit, record the outcome.

Data is loaded before the MLflow run is created, so a missing dataset leaves no run behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from omegaconf import DictConfig

from ablate.config import validate
from ablate.secrets import redact
from ablate.train import RunResult, check_device, fit, load_data

__all__ = ["train_one"]


def _print_epoch(epochs: int) -> Callable[[int, Mapping[str, float]], None]:
    def report(epoch: int, m: Mapping[str, float]) -> None:
        print(f"epoch {epoch:>3}/{epochs}  train_loss {m['train_loss']:.4f}  train_acc "
              f"{m['train_acc']:.4f}  val_loss {m['val_loss']:.4f}  val_acc {m['val_acc']:.4f}  "
              f"lr {m['lr']:.3g}  ({m['epoch_time']:.2f} s)", flush=True)
    return report


def train_one(cfg: DictConfig, *, tags: Mapping[str, str] | None = None,
              parent_run_id: str | None = None, verbose: bool = True) -> tuple[str, RunResult]:
    """Train ``cfg`` as one MLflow run.

    Returns:
        The MLflow run id and the :class:`RunResult`.

    Raises:
        AblateError: bad config or missing data, before any MLflow run exists.
    """
    from ablate.tracking import track_run

    validate(cfg)
    check_device(cfg.trainer.device)  # before the data is loaded and the run opened
    data = load_data(cfg)
    show = _print_epoch(cfg.trainer.epochs) if verbose else None
    with track_run(cfg, tags=tags, parent_run_id=parent_run_id) as tracker:
        def on_epoch(epoch: int, metrics: Mapping[str, float]) -> bool:
            tracker(epoch, metrics)
            if show is not None:
                show(epoch, metrics)
            return False

        result = fit(cfg, on_epoch, data=data)
        tracker.finish(result.final, result.stop_reason)
    if verbose:
        f = result.final
        print(f"run {tracker.run_id} ({tracker.run_name}): {result.stop_reason} after "
              f"{result.epochs_run} epochs; best val_acc {f['best_val_acc']:.4f}, test_acc "
              f"{f['test_acc']:.4f}; tracked in {redact(cfg.tracking.uri)} (see: ablate ui)", flush=True)
    assert tracker.run_id is not None  # set when the run was created; track_run raises otherwise
    return tracker.run_id, result
