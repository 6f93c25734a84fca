"""Negative sampling for positive-only logs (the paper's Frappe and MovieLens preparation)."""

from __future__ import annotations

import numpy as np

from lit_ifm.errors import DataError

_MAX_REDRAWS = 100


def sample_negatives(
    feature_ids: np.ndarray,
    item_slot: int,
    items: np.ndarray,
    observed: np.ndarray,
    per_positive: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Rows that copy each positive row's context ``per_positive`` times with a random item.

    Args:
        feature_ids: ``(N, S)`` encoded positive rows.
        item_slot: the slot of the item field.
        items: the item ids to draw from (the item field's training vocabulary).
        observed: ``(M, S)`` every observed positive row; a drawn item never makes one of them.
        per_positive: negatives per positive row.
        rng: the seeded generator.

    >>> rows = np.array([[0, 10], [1, 11]])
    >>> negatives = sample_negatives(rows, 1, np.array([10, 11, 12]), rows, 2, np.random.default_rng(0))
    >>> negatives.shape, bool((negatives[:, 1] != np.repeat(rows[:, 1], 2)).all())
    ((4, 2), True)
    """
    if len(items) < 2:
        raise DataError(f"negative sampling needs at least 2 items in the item field's vocabulary, got {len(items)}")
    context_slots = [slot for slot in range(feature_ids.shape[1]) if slot != item_slot]
    _, context = np.unique(np.concatenate([observed, feature_ids])[:, context_slots], axis=0, return_inverse=True)
    context = context.reshape(-1).astype(np.int64)
    item_range = int(max(items.max(), observed[:, item_slot].max())) + 1
    observed_keys = context[: len(observed)] * item_range + observed[:, item_slot]
    negative_context = np.repeat(context[len(observed):], per_positive)
    negatives = np.repeat(feature_ids, per_positive, axis=0)
    pending = np.arange(len(negatives))
    for _ in range(_MAX_REDRAWS):
        negatives[pending, item_slot] = items[rng.integers(0, len(items), size=len(pending))]
        keys = negative_context[pending] * item_range + negatives[pending, item_slot]
        pending = pending[np.isin(keys, observed_keys)]
        if len(pending) == 0:
            return negatives
    raise DataError(f"negative sampling: {len(pending)} contexts have (almost) every item as a positive; "
                    "lower negatives_per_positive or check item_field")
