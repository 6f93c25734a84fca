"""Exporting a trained model for serving: every model's ``torch.export`` and ONNX artifacts predict as the eager model
does, and ``python -m lit_ifm export`` writes a folder that serves without lit_ifm."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import onnxruntime
import pandas as pd
import pytest
import torch
from helpers import MODELS

from lit_ifm.__main__ import main
from lit_ifm.callbacks import InteractionSampler
from lit_ifm.checkpoints import MODEL_KEY
from lit_ifm.data import FieldAwareDataModule, FieldBatch
from lit_ifm.models import FM, IFM, FieldAwareModel, InteractionAwareModel
from lit_ifm.serving import ExportFile, ServingModel, export, export_checkpoint

TOLERANCE = 1e-5
PREDICTED_ROWS = 1000
QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}


@dataclass(frozen=True)
class Case:
    """A model to export: its class and settings, the task it learns, and whether a top-pair sampler trains it."""

    model_class: type[FieldAwareModel]
    options: dict = field(default_factory=dict)
    task: str = "binary"
    top_pairs: bool = False

    def sampler(self) -> InteractionSampler | None:
        return InteractionSampler(pairs=0.5, evaluation="top") if self.top_pairs else None


CASES = {
    **{model.__name__: Case(model) for model in MODELS},
    **{f"IFM-{variant}": Case(IFM, {"variant": variant})
       for variant in ("unfactorized", "feature_aspect_only", "field_aspect_only")},
    **{f"{model.__name__}-top-pairs": Case(model, top_pairs=True)
       for model in MODELS if issubclass(model, InteractionAwareModel)},
    "FM-regression": Case(FM, task="regression"),
}


def table(rows: int, seed: int) -> pd.DataFrame:
    """Users and items, a price that is 0 (absent) in some rows, 0 to 3 tags, a click and a rating around 0 (which an
    untrained model's predictions fall within, so few are clipped to the ratings' range)."""
    rng = np.random.default_rng(seed)
    price = np.round(rng.exponential(3, rows), 2)
    price[rng.random(rows) < 0.2] = 0
    tags = ["|".join(f"t{t}" for t in rng.choice(12, rng.integers(0, 4), replace=False)) for _ in range(rows)]
    return pd.DataFrame({"user": rng.integers(0, 30, rows), "item": [f"i{i}" for i in rng.integers(0, 40, rows)],
                         "price": price, "tags": tags, "clicked": (rng.random(rows) < 0.4).astype(int),
                         "rating": np.round(rng.normal(0, 1, rows), 1)})


@pytest.fixture(scope="module")
def table_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("table")
    for split, rows, seed in (("train", 600, 0), ("valid", 200, 1), ("test", PREDICTED_ROWS, 2)):
        table(rows, seed).to_csv(folder / f"{split}.csv", index=False)
    return folder


def data_module(folder: Path, task: str) -> FieldAwareDataModule:
    return FieldAwareDataModule(str(folder), task=task, categorical=["user", "item"], numeric=["price"],
                                multi_valued={"tags": "|"}, label="clicked" if task == "binary" else "rating",
                                batch_size=128, eval_batch_size=PREDICTED_ROWS)


@pytest.fixture(scope="module")
def trained(table_folder, tmp_path_factory):
    """A case's checkpoint after two training steps (written once per case), and the test split's rows."""
    made: dict[str, Path] = {}
    data_modules: dict[str, FieldAwareDataModule] = {}

    def checkpoint(name: str) -> tuple[Path, FieldBatch]:
        case = CASES[name]
        if case.task not in data_modules:
            data_modules[case.task] = data_module(table_folder, case.task)
        data = data_modules[case.task]
        if name not in made:
            model = case.model_class(data.schema, task=case.task, embedding_dim=8, **case.options)
            callbacks = [case.sampler()] if case.top_pairs else []
            trainer = L.Trainer(max_steps=2, limit_val_batches=0, enable_checkpointing=False, callbacks=callbacks,
                                default_root_dir=tmp_path_factory.mktemp("fit"), **QUIET)
            trainer.fit(model, datamodule=data)
            made[name] = tmp_path_factory.mktemp("checkpoint") / f"{name}.ckpt"
            trainer.save_checkpoint(made[name])
        data.setup("test")
        (rows,) = list(data.test_dataloader())
        return made[name], rows

    return checkpoint


def eager_predictions(model: FieldAwareModel, ids: torch.Tensor, values: torch.Tensor,
                      sampler: InteractionSampler | None) -> torch.Tensor:
    """What Lightning's ``predict`` gives for these rows, with the sampler the model was trained with."""
    rows = FieldBatch(ids, values, torch.zeros(len(ids)), torch.arange(len(ids)))
    loader = torch.utils.data.DataLoader([rows], batch_size=None)
    trainer = L.Trainer(callbacks=[sampler] if sampler is not None else [], **QUIET)
    (output,) = trainer.predict(model, dataloaders=loader)
    return output["prediction"]


