"""Small builders shared by the tests."""

from __future__ import annotations

import subprocess
import sys

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
