"""A catalogue of faults (issue 8): each one a user can run into, and what lit_ifm now does about it.

Every test is named after the issue's number for its fault, and each failed on the code before the fix: it gave
a wrong answer with exit code 0, lost a run, or buried its message in a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO
from helpers import QUIET, error_line, run_cli, run_main
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_ifm import FM, IFM, DataError, Field, FieldAwareDataModule, FieldSchema, SyntheticConfig
from lit_ifm.callbacks import DivergenceGuard
from lit_ifm.data.rows.splits import split_rows
from lit_ifm.errors import CheckpointError, ConfigError, TrainingDiverged
from lit_ifm.loggers import resolve_wandb_mode

RECIPES = REPO / "recipes"


# --- running the command line --------------------------------------------------------------------------


def checkpoints(root: Path, name: str = "last.ckpt") -> list[Path]:
    return sorted(root.glob(f"**/checkpoints/{name}"))


# --- small data ----------------------------------------------------------------------------------------


def write_ratings(folder: Path, users: str = "u", extra_user: bool = False) -> Path:
    """train/valid/test CSV (user, item, label): 10 users and 10 items, every one of them in training."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, rows in (("train", 60), ("valid", 20), ("test", 20)):
        index = np.arange(rows + (extra_user and split == "train"))
        frame = pd.DataFrame({"user": [f"{users}{i % 10}" for i in index],
                              "item": [f"i{(3 * i + i // 10) % 10}" for i in index],
                              "label": rng.random(len(index)).round(3)})
        if extra_user and split == "train":
            frame.loc[rows, "user"] = f"{users}99"  # one value appended to the vocabulary
        frame.to_csv(folder / f"{split}.csv", index=False)
    return folder


def ratings_args(folder: Path, fields: str = "[user,item]") -> list[str]:
    return ["--config", str(RECIPES / "fm_synthetic.yaml"), "--model.embedding_dim", "4", "--data.source", str(folder),
            "--data.categorical", fields, "--data.batch_size", "16"]


def synthetic_args(recipe: str = "ifm_synthetic", rows: int = 600) -> list[str]:
    return ["--config", str(RECIPES / f"{recipe}.yaml"), "--data.synthetic.rows", str(rows), "--model.embedding_dim",
            "4"]


def write_libfm(folder: Path, train: str, validation: str = "1 1:1 3:1\n", test: str = "-1 0:1 3:1\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in (("train", train), ("validation", validation), ("test", test)):
        (folder / f"toy.{split}.libfm").write_text(text)
    return folder


@pytest.fixture(scope="module")
def ratings_run(tmp_path_factory) -> tuple[Path, Path]:
    """An FM trained one epoch on the ratings folder with fields [user, item]: (folder, last.ckpt)."""
    root = tmp_path_factory.mktemp("ratings")
    folder = write_ratings(root / "data")
    run_main(root, "fit", *ratings_args(folder), "--trainer.max_epochs", "1")
    return folder, checkpoints(root)[0]


@pytest.fixture(scope="module")
def ifm_run(tmp_path_factory) -> Path:
    """last.ckpt of an IFM trained one epoch on 600 synthetic rows."""
    root = tmp_path_factory.mktemp("ifm")
    run_main(root, "fit", *synthetic_args(), "--trainer.max_epochs", "1")
    return checkpoints(root)[0]


# ====================================== Silent wrong results ============================================


@pytest.mark.parametrize("command", ["test", "predict", "validate", "fit"])
def test_01_a_checkpoint_meets_reordered_fields(command, ratings_run, tmp_path, capsys):
    folder, checkpoint = ratings_run  # user and item have 10 values each: the shapes match, the meaning does not
    line = error_line(capsys, tmp_path, command, *ratings_args(folder, "[item,user]"), "--ckpt_path", str(checkpoint),
                      "--trainer.max_epochs", "2")
    assert line == (f"lit-ifm: error: --ckpt_path: {checkpoint} was trained on other data: its fields are "
                    "['user', 'item'], the data's are ['item', 'user']; use the data and field spec it was trained with")


@pytest.mark.parametrize("change, difference", [
    ("renamed", "field 'user' maps its 10 values to other ids than the checkpoint's vocabulary"),
    ("appended", "field 'user' has 10 values in the checkpoint's vocabulary, 11 in the data's"),
])
def test_01_a_checkpoint_meets_a_changed_vocabulary(change, difference, ratings_run, tmp_path, capsys):
    _, checkpoint = ratings_run
    folder = write_ratings(tmp_path / "data", users="v" if change == "renamed" else "u", extra_user=change == "appended")
    line = error_line(capsys, tmp_path, "test", *ratings_args(folder), "--ckpt_path", str(checkpoint))
    assert f"was trained on other data: {difference};" in line


def test_01_init_from_a_checkpoint_of_other_data(ratings_run):
    folder, checkpoint = ratings_run
    schema = FieldAwareDataModule(str(folder), categorical=["item", "user"]).schema
    with pytest.raises(CheckpointError, match=r"init_from: .*last.ckpt was trained on other data: its fields are"):
        IFM(schema, embedding_dim=4, init_from=str(checkpoint))


def test_02_the_recipe_model_class_must_be_the_checkpoints(ifm_run, tmp_path, capsys):
    line = error_line(capsys, tmp_path, "test", *synthetic_args("fm_synthetic"), "--ckpt_path", str(ifm_run))
    assert line == (f"lit-ifm: error: {ifm_run} holds a model of class IFM, but the configuration asks for FM: use "
                    "the recipe it was trained with (or --model lit_ifm.IFM)")


def test_03_nan_training_stops_with_a_message_and_writes_no_checkpoint(tmp_path, capsys):
    line = error_line(capsys, tmp_path, "fit", *synthetic_args(rows=3000), "--trainer.precision", "bf16-mixed",
                      "--model.optimizer", "sgd", "--model.lr", "1000", "--trainer.max_epochs", "2")
    # the training loss, or (batch norm keeps IFM's training loss finite a little longer) the validation loss
    assert re.match(r"lit-ifm: error: (the training loss became (nan|inf) at step \d+ \(epoch 0\)|validation metric "
                    r"val/loss became (nan|inf) in epoch 0); training stopped before this state reached a checkpoint "
                    r"\(earlier checkpoints are kept\); lower the learning rate \(--model.lr\), or train in 32-bit precision$", line), line
    assert not list(tmp_path.glob("**/*.ckpt"))


class Poison(L.Callback):
    """Makes the weights NaN in epoch 1: before its first step (the loss shows it) or after its last (only the
    validation metrics show it)."""

    def __init__(self, when: str):
        self.when = when

    def _poison(self, module) -> None:
        with torch.no_grad():
            module.bias.fill_(float("nan"))

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.when == "loss" and trainer.current_epoch == 1:
            self._poison(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.when == "validation" and trainer.current_epoch == 1 and batch_idx == trainer.num_training_batches - 1:
            self._poison(pl_module)


@pytest.mark.parametrize("when, message", [
    ("loss", r"the training loss became nan at step 12 \(epoch 1\)"),
    ("validation", r"validation metric val/loss became nan in epoch 1"),
])
def test_03_a_diverged_epoch_never_replaces_the_last_good_checkpoint(when, message, tmp_path):
    data = FieldAwareDataModule(synthetic=SyntheticConfig(rows=1000), batch_size=64)  # 11 steps an epoch
    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/rmse", filename="best-{epoch}", save_last=True)
    trainer = L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                        callbacks=[DivergenceGuard(), Poison(when), best])
    with pytest.raises(TrainingDiverged, match=message):
        trainer.fit(FM(data.schema, embedding_dim=4), datamodule=data)
    assert sorted(path.name for path in tmp_path.glob("*.ckpt")) == ["best-epoch=0.ckpt", "last.ckpt"]
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and all(tensor.isfinite().all() for tensor in last["state_dict"].values())


@pytest.mark.parametrize("weights_only", [False, True], ids=["full", "weights-only"])
def test_03_a_checkpoint_every_few_steps_never_saves_a_diverged_state(tmp_path, weights_only):
    data = FieldAwareDataModule(synthetic=SyntheticConfig(rows=1000), batch_size=64)  # 11 steps an epoch
    every_3 = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1, filename="{step}",
                              save_weights_only=weights_only)
    trainer = L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                        callbacks=[DivergenceGuard(), Poison("loss"), every_3])
    with pytest.raises(TrainingDiverged, match=r"the training loss became nan at step 12 \(epoch 1\)"):
        trainer.fit(FM(data.schema, embedding_dim=4), datamodule=data)
    saved = sorted(tmp_path.glob("*.ckpt"))
    assert [path.name for path in saved] == ["step=3.ckpt", "step=6.ckpt", "step=9.ckpt"]  # not step=12
    assert all(tensor.isfinite().all() for path in saved
               for tensor in torch.load(path, weights_only=True)["state_dict"].values())


