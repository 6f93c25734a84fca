"""Raw rows to ids and values with an export's ``encoder.json``, in plain Python (no lit_ifm, no numpy).

It follows lit_ifm's table encoder (``lit_ifm.serving.plain`` describes the file): a categorical value becomes its
field's id for it, or the field's out-of-vocabulary id; a number its field's id with the number as value; a
multi-valued field one id per token, up to its slots; a missing value empty slots.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

_FNV_OFFSET, _FNV_PRIME, _MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def fnv1a64(text: str) -> int:
    """FNV-1a, 64 bits, of the UTF-8 bytes of ``text`` (lit_ifm's hash of hashed fields)."""
    value = _FNV_OFFSET
    for byte in text.encode():
        value = ((value ^ byte) * _FNV_PRIME) & _MASK
    return value


def as_text(value) -> str | None:
    """A categorical value as lit_ifm compares it: integral numbers without their ``.0``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def log2_bucket(number: float) -> str:
    """The Criteo winners' bucket: floor(ln(x)^2) for x > 2, else int(x)."""
    return str(int(math.floor(math.log(number) ** 2)) if number > 2 else int(number))


class Encoder:
    """The encoder of an export folder's ``encoder.json``."""

    def __init__(self, path: str | Path):
        spec = json.loads(Path(path).read_text())
        if spec.get("format") != "lit_ifm encoder" or spec.get("version") != 1:
            raise ValueError(f"{path}: not a lit_ifm encoder file of version 1")
        self.fields, self.padding_id = spec["fields"], spec["padding_id"]
        self.positions = [None if field["vocabulary"] is None else
                          {word: index for index, word in enumerate(field["vocabulary"])} for field in self.fields]
        self.num_slots = sum(field["slots"] for field in self.fields)
        self.names = [field["name"] for field in self.fields]
        self.items = spec.get("items")  # each training item's attributes (its item fields' ids and values)
        self.item_fields = self.items["fields"] if self.items else []
        self.item_rows = {key: row for row, key in enumerate(self.items["keys"])} if self.items else {}

    def with_item_attributes(self, ids: list[int], values: list[float]) -> tuple[list[int], list[float]]:
        """A row whose item fields are those of its item (the key field's value) as training saw it: a candidate
        item comes with its own attributes."""
        if not self.items:
            return ids, values
        slots = self.items["slots"]
        row = self.item_rows.get(ids[slots[0]])
        if row is not None:
            for position, slot in enumerate(slots):
                ids[slot], values[slot] = self.items["ids"][row][position], self.items["values"][row][position]
        return ids, values

    def encode(self, row: dict) -> tuple[list[int], list[float]]:
        """One row (field name -> raw value; a field left out is missing) as ``S`` ids and ``S`` values."""
        ids, values = [], []
        for field, positions in zip(self.fields, self.positions):
            slot_ids = self._field_ids(field, positions, row.get(field["name"]))
            for slot in range(field["slots"]):
                feature = slot_ids[slot] if slot < len(slot_ids) else None
                ids.append(self.padding_id if feature is None or feature[1] == 0 else feature[0])
                values.append(0.0 if feature is None else feature[1])
        return ids, values

    def _field_ids(self, field: dict, positions: dict | None, value) -> list[tuple[int, float]]:
        if field["kind"] == "numeric":
            number = None if value is None else float(value)
            return [] if number is None or math.isnan(number) else [(field["offset"], number)]
        if field["kind"] == "multi":
            text = as_text(value)
            tokens = [] if text is None else [token for token in text.split(field["separator"]) if token]
            return [(self._id(field, positions, token), 1.0) for token in tokens]
        if field["buckets"] == "log2" and value is not None:
            value = None if math.isnan(float(value)) else log2_bucket(float(value))
        text = as_text(value)
        if text is None and field["missing_as_id"]:
            text = ""
        return [] if text is None else [(self._id(field, positions, text), 1.0)]

    @staticmethod
    def _id(field: dict, positions: dict | None, token: str) -> int:
        if field["hash_buckets"]:
            if positions is not None and token not in positions:
                return field["oov_id"]
            return field["offset"] + fnv1a64(token) % field["hash_buckets"]
        position = positions.get(token)
        return field["oov_id"] if position is None else field["offset"] + position
