"""A data source of one's own: rows made in code, encoded by lit_ifm like any file."""

from __future__ import annotations

from typing import Literal

import datasets
import numpy as np

from lit_ifm import FieldAwareDataModule


class ClickLog(FieldAwareDataModule):
    """A simulated click log: users, items, the hour, a price and tags, with clicks more likely where a user's
    taste meets an item's kind. ``load_rows`` returns the rows; lit_ifm splits them 70/20/10, builds the
    vocabularies on the training rows and reports the schema.

    Args:
        rows: rows to simulate.
        seed: seed of the simulation and of the split.
        task: ``binary`` (clicked or not) or ``regression`` (the same labels as numbers).
        batch_size: training batch size.
    """

    def __init__(self, rows: int = 5000, seed: int = 0, task: Literal["binary", "regression"] = "binary",
                 batch_size: int = 256):
        super().__init__(source="clicklog", task=task, categorical=["user", "item", "hour"], numeric=["price"],
                         multi_valued={"tags": "|"}, label="clicked", split_seed=seed, batch_size=batch_size)
        self.rows, self.seed = rows, seed

    def load_rows(self) -> datasets.Dataset:
        """The simulated rows, one ``datasets.Dataset`` for lit_ifm to split."""
        rng = np.random.default_rng(self.seed)
        users, items = rng.integers(0, 50, self.rows), rng.integers(0, 80, self.rows)
        taste, kind = rng.normal(size=50), rng.normal(size=80)
        score = taste[users] * kind[items] + rng.normal(scale=0.5, size=self.rows)
        tags = ["|".join(f"t{tag}" for tag in rng.choice(12, rng.integers(1, 4), replace=False)) for _ in users]
        return datasets.Dataset.from_dict({
            "user": [f"u{user}" for user in users],
            "item": [f"i{item}" for item in items],
            "hour": rng.integers(0, 24, self.rows).tolist(),
            "price": rng.gamma(2.0, 5.0, self.rows).round(2).tolist(),
            "tags": tags,
            "clicked": (score > 0).astype(int).tolist(),
        })
