"""Stopping a run whose loss is no longer a number, before that state reaches a checkpoint."""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch
from torch import Tensor

from lit_ifm.errors import TrainingDiverged

_ADVICE = ("training stopped before this state reached a checkpoint (earlier checkpoints are kept); lower the "
           "learning rate (--model.lr), or train in 32-bit precision")


class DivergenceGuard(L.Callback):
    """Stops ``fit`` with :class:`~lit_ifm.errors.TrainingDiverged` once the training loss or a validation metric
    is NaN or infinite. Lightning runs checkpoint callbacks after all others, so a diverged state never becomes
    ``best`` and never overwrites ``last.ckpt``. ``python -m lit_ifm`` adds it to every run.

    The per-step check stays on the device: the step's loss is kept, and the host reads the kept losses every
    ``check_every_n_steps`` steps, before every checkpoint is written (whatever saves it, and however often; every
    step while a checkpoint callback saves weights only, which Lightning writes without asking callbacks), and
    before every validation and epoch end (one synchronisation each). All DDP ranks decide together, so none is
    left waiting.

    Args:
        check_every_n_steps: how many training steps may pass between two reads of the kept losses.
    """

    def __init__(self, check_every_n_steps: int = 50):
        self.check_every_n_steps = check_every_n_steps
        self._losses: list[Tensor] = []
        self._steps: list[int] = []
        self._every_step = False

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self._every_step = any(callback.save_weights_only for callback in trainer.checkpoint_callbacks)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, Tensor):
            self._losses.append(loss.detach().float())
            self._steps.append(trainer.global_step)
        if self._every_step or len(self._losses) >= self.check_every_n_steps:
            self._check_losses(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        # Called on every rank as a checkpoint is put together, before it is written: a diverged state stops here.
        if trainer.state.fn == "fit":
            self._check_losses(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.state.fn == "fit":
            self._check_losses(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self._check_losses(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.state.fn != "fit":
            return
        bad = [(name, value.item()) for name, value in trainer.callback_metrics.items()
               if isinstance(value, Tensor) and value.is_floating_point() and not torch.isfinite(value).all()]
        if trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            what = f"validation metric {bad[0][0]} became {bad[0][1]}" if bad else "a validation metric diverged"
            raise TrainingDiverged(f"{what} in epoch {trainer.current_epoch}; {_ADVICE}")

    def _check_losses(self, trainer: L.Trainer) -> None:
        losses, steps = self._losses, self._steps
        self._losses, self._steps = [], []
        first = None
        if losses:
            stacked = torch.stack(losses)
            finite = torch.isfinite(stacked)
            if not finite.all():  # the one host synchronisation
                index = int((~finite).nonzero()[0])
                first = (stacked[index].item(), steps[index])
        if trainer.strategy.reduce_boolean_decision(first is not None, all=False):
            what = (f"the training loss became {first[0]} at step {first[1]}" if first else
                    "the training loss diverged on another process")
            raise TrainingDiverged(f"{what} (epoch {trainer.current_epoch}); {_ADVICE}")
