"""FM (the paper's Eq. 2) against its plain double loop."""

from __future__ import annotations

import torch
from helpers import mixed_schema, random_batch

from lit_ifm import FM


def fm_by_loops(model: FM, batch) -> torch.Tensor:
    """y = w0 + sum_i w_i x_i + sum_{i<j, x_i != 0, x_j != 0} <V_i, V_j> x_i x_j, one row at a time."""
    V, w, w0 = model.feature_embedding.weight, model.linear.weight[:, 0], model.bias[0]
    outputs = []
    for ids, x in zip(batch.feature_ids.tolist(), batch.feature_values.tolist()):
        y = w0.clone()
        slots = [s for s in range(len(ids)) if x[s] != 0]
        for i in slots:
            y = y + w[ids[i]] * x[i]
        for a, i in enumerate(slots):
            for j in slots[a + 1:]:
                y = y + torch.dot(V[ids[i]], V[ids[j]]) * x[i] * x[j]
        outputs.append(y)
    return torch.stack(outputs)


def test_fm_equals_pairwise_sum_with_padding_and_multi_valued_slots():
    schema = mixed_schema()
    model = FM(schema, embedding_dim=5).double()
    with torch.no_grad():
        model.linear.weight.normal_()
        model.bias.fill_(0.3)
        model.feature_embedding.weight.normal_()
    batch = random_batch(schema, rows=8)
    batch.feature_values = batch.feature_values.double()
    assert (batch.feature_values == 0).any(), "the batch must hold padded slots"
    model.eval()
    torch.testing.assert_close(model(batch), fm_by_loops(model, batch))


def test_padding_rows_never_change_the_prediction():
    schema = mixed_schema()
    model = FM(schema, embedding_dim=4)
    batch = random_batch(schema)
    before = model(batch)
    with torch.no_grad():
        model.feature_embedding.weight[schema.padding_id].fill_(5.0)
        model.linear.weight[schema.padding_id].fill_(5.0)
    torch.testing.assert_close(model(batch), before)