@pytest.mark.parametrize("task", ["regression", "binary"])
@pytest.mark.parametrize("layout, label, message", [
    ("libfm", "nan", r"toy.train.libfm line 2: label 'nan' is not a finite number"),
    ("libfm", "inf", r"toy.train.libfm line 2: label 'inf' is not a finite number"),
    ("csv", "inf", r"train.csv line 3, column 'label': label inf is not a finite number"),
    ("csv", "-inf", r"train.csv line 3, column 'label': label -inf is not a finite number"),
    ("csv", "nan", r"train.csv line 3, column 'label': the label is missing \(empty or NaN\)"),
])
def test_04_non_finite_labels_are_refused(task, layout, label, message, tmp_path):
    if layout == "libfm":
        source = write_libfm(tmp_path / "toy", f"1 0:1 2:1\n{label} 1:1 3:1\n1 0:1 3:1\n")
        options = {}
    else:
        source = write_ratings(tmp_path / "data")
        frame = pd.read_csv(source / "train.csv").astype({"label": object})
        frame.loc[1, "label"] = label
        frame.to_csv(source / "train.csv", index=False)
        options = {"categorical": ["user", "item"]}
    with pytest.raises(DataError, match=message):
        FieldAwareDataModule(str(source), task=task, **options).schema


@pytest.mark.parametrize("labels, message", [
    ("1 5 3 4", r"toy.train.libfm line 2: label 5 is not 0/1 or -1/\+1, as task binary expects; set "
                r"positive_threshold \(labels at or above it are positive, e.g. --data.positive_threshold 4"),
    ("1 0 7 0", r"line 3: label 7 is not 0/1 or -1/\+1"),
    ("-3 1 0 1", r"line 1: label -3 is not 0/1 or -1/\+1"),
    ("-1 1 0 1", r"line 3: label 0 beside -1 labels is not 0/1 or -1/\+1"),
])
def test_05_binary_labels_that_are_not_two_classes_are_refused(labels, message, tmp_path):
    lines = [f"{label} {i % 2}:1 {2 + i % 2}:1" for i, label in enumerate(labels.split())]
    folder = write_libfm(tmp_path / "toy", "\n".join(lines) + "\n", validation="1 1:1 3:1\n", test="1 0:1 3:1\n")
    with pytest.raises(DataError, match=message):
        FieldAwareDataModule(str(folder), task="binary").schema


