"""FM beyond its equation, which test_models checks against a plain loop as it does every model's."""

from __future__ import annotations

import torch
from helpers import mixed_schema, random_batch

from lit_ifm import FM


def test_padding_rows_never_change_the_prediction():
    schema = mixed_schema()
    model = FM(schema, embedding_dim=4)
    batch = random_batch(schema)
    before = model(batch)
    with torch.no_grad():
        model.feature_embedding.weight[schema.padding_id].fill_(5.0)
        model.linear.weight[schema.padding_id].fill_(5.0)
    torch.testing.assert_close(model(batch), before)
