"""Lightning internals lit_ifm relies on, tested against the pinned range (``lightning>=2.4,<2.7``).

Each entry below does something that Lightning, or its W&B logger, offers no public way to do; the rest of lit_ifm
uses public API only. ``tests/test_compat.py`` checks every entry on the installed Lightning, so a release that
changes one of them fails there, by name, rather than somewhere in a run.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger

# A sampler that scores every row once across ranks (no padding repeats); Lightning exports it from no public module.
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

__all__ = ["KeepsCheckpointHyperparameters", "UnrepeatedDistributedSampler", "global_seed", "match_mode",
           "stop_uploading_checkpoints", "update_wandb_init"]


class KeepsCheckpointHyperparameters:
    """A ``LightningCLI`` mixin that turns off LightningCLI's own reading of ``--ckpt_path``: it loads the
    checkpoint (a traceback when the file is not a checkpoint) and parses all of its hyper-parameters into the
    config, in a private method that runs between parsing and ``before_instantiate_classes`` with no public hook
    of its own. The subclass reads the checkpoint itself, in ``before_instantiate_classes``."""

    def _parse_ckpt_path(self) -> None:
        """Nothing: the subclass's ``before_instantiate_classes`` does it."""


def match_mode(callback: ModelCheckpoint | EarlyStopping, mode: Literal["min", "max"]) -> None:
    """Sets ``callback``'s ``mode`` after its construction, with what Lightning's constructor derives from it: the
    score to beat (``ModelCheckpoint.kth_value``, ``EarlyStopping.best_score``) and the sign of
    ``EarlyStopping.min_delta``. For callbacks whose mode follows a model known only at ``setup``."""
    if isinstance(callback, EarlyStopping):
        callback.mode = mode
        callback.min_delta = abs(callback.min_delta) * (1 if callback.monitor_op == torch.gt else -1)
        callback.best_score = torch.tensor(torch.inf if callback.monitor_op == torch.lt else -torch.inf)
    else:
        callback.mode = mode
        callback.kth_value = torch.tensor(torch.inf if mode == "min" else -torch.inf)


def update_wandb_init(logger: WandbLogger, **settings) -> None:
    """Changes what ``logger`` passes to ``wandb.init`` when its run starts (Lightning keeps those arguments in
    ``_wandb_init``); ``None`` removes a setting, so that W&B's own default applies."""
    for name, value in settings.items():
        if value is None:
            logger._wandb_init.pop(name, None)
        else:
            logger._wandb_init[name] = value


def stop_uploading_checkpoints(logger: WandbLogger) -> None:
    """Has ``logger`` upload no checkpoint from now on (its ``log_model``, which Lightning reads from
    ``_log_model``), e.g. once its run fell back to offline."""
    logger._log_model = False


def global_seed(default: int) -> int:
    """The seed of Lightning's last ``seed_everything`` in this process or the one that started it (it passes the
    seed on in ``PL_GLOBAL_SEED``), or ``default`` when nothing was seeded."""
    return int(os.environ.get("PL_GLOBAL_SEED", default))
