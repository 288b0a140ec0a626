"""An override of a key the config lacks, named with the nearest keys it has.

Hydra refuses ``advflat trainer.epoch=3`` because struct mode forbids new keys, and says so in
five lines about ``+trainer.epoch``; the likelier cause is a typo, so the command composes the
config before Hydra does and says ``unknown key trainer.epoch; did you mean trainer.epochs?``.
Any other composition error (a group option that does not exist, a sweep without ``-m``) is
left to Hydra, whose own messages list the choices.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from advflat.cli.paths import CONFIG_DIR, CONFIG_NAME
from advflat.core.errors import ConfigError

NEAREST = 3  # suggestions at most; difflib's default similarity cutoff (0.6) decides which


def unknown_key(key: str, valid: Iterable[object]) -> str:
    """The line for a dotted ``key`` whose last part is not among ``valid``, the keys at its
    level: the close ones as suggestions, or, with none close, all of them."""
    parent, _, name = key.rpartition(".")
    names = sorted(map(str, valid))
    prefix = f"{parent}." if parent else ""
    nearest = [prefix + found for found in difflib.get_close_matches(name, names, n=NEAREST)]
    if nearest:
        return f"unknown key {key}; did you mean {' or '.join(nearest)}?"
    return (
        f"unknown key {key}; {parent or 'the config'} has {', '.join(names)} "
        f"(+{key}=... adds a new key)"
    )


def check_keys(args: list[str]) -> None:
    """Raise a ConfigError naming the nearest valid keys when an override of ``args`` (a
    command line of overrides) names a key the composed config lacks."""
    if any(arg.startswith("-") for arg in args):
        return  # Hydra's own options (--help, --cfg, -m ...): Hydra's business
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            compose(CONFIG_NAME, overrides=args)
    except (HydraException, OmegaConfBaseException) as error:
        # Hydra raises the OmegaConf error of the node that lacks the key as the cause.
        cause = error.__cause__
        if not isinstance(cause, ConfigAttributeError | ConfigKeyError):
            return
        if cause.full_key and isinstance(cause.parent_node, DictConfig):
            raise ConfigError(unknown_key(cause.full_key, cause.parent_node.keys())) from None
