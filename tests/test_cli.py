"""The command line as a user runs it."""

from __future__ import annotations

import sys

import pytest
import torch
import yaml
from conftest import REPO
from helpers import run_cli, run_main


@pytest.fixture
def wandb_service_of_the_parent():
    """A W&B service started by the calling process (a notebook, a script, an earlier test): the child inherits it
    through ``WANDB_SERVICE``, and the service resolves paths in its own working directory, not the child's."""
    import wandb

    wandb.teardown()  # a service of its own, whose socket the environment names
    wandb.setup()
    yield
    wandb.teardown()


@pytest.mark.slow
def test_fit_one_epoch_on_synthetic_data_then_test(tmp_path, wandb_service_of_the_parent):
    result = run_cli("fit", "--config", str(REPO / "recipes" / "fm_synthetic.yaml"), "--trainer.max_epochs", "1",
                     "--data.synthetic.rows", "3000", "--trainer.enable_progress_bar", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/rmse" in result.stdout
    checkpoints = sorted(p.name for p in tmp_path.glob("runs/**/checkpoints/*.ckpt"))
    assert checkpoints == ["best-epoch=0.ckpt", "last.ckpt"]
    assert "W&B logging offline (from WANDB_MODE)" in result.stderr + result.stdout
    assert len(list(tmp_path.glob("runs/wandb/offline-run-*/run-*.wandb"))) == 1
    run = next(tmp_path.glob("runs/lit_ifm/*/checkpoints")).parent
    assert (run / "config.yaml").is_file()


def test_the_logger_receives_the_nested_config_and_the_parameter_count(tmp_path, monkeypatch):
    from lit_ifm.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lit-ifm"])
    cli = main(["fit", "--config", str(REPO / "recipes" / "fm_synthetic.yaml"), "--trainer.max_epochs", "1",
                "--data.synthetic.rows", "2000", "--trainer.enable_progress_bar", "false",
                "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", "logs",
                "--trainer.log_every_n_steps", "1"])
    logged = yaml.safe_load(next(tmp_path.glob("logs/**/hparams.yaml")).read_text())
    assert logged["model"]["init_args"]["embedding_dim"] == 16 and "embedding_dim" not in logged
    assert logged["data"]["synthetic"]["rows"] == 2000 and logged["data"]["split_seed"] == 2019
    assert logged["num_parameters"] == cli.model.num_parameters()
    metrics = next(tmp_path.glob("logs/**/metrics.csv")).read_text().splitlines()[0]
    for name in ("train/loss", "train/loss_epoch", "train/samples_per_sec", "val/rmse", "test/rmse"):
        assert name in metrics.split(","), name


@pytest.mark.slow
def test_print_config_resolves_the_recipe_over_cli_yaml(tmp_path):
    result = run_cli("fit", "--config", str(REPO / "recipes" / "fm_frappe.yaml"), "--print_config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load(result.stdout)
    assert config["model"]["class_path"] == "lit_ifm.FM"
    assert config["model"]["init_args"]["embedding_dim"] == 256
    assert "schema" not in config["model"]["init_args"]  # linked from the data, never typed
    assert config["data"]["categorical"][0] == "user"
    best = config["trainer"]["callbacks"][0]
    assert best["class_path"] == "lit_ifm.callbacks.BestCheckpoint" and best["init_args"]["monitor"] is None  # the task's


@pytest.mark.slow
def test_a_mistyped_key_is_rejected(tmp_path):
    result = run_cli("fit", "--config", str(REPO / "recipes" / "fm_synthetic.yaml"), "--model.embeding_dim", "8",
                     cwd=tmp_path)
    assert result.returncode != 0 and "embeding_dim" in result.stderr


def test_test_and_predict_from_a_checkpoint(tmp_path, monkeypatch):
    from lit_ifm.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lit-ifm"])
    recipe = str(REPO / "recipes" / "ifm_synthetic.yaml")
    common = ["--config", recipe, "--data.synthetic.rows", "1500", "--trainer.enable_progress_bar", "false",
              "--trainer.logger", "false"]
    fit = main(["fit", *common, "--trainer.max_epochs", "1"])
    checkpoint = fit.trainer.checkpoint_callback.best_model_path
    tested = main(["test", *common, "--ckpt_path", checkpoint])
    assert tested.trainer.callback_metrics["test/rmse"].item() == pytest.approx(
        fit.trainer.callback_metrics["test/rmse"].item())
    main(["predict", *common, "--ckpt_path", checkpoint,
          "--trainer.callbacks+=lit_ifm.callbacks.PredictionWriter",
          "--trainer.callbacks.output_path", "predictions.csv", "--trainer.callbacks.with_attention", "true"])
    header = (tmp_path / "predictions.csv").read_text().splitlines()[0]
    assert header.startswith('"row_id","prediction","attention:f0-f1"')


@pytest.mark.slow
def test_bad_data_is_one_clear_line_not_a_traceback(tmp_path):
    result = run_cli("fit", "--data.source", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert result.returncode == 2
    assert f"lit-ifm: error: data source '{tmp_path / 'nowhere'}': no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_defaults_resolved_in_init_reach_the_checkpoint_so_test_and_reload_rebuild_the_same_model(tmp_path):
    from lit_ifm import IFM

    def fit(recipe: str, *args: str) -> str:
        common = ["--config", str(REPO / "recipes" / f"{recipe}.yaml"), "--data.synthetic.rows", "1500",
                  "--model.embedding_dim", "4", "--trainer.max_epochs", "1"]
        return run_main(tmp_path, "fit", *common, *args).trainer.checkpoint_callback.best_model_path

    # LightningCLI saves its config as given (pooled_batch_norm and l2_regularization null), so the model must save
    # what it resolved: from FM's checkpoint, no pooled batch norm; and the L2 penalty that training applied.
    from_fm = fit("ifm_synthetic", "--model.init_from", fit("fm_synthetic"))
    settings = torch.load(from_fm, map_location="cpu", weights_only=False)["hyper_parameters"]
    assert settings["pooled_batch_norm"] is False and settings["l2_regularization"] == {"feature_embedding": 1e-4}
    assert IFM.load_from_checkpoint(from_fm).pooling.norm is None
    tested = run_main(tmp_path, "test", "--config", str(REPO / "recipes" / "ifm_synthetic.yaml"),
                      "--data.synthetic.rows", "1500", "--ckpt_path", from_fm)
    assert "test/rmse" in tested.trainer.callback_metrics
