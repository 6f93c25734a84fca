"""Items and their attributes, and negative sampling for positive-only logs (the paper's Frappe and MovieLens
preparation): a negative takes a real item with all of its item-side fields, never the positive's attributes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lit_ifm.errors import DataError

_MAX_REDRAWS = 100


@dataclass
class ItemTable:
    """Every training item and its attributes: for each distinct id of the key field, the ids and values of the
    item-side slots as the item's first training row holds them.

    Args:
        fields: the item-side fields, the key (``item_field``) first.
        slots: ``(s,)`` the slots of those fields, the key's first.
        keys: ``(I,)`` the key's feature ids, sorted.
        ids: ``(I, s)`` each item's ids in :attr:`slots`.
        values: ``(I, s)`` each item's values in :attr:`slots`.

    >>> ids = np.array([[0, 7, 9], [1, 5, 8], [2, 7, 8]])  # user, item, genre
    >>> table = ItemTable.of_rows(("item", "genre"), np.array([1, 2]), ids, np.ones((3, 3), np.float32), oov_id=6)
    >>> table.keys.tolist(), table.ids.tolist()
    ([5, 7], [[5, 8], [7, 9]])
    """

    fields: tuple[str, ...]
    slots: np.ndarray
    keys: np.ndarray
    ids: np.ndarray
    values: np.ndarray

    @classmethod
    def of_rows(cls, fields: tuple[str, ...], slots: np.ndarray, ids: np.ndarray, values: np.ndarray,
                oov_id: int) -> ItemTable:
        """The table of encoded rows ``ids`` ``(N, S)`` and ``values`` ``(N, S)``; items whose key is the
        out-of-vocabulary id ``oov_id`` are left out (they are no one item)."""
        keys, first = np.unique(ids[:, slots[0]], return_index=True)
        known = keys != oov_id
        keys, first = keys[known], first[known]
        return cls(tuple(fields), np.asarray(slots, dtype=np.int64), keys.astype(np.int64),
                   ids[first][:, slots].astype(np.int64), values[first][:, slots].astype(np.float32))

    def __len__(self) -> int:
        return len(self.keys)

    def positions(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The table rows of key ids ``keys`` and whether each is in the table."""
        position = np.searchsorted(self.keys, keys).clip(0, max(len(self.keys) - 1, 0))
        return position, self.keys[position] == keys if len(self.keys) else np.zeros(len(keys), dtype=bool)

    def state_dict(self) -> dict:
        """The table in types a ``weights_only`` checkpoint loads."""
        return {"fields": list(self.fields), "slots": torch.from_numpy(self.slots), "keys": torch.from_numpy(self.keys),
                "ids": torch.from_numpy(self.ids), "values": torch.from_numpy(self.values)}

    @classmethod
    def from_state_dict(cls, state: dict) -> ItemTable:
        """The table :meth:`state_dict` describes."""
        return cls(tuple(state["fields"]), state["slots"].numpy(), state["keys"].numpy(), state["ids"].numpy(),
                   state["values"].numpy())


def sample_negatives(
    feature_ids: np.ndarray,
    items: ItemTable,
    observed: np.ndarray,
    per_positive: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows that copy each positive row's context (every slot but the item's) ``per_positive`` times with a random
    item of ``items`` and that item's own attributes.

    Args:
        feature_ids: ``(N, S)`` encoded positive rows.
        items: the items to draw from (the training items) and their item-side slots.
        observed: ``(M, S)`` every observed positive row; a drawn item never makes one of them.
        per_positive: negatives per positive row.
        rng: the seeded generator.

    Returns:
        The negatives' ids ``(N * per_positive, S)`` and the table row each drew ``(N * per_positive,)``, whose
        values the caller copies into the negatives' numeric item slots.

    >>> rows = np.array([[0, 10, 20], [1, 11, 21]])
    >>> table = ItemTable.of_rows(("item", "genre"), np.array([1, 2]), np.array([[0, 12, 22], *rows]),
    ...                           np.ones((3, 3), np.float32), oov_id=13)
    >>> negatives, drawn = sample_negatives(rows, table, rows, 2, np.random.default_rng(0))
    >>> negatives.shape, bool((negatives[:, 1] != np.repeat(rows[:, 1], 2)).all())
    ((4, 3), True)
    >>> bool((negatives[:, 2] == negatives[:, 1] + 10).all())  # each item with its own genre
    True
    """
    if len(items) < 2:
        raise DataError(f"negative sampling needs at least 2 items in the item field's vocabulary, got {len(items)}")
    key_slot = int(items.slots[0])
    context_slots = [slot for slot in range(feature_ids.shape[1]) if slot not in set(items.slots.tolist())]
    _, context = np.unique(np.concatenate([observed, feature_ids])[:, context_slots], axis=0, return_inverse=True)
    context = context.reshape(-1).astype(np.int64)
    item_range = int(max(items.keys.max(), observed[:, key_slot].max())) + 1
    observed_keys = context[: len(observed)] * item_range + observed[:, key_slot]
    negative_context = np.repeat(context[len(observed):], per_positive)
    drawn = np.empty(len(negative_context), dtype=np.int64)
    pending = np.arange(len(drawn))
    for _ in range(_MAX_REDRAWS):
        drawn[pending] = rng.integers(0, len(items), size=len(pending))
        keys = negative_context[pending] * item_range + items.keys[drawn[pending]]
        pending = pending[np.isin(keys, observed_keys)]
        if len(pending) == 0:
            negatives = np.repeat(feature_ids, per_positive, axis=0)
            negatives[:, items.slots] = items.ids[drawn]
            return negatives, drawn
    raise DataError(f"negative sampling: {len(pending)} contexts have (almost) every item as a positive; "
                    "lower negatives_per_positive (or ranking_negatives) or check item_field")
