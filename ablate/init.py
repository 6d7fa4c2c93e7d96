"""Weight initialisation schemes, from the naive fixed-range ones to fan-aware Xavier and Kaiming.

Each scheme draws the ``weight`` of every Linear/Conv layer (:data:`ablate.models.WEIGHT_LAYERS`) from a
zero-mean distribution and, except "default", sets biases to 0. Norm layers (BatchNorm, LayerNorm,
GroupNorm) keep their own init (weight 1, bias 0) so the init ablation changes only the weights.

Notation: for a weight of shape (out, in, *kernel), ``n_in = in * prod(kernel)`` (fan-in; ``in_features``
for a Linear) and ``n_out = out * prod(kernel)`` (fan-out).

================  ==============================================  ==================
scheme            distribution                                    std
================  ==============================================  ==================
default           PyTorch's own: U(-1/sqrt(n_in), 1/sqrt(n_in))    1/sqrt(3 n_in)
uniform           U(-b, b), b = ``bound`` whatever the fan-in      b/sqrt(3)
normal            N(0, 1)                                         1
gaussian          N(0, 1/n_in) (LeCun)                            1/sqrt(n_in)
xavier            N(0, 2/(n_in + n_out)) (Glorot, gain 1)         sqrt(2/(n_in+n_out))
kaiming           N(0, gain^2/n_in) (He, gain of the activation)  gain/sqrt(n_in)
================  ==============================================  ==================

All randomness comes from torch's global RNG, in the order of ``model.modules()``, so seeding it
(``torch.manual_seed``) before building and initialising gives identical weights.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import nn

from ablate.errors import ConfigError
from ablate.menu import INITS
from ablate.models import ACTIVATIONS, WEIGHT_LAYERS, is_weight_normed, weight_parameters

__all__ = ["INITS", "apply_init", "fans"]



def fans(weight: torch.Tensor) -> tuple[int, int]:
    """Fan-in and fan-out of a Linear or Conv weight.

    Args:
        weight: Tensor of shape (out, in) or (out, in, *kernel).

    Returns:
        ``(n_in, n_out)`` = ``(in * prod(kernel), out * prod(kernel))``.
    """
    receptive_field = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive_field, weight.shape[0] * receptive_field


def _uniform(weight: torch.Tensor, activation: str, bound: float) -> None:
    """U(-b, b): variance b²/3 whatever the fan-in, so deep nets' signals shrink or blow up."""
    weight.uniform_(-bound, bound)


def _normal(weight: torch.Tensor, activation: str, bound: float) -> None:
    """N(0, 1): the naive unit Gaussian, far too large for any layer wider than a few units."""
    weight.normal_(0.0, 1.0)


def _gaussian(weight: torch.Tensor, activation: str, bound: float) -> None:
    """N(0, 1/n_in) (LeCun): keeps the pre-activation variance equal to the input variance."""
    n_in, _ = fans(weight)
    weight.normal_(0.0, 1.0 / math.sqrt(n_in))


def _xavier(weight: torch.Tensor, activation: str, bound: float) -> None:
    """N(0, 2/(n_in + n_out)) (Glorot, gain 1): compromise between forward and backward variance."""
    n_in, n_out = fans(weight)
    weight.normal_(0.0, math.sqrt(2.0 / (n_in + n_out)))


def _kaiming(weight: torch.Tensor, activation: str, bound: float) -> None:
    """N(0, gain²/n_in) (He, fan-in mode), gain = ``calculate_gain(activation)``.

    The gains: relu sqrt(2), tanh 5/3, sigmoid 1.
    """
    n_in, _ = fans(weight)
    # apply_init has checked activation against ACTIVATIONS, all names of calculate_gain's Literal.
    gain = nn.init.calculate_gain(activation)  # type: ignore[arg-type]
    weight.normal_(0.0, gain / math.sqrt(n_in))


_SCHEMES: dict[str, Callable[[torch.Tensor, str, float], None]] = {
    "uniform": _uniform,
    "normal": _normal,
    "gaussian": _gaussian,
    "xavier": _xavier,
    "kaiming": _kaiming,
}


def apply_init(model: nn.Module, scheme: str, *, activation: str = "relu", bound: float = 0.05) -> None:
    """Re-initialise, in place, the weights of every Linear/Conv1d/Conv2d layer of ``model``.

    Schemes (``n_in``/``n_out`` = fan-in/fan-out, see :func:`fans`):

    - ``default``: leave PyTorch's own init untouched, weights and biases: U(-1/sqrt(n_in), 1/sqrt(n_in)),
      i.e. ``kaiming_uniform_(a=sqrt(5))``. Nothing is drawn, so this is "the model as constructed".
    - ``uniform``: U(-b, b) with the fixed ``b = bound`` (std b/sqrt(3) whatever the fan-in).
    - ``normal``: N(0, 1).
    - ``gaussian``: N(0, 1/n_in) (LeCun).
    - ``xavier``: N(0, 2/(n_in + n_out)) (Glorot, gain 1).
    - ``kaiming``: N(0, gain²/n_in) (He), gain = ``torch.nn.init.calculate_gain(activation)``.

    Every scheme but ``default`` sets biases to 0. Norm layers are never touched. Under weight
    normalisation (``norm=weight``, ``w = g v / ||v||``) a scheme draws the direction ``v`` as it would
    draw ``w`` and sets the gain ``g`` to ``||v||`` per output unit, so the initial ``w`` is the drawn
    weight, exactly as without weight norm.

    Args:
        model: The module to initialise (any module; its Linear/Conv layers are found recursively).
        scheme: One of :data:`INITS`.
        activation: The model's activation, one of :data:`ablate.models.ACTIVATIONS`; sets Kaiming's gain.
        bound: The half-width b of the ``uniform`` scheme, > 0.

    Raises:
        ConfigError: ``init.name`` unknown, ``init.bound`` not a finite number > 0, or
            ``model.activation`` unknown. Checked for every scheme so a bad config fails whatever the
            scheme.
    """
    if not isinstance(scheme, str) or scheme not in INITS:
        raise ConfigError("init.name", scheme, "one of: " + ", ".join(INITS))
    if (
        not isinstance(bound, numbers.Real)
        or isinstance(bound, bool)
        or not math.isfinite(bound)
        or bound <= 0
    ):
        raise ConfigError("init.bound", bound, "a finite number > 0")
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ConfigError("model.activation", activation, "one of: " + ", ".join(ACTIVATIONS))
    if scheme == "default":
        return
    draw = _SCHEMES[scheme]
    # In-place writes to leaf parameters that require grad are only allowed outside autograd.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, WEIGHT_LAYERS):
                if is_weight_normed(module):  # w = g v / ||v||: draw the direction v, g = ||v||
                    gain, direction = weight_parameters(module)
                    draw(direction, activation, float(bound))
                    gain.copy_(torch.linalg.vector_norm(direction.flatten(1), dim=1).view_as(gain))
                else:
                    draw(module.weight, activation, float(bound))
                if module.bias is not None:
                    module.bias.zero_()
