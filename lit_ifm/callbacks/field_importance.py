"""Field-pair importance (the paper's Table 3) reported at the end of fit."""

from __future__ import annotations

import csv

import lightning as L
import numpy as np
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from lit_ifm.runs import run_folder


def importance_matrix(rows, field_names: tuple[str, ...]) -> np.ndarray:
    """``(F, F)`` symmetric matrix of ``||F_{f,g}||`` from ``field_pair_importance()`` rows; NaN where the model
    has no such pair (e.g. a single-valued field with itself).

    >>> from types import SimpleNamespace
    >>> importance_matrix([SimpleNamespace(first="a", second="b", norm=2.0)], ("a", "b"))
    array([[nan,  2.],
           [ 2., nan]])
    """
    index = {name: position for position, name in enumerate(field_names)}
    matrix = np.full((len(field_names), len(field_names)), np.nan)
    for row in rows:
        matrix[index[row.first], index[row.second]] = matrix[index[row.second], index[row.first]] = row.norm
    return matrix


def importance_figure(matrix: np.ndarray, field_names: tuple[str, ...], title: str):
    """A matplotlib ``Figure`` of ``matrix`` (from :func:`importance_matrix`): every field named on both axes,
    a colour bar of ``||F_fg||``, pairs the model lacks in grey. Its size grows with the number of fields, so
    that 39 names still stand apart. Drawn without pyplot: no window, no global state.

    >>> figure = importance_figure(np.array([[np.nan, 2.0], [2.0, np.nan]]), ("a", "b"), "IFM, run x")
    >>> [label.get_text() for label in figure.axes[0].get_xticklabels()], len(figure.axes)
    (['a', 'b'], 2)
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    count = len(field_names)
    side = max(5.0, 0.28 * count + 2.5)  # inches: about 0.28 in a field, room for 8-point names
    figure = Figure(figsize=(side + 1.5, side), layout="constrained")
    axes = figure.subplots()
    colours = colormaps["Reds"].with_extremes(bad="#d9d9d9")
    image = axes.imshow(np.ma.masked_invalid(matrix), cmap=colours, vmin=0)
    axes.set_xticks(range(count), field_names, rotation=90, fontsize=8)
    axes.set_yticks(range(count), field_names, fontsize=8)
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, shrink=0.8, label="||F_fg||, the field aspect's norm")
    return figure


class FieldImportanceReport(L.Callback):
    """At the end of fit, reports ``field_pair_importance()`` of models that have a field aspect (the paper's
    Table 3): the largest printed, all of them in ``field_pair_importance.csv`` and as a heatmap,
    ``field_pair_importance.png``, in the run's folder next to its ``checkpoints/``, and on W&B as a table and
    that figure. Models without a field aspect are skipped silently (it is a report, not a requirement)."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(pl_module, "field_aspect", None) is None or not hasattr(pl_module, "field_pair_importance"):
            return
        folder = run_folder(trainer)  # a broadcast: every rank must ask
        if not trainer.is_global_zero:
            return
        rows = pl_module.field_pair_importance()
        rank_zero_info("field-pair importance (||F_fg||, share): " + ", ".join(
            f"{row.first}-{row.second} {row.norm:.3f} ({row.share:.1%})" for row in rows[:10]))
        folder.mkdir(parents=True, exist_ok=True)
        columns = ["first", "second", "norm", "share"]
        table = [[row.first, row.second, row.norm, row.share] for row in rows]
        with (folder / "field_pair_importance.csv").open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(columns)
            writer.writerows(table)
        names = pl_module.schema.field_names
        title = f"Field-pair importance of {type(pl_module).__name__}, run {folder.name}"
        figure = importance_figure(importance_matrix(rows, names), names, title)
        figure.savefig(folder / "field_pair_importance.png", dpi=100)
        rank_zero_info(f"field-pair importance written to {folder / 'field_pair_importance.csv'} and .png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table("field_pair_importance", columns=columns, data=table)
                logger.log_image("field_pair_importance_heatmap", [str(folder / "field_pair_importance.png")],
                                 caption=[title])
