"""The embedded default data set: field-aware rows with planted field-pair interactions of known strength."""

from __future__ import annotations

from dataclasses import dataclass

import datasets
import numpy as np
import torch
from datasets.table import InMemoryTable

from lit_ifm.data.encoding.encoder import fingerprint
from lit_ifm.data.schema import Field, FieldSchema


@dataclass(frozen=True)
class SyntheticConfig:
    """A seeded generator of ``num_fields`` categorical fields ``f0, f1, ...``.

    The score of a row is a small linear part plus, for each planted pair of fields (f, g),
    ``strength * <u_f[x_f], u_g[x_g]>`` with random unit-variance latent vectors of size ``latent_dim``;
    all other field pairs carry no interaction. Regression targets are the standardised score plus
    Gaussian ``noise``; binary labels are drawn from ``sigmoid(2 * score)``.

    Args:
        rows: rows generated in all (split 70/20/10 at random by the data module).
        num_fields: fields per row.
        vocabulary_size: distinct values per field.
        planted_pairs: the interacting field pairs, as field indices.
        strength: weight of each planted pair.
        latent_dim: size of the planted latent vectors.
        noise: standard deviation of the regression noise.
        seed: seed of the generator.
    """

    rows: int = 20_000
    num_fields: int = 10
    vocabulary_size: int = 20
    planted_pairs: tuple[tuple[int, int], ...] = ((0, 1), (2, 3), (4, 7))
    strength: float = 1.0
    latent_dim: int = 4
    noise: float = 0.1
    seed: int = 0

    @property
    def field_names(self) -> tuple[str, ...]:
        """``f0, f1, ...``: the generated fields' names."""
        return tuple(f"f{index}" for index in range(self.num_fields))

    def generate(self, task: str) -> datasets.Dataset:
        """The rows for ``task`` (``regression`` or ``binary``), as a ``datasets.Dataset`` with a ``label`` column."""
        for pair in self.planted_pairs:
            if len(pair) != 2 or pair[0] == pair[1] or not all(0 <= f < self.num_fields for f in pair):
                raise ValueError(f"planted pair {pair} must name two different fields in 0..{self.num_fields - 1}")
        rng = np.random.default_rng(self.seed)
        values = rng.integers(0, self.vocabulary_size, size=(self.rows, self.num_fields))
        weights = rng.normal(0.0, 0.1, size=(self.num_fields, self.vocabulary_size))
        latent = rng.normal(0.0, 1.0 / np.sqrt(self.latent_dim),
                            size=(self.num_fields, self.vocabulary_size, self.latent_dim))
        score = weights[np.arange(self.num_fields), values].sum(axis=1)
        for f, g in self.planted_pairs:
            score += self.strength * np.einsum("nk,nk->n", latent[f, values[:, f]], latent[g, values[:, g]])
        score = (score - score.mean()) / score.std()
        if task == "binary":
            label = (rng.random(self.rows) < 1.0 / (1.0 + np.exp(-2.0 * score))).astype(np.float64)
        else:
            label = score + rng.normal(0.0, self.noise, size=self.rows)
        columns = {name: values[:, index] for index, name in enumerate(self.field_names)}
        table = InMemoryTable.from_pydict({**columns, "label": label})
        # The table is a function of (config, task): say so rather than have datasets hash every row.
        return datasets.Dataset(table, fingerprint=fingerprint("synthetic", self, task))


def synthetic_schema(config: SyntheticConfig = SyntheticConfig()) -> FieldSchema:
    """The schema the data module builds for ``config`` when every value occurs in training
    (a quick way to size a model in examples and tests).

    >>> synthetic_schema().num_features, synthetic_schema().num_slots
    (210, 10)
    """
    size = config.vocabulary_size + 1
    fields = [Field(name, "categorical", size, 1, index * size + config.vocabulary_size)
              for index, name in enumerate(config.field_names)]
    return FieldSchema(fields, size * config.num_fields)


# Checkpoints carry the data module's hyper-parameters; let torch.load(weights_only=True) rebuild this.
torch.serialization.add_safe_globals([SyntheticConfig])
