"""A checkpoint's encoder as plain JSON, for a service that turns raw requests into ids without lit_ifm.

``encoder.json`` holds, for a table source, every field's rules and vocabulary in slot order::

    {"format": "lit_ifm encoder", "version": 1, "num_features": N, "padding_id": N, "labels": {...},
     "fields": [{"name", "kind" (categorical|numeric|multi), "slots", "offset", "oov_id", "separator",
                 "buckets" (null|"log2"), "hash_buckets" (null|n), "missing_as_id", "vocabulary": [...]}, ...]}

A field's value becomes, in its slots: categorical, the id ``offset + position in vocabulary`` (a hashed field:
``offset + fnv1a64(value) % hash_buckets``; with a vocabulary too, only values in it), else ``oov_id``; numeric, the id
``offset`` with the number as value; multi-valued, one id per token split on ``separator``, up to ``slots``. A
missing value leaves its slots empty (``padding_id``, value 0), unless ``missing_as_id`` makes it the value ``""``.
``examples/serve/encoder.py`` reads it with the standard library alone.
"""

from __future__ import annotations

import json
from pathlib import Path

from lit_ifm.data.encoding.words import unpack_words
from lit_ifm.errors import ConfigError

FORMAT = "lit_ifm encoder"
VERSION = 1


def plain_encoding(state: dict) -> dict:
    """The JSON form of an encoding state (``checkpoint["lit_ifm_encoding"]``) of a table source."""
    encoder = state["encoder"]
    if encoder["kind"] != "table":
        raise ConfigError("export: the encoder of libFM files maps positional feature ids, which requests do not carry; "
                          "export the model alone (its ids are the data module's)")
    fields = []
    for field in encoder["fields"]:
        vocabulary = None if field["vocabulary"] is None else unpack_words(field["vocabulary"]).to_pylist()
        numeric = field["kind"] == "numeric" and not field["buckets"]
        size = field["hash_buckets"] or len(vocabulary or ())
        fields.append({"name": field["name"], "kind": "numeric" if numeric else field["kind"],
                       "slots": field["slots"], "offset": field["offset"], "oov_id": field["offset"] + size,
                       "separator": field["separator"], "buckets": field["buckets"],
                       "hash_buckets": field["hash_buckets"], "missing_as_id": field["missing_as_id"],
                       "vocabulary": vocabulary})
    return {"format": FORMAT, "version": VERSION, "num_features": encoder["num_features"],
            "padding_id": encoder["num_features"], "labels": state["labels"], "fields": fields,
            **{name: plain_items(state[name]) for name in ("item_fields", "items") if name in state}}


def plain_items(items):
    """The item table (:class:`~lit_ifm.data.encoding.ItemTable`'s state, tensors) as lists."""
    return {name: value.tolist() if hasattr(value, "tolist") else value for name, value in items.items()} \
        if isinstance(items, dict) else items


def write_plain_encoding(state: dict, path: Path) -> None:
    """Writes :func:`plain_encoding` of ``state`` to ``path``."""
    path.write_text(json.dumps(plain_encoding(state), ensure_ascii=False))
