"""Building on lit_ifm from another package (issue 12, point 1): ``examples/clickmodels``, copied outside the
repository, is imported from there as a user's own project would be."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
from conftest import REPO

from lit_ifm import FieldAwareDataModule, SyntheticConfig
from lit_ifm.callbacks import InteractionSampler, PredictionWriter

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", "--trainer.logger",
         "false"]


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The example package in a folder outside the repository, and an environment that imports it from there."""
    root = tmp_path_factory.mktemp("elsewhere")
    shutil.copytree(REPO / "examples" / "clickmodels", root / "clickmodels",
                    ignore=shutil.ignore_patterns("__pycache__"))
    paths = [str(root / "clickmodels"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return root, {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


@pytest.fixture
def clickmodels(elsewhere, monkeypatch):
    """The example package, imported from outside the repository."""
    monkeypatch.syspath_prepend(str(elsewhere[0] / "clickmodels"))
    import clickmodels

    assert Path(clickmodels.__file__).is_relative_to(elsewhere[0])
    return clickmodels


def run(elsewhere, module: str, *args: str) -> subprocess.CompletedProcess:
    root, env = elsewhere
    work = root / "work"
    work.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", module, *args, *QUIET], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_their_ifm_trains_with_lit_ifms_command_and_sampler_then_reloads_and_predicts(elsewhere, clickmodels,
                                                                                       tmp_path):
    fit = run(elsewhere, "lit_ifm", "fit", "--model.class_path", "clickmodels.LinearAttentionIFM",
              "--model.embedding_dim", "4", "--data.synthetic.rows", "600", "--trainer.max_epochs", "1",
              "--trainer.callbacks+=lit_ifm.callbacks.InteractionSampler", "--trainer.callbacks.pairs", "0.5")
    assert fit.returncode == 0, fit.stderr[-3000:]
    checkpoint = next((elsewhere[0] / "work").glob("runs/run-*/checkpoints/best-*.ckpt"))

    model = clickmodels.LinearAttentionIFM.load_from_checkpoint(checkpoint)
    assert isinstance(model.feature_aspect, clickmodels.LinearPairAttention) and model.hparams.embedding_dim == 4
    data = FieldAwareDataModule(synthetic=SyntheticConfig(rows=600))  # the data it was trained on
    output = tmp_path / "predictions.parquet"
    L.Trainer(logger=False, enable_progress_bar=False, callbacks=[PredictionWriter(str(output))]).predict(
        model, datamodule=data, return_predictions=False)
    predictions = pd.read_parquet(output)
    batch = next(iter(data.test_dataloader()))  # the 60 test rows, in order
    expected = model.eval().predictions(model(batch)).detach().numpy()
    assert predictions.row_id.tolist() == list(range(60))
    assert predictions.prediction.to_numpy() == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_their_model_with_their_data_module_through_their_own_entry_point(elsewhere):
    fit = run(elsewhere, "clickmodels", "fit", "--model.class_path", "clickmodels.FwFM", "--model.embedding_dim", "4",
              "--data.rows", "800", "--trainer.max_epochs", "1")
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "lit_ifm data from clicklog, task binary" in fit.stderr
    assert "tags   multi, split on '|', longest 3" in fit.stderr
    assert "test/auroc" in fit.stdout


@pytest.mark.slow
def test_a_mistyped_argument_of_their_model_is_refused(elsewhere):
    typo = run(elsewhere, "lit_ifm", "fit", "--model.class_path", "clickmodels.FwFM", "--model.embeding_dim", "4")
    assert typo.returncode != 0 and "embeding_dim" in typo.stderr


def test_their_new_g_samples_pairs_and_their_callback_reads_the_importance(clickmodels, tmp_path):
    data = clickmodels.ClickLog(rows=800)
    history, sampler = clickmodels.ImportanceHistory(top=2), InteractionSampler(pairs=0.5)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[history, sampler])
    model = clickmodels.ProjectedIFM(data.schema, task="binary", embedding_dim=4)
    trainer.fit(model, datamodule=data)
    assert sampler.steps == 2 * 3 and sampler.selection_counts.sum() == sampler.steps * sampler.count(model.num_pairs)
    assert model.num_pairs == 21  # 7 slots (user, item, hour, price and 3 for tags)
    assert len(history.history) == 2 and len(history.history[-1]) == 11  # field pairs: 10, and tags with tags
    top = history.history[-1][0]
    assert trainer.callback_metrics[f"importance/{top.first}-{top.second}"].item() == pytest.approx(top.share)
    assert not torch.equal(model.projection.weight, torch.ones(1, 4))  # G's own parameter p trained
