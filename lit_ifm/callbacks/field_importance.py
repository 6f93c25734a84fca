"""Field-pair importance (the paper's Table 3) reported at the end of fit."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info


def importance_matrix(rows, field_names: tuple[str, ...]) -> np.ndarray:
    """``(F, F)`` symmetric matrix of ``||F_{f,g}||`` from ``field_pair_importance()`` rows.

    >>> from types import SimpleNamespace
    >>> importance_matrix([SimpleNamespace(first="a", second="b", norm=2.0)], ("a", "b"))
    array([[0., 2.],
           [2., 0.]])
    """
    index = {name: position for position, name in enumerate(field_names)}
    matrix = np.zeros((len(field_names), len(field_names)))
    for row in rows:
        matrix[index[row.first], index[row.second]] = matrix[index[row.second], index[row.first]] = row.norm
    return matrix


def heatmap_pixels(matrix: np.ndarray, cell: int = 24) -> np.ndarray:
    """An RGB image ``(F*cell, F*cell, 3)``: white for 0, dark red for the largest norm."""
    scaled = matrix / matrix.max() if matrix.max() > 0 else matrix
    colour = np.stack([1.0 - 0.45 * scaled, 1.0 - scaled, 1.0 - scaled], axis=-1)
    return (np.kron(colour, np.ones((cell, cell, 1))) * 255).astype(np.uint8)


def run_file_name(trainer: L.Trainer, stem: str, suffix: str) -> str:
    """``<stem><suffix>``, with the run id added where runs share one log folder (W&B's ``save_dir``)."""
    logger = trainer.logger
    if isinstance(logger, WandbLogger) and logger.version is not None:
        return f"{stem}-{logger.version}{suffix}"
    return f"{stem}{suffix}"


class FieldImportanceReport(L.Callback):
    """At the end of fit, reports ``field_pair_importance()`` of models that have a field aspect:
    printed, written to ``field_pair_importance[-<run id>].csv`` in the log folder, and on W&B as a table and a
    heatmap image. Models without one are skipped silently (it is a report, not a requirement)."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(pl_module, "field_aspect", None) is None or not hasattr(pl_module, "field_pair_importance"):
            return
        folder = Path(trainer.log_dir or trainer.default_root_dir)  # a broadcast: every rank must ask
        if not trainer.is_global_zero:
            return
        rows = pl_module.field_pair_importance()
        rank_zero_info("field-pair importance (||F_fg||, share): " + ", ".join(
            f"{row.first}-{row.second} {row.norm:.3f} ({row.share:.1%})" for row in rows[:10]))
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / run_file_name(trainer, "field_pair_importance", ".csv")).open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["first", "second", "norm", "share"])
            writer.writerows([row.first, row.second, row.norm, row.share] for row in rows)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table("field_pair_importance", columns=["first", "second", "norm", "share"],
                                 data=[[row.first, row.second, row.norm, row.share] for row in rows])
                matrix = importance_matrix(rows, pl_module.schema.field_names)
                logger.log_image("field_pair_importance_heatmap", [heatmap_pixels(matrix)],
                                 caption=[" x ".join(pl_module.schema.field_names)])
