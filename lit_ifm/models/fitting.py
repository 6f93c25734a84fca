"""Refusing a checkpoint that does not fit the model or the data at hand: ``test``, ``predict``, ``validate``, a
resumed ``fit`` and ``init_from`` compare its model class, task and schema with the model and the data they run on."""

from __future__ import annotations

from pathlib import Path

import torch

from lit_ifm.checkpoints import SCHEMA_KEY, check_model_class
from lit_ifm.data.schema import FieldSchema
from lit_ifm.errors import CheckpointError


def schema_difference(saved: FieldSchema, data: FieldSchema) -> str | None:
    """What differs between a checkpoint's schema and the data's, in words; ``None`` when they match.

    >>> from lit_ifm.data.schema import Field
    >>> user, item = Field("user", "categorical", 3, 1, 2, "a1"), Field("item", "categorical", 4, 1, 6, "b2")
    >>> schema_difference(FieldSchema([user, item], 7), FieldSchema([item, user], 7))
    "its fields are ['user', 'item'], the data's are ['item', 'user']"
    >>> renamed = Field("item", "categorical", 4, 1, 6, "c3")
    >>> schema_difference(FieldSchema([user, item], 7), FieldSchema([user, renamed], 7))
    "field 'item' maps its 3 values to other ids than the checkpoint's vocabulary"
    """
    if saved.field_names != data.field_names:
        return f"its fields are {list(saved.field_names)}, the data's are {list(data.field_names)}"
    for old, new in zip(saved.fields, data.fields):
        name = repr(old.name)
        if old.kind != new.kind:
            return f"field {name} is {old.kind} in the checkpoint, {new.kind} in the data"
        if old.slots != new.slots:
            return f"field {name} takes {old.slots} slots in the checkpoint, {new.slots} in the data"
        if old.vocabulary_size != new.vocabulary_size:
            return (f"field {name} has {old.vocabulary_size - 1} values in the checkpoint's vocabulary, "
                    f"{new.vocabulary_size - 1} in the data's")
        if old.oov_id != new.oov_id or (old.fingerprint and new.fingerprint and old.fingerprint != new.fingerprint):
            return f"field {name} maps its {new.vocabulary_size - 1} values to other ids than the checkpoint's vocabulary"
    if saved.num_features != data.num_features:
        return f"the checkpoint has {saved.num_features} feature ids, the data {data.num_features}"
    return None


def check_schema(checkpoint: dict, path: str | Path, schema: FieldSchema, option: str = "--ckpt_path") -> None:
    """Refuses a checkpoint trained on other data than ``schema`` describes, saying what differs. Vocabularies
    must match exactly: even values appended at the end move the out-of-vocabulary ids."""
    difference = schema_difference(checkpoint[SCHEMA_KEY], schema)
    if difference is not None:
        raise CheckpointError(f"{option}: {path} was trained on other data: {difference}; use the data and field "
                              "spec it was trained with")


def check_fits(checkpoint: dict, path: str | Path, model: torch.nn.Module, option: str = "--ckpt_path") -> None:
    """The checks before a checkpoint's weights go into ``model``: its class, its task, the data's schema, and
    every tensor's shape (a model built with other sizes), each refused with one line."""
    check_model_class(checkpoint, path, type(model))
    task = checkpoint.get("hyper_parameters", {}).get("task")
    if task is not None and task != model.task:
        raise CheckpointError(f"{option}: {path} was trained for task {task}, the data module's task is "
                              f"{model.task}: set --data.task {task}")
    if SCHEMA_KEY in checkpoint:
        check_schema(checkpoint, path, model.schema, option)
    own = model.state_dict()
    for name, tensor in checkpoint["state_dict"].items():
        if name in own and tuple(own[name].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{option}: {name} has shape {tuple(tensor.shape)} in {path}, this model expects "
                                  f"{tuple(own[name].shape)} (other model settings, e.g. embedding_dim?)")