def test_05_csv_ratings_under_the_binary_task_are_refused(tmp_path):
    folder = write_ratings(tmp_path / "data")
    frame = pd.read_csv(folder / "train.csv")
    frame["label"] = np.arange(len(frame)) % 5 + 1  # ratings 1..5
    frame.to_csv(folder / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train.csv line 3: label 2 is not 0/1 or -1/\+1, as task binary"):
        FieldAwareDataModule(str(folder), task="binary", categorical=["user", "item"]).schema
    module = FieldAwareDataModule(str(folder), task="binary", categorical=["user", "item"], positive_threshold=4)
    assert module.prepared.splits["train"].labels[:5].tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_05_positive_threshold_reads_ratings_as_binary_labels(tmp_path):
    folder = write_libfm(tmp_path / "toy", "1 0:1 2:1\n5 1:1 3:1\n3 0:1 3:1\n4 1:1 2:1\n", validation="2 1:1 3:1\n",
                         test="5 0:1 3:1\n")
    module = FieldAwareDataModule(str(folder), task="binary", positive_threshold=4)
    assert module.prepared.splits["train"].labels.tolist() == [0.0, 1.0, 0.0, 1.0]
    for negative in ("-1", "0"):  # the two spellings of two classes
        folder = write_libfm(tmp_path / negative, f"{negative} 0:1 2:1\n1 1:1 3:1\n", validation="1 1:1 3:1\n",
                             test="1 0:1 3:1\n")
        assert FieldAwareDataModule(str(folder), task="binary").prepared.splits["train"].labels.tolist() == [0.0, 1.0]
    with pytest.raises(ConfigError, match="positive_threshold turns labels into 0/1 for task binary"):
        FieldAwareDataModule(str(folder), positive_threshold=4)


def test_06_the_label_named_as_a_feature_is_refused(tmp_path):
    folder = write_ratings(tmp_path / "data")
    with pytest.raises(DataError, match="the label column 'label' is also named as a categorical field; a model must "
                                        "not see its label"):
        FieldAwareDataModule(str(folder), categorical=["user", "label"]).schema


def test_07_duplicate_csv_columns_are_refused(tmp_path):
    folder = write_ratings(tmp_path / "data")
    valid = pd.read_csv(folder / "valid.csv")
    rows = [f"{row.user},{row.item},i{index % 3},{row.label}" for index, row in enumerate(valid.itertuples())]
    (folder / "valid.csv").write_text("\n".join(["user,item,item,label", *rows]) + "\n")
    with pytest.raises(DataError, match="valid.csv line 1: the header names column 'item' more than once"):
        FieldAwareDataModule(str(folder), categorical=["user", "item"]).schema


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_08_a_one_file_vocabulary_comes_from_the_training_rows(suffix, tmp_path):
    rows, seed = 200, 5
    train, validation, _ = split_rows(rows, np.random.default_rng(seed))  # the rows the module will pick
    items = [f"common{row % 7}" for row in range(rows)]
    for row in validation[:9]:
        items[row] = f"only_in_validation{row}"
    frame = pd.DataFrame({"user": [f"u{row % 5}" for row in range(rows)], "item": items, "label": 1.0})
    path = tmp_path / f"all{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    module = FieldAwareDataModule(str(path), categorical=["user", "item"], split_seed=seed)
    item = module.schema.fields[1]
    assert item.vocabulary_size == 7 + 1  # the training rows' items and the out-of-vocabulary id
    assert (module.prepared.splits["validation"].feature_ids[:, 1] == item.oov_id).sum() == 9
    assert "validation values unseen in training, mapped to out-of-vocabulary ids: 9 (item 9)" in module.report


def test_08_a_one_file_libfm_vocabulary_comes_from_the_training_rows(tmp_path):
    rows, seed = 200, 5
    _, validation, _ = split_rows(rows, np.random.default_rng(seed))
    items = [10 + row % 7 for row in range(rows)]  # field 0: users 0..4; field 1: items 10..16
    for row in validation[:9]:
        items[row] = 100 + int(row)  # ids that only validation rows hold
    (tmp_path / "all.libfm").write_text("".join(f"1 {row % 5}:1 {item}:1\n" for row, item in enumerate(items)))
    module = FieldAwareDataModule(str(tmp_path / "all.libfm"), split_seed=seed)
    assert module.schema.num_features == 5 + 7 + 2  # the training rows' ids and one out-of-vocabulary id per field
    assert (module.prepared.splits["validation"].feature_ids[:, 1] == module.schema.num_features - 1).sum() == 9
    assert "validation values unseen in training, mapped to out-of-vocabulary ids: 9 (field_1 9)" in module.report


# ====================================== Lost or forked runs =============================================


def test_09_two_fits_in_one_folder_without_a_logger_keep_their_own_files(tmp_path):
    for epochs in ("1", "2"):
        run_main(tmp_path, "fit", *synthetic_args("fm_synthetic"), "--trainer.max_epochs", epochs)
    runs = sorted(path.parent.parent for path in checkpoints(tmp_path))
    assert [run.name for run in runs] == ["run-0", "run-1"]
    assert [torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] for run in runs] == [0, 1]
    assert all("max_epochs: " + epochs in (run / "config.yaml").read_text() for run, epochs in zip(runs, "12"))


def training_process(root: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "lit_ifm", "fit", *synthetic_args(rows=4000), "--data.batch_size", "64",
               "--model.interaction_dropout", "0", "--trainer.max_epochs", "4", "--trainer.default_root_dir", str(root),
               "--trainer.logger.init_args.save_dir", str(root), *QUIET, *args]
    with (root / "stderr.txt").open("w") as stderr:  # a pipe nobody reads would fill up and stop the run
        return subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=stderr)


