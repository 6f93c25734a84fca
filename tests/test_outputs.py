"""What a run shows and leaves behind (issue 12, points 3 and 4): files next to the run's checkpoints, a heatmap a
person can read, honest throughput, plain lines instead of a progress bar, and no known-harmless noise."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO
from matplotlib.backends.backend_agg import FigureCanvasAgg
from helpers import run_cli, run_main
from PIL import Image

from lit_ifm import FM, FieldAwareDataModule, SyntheticConfig
from lit_ifm.callbacks import LineProgress, TrainingThroughput
from lit_ifm.callbacks.field_importance import importance_figure

NOISE = ("litlogger", "anonymous setting", "LeafSpec", "dirpath has changed", "\r")
SMALL_IFM = ["--config", str(REPO / "recipes" / "ifm_synthetic.yaml"), "--data.synthetic.rows", "1500",
             "--model.embedding_dim", "4"]


@pytest.mark.slow
def test_a_run_keeps_its_files_next_to_its_checkpoints_and_prints_lines_not_a_bar(tmp_path):
    fit = run_cli("fit", *SMALL_IFM, "--trainer.max_epochs", "2", cwd=tmp_path)  # W&B offline (conftest)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["lit_ifm", "wandb"]
    run = next((tmp_path / "runs" / "lit_ifm").iterdir())
    assert sorted(path.name for path in run.iterdir()) == [
        "checkpoints", "config.yaml", "field_pair_importance.csv", "field_pair_importance.png"]
    with Image.open(run / "field_pair_importance.png") as image:
        width, height = image.size
    assert width > 500 and height > 400  # a figure with names and a colour bar, not 10 x 10 coloured squares
    assert list(tmp_path.glob("runs/wandb/offline-run-*/files/media/images/field_pair_importance_heatmap*.png"))
    assert f"field-pair importance written to {run / 'field_pair_importance.csv'}" in fit.stderr  # an absolute path

    # stdout is a pipe here: one line per epoch instead of a progress bar redrawn in place
    epochs = [line for line in fit.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 0/2", "epoch 1/2"]
    assert "train/loss" in epochs[0] and "val/rmse" in epochs[0] and len(fit.stdout) < 3000

    checkpoint = next(run.glob("checkpoints/best-*.ckpt"))
    predict = run_cli("predict", *SMALL_IFM, "--ckpt_path", str(checkpoint.relative_to(tmp_path)), cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr[-3000:]
    written = run / "predictions.parquet"  # by default in the folder of the run the checkpoint belongs to
    assert f"predictions of 150 rows written to {written.relative_to(tmp_path)}" in predict.stderr  # the test split
    assert len(pd.read_parquet(written)) == 150
    test = run_cli("test", *SMALL_IFM, "--ckpt_path", str(checkpoint), cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    for output in (fit, predict, test):
        said = output.stdout + output.stderr
        assert not [noise for noise in NOISE if noise in said], said[-3000:]


def test_on_a_terminal_the_bar_is_redrawn_once_per_logging_interval(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

    from lit_ifm.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lit-ifm"])
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    cli = main(["fit", "--data.synthetic.rows", "500", "--trainer.max_epochs", "1", "--trainer.logger", "false",
                "--trainer.default_root_dir", str(tmp_path), "--trainer.log_every_n_steps", "7"])
    bars = [callback for callback in cli.trainer.callbacks if isinstance(callback, ProgressBar)]
    assert len(bars) == 1 and isinstance(bars[0], TQDMProgressBar) and bars[0].refresh_rate == 7


def test_without_a_logger_the_run_folder_holds_the_same_files(tmp_path):
    cli = run_main(tmp_path, "fit", *SMALL_IFM, "--trainer.max_epochs", "1")
    run = Path(cli.trainer.default_root_dir)
    assert run == tmp_path / "run-0"
    assert {"checkpoints", "config.yaml", "field_pair_importance.csv", "field_pair_importance.png"} <= {
        path.name for path in run.iterdir()}


def test_the_heatmap_names_each_of_39_fields_on_both_axes_without_overlap():
    names = tuple(f"I{i}" for i in range(1, 14)) + tuple(f"C{i}" for i in range(1, 27))  # Criteo's 39 fields
    matrix = np.random.default_rng(0).random((39, 39))
    figure = importance_figure(matrix + matrix.T, names, "Field-pair importance of IFM, run abc123")
    heatmap, colour_bar = figure.axes
    assert heatmap.get_title() == "Field-pair importance of IFM, run abc123" and colour_bar.get_ylabel()
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)  # lays the figure out, as saving it does
    x_boxes = [label.get_window_extent(renderer) for label in heatmap.get_xticklabels()]
    y_boxes = [label.get_window_extent(renderer) for label in heatmap.get_yticklabels()]  # top to bottom
    assert [label.get_text() for label in heatmap.get_xticklabels()] == list(names)
    assert [label.get_text() for label in heatmap.get_yticklabels()] == list(names)
    gaps = [right.x0 - left.x1 for left, right in zip(x_boxes, x_boxes[1:])]
    gaps += [upper.y0 - lower.y1 for upper, lower in zip(y_boxes, y_boxes[1:])]
    assert min(gaps) > 4  # pixels between neighbouring names (a 5-inch figure leaves them touching)


class SlowValidation(L.Callback):
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            time.sleep(1.5)


def test_throughput_counts_training_batches_only(tmp_path):
    data = FieldAwareDataModule(synthetic=SyntheticConfig(rows=1500), batch_size=128)
    run = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                    enable_checkpointing=False, default_root_dir=tmp_path, num_sanity_val_steps=0,
                    callbacks=[TrainingThroughput(), SlowValidation()])
    run.fit(FM(data.schema, embedding_dim=4), datamodule=data)
    training_seconds = 1050 / run.callback_metrics["train/samples_per_sec"].item()  # 70% of 1500 rows
    assert training_seconds < 1.0  # the 1.5 s validation is not in it


def test_line_progress_writes_a_line_every_n_seconds_within_an_epoch(tmp_path, capsys):
    data = FieldAwareDataModule(synthetic=SyntheticConfig(rows=1500), batch_size=128)
    L.Trainer(max_epochs=1, logger=False, enable_model_summary=False, enable_checkpointing=False,
              default_root_dir=tmp_path, callbacks=[LineProgress(every_n_seconds=0)]).fit(
        FM(data.schema, embedding_dim=4), datamodule=data)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" after ")[0] for line in lines[:-1]] == [  # 1,050 rows: 9 steps of 128 rows
        f"epoch 0/1: {step} steps, {step / 9:.0%} of the epoch," for step in range(1, 10)]
    assert lines[-1].startswith("epoch 0/1: 9 steps in ") and "val/rmse" in lines[-1]


def test_threads_sets_torch_threads(tmp_path):
    run_main(tmp_path, "fit", *SMALL_IFM, "--trainer.fast_dev_run", "1", "--threads", "2")
    assert torch.get_num_threads() == 2  # conftest puts back its own setting after the test
