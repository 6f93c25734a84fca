"""Top-N for one context: every candidate item, with its own item-side fields, scored in one batched call."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.encoding import ItemTable, TableEncoder
from lit_ifm.errors import ConfigError, DataError
from lit_ifm.models.scoring import encoded_rows, encoder_of, scores_of_ids


@dataclass(frozen=True)
class Recommendation:
    """One recommended item: its value (as the candidates gave it, or as its training rows spell it), the model's
    score (a probability for a binary task, a value for regression) and, on request for the IFM family, the
    attention ``T`` of each field pair (summed over the slot pairs of a multi-valued field)."""

    item: object
    score: float
    attention: dict[tuple[str, str], float] | None = None


def recommend(model, context: dict, candidates: list | None = None, k: int = 10,
              with_attention: bool = False) -> list[Recommendation]:
    """The ``k`` best of ``candidates`` (item values; ``None``: every training item) for ``context``, best first.

    ``context`` is one row as a dict: a value for every field but the item-side ones (``item_fields``), which each
    candidate brings from the item table its checkpoint keeps. Context values unseen in training read as
    out-of-vocabulary ids, as :meth:`~lit_ifm.models.FieldAwareModel.score` reads them; a candidate the model never
    saw, or a context without a field, is refused (:class:`~lit_ifm.errors.DataError`).
    """
    encoder = encoder_of(model)
    if not isinstance(encoder, TableEncoder) or "items" not in model.schema.encoding:
        raise DataError("recommend needs a model trained on table data that names its item (--data.item_field, "
                        "or --data.item_fields for an item with attributes)")
    if with_attention and not hasattr(model, "interaction_details"):
        raise ConfigError(f"with_attention: {type(model).__name__} has no attention over field pairs; the IFM family "
                          "(IFM, INN, DeepIFM) has")
    items = ItemTable.from_state_dict(model.schema.encoding["items"])
    key = items.fields[0]
    needed = [name for name in model.schema.field_names if name not in items.fields]
    missing = [name for name in needed if name not in context]
    if missing:
        raise DataError(f"recommend: the context lacks the fields {missing}; it needs {needed} (the item's own "
                        f"{list(items.fields)} come with each candidate)")
    if candidates is None:
        candidates = _item_values(encoder, key, items)
    candidates = list(candidates)
    if not candidates:
        return []
    rows = _candidate_rows(context, needed, items.fields, candidates)
    encoded = list(encoded_rows(model, rows))
    ids, values = np.concatenate([part[0] for part in encoded]), np.concatenate([part[1] for part in encoded])
    position, known = items.positions(ids[:, items.slots[0]])
    if not known.all():
        unknown = [candidates[index] for index in np.flatnonzero(~known)[:5]]
        raise DataError(f"recommend: {int((~known).sum())} candidates are no {key} the model was trained with, "
                        f"e.g. {unknown}")
    ids[:, items.slots], values[:, items.slots] = items.ids[position], items.values[position]
    scores = scores_of_ids(model, ids, values, batch_size=len(ids))  # one forward pass for every candidate
    best = np.argsort(-scores, kind="stable")[:k]
    attention = _attention(model, ids[best], values[best]) if with_attention else [None] * len(best)
    return [Recommendation(candidates[index], float(scores[index]), pairs) for index, pairs in zip(best, attention)]


def _item_values(encoder: TableEncoder, key: str, items: ItemTable) -> list:
    """The key values of every item of the table, as the training rows spell them."""
    index = [spec.name for spec in encoder.columns].index(key)
    if encoder.columns[index].hash_buckets:
        raise DataError(f"recommend: {key} is hashed (hash_buckets), so its values cannot be listed: pass candidates")
    return encoder.vocabularies[index].take(pa.array(items.keys - encoder.offsets[index])).to_pylist()


def _candidate_rows(context: dict, needed: list[str], item_fields: tuple[str, ...], candidates: list) -> pa.Table:
    """One row per candidate: the context's values, the candidate as the key, the other item fields empty (the
    item table fills them once the key is encoded)."""
    count = len(candidates)
    columns = {name: pa.array([context[name]] * count) for name in needed}
    try:
        columns[item_fields[0]] = pa.array(candidates)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # values of mixed types: compared as text, as encoding does
        columns[item_fields[0]] = pa.array([str(candidate) for candidate in candidates])
    columns.update({name: pa.nulls(count, pa.string()) for name in item_fields[1:]})
    return pa.table(columns)


@torch.no_grad()
def _attention(model, ids: np.ndarray, values: np.ndarray) -> list[dict[tuple[str, str], float]]:
    """Each row's attention per field pair (:meth:`~lit_ifm.models.InteractionAwareModel.interaction_details`)."""
    device = next(model.parameters()).device
    batch = FieldBatch(torch.from_numpy(ids).to(device), torch.from_numpy(values).to(device),
                       torch.zeros(len(ids), device=device), torch.arange(len(ids), device=device))
    details = model.interaction_details(batch)
    pairs = sorted(set(details.field_pairs), key=details.field_pairs.index)
    by_pair = torch.tensor([pairs.index(pair) for pair in details.field_pairs], device=device)
    summed = torch.zeros(len(ids), len(pairs), device=device).index_add_(1, by_pair, details.attention.float())
    return [dict(zip(pairs, row)) for row in summed.cpu().tolist()]
