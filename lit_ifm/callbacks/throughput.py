"""Training throughput in samples per second, logged with the other metrics."""

from __future__ import annotations

import time

import lightning as L


class TrainingThroughput(L.Callback):
    """Logs ``train/samples_per_sec``: training rows per wall-clock second of each epoch, all ranks
    together (data loading, forward, backward and optimizer step included; validation excluded)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._samples, self._start = 0, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._samples += len(batch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self._start
        if self._samples and seconds > 0:
            pl_module.log("train/samples_per_sec", self._samples * trainer.world_size / seconds,
                          on_epoch=True, sync_dist=True)
