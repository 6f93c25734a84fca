"""What the data looks like to a model: fields, their kinds and sizes, and the slot layout."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch

FieldKind = Literal["categorical", "numeric", "multi"]


@dataclass(frozen=True)
class Field:
    """One field (a class of features, e.g. ``user`` or ``weather``).

    Args:
        name: column name, or position name for libFM files.
        kind: ``categorical`` (one feature per row), ``numeric`` (one feature whose value is the number)
            or ``multi`` (several features per row, one slot each).
        vocabulary_size: distinct feature ids of the field, its out-of-vocabulary id included.
        slots: slots the field takes in a batch (1, or the maximum list length for ``multi``).
        oov_id: the global feature id that unseen values of this field map to.
        fingerprint: a digest of the field's value -> id mapping (empty when unknown), so that a checkpoint
            is never applied to data whose ids stand for other values.
    """

    name: str
    kind: FieldKind
    vocabulary_size: int
    slots: int
    oov_id: int
    fingerprint: str = ""


class FieldSchema:
    """Fields, vocabulary sizes and the slot-to-field map of a data set.

    Feature ids are global (``0 .. num_features - 1``); ``padding_id == num_features`` marks empty slots,
    whose value is always 0. A plain class rather than a dataclass so that LightningCLI can link a built
    schema from the data module to the model (``apply_on="instantiate"``).

    >>> schema = FieldSchema([Field("user", "categorical", 3, 1, 2), Field("tags", "multi", 4, 2, 6)], 7)
    >>> schema.num_fields, schema.num_slots, schema.slot_fields, schema.padding_id
    (2, 3, (0, 1, 1), 7)
    """

    def __init__(
        self,
        fields: list[Field] | tuple[Field, ...],
        num_features: int,
        label_range: tuple[float, float] = (-1.0, 1.0),
    ):
        if not fields:
            raise ValueError("FieldSchema needs at least one field")
        self.fields = tuple(fields)
        self.num_features = int(num_features)
        self.label_range = (float(label_range[0]), float(label_range[1]))
        self.encoding: dict | None = None  # how raw rows become these ids, when the data says (see encoding_state)

    def without_encoding(self) -> FieldSchema:
        """The same schema without its encoding: what a checkpoint keeps on its ``field_schema`` key (the encoding
        has a key of its own)."""
        schema = copy.copy(self)
        schema.encoding = None
        return schema

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"encoding": None, **state})  # a schema saved before schemas had an encoding

    @property
    def num_fields(self) -> int:
        """n, the number of fields."""
        return len(self.fields)

    @property
    def field_names(self) -> tuple[str, ...]:
        """The fields' names, in slot order."""
        return tuple(field.name for field in self.fields)

    @property
    def slot_fields(self) -> tuple[int, ...]:
        """The field index of every slot, in batch order."""
        return tuple(index for index, field in enumerate(self.fields) for _ in range(field.slots))

    @property
    def num_slots(self) -> int:
        """S, the slots of a row: one per single-valued field, ``slots`` per multi-valued one."""
        return len(self.slot_fields)

    @property
    def padding_id(self) -> int:
        """The feature id of an empty slot (its value is always 0): ``num_features``."""
        return self.num_features

    def _key(self) -> tuple:
        return self.fields, self.num_features, self.label_range

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FieldSchema) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}:{f.kind}[{f.vocabulary_size}]" for f in self.fields)
        return f"FieldSchema({fields}; num_features={self.num_features}, slots={self.num_slots})"


# Checkpoints carry the schema (key "field_schema"); let torch.load(weights_only=True) rebuild it.
torch.serialization.add_safe_globals([Field, FieldSchema])
