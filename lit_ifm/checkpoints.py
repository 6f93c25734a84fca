"""Reading lit_ifm checkpoints safely, and refusing one that does not fit the model or the data at hand.

A checkpoint carries its model class (``lit_ifm_model``) and the schema of the data it was trained on
(``field_schema``: field names, kinds, slots, vocabulary sizes and fingerprints). ``test``, ``predict``,
``validate``, a resumed ``fit`` and ``init_from`` all compare them with the model and the data they run on.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lit_ifm.errors import CheckpointError

if TYPE_CHECKING:  # the data's schema is compared, never built, here
    from lit_ifm.data.schema import FieldSchema

MODEL_KEY = "lit_ifm_model"  # the model's class path, written next to the state dict
SCHEMA_KEY = "field_schema"
ENCODING_KEY = "lit_ifm_encoding"  # how raw rows become the model's ids (lit_ifm.data.encoding.encoding_state)


def read_checkpoint(path: str | Path, option: str = "--ckpt_path") -> dict:
    """The checkpoint at ``path``, loaded with ``weights_only`` (no code runs while loading), or a
    :class:`CheckpointError` that says why it is not a lit_ifm checkpoint. ``option`` names the setting the
    path came from, for the message."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{option}: no checkpoint at {path}" + (" (that is a folder)" if path.is_dir() else ""))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # never pass torch's own message on: it advises the unsafe weights_only=False
        raise CheckpointError(f"{option}: {path} is not a lit_ifm checkpoint ({_unreadable(path, error)})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or SCHEMA_KEY not in checkpoint:
        raise CheckpointError(f"{option}: {path} is not a lit_ifm checkpoint (it holds no model state with a field "
                              "schema)")
    return checkpoint


def _unreadable(path: Path, error: Exception) -> str:
    if path.stat().st_size == 0:
        return "the file is empty"
    # torch names a class outside its allowed list "Unsupported global", one of a blocked module (os, subprocess, ...)
    # "unsupported GLOBAL"
    if isinstance(error, pickle.UnpicklingError) and "unsupported global" in str(error).lower():
        return "it holds Python objects that lit_ifm does not load"
    return "the file is truncated or not a torch checkpoint"


def model_class_path(checkpoint: dict) -> str | None:
    """The class path of the checkpoint's model: lit_ifm's own key, else LightningCLI's hyper-parameter."""
    return checkpoint.get(MODEL_KEY) or checkpoint.get("hyper_parameters", {}).get("_class_path")


def import_class(class_path: str) -> type | None:
    """The class a dotted path names (``lit_ifm.FM``), or None when it cannot be imported."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def check_model_class(checkpoint: dict, path: str | Path, model_class: type) -> None:
    """Refuses a checkpoint of another model class than ``model_class`` (the recipe's), naming both."""
    saved = model_class_path(checkpoint)
    if saved is None or import_class(saved) is model_class:
        return
    saved_name = saved.rpartition(".")[2]
    short = f"lit_ifm.{saved_name}"  # lit_ifm's own models by their short path, any other class by its own
    option = short if import_class(short) is not None and import_class(short) is import_class(saved) else saved
    raise CheckpointError(f"{path} holds a model of class {saved_name}, but the configuration asks for "
                          f"{model_class.__name__}: use the recipe it was trained with (or --model {option})")


def schema_difference(saved: FieldSchema, data: FieldSchema) -> str | None:
    """What differs between a checkpoint's schema and the data's, in words; ``None`` when they match.

    >>> from lit_ifm.data.schema import Field, FieldSchema
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