def exported_predictions(folder: Path, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    if (folder / "model.pt2").is_file():
        return torch.export.load(folder / "model.pt2").module()(ids, values)
    runtime = onnxruntime.InferenceSession(folder / "model.onnx", providers=["CPUExecutionProvider"])
    (scores,) = runtime.run(["scores"], {"ids": ids.numpy(), "values": values.numpy()})
    return torch.from_numpy(scores)


@pytest.mark.slow  # an export per model and format: a minute in all
@pytest.mark.parametrize("format", ["torch", "onnx"])
@pytest.mark.parametrize("name", list(CASES))
def test_the_exported_model_predicts_as_the_eager_model(trained, tmp_path, name, format):
    checkpoint, rows = trained(name)
    case = CASES[name]
    ids, values = rows.feature_ids, rows.feature_values
    assert len(ids) == PREDICTED_ROWS and (values == 0).any(dim=1).float().mean() > 0.5  # rows with empty slots
    model = case.model_class.load_from_checkpoint(checkpoint).train()
    trainable = [parameter.requires_grad for parameter in model.parameters()]

    folder = export(model, tmp_path / "export", format, sampler=case.sampler())

    assert model.training and [parameter.requires_grad for parameter in model.parameters()] == trainable  # unchanged
    eager = eager_predictions(model, ids, values, case.sampler())
    assert eager.std() > 1e-3  # the rows' predictions differ, so equal ones say something
    torch.testing.assert_close(exported_predictions(folder, ids, values), eager, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(exported_predictions(folder, ids[:1], values[:1]), eager[:1], rtol=0, atol=TOLERANCE)
    signature = json.loads((folder / "signature.json").read_text())
    if case.top_pairs:
        assert len(signature["pairs"]["computed"]) == case.sampler().count(model.num_pairs) < model.num_pairs
    if case.task == "regression":
        assert signature["label_range"] == list(model.schema.label_range) and "clipped" in signature["output"]["description"]


def fit_with_top_pairs(table_folder: Path, root: Path) -> Path:
    """``python -m lit_ifm fit`` of IFM under a top-pair sampler; returns its checkpoint."""
    recipe = root / "ifm_top_pairs.yaml"
    recipe.write_text(f"""
model:
  class_path: lit_ifm.IFM
  init_args: {{embedding_dim: 8}}
data:
  source: {table_folder}
  task: binary
  categorical: [user, item]
  numeric: [price]
  multi_valued: {{tags: "|"}}
  label: clicked
  batch_size: 128
trainer:
  max_epochs: 1
  callbacks:
    - class_path: lit_ifm.callbacks.BestCheckpoint
    - class_path: lit_ifm.callbacks.InteractionSampler
      init_args: {{pairs: 0.4, evaluation: top}}
""")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setattr(sys, "argv", ["lit-ifm"])
        main(["fit", "--config", str(recipe), "--trainer.logger", "false", "--trainer.default_root_dir", str(root),
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"])
    (checkpoint,) = root.glob("run-*/checkpoints/*.ckpt")
    return checkpoint


def run_readme_without_lit_ifm(folder: Path) -> list[float]:
    """The export README's Python, run in its folder in a new process where ``import lit_ifm`` fails."""
    (code,) = re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), flags=re.DOTALL)
    program = "import sys\nsys.modules['lit_ifm'] = None\n" + code + "print(json.dumps([float(s) for s in scores]))\n"
    result = subprocess.run([sys.executable, "-c", program], check=False, cwd=folder, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_export_command_writes_a_folder_that_serves_without_lit_ifm(table_folder, tmp_path, capsys):
    checkpoint = fit_with_top_pairs(table_folder, tmp_path)
    model = IFM.load_from_checkpoint(checkpoint)
    top = InteractionSampler(pairs=0.4).count(model.num_pairs)
    output = tmp_path / "served"
    capsys.readouterr()  # the fit's

    for format, model_file in (("torch", "model.pt2"), ("onnx", "model.onnx")):  # the second replaces the first
        assert main(["export", "--ckpt_path", str(checkpoint), "--format", format, "--output", str(output)]) == output
        assert capsys.readouterr().out.strip() == (f"IFM (the top {top} of {model.num_pairs} pairs) exported to "
                                                   f"{output}: {model_file}, encoder.json, signature.json, README.md")
        assert sorted(path.name for path in output.iterdir()) == sorted([model_file, "encoder.json", "signature.json",
                                                                         "README.md"])
        encoder = json.loads((output / "encoder.json").read_text())  # the field spec's rules, in slot order
        assert [(f["name"], f["kind"], f["slots"]) for f in encoder["fields"]] == [
            ("user", "categorical", 1), ("item", "categorical", 1), ("price", "numeric", 1), ("tags", "multi", 3)]
        signature = json.loads((output / "signature.json").read_text())
        assert [(f["name"], f["kind"], f["first_slot"], f["slots"]) for f in signature["fields"]] == [
            ("user", "categorical", 0, 1), ("item", "categorical", 1, 1), ("price", "numeric", 2, 1),
            ("tags", "multi", 3, 3)]
        assert signature["padding_id"] == model.schema.padding_id and signature["task"] == "binary"
        assert len(signature["pairs"]["computed"]) == top

        scores = run_readme_without_lit_ifm(output)

        # the README's rows: every field's out-of-vocabulary feature, then a row of empty slots
        ids = torch.full((2, model.schema.num_slots), model.schema.padding_id)
        values = torch.zeros(2, model.schema.num_slots)
        for field_spec in signature["fields"]:
            ids[0, field_spec["first_slot"]], values[0, field_spec["first_slot"]] = field_spec["oov_id"], 1.0
        eager = eager_predictions(model, ids, values, InteractionSampler(pairs=0.4, evaluation="top"))
        torch.testing.assert_close(torch.tensor(scores), eager, rtol=0, atol=TOLERANCE)


def export_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(["export", *args])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lit-ifm: error: "), lines
    return lines[0]


def test_export_mistakes_are_one_line_each(trained, tmp_path, capsys):
    checkpoint, _ = trained("FM")
    output = str(tmp_path / "out")
    assert "no checkpoint at" in export_error(capsys, "--ckpt_path", str(tmp_path / "missing.ckpt"), "--output", output)
    assert "invalid choice: 'tflite'" in export_error(capsys, "--ckpt_path", str(checkpoint), "--format", "tflite",
                                                      "--output", output)
    assert "--output" in export_error(capsys, "--ckpt_path", str(checkpoint))

    foreign = torch.load(checkpoint, weights_only=True)
    foreign[MODEL_KEY] = "someone_elses.models.Ranker"
    torch.save(foreign, tmp_path / "foreign.ckpt")
    line = export_error(capsys, "--ckpt_path", str(tmp_path / "foreign.ckpt"), "--output", output)
    assert "someone_elses.models.Ranker, which cannot be imported" in line

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    line = export_error(capsys, "--ckpt_path", str(checkpoint), "--output", str(tmp_path / "busy"))
    assert "notes.txt" in line and (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert not Path(output).exists()


def test_export_checkpoint_finds_no_sampler_outside_a_run_folder(trained, tmp_path):
    checkpoint, _ = trained("IFM-top-pairs")  # trained with a sampler, but no config.yaml says so
    folder = export_checkpoint(checkpoint, tmp_path / "export")
    assert json.loads((folder / "signature.json").read_text())["pairs"]["computed"] == "all"


def test_the_serving_model_computes_all_pairs_whatever_a_training_step_drew(trained):
    checkpoint, rows = trained("IFM")
    model = IFM.load_from_checkpoint(checkpoint).eval()
    expected = eager_predictions(model, rows.feature_ids, rows.feature_values, None)
    model.active_pairs = torch.tensor([0, 3])  # as InteractionSampler leaves it within a training epoch

    serving = ServingModel(model)

    assert serving.computed_pairs() is None and model.active_pairs.tolist() == [0, 3]
    torch.testing.assert_close(serving(rows.feature_ids, rows.feature_values), expected, rtol=0, atol=TOLERANCE)


def test_an_extra_file_is_listed_and_a_failed_export_leaves_no_files_behind(trained, tmp_path):
    checkpoint, _ = trained("FM")
    model = FM.load_from_checkpoint(checkpoint)
    vocabulary = ExportFile("vocabulary.txt", "the values", lambda path: path.write_text("a\nb\n"))

    folder = export(model, tmp_path / "export", extra_files=[vocabulary])

    assert json.loads((folder / "signature.json").read_text())["files"]["vocabulary.txt"] == "the values"
    assert "| `vocabulary.txt` | the values |" in (folder / "README.md").read_text()

    def write_half(path: Path) -> None:
        path.write_text("a\n")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        export(model, folder, extra_files=[ExportFile("vocabulary.txt", "the values", write_half)])
    assert list(folder.iterdir()) == []
