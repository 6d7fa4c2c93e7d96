"""Checks of ``load_dataset``'s arguments and of what a loader read, with one-line error text."""

from __future__ import annotations

from numbers import Real
from typing import Any, cast

from ablate.data.catalog import SOURCES
from ablate.data.dataset import Raw
from ablate.errors import ConfigError, DataError

__all__ = ["check_choice", "check_fraction", "check_loaded", "one_line"]


def check_choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(field, value, "one of: " + ", ".join(allowed))


def check_fraction(field: str, value: Any) -> None:
    # bool is a Real; a fraction of True is a config mistake, not 1.0. (typeshed's Real has no __gt__
    # for mypy; any Real compares with ints at run time.)
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < cast(float, value) < 1:
        raise ConfigError(field, value, "a number strictly between 0 and 1")


def check_loaded(name: str, root: str, raw: Raw) -> Raw:
    """Reject files that parsed but do not hold what the dataset promises."""
    spec = SOURCES[name]
    for x, y in ((raw.x_train, raw.y_train), (raw.x_test, raw.y_test)):
        if x is None or y is None:
            continue
        if tuple(x.shape[1:]) != spec.input_shape or y.shape != (len(x),):
            raise DataError(
                f"data.root: {spec.label} files under '{root}' hold inputs shaped {tuple(x.shape)} "
                f"and labels shaped {tuple(y.shape)}, expected (N, {', '.join(map(str, spec.input_shape))}) "
                "and (N,); replace them with the original files"
            )
        if len(y) == 0:
            raise DataError(f"data.root: {spec.label} files under '{root}' hold no examples; replace them")
        if int(y.min()) < 0 or int(y.max()) >= spec.num_classes:
            raise DataError(
                f"data.root: {spec.label} labels under '{root}' range over {int(y.min())}..{int(y.max())}, "
                f"expected 0..{spec.num_classes - 1}; replace them with the original files"
            )
    return raw


def one_line(error: BaseException) -> str:
    """An exception as one line: torchvision's download errors span several."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