def kill_after_epoch(process: subprocess.Popen, root: Path, epoch: int) -> Path:
    """SIGKILLs ``process`` once its last.ckpt holds ``epoch``; returns that checkpoint."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it was killed: " + (root / "stderr.txt").read_text()[-2000:]
        for path in root.glob("lit_ifm/*/checkpoints/last.ckpt"):
            if torch.load(path, weights_only=True)["epoch"] >= epoch:  # written whole, then renamed: never partial
                process.send_signal(signal.SIGKILL)
                process.wait()
                return path
        time.sleep(0.05)
    raise AssertionError("no checkpoint of epoch 1 within 4 minutes")


@pytest.mark.slow
def test_10_resume_after_sigkill_continues_the_same_run_bit_for_bit(tmp_path):
    straight_root, killed_root = tmp_path / "straight", tmp_path / "killed"
    straight_root.mkdir(), killed_root.mkdir()
    straight, killed = training_process(straight_root), training_process(killed_root)  # W&B offline (conftest)
    last = kill_after_epoch(killed, killed_root, 1)
    assert straight.wait(timeout=300) == 0, (straight_root / "stderr.txt").read_text()[-3000:]
    resumed = run_cli("fit", *synthetic_args(rows=4000), "--data.batch_size", "64", "--model.interaction_dropout", "0",
                      "--trainer.max_epochs", "4", "--trainer.default_root_dir", str(killed_root),
                      "--trainer.logger.init_args.save_dir", str(killed_root), *QUIET, "--ckpt_path", str(last),
                      cwd=killed_root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    run_folders = list((killed_root / "lit_ifm").iterdir())
    assert run_folders == [last.parent.parent]  # the same run folder, so the same W&B run id
    run_id = run_folders[0].name
    assert len(list(killed_root.glob(f"wandb/offline-run-*-{run_id}"))) == 2  # both parts of one W&B run
    straight_folder = next((straight_root / "lit_ifm").iterdir())
    names = sorted(path.name for path in (straight_folder / "checkpoints").iterdir())
    assert sorted(path.name for path in last.parent.iterdir()) == names  # one best: its score was restored
    for name in names:
        expected = torch.load(straight_folder / "checkpoints" / name, weights_only=True)["state_dict"]
        actual = torch.load(last.parent / name, weights_only=True)["state_dict"]
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=0, msg=f"{name}: {key}")


# ====================================== Resource blow-ups ===============================================


def test_11_huge_libfm_ids_do_not_size_the_embedding_table(tmp_path):
    big = 10**12
    folder = write_libfm(tmp_path / "toy", f"1 0:1 {big}:1\n-1 {big + 7}:1 3:1\n1 0:1 3:1\n",
                         validation=f"1 {10**8}:1 3:1\n")
    module = FieldAwareDataModule(str(folder))
    assert module.schema.num_features == 4 + 2  # the ids seen in training, and one out-of-vocabulary id per field
    assert module.prepared.splits["train"].feature_ids.tolist() == [[0, 2], [3, 1], [0, 1]]  # ids 0, 3, 10**12, +7
    assert module.prepared.splits["validation"].feature_ids.tolist() == [[4, 1]]  # unseen: field_0's OOV id
    assert FM(module.schema, embedding_dim=8).num_parameters() == 6 * 8 + 6 + 1


def test_11_parameter_memory_is_checked_before_allocating():
    schema = FieldSchema([Field("id", "categorical", 10**12, 1, 10**12 - 1)], 10**12)
    start = time.monotonic()
    with pytest.raises(ConfigError, match=r"FM needs 61.8 TiB for its embedding tables \(1,000,000,000,001 feature "
                                          r"ids x 17 values\), more than the .* of memory available"):
        FM(schema, embedding_dim=16)
    assert time.monotonic() - start < 5


def test_training_memory_counts_the_gradients_and_the_optimizers_state(monkeypatch, capsys, tmp_path):
    from lit_ifm.models import footprint

    schema = FieldAwareDataModule(synthetic=SyntheticConfig(rows=600)).schema
    table = (schema.num_features + 1) * (15 + 1) * 4  # V and w in float32, K = 15
    monkeypatch.setattr(footprint, "available_memory", lambda: int(1.5 * table))  # the tables fit, training not
    settings = [("adam", False), ("adamw", False), ("adagrad", False), ("adagrad", True), ("sgd", False), ("sgd", True)]
    refused = []
    for optimizer, sparse in settings:  # copies training adds: 3, 3, 2 (gradient and sum), 1, 1 (gradient), 0
        try:
            FM(schema, embedding_dim=15, optimizer=optimizer, sparse_embeddings=sparse).configure_optimizers()
        except ConfigError as error:
            refused.append((optimizer, sparse, str(error)))
    assert [(optimizer, sparse) for optimizer, sparse, _ in refused] == settings[:3]
    assert "(211 feature ids x 16 values: their gradients, Adam's 2 moment estimates)" in refused[0][2]
    line = error_line(capsys, tmp_path, "fit", "--model", "lit_ifm.FM", "--data.synthetic.rows", "600",
                      "--model.embedding_dim", "15")
    assert "FM needs " in line and "more to train its embedding tables" in line


# =================================== One line, never a traceback ========================================


@pytest.mark.parametrize("damage, reason", [
    ("empty", "the file is empty"),
    ("random bytes", "the file is truncated or not a torch checkpoint"),
    ("truncated", "the file is truncated or not a torch checkpoint"),
])
def test_12_an_unreadable_checkpoint(damage, reason, ifm_run, tmp_path, capsys):
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes({"empty": b"", "random bytes": np.random.default_rng(0).bytes(4096),
                         "truncated": ifm_run.read_bytes()[:2000]}[damage])
    line = error_line(capsys, tmp_path, "test", *synthetic_args(), "--ckpt_path", str(damaged))
    assert line == f"lit-ifm: error: --ckpt_path: {damaged} is not a lit_ifm checkpoint ({reason})"  # no torch advice


@pytest.mark.slow
def test_12_a_missing_ckpt_path_stops_before_the_data_and_wandb(tmp_path):
    result = run_cli("fit", *synthetic_args(), "--ckpt_path", str(tmp_path / "nowhere.ckpt"), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"lit-ifm: error: --ckpt_path: no checkpoint at "
                                                      f"{tmp_path / 'nowhere.ckpt'}")
    output = result.stdout + result.stderr
    assert "lit_ifm data from" not in output and "W&B" not in output and not (tmp_path / "runs").exists()


def test_12_checkpoint_and_data_of_other_sizes(ifm_run, tmp_path, capsys):
    line = error_line(capsys, tmp_path, "test", *synthetic_args(), "--data.synthetic.vocabulary_size", "30",
                      "--ckpt_path", str(ifm_run))
    assert "was trained on other data: field 'f0' has 20 values in the checkpoint's vocabulary, 30 in the data's" in line
    data = FieldAwareDataModule(synthetic=SyntheticConfig(rows=600))
    trainer = L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(CheckpointError, match=r"feature_embedding.weight has shape \(211, 4\) in .*, this model "
                                              r"expects \(211, 8\) \(other model settings, e.g. embedding_dim\?\)"):
        trainer.test(IFM(data.schema, embedding_dim=8), datamodule=data, ckpt_path=str(ifm_run), verbose=False)


@pytest.mark.parametrize("problem", ["missing", "random bytes"])
def test_12_init_from_errors(problem, tmp_path, capsys):
    path = tmp_path / "fm.ckpt"
    if problem == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(100))
    line = error_line(capsys, tmp_path, "fit", *synthetic_args(), "--model.init_from", str(path))
    assert line == "lit-ifm: error: init_from: " + (f"no checkpoint at {path}" if problem == "missing" else
                                                    f"{path} is not a lit_ifm checkpoint (the file is truncated or "
                                                    "not a torch checkpoint)")


@pytest.mark.parametrize("line", [1, 3])
def test_12_a_libfm_file_that_is_not_utf8(line, tmp_path):
    lines = ["1 0:1 2:1", "-1 1:1 3:1", "1 0:1 3:1"]
    lines[line - 1] = lines[line - 1].replace("3:1", "3:\xff1").replace("2:1", "2:\xff1")
    folder = write_libfm(tmp_path / "toy", "")
    (folder / "toy.train.libfm").write_bytes("\n".join(lines).encode("latin-1") + b"\n")
    with pytest.raises(DataError, match=rf"toy.train.libfm line {line}: not UTF-8 text \(byte 0xff at column 9\); "
                                        "save the file as UTF-8"):
        FieldAwareDataModule(str(folder)).schema


@pytest.mark.parametrize("recipe, options, message", [
    ("ifm_synthetic", ["--trainer.callbacks.pairs", "0"], "InteractionSampler: a count of pairs must be at least 1, got 0"),
    ("fm_synthetic", [], "InteractionSampler draws pairs by their field-aspect norms, but FM has no field aspect"),
])
def test_12_interaction_sampler_errors(recipe, options, message, tmp_path, capsys):
    line = error_line(capsys, tmp_path, "fit", *synthetic_args(recipe), "--trainer.max_epochs", "1",
                      "--trainer.callbacks+=lit_ifm.callbacks.InteractionSampler", *options)
    assert line.startswith(f"lit-ifm: error: {message}")


def test_12_binary_task_with_a_signed_labels_recipe_works(small_frappe_dir, tmp_path):
    cli = run_main(tmp_path, "fit", "--config", str(RECIPES / "ifm_frappe.yaml"), "--data.source", str(small_frappe_dir),
                   "--data.task", "binary", "--model.embedding_dim", "8", "--model.attention_dim", "4",
                   "--trainer.fast_dev_run", "1")
    assert cli.trainer.state.finished and cli.datamodule.hparams.signed_labels
    assert set(cli.datamodule.prepared.splits["train"].labels.tolist()) == {0.0, 1.0}
    assert "test/auroc" in cli.trainer.callback_metrics


def test_12_a_csv_parse_error_names_the_file_and_line(tmp_path):
    folder = write_ratings(tmp_path / "data")
    lines = (folder / "test.csv").read_text().splitlines()
    lines[4] += ",surplus"
    (folder / "test.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"^test.csv line 5: 4 fields, expected 3 \(as in the header\)$"):
        FieldAwareDataModule(str(folder), categorical=["user", "item"]).schema


@pytest.mark.parametrize("damage, message", [
    ("a short row", r"^test.csv line 4: 2 fields, expected 3 \(as in the header\)$"),
    ("a quoted line break", r"^test.csv line 6: 4 fields, expected 3 \(as in the header\)$"),  # the file's line
    ("not UTF-8, first column", r"^test.csv line 3: not UTF-8 text \(byte 0xff at column 2\); save the file as UTF-8$"),
    ("not UTF-8, last column", (r"^test.csv line 6: not UTF-8 text \(byte 0xff at column {end}\); save the file "
                                r"as UTF-8$")),
    ("the header alone", r"test.csv: the file has no rows$"),
    ("the header alone, no line end", r"test.csv: the file has no rows$"),
    ("nothing", r"test.csv: the file is empty$"),
])
def test_12_a_damaged_csv_is_named_in_one_line(damage, message, tmp_path):
    folder = write_ratings(tmp_path / "data")
    lines = (folder / "test.csv").read_text().splitlines()
    if damage == "a short row":
        lines[3] = lines[3].rsplit(",", 1)[0]
    elif damage == "a quoted line break":
        lines[2] = lines[2].replace("u", '"u\nu', 1).replace(",", '",', 1)
        lines[4] += ",surplus"
    elif damage.startswith("not UTF-8"):
        line = 2 if damage.endswith("first column") else 5
        message = message.replace("{end}", str(len(lines[line]) + 1))
        lines[line] = lines[line].replace("u", "u\xff", 1) if line == 2 else lines[line] + "\xff"
    text = "\n".join(lines[:1] if damage.startswith("the header alone") else lines) + "\n"
    text = "" if damage == "nothing" else text.rstrip("\n") if damage.endswith("no line end") else text
    (folder / "test.csv").write_bytes(text.encode("latin-1"))
    with pytest.raises(DataError, match=message):
        FieldAwareDataModule(str(folder), categorical=["user", "item"]).schema


@pytest.mark.parametrize("layout", ["csv", "libfm"])
def test_12_one_file_sources_name_lines_of_the_file(layout, tmp_path):
    rows = 60
    bad = int(split_rows(rows, np.random.default_rng(2019))[1][-1])  # validation's last: its 12th row, not line 12
    if layout == "csv":
        prices = [str(row) for row in range(rows)]
        prices[bad] = "abc"
        pd.DataFrame({"user": [f"u{row % 4}" for row in range(rows)], "price": prices,
                      "label": 1.0}).to_csv(tmp_path / "all.csv", index=False)
        options, message = {"categorical": ["user"], "numeric": ["price"]}, rf"all.csv line {bad + 2}, column 'price'"
    else:
        labels = ["1"] * rows
        labels[bad] = "7"
        (tmp_path / "all.libfm").write_text("".join(f"{label} {row % 4}:1 {4 + row % 3}:1\n"
                                                    for row, label in enumerate(labels)))
        options, message = {"task": "binary"}, rf"all.libfm line {bad + 1}: label 7 is not 0/1"
    with pytest.raises(DataError, match=message):
        FieldAwareDataModule(str(tmp_path / f"all.{layout}"), **options).schema


# ============================================== W&B =====================================================


@contextmanager
def stand_in_wandb(refuse: str):
    """A W&B server on 127.0.0.1 that refuses the API key (``key``: every request gets 401) or accepts the key and
    refuses the run (``run``: only the viewer query gets an answer, run creation gets 403)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if refuse == "run" and b"Viewer" in body:
                code, answer = 200, {"data": {"viewer": {"id": "u1", "entity": "me", "username": "me", "flags": "{}",
                                                         "teams": {"edges": []}}}}
            else:
                code, answer = (401 if refuse == "key" else 403), {"errors": [{"message": "permission denied"}]}
            payload = json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PUT = do_POST

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def wandb_environment(monkeypatch, home: Path, url: str) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(home))  # no ~/.netrc from `wandb login`
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "false")


