"""Small builders shared by the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lit_ifm.models
from lit_ifm.data import Field, FieldBatch, FieldSchema
from lit_ifm.models import FieldAwareModel

# Every model lit_ifm exports, so a new model is tested without new test code.
MODELS = [model for name in lit_ifm.models.__all__
          if isinstance(model := getattr(lit_ifm.models, name), type) and issubclass(model, FieldAwareModel)
          and model.interaction is not FieldAwareModel.interaction]


def mixed_schema() -> FieldSchema:
    """Two categorical fields, one numeric, one multi-valued of 3 slots: 6 slots, 4 fields."""
    fields = [
        Field("user", "categorical", 5, 1, 4),
        Field("item", "categorical", 7, 1, 11),
        Field("price", "numeric", 1, 1, 12),
        Field("tags", "multi", 6, 3, 18),
    ]
    return FieldSchema(fields, 19)


def random_batch(schema: FieldSchema, rows: int = 6, empty: float = 0.3) -> FieldBatch:
    """Random ids and values with a share of empty (padded) slots, at least two real slots per row."""
    ids = torch.randint(0, schema.num_features, (rows, schema.num_slots))
    values = torch.rand(rows, schema.num_slots) + 0.5
    empty_slots = torch.rand(rows, schema.num_slots) < empty
    empty_slots[:, :2] = False
    values[empty_slots] = 0.0
    ids[empty_slots] = schema.padding_id
    return FieldBatch(ids, values, torch.randn(rows), torch.arange(rows))


def run_cli(*args: str, cwd, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m lit_ifm <args>`` in a fresh process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "lit_ifm", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def run_main(root: Path, *args: str):
    """``python -m lit_ifm`` in this process (quicker than a new one), without a logger, writing under ``root``."""
    from lit_ifm.__main__ import main

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setattr(sys, "argv", ["lit-ifm"])  # LightningCLI warns when args= meets pytest's own argv
        return main([*args, "--trainer.logger", "false", "--trainer.default_root_dir", str(root), *QUIET])


def error_line(capsys, root: Path, *args: str) -> str:
    """The one ``lit-ifm: error:`` line of a run that must stop with exit code 2."""
    with pytest.raises(SystemExit) as stopped:
        run_main(root, *args)
    assert stopped.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lit-ifm: error: ")]
    assert len(lines) == 1, lines
    return lines[0]
