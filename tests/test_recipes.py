"""Every recipe parses against the current signatures and completes a fast_dev_run, on small local
copies of its data (the recipes themselves name the Hub or a local folder)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, SAMPLES
from helpers import run_main

from lit_ifm.__main__ import main

# settings stacked after a recipe, not recipes of their own
OVERLAYS = [REPO / "recipes" / "cpu.yaml", REPO / "recipes" / "compile.yaml"]
RECIPES = sorted(path for path in (REPO / "recipes").glob("*.yaml") if path not in OVERLAYS)


def tiny_ml_tag(folder: Path, rows: int = 300) -> Path:
    """ml-tag's layout: ``label user:1 movie:1 tag:1`` with global ids (users, then movies, then tags)."""
    folder.mkdir()
    rng = random.Random(0)
    for split in ("train", "validation", "test"):
        lines = [f"{rng.choice((-1, 1))} {rng.randrange(20)}:1 {20 + rng.randrange(30)}:1 {50 + rng.randrange(40)}:1"
                 for _ in range(rows)]
        (folder / f"ml-tag.{split}.libfm").write_text("\n".join(lines) + "\n")
    return folder


def tiny_ctr_folder(folder: Path, numeric: list[str], categorical: list[str], rows: int = 200) -> Path:
    """A folder laid out like reczoo/Criteo_x1 or Avazu_x1: train/valid/test CSV with a 0/1 ``label``, the numeric
    columns (some missing) and the categorical ones (hex strings, some missing)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        frame = pd.DataFrame({"label": rng.integers(0, 2, rows)})
        for name in numeric:
            frame[name] = np.where(rng.random(rows) < 0.2, np.nan, rng.exponential(1.0, rows).round(3))
        for name in categorical:
            frame[name] = [None if rng.random() < 0.05 else f"{value:08x}" for value in rng.integers(0, 30, rows)]
        frame.to_csv(folder / f"{split}.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def local_sources(tmp_path_factory, small_frappe_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    return {"frappe": small_frappe_dir, "movielens": tiny_ml_tag(root / "ml-tag"),
            "movielens_tags": SAMPLES / "movielens-tags" / "tags.csv",
            "criteo": tiny_ctr_folder(root / "Criteo_x1", [f"I{i}" for i in range(1, 14)],
                                      [f"C{i}" for i in range(1, 27)]),
            "avazu": tiny_ctr_folder(root / "Avazu_x1", [], [f"feat_{i}" for i in range(1, 23)])}


def test_every_model_has_a_recipe_per_dataset():
    stems = {path.stem for path in RECIPES}
    for model in ("ffm", "afm", "nfm", "deepfm", "ifm", "inn", "deepifm"):
        assert {f"{model}_frappe", f"{model}_movielens", f"{model}_synthetic"} <= stems
    for model in ("fm", "afm", "nfm", "deepfm", "ifm", "inn", "deepifm"):
        assert f"{model}_movielens_tags" in stems
    for model in ("fm", "ifm", "inn", "deepifm"):
        assert {f"{model}_criteo", f"{model}_avazu"} <= stems


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_recipe_completes_a_fast_dev_run(recipe, local_sources, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lit_ifm"])  # LightningCLI warns when args= and pytest's argv meet
    args = ["fit", "--config", str(recipe), "--trainer.fast_dev_run", "1", "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]
    source = yaml.safe_load(recipe.read_text())["data"]["source"]
    if source == "synthetic":
        args += ["--data.synthetic.rows", "600"]
    else:
        (dataset,) = [name for name in local_sources if recipe.stem.endswith(f"_{name}")]  # the data set its name ends with
        args += ["--data.source", str(local_sources[dataset])]
    cli = main(args=args)
    assert cli.trainer.state.finished
    assert cli.model.num_parameters() > 0


def test_a_recipe_that_lists_callbacks_keeps_every_default_one():
    """A recipe's callback list replaces cli.yaml's: it must repeat the defaults, and keep them in step."""
    defaults = yaml.safe_load((REPO / "cli.yaml").read_text())["trainer"]["callbacks"]
    for recipe in RECIPES:
        callbacks = (yaml.safe_load(recipe.read_text()).get("trainer") or {}).get("callbacks")
        if callbacks is not None:
            assert callbacks[: len(defaults)] == defaults, recipe.name


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_the_cpu_setting_stacks_after_every_recipe(recipe, tmp_path, capsys):
    with pytest.raises(SystemExit) as printed:
        run_main(tmp_path, "fit", "--config", str(recipe), "--config", str(REPO / "recipes" / "cpu.yaml"),
                 "--print_config")
    assert printed.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    own = yaml.safe_load(recipe.read_text())
    assert config["model"]["class_path"] == own["model"]["class_path"]  # the recipe's model and protocol stay
    assert config["model"]["init_args"]["embedding_dim"] == 64 and config["data"]["batch_size"] == 1024
    assert config["data"]["source"] == own["data"]["source"]


@pytest.mark.slow
def test_the_compile_setting_trains_a_recipe_and_its_checkpoint_loads_eager(tmp_path):
    from lit_ifm import FM

    cli = run_main(tmp_path, "fit", "--config", str(REPO / "recipes" / "fm_synthetic.yaml"), "--config",
                   str(REPO / "recipes" / "compile.yaml"), "--trainer.max_epochs", "1", "--data.synthetic.rows", "2000")
    assert cli.model.hparams.compile == "default" and cli.model._compiled_scores is not None
    best = next(tmp_path.glob("**/best-*.ckpt"))
    eager = FM.load_from_checkpoint(best, compile=None)
    assert eager._compiled_scores is None and eager.hparams.compile is None
