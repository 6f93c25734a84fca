"""Settings that follow the task (issue 12, point 2): labels, the monitored metric, one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO
from helpers import error_line, run_main
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lit_ifm.callbacks import BestCheckpoint

FRAPPE_RECIPES = sorted((REPO / "recipes").glob("*_frappe.yaml"))


def watched(cli) -> list[tuple[str, str, str]]:
    """(callback class, metric, mode) of every callback that watches a metric, by class name."""
    return sorted((type(callback).__name__, callback.monitor, callback.mode) for callback in cli.trainer.callbacks
                  if isinstance(callback, EarlyStopping) or (isinstance(callback, ModelCheckpoint) and callback.monitor))


@pytest.mark.parametrize("recipe", FRAPPE_RECIPES, ids=lambda path: path.stem)
def test_binary_task_runs_with_every_frappe_recipe(recipe, small_frappe_dir, tmp_path):
    """The recipes keep the paper's signed_labels for regression; the binary task reads the same files as 0/1."""
    cli = run_main(tmp_path, "fit", "--config", str(recipe), "--data.source", str(small_frappe_dir), "--data.task",
                   "binary", "--model.embedding_dim", "4", "--trainer.fast_dev_run", "1")
    assert cli.trainer.state.finished and cli.model.task == "binary"
    assert set(cli.datamodule.prepared.splits["train"].labels.tolist()) == {0.0, 1.0}
    assert "test/auroc" in cli.trainer.callback_metrics
    assert watched(cli) == [("BestCheckpoint", "val/auroc", "max"), ("EarlyStopping", "val/auroc", "max")]


@pytest.mark.parametrize("task, option, expected", [
    ("binary", [], ("val/auroc", "max")),
    ("regression", [], ("val/rmse", "min")),
    ("binary", ["--monitor", "val/logloss"], ("val/logloss", "min")),
    ("regression", ["--monitor", "val/loss"], ("val/loss", "min")),
])
def test_the_best_checkpoint_and_early_stopping_follow_the_task(task, option, expected, tmp_path):
    cli = run_main(tmp_path, "fit", "--config", str(REPO / "recipes" / "fm_synthetic.yaml"), "--data.task", task,
                   "--data.synthetic.rows", "600", "--model.embedding_dim", "4", "--trainer.max_epochs", "2", *option)
    assert watched(cli) == [("BestCheckpoint", *expected), ("EarlyStopping", *expected)]
    best = cli.trainer.checkpoint_callback  # the first ModelCheckpoint: what after_fit tests
    assert isinstance(best, BestCheckpoint) and Path(best.best_model_path).name.startswith("best-epoch=")
    assert best.best_model_score.item() == pytest.approx(cli.trainer.early_stopping_callback.best_score.item())


def test_a_monitor_the_model_does_not_log_is_one_line(tmp_path, capsys):
    line = error_line(capsys, tmp_path, "fit", "--config", str(REPO / "recipes" / "fm_synthetic.yaml"),
                      "--data.synthetic.rows", "600", "--monitor", "val/auc")
    assert line == ("lit-ifm: error: monitor 'val/auc' is not a validation metric of FM (task "
                    "regression); choose one of val/loss, val/rmse, or give mode (min or max) for a metric logged "
                    "otherwise")


def test_a_monitor_that_no_callback_follows_is_refused(tmp_path, capsys):
    line = error_line(capsys, tmp_path, "fit", "--config", str(REPO / "recipes" / "fm_synthetic.yaml"),
                      "--trainer.callbacks", "[]", "--monitor", "val/loss")
    assert line.startswith("lit-ifm: error: --monitor val/loss: no callback follows it")


def test_ffm_with_sparse_embeddings_and_adam_is_one_line(small_frappe_dir, tmp_path, capsys):
    line = error_line(capsys, tmp_path, "fit", "--config", str(REPO / "recipes" / "ffm_frappe.yaml"), "--data.source",
                      str(small_frappe_dir), "--model.optimizer", "adam")
    assert line == ("lit-ifm: error: sparse_embeddings needs optimizer in ('adagrad', 'sgd'), got 'adam': torch's Adam "
                    "and AdamW have no sparse update; use --model.optimizer adagrad, or drop sparse_embeddings")
