"""Training throughput in samples per second, logged with the other metrics."""

from __future__ import annotations

import time

import lightning as L


class TrainingThroughput(L.Callback):
    """Logs ``train/samples_per_sec``: training rows per wall-clock second of each epoch's training batches, all
    ranks together. The clock runs from the start of the epoch to the end of its last training batch (data
    loading, forward, backward and optimizer step included) and stops while validation runs, at the end of the
    epoch or within it (``val_check_interval``)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._samples, self._seconds, self._since = 0, 0.0, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        self._samples += len(batch)
        self._seconds += now - self._since
        self._since = now

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":  # the next batch's time starts after validation, not before it
            self._since = time.perf_counter()

    def samples_per_second(self, trainer: L.Trainer) -> float | None:
        """This epoch's training rows per second so far, all ranks together; ``None`` before its first batch."""
        return self._samples * trainer.world_size / self._seconds if self._samples and self._seconds > 0 else None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (rate := self.samples_per_second(trainer)) is not None:
            pl_module.log("train/samples_per_sec", rate, on_epoch=True, sync_dist=True)
