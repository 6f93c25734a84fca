"""Where a run's files go: one folder per run, its checkpoints in ``checkpoints/`` and everything else beside them.

::

    runs/lit_ifm/<W&B run id>/          (with a logger: <save_dir>/<name>/<version>)
        checkpoints/best-epoch=7.ckpt, last.ckpt
        config.yaml                     the resolved configuration
        field_pair_importance.csv, field_pair_importance.png
        predictions.parquet             written by ``predict`` from one of its checkpoints
    runs/run-<n>/                       (without a logger, the same layout)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

RUN_FOLDER_VARIABLE = "LIT_IFM_RUN_FOLDER"  # the folder rank 0 chose, for the DDP ranks Lightning starts


def run_folder(trainer: L.Trainer) -> Path:
    """The folder of the trainer's run: the parent of its checkpoints' ``checkpoints/`` folder, found as
    Lightning's ``ModelCheckpoint`` finds it (so also before that callback's own setup). Every rank must call it
    (it broadcasts rank 0's answer)."""
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.dirpath:
        folder = Path(checkpoint.dirpath)
        folder = folder.parent if folder.name == "checkpoints" else folder
    elif trainer.loggers:
        logger = trainer.loggers[0]
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        folder = Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / version
    else:
        folder = Path(trainer.default_root_dir)
    return Path(trainer.strategy.broadcast(str(folder)))


def checkpoint_run_folder(checkpoint_path: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/<name>.ckpt``), or None when it lies elsewhere.

    >>> checkpoint_run_folder("runs/run-3/checkpoints/last.ckpt"), checkpoint_run_folder("model.ckpt")
    (PosixPath('runs/run-3'), None)
    """
    path = Path(checkpoint_path)
    return path.parent.parent if path.parent.name == "checkpoints" else None


def new_run_folder(root: str | Path) -> str:
    """A new folder ``<root>/run-<n>`` for a run without a logger, made at once so that no other run takes it."""
    inherited = os.environ.get(RUN_FOLDER_VARIABLE)
    if inherited and int(os.environ.get("LOCAL_RANK", "0")) > 0:  # a DDP rank Lightning started: rank 0 chose
        return inherited
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name[4:]) for p in root.glob("run-*") if p.name[4:].isdigit()]
    number = max(taken, default=-1) + 1
    while True:
        folder = root / f"run-{number}"
        try:
            folder.mkdir()
        except FileExistsError:  # another run started at the same moment
            number += 1
            continue
        os.environ[RUN_FOLDER_VARIABLE] = str(folder)
        return str(folder)


@contextmanager
def written_beside(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path in ``path``'s folder to write to; once the block ends without an error, renames it
    onto ``path`` (``os.replace``, on the same file system: atomic). A reader never sees a partial file, and the old
    one stays whole until the new one is; the temporary file is removed whatever happens."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


class ReplacingCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, with a local checkpoint written beside its final name and renamed into place
    (:func:`written_beside`). Lightning's own goes through a file in ``$TMPDIR`` that it moves onto the target:
    where the two are on different file systems, that move is a copy, and a kill during it truncates
    ``last.ckpt``. ``python -m lit_ifm`` uses it; remote paths (``s3://...``) go to Lightning's writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with written_beside(path) as partial:
            with partial.open("wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())  # on disk before the rename makes it the checkpoint
        return None
