"""A user's own network: built by their factory, then checked against the data it will see."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ablate.errors import ConfigError
from ablate.registry import ModelCall

__all__ = ["build_user_model"]


def build_user_model(call: ModelCall, *, input_shape: tuple[int, ...], num_classes: int,
                     sample: torch.Tensor) -> nn.Module:
    """``call.factory(input_shape=..., num_classes=..., **call.kwargs)``, checked on ``sample``.

    One forward pass in eval mode on ``sample`` (a couple of examples, on the CPU) finds a model
    that cannot take the data's shape, or gives the wrong number of logits, before training starts.
    It draws no random numbers, so seeded runs stay reproducible.

    Raises:
        ConfigError: field ``model``: the factory raised, returned something other than an
            ``nn.Module``, failed on inputs of this shape, or gave outputs not shaped (N, num_classes).
    """
    shape = tuple(int(s) for s in input_shape)
    try:
        model: Any = call.factory(input_shape=shape, num_classes=int(num_classes), **call.kwargs)
    except Exception as exc:  # the user's code: any failure, said in one line
        raise ConfigError("model", call.label, f"a factory that builds a model for inputs shaped {shape} "
                          f"and {num_classes} classes (it raised {_one_line(exc)})") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError("model", call.label, f"a factory returning a torch.nn.Module (it returned "
                          f"{type(model).__name__})")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(sample)
    except Exception as exc:
        raise ConfigError("model", call.label, f"a model that takes inputs shaped {shape}, the data's "
                          f"(it raised {_one_line(exc)})") from exc
    finally:
        model.train(was_training)
    expected = (len(sample), int(num_classes))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError("model", call.label, f"a model whose output is logits shaped (N, {num_classes}) "
                          f"for {num_classes} classes (it gave {got} for N = {len(sample)})")
    return model


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
