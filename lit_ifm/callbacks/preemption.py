"""Saying where a run stopped by SIGTERM (a batch scheduler's pre-emption) can resume from."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException


def latest_checkpoint(trainer: L.Trainer) -> Path | None:
    """The newest checkpoint file that the trainer's checkpoint callbacks wrote (and that still exists)."""
    paths = {Path(path) for callback in trainer.checkpoint_callbacks
             for path in (callback.last_model_path, callback.best_model_path, *callback.best_k_models) if path}
    written = [path for path in paths if path.is_file()]
    return max(written, key=lambda path: path.stat().st_mtime_ns) if written else None


class PreemptionNotice(L.Callback):
    """When SIGTERM stops ``fit`` (Lightning finishes the batch, then raises ``SIGTERMException``), says in one line
    on standard error where the last checkpoint is and how to resume from it. ``python -m lit_ifm`` adds it to
    every fit and then exits with code 143, as a process killed by SIGTERM does, so a scheduler never records the
    run as completed."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or not trainer.is_global_zero:
            return
        where = f"stopped by SIGTERM in epoch {trainer.current_epoch}"
        last = latest_checkpoint(trainer)
        if last is None:
            sys.stderr.write(f"lit-ifm: {where}, before any checkpoint was written; run the command again\n")
        else:
            sys.stderr.write(f"lit-ifm: {where}; the last checkpoint is {last}: the same command with "
                             f"--ckpt_path {last} resumes the run\n")
        sys.stderr.flush()
