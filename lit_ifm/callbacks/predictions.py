"""Writing ``predict`` outputs to parquet or CSV, keyed by the input row ids."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet
from lightning.pytorch.utilities import rank_zero_info

from lit_ifm.errors import ConfigError
from lit_ifm.runs import checkpoint_run_folder, run_folder, written_beside


class PredictionWriter(L.Callback):
    """Writes ``row_id`` (the row's position in the predicted split), the input's columns (rows read from a table
    file), ``prediction`` of every predicted row (and, with ``with_attention``, the IFM family's per-instance
    attention T_ij, one column per slot pair) at the end of ``predict``, and says where. The file is written beside
    its final name and renamed into place, so a full disk or a kill never leaves a shorter file that still parses.
    ``python -m lit_ifm predict`` adds one when the configuration has none.

    Args:
        output_path: ``.parquet`` or ``.csv``; default: ``predictions.parquet`` in the folder of the run whose
            checkpoint is predicted (``<run>/checkpoints/best-epoch=7.ckpt`` -> ``<run>/predictions.parquet``),
            else in this run's folder. Under DDP rank r writes ``<stem>.rank<r><suffix>``.
        with_attention: add the attention columns ``attention:<field>-<field>`` over all pairs (models
            with a feature aspect only; with ``InteractionSampler(evaluation="top")`` the predictions use
            the top pairs while these columns still show the attention over all of them).
        keep_columns: the input's columns to keep beside the prediction, e.g. a key to join on; default: all of
            them; ``[]``: none (an input column named ``row_id`` or ``prediction`` is left out: the writer's own).
    """

    def __init__(self, output_path: str | None = None, with_attention: bool = False,
                 keep_columns: list[str] | None = None):
        self.output_path = None if output_path is None else Path(output_path)
        self.with_attention = with_attention
        self.keep_columns = keep_columns
        self.written_path: Path | None = None  # where the last predict wrote (this rank's file)
        if self.output_path is not None and self.output_path.suffix.lower() not in (".parquet", ".csv"):
            raise ConfigError(f"PredictionWriter: output_path must end in .parquet or .csv, got {output_path!r}")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.with_attention and getattr(pl_module, "feature_aspect", None) is None:
            raise ConfigError(f"PredictionWriter(with_attention=True): {type(pl_module).__name__} has no "
                              "per-instance attention; use an IFM-family model with a feature aspect")
        self._columns: dict[str, list[np.ndarray]] = {}
        folder = run_folder(trainer)  # a broadcast: every rank asks
        if self.output_path is not None:
            self._path = self.output_path
        else:
            self._path = (checkpoint_run_folder(trainer.ckpt_path) if trainer.ckpt_path else None) or folder
            self._path = self._path / "predictions.parquet"

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        columns = {name: (values.float() if values.is_floating_point() else values).cpu().numpy()
                   for name, values in outputs.items()}  # row ids stay integers
        if self.with_attention:
            details = pl_module.interaction_details(batch)
            attention = details.attention.float().cpu().numpy()  # (B, P)
            for index, name in enumerate(self._attention_names(details.field_pairs)):
                columns[name] = attention[:, index]
        for name, values in columns.items():
            self._columns.setdefault(name, []).append(values)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        columns = {name: np.concatenate(parts) for name, parts in self._columns.items()}
        inputs = self._input_columns(trainer, columns["row_id"])
        table = pa.table({"row_id": columns.pop("row_id"), **inputs, **columns})
        path = self._path
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        write_atomically(table, path)
        self.written_path = path
        ranks = f" (and one file per other rank, {trainer.world_size} in all)" if trainer.world_size > 1 else ""
        rank_zero_info(f"predictions of {table.num_rows} rows written to {path}{ranks}")

    def _input_columns(self, trainer: L.Trainer, row_ids: np.ndarray) -> dict[str, pa.Array]:
        """The kept columns of the predicted rows as the input file holds them (none for rows not read from a table
        file, and null for sampled negatives, which come after the file's rows)."""
        datamodule = trainer.datamodule
        if self.keep_columns == [] or not hasattr(datamodule, "source_rows"):
            return {}
        rows = datamodule.source_rows(datamodule.hparams.predict_split)
        if rows is None:
            return {}
        missing = sorted(set(self.keep_columns or ()) - set(rows.column_names))
        if missing:
            raise ConfigError(f"PredictionWriter: keep_columns {missing} are not columns of the predicted file; its "
                              f"columns are {rows.column_names}")
        kept = rows.select(self.keep_columns) if self.keep_columns is not None else rows
        taken = kept.take(pa.array(np.where(row_ids < rows.num_rows, row_ids, 0), mask=row_ids >= rows.num_rows))
        taken_names = [name for name in taken.column_names if name not in ("row_id", "prediction")]
        return {name: taken.column(name) for name in taken_names}

    @staticmethod
    def _attention_names(field_pairs: list[tuple[str, str]]) -> list[str]:
        names, seen = [], {}
        for first, second in field_pairs:
            name = f"attention:{first}-{second}"
            seen[name] = seen.get(name, 0) + 1
            names.append(name if seen[name] == 1 else f"{name}#{seen[name]}")  # multi-valued fields repeat pairs
        return names




def write_atomically(table: pa.Table, path: Path) -> None:
    """Writes ``table`` to ``path`` (``.csv`` or parquet) through a temporary file beside it, renamed into place once
    complete: a reader never sees a partial file, and an old one stays whole until the new one is."""
    with written_beside(path) as partial:
        if path.suffix.lower() == ".csv":
            pyarrow.csv.write_csv(table, partial)
        else:
            pyarrow.parquet.write_table(table, partial)
