"""The best checkpoint and early stopping, by the validation metric of the model's task unless told otherwise."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping as _LightningEarlyStopping
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_ifm.compat import match_mode
from lit_ifm.errors import ConfigError

Mode = Literal["min", "max"]


def resolve_monitor(pl_module: L.LightningModule, monitor: str | None, mode: Mode | None,
                    owner: str) -> tuple[str, Mode]:
    """The metric to watch and its direction: ``monitor`` or the model's :meth:`default_monitor`, and ``mode`` or
    the direction the model gives that metric (:meth:`metric_mode`). A metric the model does not log is refused
    with the list of those it does, unless ``mode`` is given (a metric logged some other way)."""
    if monitor is None:
        if not hasattr(pl_module, "default_monitor"):
            raise ConfigError(f"{owner}: {type(pl_module).__name__} has no task metric; set monitor (and mode)")
        monitor = pl_module.default_monitor()
    if mode is not None:
        return monitor, mode
    found = pl_module.metric_mode(monitor) if hasattr(pl_module, "metric_mode") else None
    if found is None:
        known = ", ".join(pl_module.validation_metrics()) if hasattr(pl_module, "validation_metrics") else "none known"
        raise ConfigError(f"monitor {monitor!r} is not a validation metric of {type(pl_module).__name__} "
                          f"(task {getattr(pl_module, 'task', '?')}); choose one of {known}, or give mode (min or max) "
                          "for a metric logged otherwise")
    return monitor, found


def follow_the_loss_when_undefined(callback: ModelCheckpoint | _LightningEarlyStopping, trainer: L.Trainer) -> None:
    """Has ``callback`` follow ``val/loss`` (lower is better) from now on when it follows the task's metric and the
    model left that metric out, being undefined (AUROC of a validation split whose labels are all of one class)."""
    metrics = trainer.callback_metrics
    if callback.requested_monitor is None and not trainer.sanity_checking and callback.monitor not in metrics \
            and "val/loss" in metrics:
        callback.monitor = "val/loss"
        if callback.mode != "min":
            match_mode(callback, "min")


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` keeping the best validation epoch by the task's metric: ``val/auroc``
    (higher is better) for a binary task, ``val/rmse`` (lower is better) for regression, unless ``monitor`` names
    another (``python -m lit_ifm fit --monitor val/logloss`` sets it on every callback that follows the task).

    The metric is chosen in ``setup``, once the model (and so its task) is known.

    Args:
        monitor: the validation metric; default: the model's ``default_monitor()``.
        mode: ``min`` or ``max``; default: the metric's direction (e.g. ``min`` for ``val/logloss``).
        filename: the checkpoint's file name pattern (Lightning's ``ModelCheckpoint`` syntax).
        dirpath: the folder; default: ``checkpoints/`` in the run's folder.
        save_top_k: how many of the best epochs to keep.
        verbose: say when a checkpoint is written.
    """

    def __init__(self, monitor: str | None = None, mode: Mode | None = None, filename: str = "best-{epoch}",
                 dirpath: str | None = None, save_top_k: int = 1, verbose: bool = False):
        super().__init__(dirpath=dirpath, filename=filename, monitor=monitor, mode=mode or "min",
                         save_top_k=save_top_k, verbose=verbose)
        self.requested_monitor, self.requested_mode = monitor, mode

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.monitor, mode = resolve_monitor(pl_module, self.requested_monitor, self.requested_mode,
                                             type(self).__name__)
        if mode != self.mode:  # the direction __init__ assumed: the score to beat changes with it (a resumed run
            match_mode(self, mode)  # restores its best scores from the checkpoint after setup)
        super().setup(trainer, pl_module, stage)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        follow_the_loss_when_undefined(self, trainer)
        super().on_validation_end(trainer, pl_module)


class EarlyStopping(_LightningEarlyStopping):
    """Lightning's ``EarlyStopping`` on the task's metric, chosen as :class:`BestCheckpoint` chooses it.

    Args:
        monitor: the validation metric; default: the model's ``default_monitor()``.
        mode: ``min`` or ``max``; default: the metric's direction.
        patience: validation rounds without improvement before training stops.
        min_delta: the least change that counts as an improvement.
        verbose: say why training stopped.
        stopping_threshold: stop at once when the metric reaches this value.
        divergence_threshold: stop at once when the metric gets worse than this value.
    """

    def __init__(self, monitor: str | None = None, mode: Mode | None = None, patience: int = 4,
                 min_delta: float = 0.0, verbose: bool = False, stopping_threshold: float | None = None,
                 divergence_threshold: float | None = None):
        super().__init__(monitor=monitor or "", mode=mode or "min", patience=patience, min_delta=min_delta,
                         verbose=verbose, stopping_threshold=stopping_threshold,
                         divergence_threshold=divergence_threshold)
        self.requested_monitor, self.requested_mode = monitor, mode

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.monitor, mode = resolve_monitor(pl_module, self.requested_monitor, self.requested_mode,
                                             type(self).__name__)
        if mode != self.mode:
            match_mode(self, mode)
        super().setup(trainer, pl_module, stage)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        follow_the_loss_when_undefined(self, trainer)
        super().on_validation_end(trainer, pl_module)


class BestValidationValues(L.Callback):
    """Logs ``best/<metric>`` beside every validation metric the model gives a direction (``val/rmse``,
    ``val/auroc``, ``val/loss``...): its best value so far, lowest or highest as the metric is. A logger's last value
    of it is then the best epoch's, and that is what W&B's run summary, and so a sweep (``metric: best/val/rmse``),
    reads; with early stopping the last epoch is ``patience`` epochs past the best. A resumed fit keeps the best."""

    def __init__(self):
        self.best: dict[str, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or not hasattr(pl_module, "metric_mode"):
            return
        for name, value in trainer.callback_metrics.items():
            mode = pl_module.metric_mode(name) if name.startswith("val/") else None
            if mode is None or not torch.isfinite(value).all():
                continue
            value, best = float(value), self.best.get(name)
            if best is None or (value < best if mode == "min" else value > best):
                self.best[name] = value
        if trainer.is_global_zero and self.best:
            for logger in trainer.loggers:
                logger.log_metrics({f"best/{name}": value for name, value in self.best.items()},
                                   step=trainer.global_step)

    def state_dict(self) -> dict:
        return {"best": dict(self.best)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = dict(state_dict["best"])