def test_13_a_wandb_server_that_refuses_the_key_means_offline(monkeypatch, tmp_path):
    with stand_in_wandb("key") as url:
        wandb_environment(monkeypatch, tmp_path, url)
        assert resolve_wandb_mode(timeout=2) == ("offline", f"{url} refused the API key (HTTP 401)")


@pytest.mark.slow
def test_13_a_wandb_server_that_refuses_the_run_means_offline(monkeypatch, tmp_path):
    with stand_in_wandb("run") as url:
        wandb_environment(monkeypatch, tmp_path, url)
        result = run_cli("fit", *synthetic_args("fm_synthetic"), "--trainer.max_epochs", "1", *QUIET,
                         "--trainer.logger.init_args.save_dir", str(tmp_path), cwd=tmp_path, env=dict(os.environ),
                         timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "W&B logging online (an API key is set and the server accepts it)" in output
    assert "W&B logging offline (the server refused the run: " in output
    assert list(tmp_path.glob("wandb/offline-run-*/run-*.wandb")) and "test/rmse" in result.stdout


# ================================ Changed sources, damaged stores, odd values ================================


def said(capsys, caplog, text: str) -> list[str]:
    """The lines of output (printed or logged) that hold ``text``."""
    out = capsys.readouterr()
    lines = [*out.out.splitlines(), *out.err.splitlines(), *(record.getMessage() for record in caplog.records)]
    return sorted({line for line in lines if text in line})


@pytest.mark.parametrize("damage", ["zeroed ids", "labels of 7"])
def test_a_damaged_store_is_built_again_and_said_so(damage, tmp_path, capsys, caplog):
    folder = write_ratings(tmp_path / "data")
    args = [*ratings_args(folder), "--data.task", "binary", "--data.positive_threshold", "0.5",
            "--data.cache_dir", str(tmp_path / "cache"), "--trainer.max_epochs", "1"]
    run_main(tmp_path, "fit", *args)
    [store] = [meta.parent for meta in (tmp_path / "cache" / "encoded").glob("*/meta.json")]
    if damage == "zeroed ids":
        records = store / "train.records"
        records.write_bytes(bytes(records.stat().st_size))
    else:
        np.full(60, 7.0, dtype=np.float32).tofile(store / "train.labels")
    caplog.clear()
    capsys.readouterr()
    run_main(tmp_path, "fit", *args)
    lines = said(capsys, caplog, "is damaged")
    assert len(lines) == 1 and f"the store {store} is damaged" in lines[0] and "building it again" in lines[0]
    assert np.isin(np.fromfile(store / "train.labels", dtype=np.float32), [0.0, 1.0]).all()
    assert np.fromfile(store / "train.records", dtype=np.int32).any()


TOO_LARGE = "is too large: numbers are stored as float32 and the models square them"


@pytest.mark.parametrize("layout, split, column, value, where", [
    ("csv", "train", "price", "1e39", "train.csv line 3, column 'price': value 1e+39"),
    ("csv", "test", "price", "3e38", "test.csv line 3, column 'price': value 3e+38"),
    ("csv", "valid", "label", "-3e38", "valid.csv line 3, column 'label': label -3e+38"),
    ("libfm", "train", "value", "1e39", "toy.train.libfm line 2: feature value 1e+39"),
    ("libfm", "test", "label", "3e38", "toy.test.libfm line 2: label 3e+38"),
])
def test_numbers_that_overflow_float32_are_refused_with_their_line(layout, split, column, value, where, tmp_path,
                                                                   capsys):
    if layout == "libfm":
        bad = f"{value} 1:1 3:1" if column == "label" else f"1 1:{value} 3:1"
        lines = {name: f"1 0:1 2:1\n{bad if name == split else '-1 1:1 3:1'}\n" for name in ("train", "test")}
        source = write_libfm(tmp_path / "toy", lines["train"], test=lines["test"])
        args = ["--config", str(RECIPES / "fm_synthetic.yaml"), "--data.source", str(source)]
    else:
        source = write_ratings(tmp_path / "data")
        for name in ("train", "valid", "test"):
            frame = pd.read_csv(source / f"{name}.csv").assign(price=1.5).astype({column: object})
            if name == split:
                frame.loc[1, column] = value
            frame.to_csv(source / f"{name}.csv", index=False)
        args = [*ratings_args(source), "--data.numeric", "[price]"]
    line = error_line(capsys, tmp_path, "fit", *args, "--trainer.max_epochs", "1")
    assert f"{where} {TOO_LARGE}" in line


class RunsACommand:
    """A pickle payload: loading it would run a shell command (were it not blocked)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class OwnObject:
    """A class of the user's own, outside torch's allowed list."""


@pytest.mark.parametrize("payload", ["a blocked module's function", "a class of one's own"])
def test_a_checkpoint_with_python_objects_is_named_so_and_not_loaded(payload, tmp_path, capsys):
    marker = tmp_path / "ran"
    path = tmp_path / "payload.ckpt"
    torch.save({"state_dict": {}, "extra": RunsACommand(marker) if payload.startswith("a blocked") else OwnObject()},
               path)
    line = error_line(capsys, tmp_path, "test", *synthetic_args(), "--ckpt_path", str(path))
    assert f"{path} is not a lit_ifm checkpoint (it holds Python objects that lit_ifm does not load)" in line
    assert not marker.exists()


@pytest.mark.parametrize("saved, option", [("lit_ifm.models.ifm.IFM", "lit_ifm.IFM"),
                                           ("my_project.models.ProjectedIFM", "my_project.models.ProjectedIFM"),
                                           ("lit_ifm_extras.ProjectedIFM", "lit_ifm_extras.ProjectedIFM")])
def test_the_checkpoint_class_hint_names_the_class_where_it_lives(saved, option):
    from lit_ifm.checkpoints import MODEL_KEY, check_model_class

    with pytest.raises(CheckpointError, match=rf"asks for FM: use the recipe it was trained with \(or --model "
                                              rf"{re.escape(option)}\)$"):
        check_model_class({MODEL_KEY: saved}, "run.ckpt", FM)


@pytest.mark.parametrize("source", ["splits", "one file"])
def test_csv_errors_name_the_files_line_when_quoted_values_hold_line_breaks(source, tmp_path):
    rows = 60
    notes = ["two\nlines" if row % 3 == 0 else "one line" for row in range(rows)]
    prices = [str(row) for row in range(rows)]
    bad = int(split_rows(rows, np.random.default_rng(2019))[0][-1]) if source == "one file" else 50
    prices[bad] = "abc"
    frame = pd.DataFrame({"user": [f"u{row % 4}" for row in range(rows)], "note": notes, "price": prices,
                          "label": 1.0})
    folder = tmp_path / "data"
    folder.mkdir()
    frame.to_csv(folder / ("all.csv" if source == "one file" else "train.csv"), index=False)
    if source == "splits":
        for split in ("valid", "test"):
            frame.assign(price="1").to_csv(folder / f"{split}.csv", index=False)
    name = "all.csv" if source == "one file" else "train.csv"
    text = (folder / name).read_text().splitlines()
    line = next(number for number, content in enumerate(text, start=1) if content.startswith(f"u{bad % 4},")
                and content.split(",")[-2] == "abc")
    assert line > bad + 2  # the quoted line breaks before it
    with pytest.raises(DataError, match=rf"^{name} line {line}, column 'price': value 'abc' is not a number$"):
        FieldAwareDataModule(str(folder), categorical=["user"], numeric=["price"]).schema


# ============================== Runs and the command line, second catalogue ===============================


def run_on_a_terminal(*args: str, cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """``python -m lit_ifm <args>`` with a pseudo-terminal as its output (``sys.stdout.isatty()`` is true there and
    in the DDP ranks it starts): its exit code and everything it printed."""
    import pty

    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "lit_ifm", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                               stdout=terminal, stderr=terminal)
    os.close(terminal)
    output, deadline = bytearray(), time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(controller, 65536)  # read as it comes: a full terminal buffer would stop the run
            except OSError:  # every writer has closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
    return process.wait(), output.decode(errors="replace")


DDP = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]


@pytest.mark.slow
@pytest.mark.parametrize("terminal", [False, True], ids=["log-file", "terminal"])
def test_ddp_from_the_command_line_fits_tests_and_predicts(terminal, tmp_path):
    """Every collective runs on every rank in the same order: the progress output's epoch metrics (an all-reduce)
    no longer meets the divergence check's on the other rank, with the default callbacks and progress output."""
    common = [*synthetic_args("fm_synthetic"), *DDP, "--trainer.enable_model_summary", "false"]

    def run(command: str, *args: str) -> str:
        if terminal:
            code, output = run_on_a_terminal(command, *common, *args, cwd=tmp_path)
        else:
            result = run_cli(command, *common, *args, cwd=tmp_path)
            code, output = result.returncode, result.stdout + result.stderr
        assert code == 0, output[-3000:]
        return output

    fitted = run("fit", "--trainer.max_epochs", "2")
    assert "test/rmse" in fitted
    assert terminal or re.search(r"epoch 1/2: \d+ steps in [\d.]+ s; .*val/rmse", fitted)
    last = checkpoints(tmp_path)[0]
    assert "test/rmse" in run("test", "--ckpt_path", str(last))
    run("predict", "--ckpt_path", str(last))
    assert sorted(path.name for path in last.parent.parent.glob("predictions*")) == [
        "predictions.rank0.parquet", "predictions.rank1.parquet"]


@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_scoring_without_a_checkpoint_needs_untrained(command, tmp_path, capsys):
    line = error_line(capsys, tmp_path, command, *synthetic_args("fm_synthetic"))
    assert line == (f"lit-ifm: error: {command} needs a trained model: give --ckpt_path (e.g. "
                    "runs/lit_ifm/<run>/checkpoints/last.ckpt), or --untrained true to score the model as initialised")
    assert not list(tmp_path.glob("run-*/*"))  # stopped before the data and the run's files


def test_untrained_scores_the_model_as_initialised_when_asked_for(tmp_path, capsys):
    tested = run_main(tmp_path, "test", *synthetic_args("fm_synthetic"), "--untrained", "true")
    assert "test/rmse" in tested.trainer.callback_metrics
    line = error_line(capsys, tmp_path, "fit", *synthetic_args("fm_synthetic"), "--untrained", "true")
    assert line == "lit-ifm: error: --untrained is for validate, test and predict; fit trains the model"


@pytest.mark.slow
def test_sigterm_mid_fit_exits_143_and_says_how_to_resume(tmp_path):
    process = training_process(tmp_path, "--trainer.max_epochs", "20")
    deadline = time.monotonic() + 240
    while not checkpoints(tmp_path) and time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143
    last = checkpoints(tmp_path)[0]
    lines = (tmp_path / "stderr.txt").read_text().splitlines()
    assert re.fullmatch(rf"lit-ifm: stopped by SIGTERM in epoch \d+; the last checkpoint is {re.escape(str(last))}: "
                        rf"the same command with --ckpt_path {re.escape(str(last))} resumes the run", lines[-1]), lines[-5:]


@pytest.mark.parametrize("options, message", [
    (["--model.lr", "-1"], "lr must be above 0, got -1.0"),
    (["--data.batch_size", "0"], "batch_size must be at least 1, got 0"),
    (["--data.batch_size", "-5"], "batch_size must be at least 1, got -5"),
    (["--data.eval_batch_size", "0"], "eval_batch_size must be at least 1, got 0 (leave it out to use batch_size)"),
    (["--model.embedding_dim", "0"], "embedding_dim must be at least 1, got 0"),
    (["--model.embedding_dim", "-3"], "embedding_dim must be at least 1, got -3"),
    (["--threads", "-2"], "--threads must be at least 1, got -2 (leave it out for torch's default: one per core, "
                          "or $OMP_NUM_THREADS)"),
    (["--threads", "0"], "--threads must be at least 1, got 0 (leave it out for torch's default: one per core, "
                         "or $OMP_NUM_THREADS)"),
    (["--data.num_workers", "-1"], "num_workers must be 0 or more, got -1"),
    (["--data.split_seed", "-1"], "split_seed must be 0 or more, got -1"),
    (["--trainer.accelerator", "tpu"], "--trainer settings: Requirement 'torch_xla"),
    pytest.param(["--trainer.accelerator", "gpu"], "--trainer settings: No supported gpu backend found!",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there")),
    (["--model.lrr", "0.1"], "--model.lrr is not an argument of lit_ifm.FM; did you mean --model.lr? (--help lists "
                             "every option)"),
    (["--data.bach_size", "3"], "unrecognized option --data.bach_size; did you mean --data.batch_size or "
                                "--data.eval_batch_size? (--help lists every option)"),
    (["--data.batch_size", "abc"], "--data.batch_size: Expected a <class 'int'>. Got value: abc"),
])
def test_bad_settings_are_one_line(options, message, tmp_path, capsys):
    line = error_line(capsys, tmp_path, "fit", *synthetic_args("fm_synthetic"), *options)
    assert line.startswith(f"lit-ifm: error: {message}"), line


def last_error_line(monkeypatch, capsys, root: Path, *args: str) -> str:
    """The last line of ``python -m lit_ifm <args>`` run in this process with cli.yaml's logger, which must stop
    with exit code 2."""
    from lit_ifm.__main__ import main

    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "argv", ["lit-ifm"])
    with pytest.raises(SystemExit) as stopped:
        main(list(args))
    assert stopped.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_bogus_wandb_mode_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WANDB_MODE", "bogus")
    line = last_error_line(monkeypatch, capsys, tmp_path, "fit", *synthetic_args("fm_synthetic"), *QUIET)
    assert line == "lit-ifm: error: WANDB_MODE='bogus' is not a W&B mode: set online, offline or disabled, or unset it"


@pytest.mark.parametrize("where", ["--data.cache_dir", "--trainer.default_root_dir", "LIT_IFM_CACHE"])
def test_a_file_where_a_folder_belongs_is_one_line(where, monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    options = [] if where == "LIT_IFM_CACHE" else [where, str(blocker)]
    monkeypatch.setenv("LIT_IFM_CACHE", str(blocker if where == "LIT_IFM_CACHE" else tmp_path / "cache"))
    line = last_error_line(monkeypatch, capsys, tmp_path, "fit", *synthetic_args("fm_synthetic"), "--trainer.logger",
                           "false", *QUIET, *options)
    assert re.fullmatch(rf"lit-ifm: error: {re.escape(str(blocker))}\S*: (Not a directory|File exists) "
                        r"\(a file stands where a folder is needed\)", line), line


def test_ctrl_c_during_a_store_build_is_one_line(monkeypatch, tmp_path, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("lit_ifm.data.datamodule.build_store", interrupted)
    with pytest.raises(SystemExit) as stopped:
        run_main(tmp_path, "fit", *synthetic_args("fm_synthetic"), "--data.cache_dir", str(tmp_path / "cache"))
    assert stopped.value.code == 130
    assert capsys.readouterr().err.strip().splitlines() == ["lit-ifm: interrupted"]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs /dev/shm, a file system apart from the disk's")
def test_last_ckpt_is_replaced_whole_when_the_temp_folder_is_another_file_system(monkeypatch, tmp_path):
    """Each save of last.ckpt is a new file renamed onto the old one (so a new inode), never the old file truncated
    and copied into, which a kill leaves empty: the temporary folder is tmpfs, the run folder on disk."""
    temporary = Path(tempfile.mkdtemp(dir="/dev/shm"))
    if os.stat(temporary).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("/dev/shm and the test's folder are one file system here")
    monkeypatch.setenv("TMPDIR", str(temporary))
    try:
        process = training_process(tmp_path)
        inodes = set()
        while process.poll() is None:
            for path in checkpoints(tmp_path):
                with contextlib.suppress(FileNotFoundError):
                    inodes.add(path.stat().st_ino)
            time.sleep(0.02)
    finally:
        shutil.rmtree(temporary)
    assert process.returncode == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    assert torch.load(checkpoints(tmp_path)[0], weights_only=True)["epoch"] == 3
    assert len(inodes) >= 2, "last.ckpt was rewritten in place"


@pytest.mark.parametrize("logger", [False, True], ids=["no-logger", "wandb"])
def test_a_run_resumed_from_another_working_directory_continues_in_its_folder(logger, monkeypatch, tmp_path):
    import wandb

    from lit_ifm.__main__ import main

    started, elsewhere = tmp_path / "started", tmp_path / "elsewhere"
    started.mkdir(), elsewhere.mkdir()
    monkeypatch.setattr(sys, "argv", ["lit-ifm"])
    options = [*synthetic_args("fm_synthetic"), *QUIET, *([] if logger else ["--trainer.logger", "false"])]
    monkeypatch.chdir(started)
    main(["fit", *options, "--trainer.max_epochs", "1"])
    last = checkpoints(started)[0]
    assert Path(torch.load(last, weights_only=False)["lit_ifm_run"]["folder"]).is_absolute()
    monkeypatch.chdir(elsewhere)
    wandb.finish()  # a new process would start with no run; this one has the first fit's
    main(["fit", *options, "--trainer.max_epochs", "2", "--ckpt_path", str(last)])
    assert torch.load(last, weights_only=True)["epoch"] == 1  # the same last.ckpt, one epoch on
    assert not checkpoints(elsewhere, "*.ckpt")


def test_an_undefined_auroc_is_left_out_and_the_loss_picks_the_best_checkpoint(tmp_path, caplog):
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, rows in (("train", 80), ("valid", 20), ("test", 20)):
        labels = rng.integers(0, 2, rows) if split == "train" else np.ones(rows, dtype=int)  # one class
        pd.DataFrame({"user": [f"u{i % 10}" for i in range(rows)], "item": [f"i{i % 7}" for i in range(rows)],
                      "label": labels}).to_csv(folder / f"{split}.csv", index=False)
    cli = run_main(tmp_path, "fit", *ratings_args(folder), "--data.task", "binary", "--trainer.max_epochs", "3")
    metrics = cli.trainer.callback_metrics
    assert "val/auroc" not in metrics and "test/auroc" not in metrics and "test/logloss" in metrics
    best = cli.trainer.checkpoint_callback  # chose by val/loss (EarlyStopping followed it too, without a failure)
    assert Path(best.best_model_path).is_file() and torch.isfinite(best.best_model_score)
    assert caplog.text.count("val/auroc is undefined: every val label is of one class; it is not reported, and val/loss "
                      "stands in for it") == 1


def test_the_logger_ends_with_the_best_validation_value_that_sweeps_read(monkeypatch, tmp_path):
    """W&B's run summary, which a sweep reads, is a metric's last logged value: ``best/val/rmse`` ends with the
    best epoch's value, whatever epoch came last (a CSV logger shows the same values, offline)."""
    from lit_ifm.__main__ import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lit-ifm"])
    main(["fit", *synthetic_args("fm_synthetic"), *QUIET, "--model.lr", "0.5", "--trainer.max_epochs", "6",
          "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(tmp_path)])
    logged = pd.read_csv(next(tmp_path.glob("**/metrics.csv")))
    rmse = logged["val/rmse"].dropna()
    assert rmse.iloc[-1] != rmse.min()  # the last epoch is not the best, so the two can differ
    assert logged["best/val/rmse"].dropna().iloc[-1] == pytest.approx(rmse.min())
    sweeps = [yaml.safe_load(path.read_text()) for path in (REPO / "sweeps").glob("*.yaml")]
    assert sweeps and all(sweep["metric"]["name"].startswith("best/val/") for sweep in sweeps)


def test_the_wandb_probe_asks_the_server_wandb_itself_uses(monkeypatch, tmp_path):
    """Not a hard-coded api.wandb.ai: the base_url of wandb's settings file, and its netrc entry for that host."""
    with stand_in_wandb("key") as url:
        wandb_environment(monkeypatch, tmp_path, url)
        monkeypatch.delenv("WANDB_BASE_URL")
        monkeypatch.delenv("WANDB_API_KEY")
        (tmp_path / ".netrc").write_text(f"machine 127.0.0.1 login user password {'y' * 40}\n")
        (tmp_path / ".netrc").chmod(0o600)
        monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
        (tmp_path / "config").mkdir()
        (tmp_path / "config" / "settings").write_text(f"[default]\nbase_url = {url}\n")
        monkeypatch.chdir(tmp_path)
        assert resolve_wandb_mode(timeout=2) == ("offline", f"{url} refused the API key (HTTP 401)")
