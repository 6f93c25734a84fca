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
from lit_ifm.runs import checkpoint_run_folder, run_folder


class PredictionWriter(L.Callback):
    """Writes ``row_id`` and ``prediction`` of every predicted row (and, with ``with_attention``, the
    IFM family's per-instance attention T_ij, one column per slot pair) at the end of ``predict``, and says where.
    ``python -m lit_ifm predict`` adds one when the configuration has none.

    Args:
        output_path: ``.parquet`` or ``.csv``; default: ``predictions.parquet`` in the folder of the run whose
            checkpoint is predicted (``<run>/checkpoints/best-epoch=7.ckpt`` -> ``<run>/predictions.parquet``),
            else in this run's folder. Under DDP rank r writes ``<stem>.rank<r><suffix>``.
        with_attention: add the attention columns ``attention:<field>-<field>`` over all pairs (models
            with a feature aspect only; with ``InteractionSampler(evaluation="top")`` the predictions use
            the top pairs while these columns still show the attention over all of them).
    """

    def __init__(self, output_path: str | None = None, with_attention: bool = False):
        self.output_path = None if output_path is None else Path(output_path)
        self.with_attention = with_attention
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
        table = pa.table({name: pa.array(values) for name, values in columns.items()})
        path = self._path
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".csv":
            pyarrow.csv.write_csv(table, path)
        else:
            pyarrow.parquet.write_table(table, path)
        self.written_path = path
        ranks = f" (and one file per other rank, {trainer.world_size} in all)" if trainer.world_size > 1 else ""
        rank_zero_info(f"predictions of {table.num_rows} rows written to {path}{ranks}")

    @staticmethod
    def _attention_names(field_pairs: list[tuple[str, str]]) -> list[str]:
        names, seen = [], {}
        for first, second in field_pairs:
            name = f"attention:{first}-{second}"
            seen[name] = seen.get(name, 0) + 1
            names.append(name if seen[name] == 1 else f"{name}#{seen[name]}")  # multi-valued fields repeat pairs
        return names


