"""Writing ``predict`` outputs to parquet or CSV, keyed by the input row ids."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet
import torch
from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionWriter(BasePredictionWriter):
    """Writes every ``predict_step`` output (``row_id``, ``prediction`` and whatever else the model
    returns, e.g. IFM's per-pair ``attention``) to one file per rank at the end of ``predict``.

    Args:
        output_path: ``.parquet`` or ``.csv``; under DDP rank r writes ``<stem>.rank<r><suffix>``.

    In CSV, a per-row vector such as ``attention`` becomes one column per entry (``attention_0``, ...);
    parquet keeps it as a list column.
    """

    def __init__(self, output_path: str = "predictions.parquet"):
        super().__init__(write_interval="epoch")
        self.output_path = Path(output_path)
        if self.output_path.suffix.lower() not in (".parquet", ".csv"):
            raise ValueError(f"PredictionWriter: output_path must end in .parquet or .csv, got {output_path!r}")

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions, batch_indices) -> None:
        outputs = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        columns = {key: torch.cat([output[key] for output in outputs]).float().cpu().numpy()
                   for key in outputs[0]}
        columns["row_id"] = columns["row_id"].astype("int64")
        csv = self.output_path.suffix.lower() == ".csv"
        arrays = {}
        for name, values in columns.items():
            if values.ndim == 1:
                arrays[name] = pa.array(values)
            elif csv:
                arrays.update({f"{name}_{index}": pa.array(values[:, index]) for index in range(values.shape[1])})
            else:
                arrays[name] = pa.array(list(values))
        table = pa.table(arrays)
        path = self.output_path
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if csv:
            pyarrow.csv.write_csv(table, path)
        else:
            pyarrow.parquet.write_table(table, path)
