"""The command line as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import yaml
from conftest import REPO


def run_cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lit_ifm", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_fit_one_epoch_on_synthetic_data_then_test(tmp_path):
    result = run_cli("fit", "--config", str(REPO / "recipes" / "fm_synthetic.yaml"), "--trainer.max_epochs", "1",
                     "--data.synthetic.rows", "3000", "--trainer.enable_progress_bar", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/rmse" in result.stdout
    checkpoints = sorted(p.name for p in tmp_path.glob("runs/**/checkpoints/*.ckpt"))
    assert checkpoints == ["best-epoch=0.ckpt", "last.ckpt"]
    metrics = next(tmp_path.glob("runs/**/metrics.csv")).read_text()
    assert "val/rmse" in metrics and "train/loss" in metrics


def test_print_config_resolves_the_recipe_over_cli_yaml(tmp_path):
    result = run_cli("fit", "--config", str(REPO / "recipes" / "fm_frappe.yaml"), "--print_config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    config = yaml.safe_load(result.stdout)
    assert config["model"]["class_path"] == "lit_ifm.FM"
    assert config["model"]["init_args"]["embedding_dim"] == 256
    assert "schema" not in config["model"]["init_args"]  # linked from the data, never typed
    assert config["data"]["categorical"][0] == "user"
    assert config["trainer"]["callbacks"][0]["init_args"]["monitor"] == "val/rmse"


def test_a_mistyped_key_is_rejected(tmp_path):
    result = run_cli("fit", "--config", str(REPO / "recipes" / "fm_synthetic.yaml"), "--model.embeding_dim", "8",
                     cwd=tmp_path)
    assert result.returncode != 0 and "embeding_dim" in result.stderr
