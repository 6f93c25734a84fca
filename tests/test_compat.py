"""Each Lightning internal that ``lit_ifm.compat`` relies on, checked on the installed Lightning: a release that
changes one fails here, by name."""

from __future__ import annotations

import re
import sys

import lightning as L
import pytest
import torch
from conftest import REPO
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger
from packaging.requirements import Requirement

from lit_ifm.compat import (
    KeepsCheckpointHyperparameters,
    UnrepeatedDistributedSampler,
    global_seed,
    match_mode,
    stop_uploading_checkpoints,
    update_wandb_init,
)


def test_the_installed_lightning_is_in_the_pinned_range():
    pinned = Requirement(re.search(r'^\s*"(lightning\W[^"]*)"', (REPO / "pyproject.toml").read_text(), re.M)[1])
    assert pinned.specifier.contains(L.__version__), (pinned, L.__version__)


class Tiny(L.LightningModule):
    def __init__(self, lr: float = 0.1):
        super().__init__()


class Parsed(Exception):
    """Stops a CLI once its config is parsed, with the model's lr as parsed."""


def parsed_lr(cli_class: type, path) -> float:
    class StopsBeforeInstantiating(cli_class):
        def before_instantiate_classes(self) -> None:
            raise Parsed(self.config.fit.model.lr)

    with pytest.raises(Parsed) as parsed:
        StopsBeforeInstantiating(Tiny, args=["fit", "--ckpt_path", str(path)], seed_everything_default=False)
    return parsed.value.args[0]


def test_lightningcli_reads_the_checkpoints_hyperparameters_only_without_the_mixin(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lit-ifm"])  # LightningCLI warns when args= meets pytest's own argv
    path = tmp_path / "tiny.ckpt"
    torch.save({"hyper_parameters": {"lr": 0.5}}, path)
    assert parsed_lr(LightningCLI, path) == 0.5  # Lightning's own reading, before before_instantiate_classes
    assert parsed_lr(type("CLI", (KeepsCheckpointHyperparameters, LightningCLI), {}), path) == 0.1


def same_state(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(
        torch.equal(value, second[name]) if isinstance(value, torch.Tensor) else value == second[name]
        for name, value in first.items())


@pytest.mark.parametrize("callback_class, options", [(ModelCheckpoint, {"monitor": "m"}),
                                                     (EarlyStopping, {"monitor": "m", "min_delta": 0.1})],
                         ids=["ModelCheckpoint", "EarlyStopping"])
@pytest.mark.parametrize("first, then", [("min", "max"), ("max", "min")])
def test_match_mode_leaves_a_callback_as_its_constructor_makes_it_for_that_mode(callback_class, options, first, then):
    matched, made = callback_class(mode=first, **options), callback_class(mode=then, **options)
    assert not same_state(vars(matched), vars(made))
    match_mode(matched, then)
    assert same_state(vars(matched), vars(made))


def test_update_wandb_init_changes_what_wandb_init_gets(monkeypatch, tmp_path):
    import wandb

    given = {}
    monkeypatch.setattr(wandb, "run", None)
    monkeypatch.setattr(wandb, "init", lambda **settings: given.update(settings) or object())
    logger = WandbLogger(save_dir="runs", project="p")
    assert "anonymous" in vars(logger)["_wandb_init"]  # Lightning's None, which W&B warns about
    update_wandb_init(logger, dir=str(tmp_path), mode="offline", anonymous=None)
    logger.experiment  # noqa: B018 (starts the run)
    assert given["dir"] == str(tmp_path) and given["mode"] == "offline" and "anonymous" not in given
    assert given["project"] == "p" and logger.save_dir == "runs"  # the rest as Lightning has it


def test_stop_uploading_checkpoints_stops_the_loggers_uploads(monkeypatch, tmp_path):
    logger, every_checkpoint = WandbLogger(save_dir=str(tmp_path), log_model="all"), ModelCheckpoint(save_top_k=-1)
    uploads = []
    monkeypatch.setattr(logger, "_scan_and_log_checkpoints", uploads.append)  # where Lightning uploads them
    logger.after_save_checkpoint(every_checkpoint)
    stop_uploading_checkpoints(logger)
    logger.after_save_checkpoint(every_checkpoint)
    assert uploads == [every_checkpoint]


@pytest.mark.parametrize("rows, ranks", [(10, 3), (7, 2), (4, 4)])
def test_the_unrepeated_sampler_gives_every_row_once_across_ranks(rows, ranks):
    given = [row for rank in range(ranks) for row in UnrepeatedDistributedSampler(range(rows), ranks, rank,
                                                                                   shuffle=False)]
    assert sorted(given) == list(range(rows))


def test_global_seed_is_seed_everythings(monkeypatch):
    assert global_seed(2019) == 2019  # nothing seeded (conftest clears it)
    L.seed_everything(123, verbose=False)
    assert global_seed(2019) == 123
