"""The trick menu as typed schemas, its Hydra registration, composition and validation.

Schemas are dataclasses registered with Hydra's ConfigStore by an explicit :func:`register_configs`
call; values live in ``conf/`` YAML files that name their schema in their defaults list, so a typo or
a wrong type fails when the config is composed, not at epoch 37. Ranges (``dropout < 1``,
``optimizer.lr > 0``) are checked by :func:`validate`, which reports the first bad field as one line.

Modules (this facade re-exports the public names; import them from ``ablate.config``):

=================================  ==================================================================
module                             job
=================================  ==================================================================
:mod:`ablate.config.schema`        the dataclass schemas (``Config`` and each group's) to register
:mod:`ablate.config.rules`         validation: ``RULES``, ``validate``, ``flatten``, and
                                   ``translate_compose_error`` for Hydra's and OmegaConf's errors
:mod:`ablate.config.composition`   ``compose`` over ``CONF_DIR`` and ``./conf``, ``register_configs``,
                                   ``store_schemas``, ``hydra_at``, ``is_group``, ``trick_summary``,
                                   ``check_model`` (a user's model against its factory),
                                   ``shipped_folder`` (conf/ and sweeps/, installed or not)
=================================  ==================================================================
"""

from __future__ import annotations

from ablate.config.composition import (
    CONF_DIR,
    CONFIG_DIRS_ENV,
    check_model,
    compose,
    config_dirs,
    hydra_at,
    is_group,
    register_configs,
    search_overrides,
    shipped_folder,
    store_schemas,
    trick_summary,
    user_conf_dir,
    user_conf_dirs,
)
from ablate.config.rules import RULES, Rule, flatten, translate_compose_error, validate
from ablate.config.schema import Config
from ablate.menu import AVERAGINGS

__all__ = [
    "AVERAGINGS",
    "CONFIG_DIRS_ENV",
    "CONF_DIR",
    "RULES",
    "Config",
    "Rule",
    "check_model",
    "compose",
    "config_dirs",
    "flatten",
    "hydra_at",
    "is_group",
    "register_configs",
    "search_overrides",
    "shipped_folder",
    "store_schemas",
    "translate_compose_error",
    "trick_summary",
    "user_conf_dir",
    "user_conf_dirs",
    "validate",
]
