"""Progress as plain lines for output that is not a terminal, and Lightning's bar for a terminal, both safe under
DDP."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar


class _MetricsOnEveryRank:
    """Reads the epoch's metrics on every rank before a bar shows them on the first. Lightning computes a metric
    logged with ``sync_dist`` (an all-reduce) the first time anything reads it: read by the first rank alone, that
    all-reduce meets another callback's collective on the other ranks, and DDP crashes or hangs."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.progress_bar_metrics  # noqa: B018 - the read computes (and caches) them, on every rank alike
        super().on_train_epoch_end(trainer, pl_module)


class TerminalProgress(_MetricsOnEveryRank, TQDMProgressBar):
    """Lightning's ``TQDMProgressBar``, safe under DDP (the metrics it shows at the end of an epoch are computed on
    every rank). ``python -m lit_ifm`` uses it when its output is a terminal.

    Args:
        refresh_rate: redraw the bar every this many steps.
    """

    def __init__(self, refresh_rate: int = 1):
        super().__init__(refresh_rate=refresh_rate)


class LineProgress(_MetricsOnEveryRank, ProgressBar):
    """Lightning's progress bar redrawn in place writes hundreds of kilobytes into a log file; this writes lines:
    one per training epoch (its steps, seconds and the metrics the bar shows) and, within a long epoch, one every
    ``every_n_seconds``. ``python -m lit_ifm`` uses it instead of the bar when its output is not a terminal.

    Args:
        every_n_seconds: the longest wait for a line while an epoch trains; ``None``: one line per epoch only.

    Lines look like::

        epoch 3/30: 474 steps in 41.2 s; train/loss 0.2154, val/rmse 0.4512
    """

    def __init__(self, every_n_seconds: float | None = 60.0):
        super().__init__()
        self.every_n_seconds = every_n_seconds
        self._enabled = True

    def disable(self) -> None:
        """No more lines (Lightning calls this on every rank but the first)."""
        self._enabled = False

    def enable(self) -> None:
        """Lines again."""
        self._enabled = True

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._last_line = time.perf_counter()
        self._first_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        now = time.perf_counter()
        if self._enabled and self.every_n_seconds is not None and now - self._last_line >= self.every_n_seconds:
            self._last_line = now
            total = self.total_train_batches
            share = f", {(batch_idx + 1) / total:.0%} of the epoch," if total != float("inf") else ""
            self.print(f"{self._epoch(trainer)}: {trainer.global_step - self._first_step} steps{share} after "
                       f"{now - self._epoch_start:.1f} s; {self._metrics(trainer, pl_module, 'train/')}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._enabled:
            seconds = time.perf_counter() - self._epoch_start
            self.print(f"{self._epoch(trainer)}: {trainer.global_step - self._first_step} steps in {seconds:.1f} s; "
                       f"{self._metrics(trainer, pl_module)}")

    def print(self, *args, **kwargs) -> None:
        """A line on standard output, flushed at once (a log file shows it as it happens)."""
        if self._enabled:
            print(*args, **kwargs, flush=True)

    @staticmethod
    def _epoch(trainer: L.Trainer) -> str:
        return f"epoch {trainer.current_epoch}/{trainer.max_epochs}" if trainer.max_epochs and \
            trainer.max_epochs > 0 else f"epoch {trainer.current_epoch}"

    def _metrics(self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str = "") -> str:
        metrics = {name: value for name, value in self.get_metrics(trainer, pl_module).items()
                   if name != "v_num" and name.startswith(prefix)}
        return ", ".join(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
                         for name, value in metrics.items()) or "no metrics yet"
