"""Every model's forward against a plain loop over its equation, and what every model must do
(gradients everywhere, overfit one batch), parametrised over all models lit_ifm.models exports."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from helpers import MODELS, mixed_schema, random_batch

from lit_ifm import AFM, FFM, FM, IFM, INN, NFM, DeepFM, DeepIFM, FieldAwareModel, LinearModel
from lit_ifm.layers import embedding_rows, slot_pairs

UNUSED_PARAMETERS = {LinearModel: {"feature_embedding.weight"}}  # a linear model has V but never reads it


def build(model_class, same_field_pairs: bool = True, **options) -> FieldAwareModel:
    """A double-precision model in eval mode with every parameter random (not the zero/one initial values)."""
    if model_class not in (FieldAwareModel, LinearModel) and "same_field_pairs" in _keywords(model_class):
        options["same_field_pairs"] = same_field_pairs
    model = model_class(schema=mixed_schema(), embedding_dim=4, **options).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
        for name, buffer in model.named_buffers():  # batch norms' statistics, off their 0/1 start
            if name.endswith("running_mean"):
                buffer.normal_(0.0, 0.5)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    return model.eval()


def _keywords(model_class) -> set[str]:
    import inspect

    return {name for cls in model_class.__mro__ if "__init__" in vars(cls)
            for name in inspect.signature(cls.__init__).parameters}


def double_batch(rows: int = 8):
    batch = random_batch(mixed_schema(), rows=rows)
    batch.feature_values = batch.feature_values.double()
    batch.labels = batch.labels.double()
    assert (batch.feature_values == 0).any(), "the batch must hold padded slots"
    return batch


# --- the loops ------------------------------------------------------------------------------------


def real_pairs(model, x, same_field_pairs):
    """Eq. 1 for one row: slot pairs i < j with both values non-zero (and in two fields unless same_field_pairs)."""
    fields = model.schema.slot_fields
    slots = [s for s in range(len(x)) if x[s] != 0]
    return [(i, j) for a, i in enumerate(slots) for j in slots[a + 1:] if same_field_pairs or fields[i] != fields[j]]


def linear_part(model, ids, x):
    w, w0 = model.linear.weight[:, 0], model.bias[0]
    return w0 + sum(w[ids[s]] * x[s] for s in range(len(ids)) if x[s] != 0)


def rows_of(batch):
    return zip(batch.feature_ids.tolist(), batch.feature_values.tolist())


def pair_vector(model, ids, x, i, j):
    V = model.feature_embedding.weight
    return V[ids[i]] * V[ids[j]] * x[i] * x[j]


def softmax_attention(attention, vectors, temperature=1.0):
    """h^T ReLU(W e + b) / temperature for each e, then softmax."""
    W, b, h = attention.hidden.weight, attention.hidden.bias, attention.projection.weight[0]
    logits = torch.stack([h @ torch.relu(W @ e + b) / temperature for e in vectors])
    return torch.softmax(logits, dim=0)


def field_vector(model, f, g):
    aspect = model.field_aspect
    if aspect is None:
        return torch.ones(model.embedding_dim, dtype=torch.float64)
    if hasattr(aspect, "field_embedding"):
        U, D = aspect.field_embedding, aspect.factor_weights
        return D.T @ (U[f] * U[g])
    return aspect.prototypes[aspect.field_pairs.tolist().index([f, g])]


def ifm_pairs_by_loops(model, ids, x, same_field_pairs):
    """[(pair, T_ij F_{fi,fj} * (V_i * V_j) x_i x_j)] for one row: the IX * FX of Eq. 11."""
    fields = model.schema.slot_fields
    pairs = real_pairs(model, x, same_field_pairs)
    vectors = [pair_vector(model, ids, x, i, j) for i, j in pairs]
    if model.feature_aspect is None:
        weights = [1.0] * len(pairs)
    else:
        weights = softmax_attention(model.feature_aspect, vectors, model.feature_aspect.temperature)
        if model.attention_sum == "pairs":
            weights = weights * len(pairs)  # T sums to |X|
    return [((i, j), t * field_vector(model, fields[i], fields[j]) * e)
            for (i, j), t, e in zip(pairs, weights, vectors)]


def pooled_by_loops(pooling, pooled):
    """G_IFM from the pooled K-vector: its sum, through the batch norm's inference map when there is one."""
    norm = pooling.norm
    if norm is not None:
        pooled = norm.weight * (pooled - norm.running_mean) / (norm.running_var + norm.eps).sqrt() + norm.bias
    return pooled.sum()


def ifm_by_loops(model, batch, same_field_pairs):
    return torch.stack([linear_part(model, ids, x) + pooled_by_loops(model.pooling, sum(
        (v for _, v in ifm_pairs_by_loops(model, ids, x, same_field_pairs)), torch.zeros(model.embedding_dim,
                                                                                      dtype=torch.float64)))
        for ids, x in rows_of(batch)])


def inn_by_loops(model, batch, same_field_pairs):
    order = list(zip(*(t.tolist() for t in slot_pairs(model.schema.slot_fields, same_field_pairs))))
    outputs = []
    for ids, x in rows_of(batch):
        h0 = torch.zeros(len(order), model.embedding_dim, dtype=torch.float64)
        for pair, vector in ifm_pairs_by_loops(model, ids, x, same_field_pairs):
            h0[order.index(pair)] = vector
        shortcut = 0.0 if model.shortcut is None else pooled_by_loops(model.shortcut, h0.sum(dim=0))  # G_IFM
        outputs.append(linear_part(model, ids, x) + model.mlp(h0.flatten()[None])[0, 0] + shortcut)
    return torch.stack(outputs)


def fm_pairs(model, ids, x, same_field_pairs):
    return sum(pair_vector(model, ids, x, i, j) for i, j in real_pairs(model, x, same_field_pairs))


def deep_part(model, ids, x):
    V = model.feature_embedding.weight
    concatenated = torch.cat([V[ids[s]] * x[s] for s in range(len(ids))])
    return model.deep(concatenated[None])[0, 0]


def deepfm_by_loops(model, batch, same_field_pairs):
    return torch.stack([linear_part(model, ids, x) + fm_pairs(model, ids, x, same_field_pairs).sum()
                        + deep_part(model, ids, x) for ids, x in rows_of(batch)])


def deepifm_by_loops(model, batch, same_field_pairs):
    return ifm_by_loops(model, batch, same_field_pairs) + torch.stack(
        [deep_part(model, ids, x) for ids, x in rows_of(batch)])


def nfm_by_loops(model, batch, same_field_pairs):
    return torch.stack([linear_part(model, ids, x) + model.mlp(model.pooled_norm(
        fm_pairs(model, ids, x, same_field_pairs)[None]))[0, 0] for ids, x in rows_of(batch)])


def afm_by_loops(model, batch, same_field_pairs):
    outputs = []
    for ids, x in rows_of(batch):
        vectors = [pair_vector(model, ids, x, i, j) for i, j in real_pairs(model, x, same_field_pairs)]
        weights = softmax_attention(model.attention, vectors)
        pooled = sum(a * e for a, e in zip(weights, vectors))
        outputs.append(linear_part(model, ids, x) + model.projection.weight[0] @ pooled)
    return torch.stack(outputs)


def ffm_by_loops(model, batch, same_field_pairs):
    fields, n, K = model.schema.slot_fields, model.schema.num_fields, model.embedding_dim
    table = model.feature_embedding.weight.view(-1, n, K)  # V_{feature, field}
    return torch.stack([linear_part(model, ids, x) + sum(
        table[ids[i], fields[j]] @ table[ids[j], fields[i]] * x[i] * x[j]
        for i, j in real_pairs(model, x, same_field_pairs)) for ids, x in rows_of(batch)])


def linear_by_loops(model, batch, same_field_pairs):
    return torch.stack([linear_part(model, ids, x) for ids, x in rows_of(batch)])


def fm_by_loops(model, batch, same_field_pairs):
    """Eq. 2: w0 + sum_i w_i x_i + sum over the real pairs of <V_i, V_j> x_i x_j."""
    return torch.stack([linear_part(model, ids, x) + fm_pairs(model, ids, x, same_field_pairs).sum()
                        for ids, x in rows_of(batch)])


# Each model's equation by loops, with the options it is checked under: every model lit_ifm.models exports
# needs an entry (test_every_model_is_covered), so a new model cannot go untested against its equation.
EQUATIONS = {
    LinearModel: [({}, linear_by_loops)],
    FM: [({}, fm_by_loops)],
    IFM: [({}, ifm_by_loops),
          ({"attention_sum": "one", "pooled_batch_norm": False}, ifm_by_loops),
          ({"variant": "unfactorized"}, ifm_by_loops),
          ({"variant": "feature_aspect_only"}, ifm_by_loops),
          ({"variant": "field_aspect_only"}, ifm_by_loops)],
    INN: [({"hidden_sizes": (5, 3)}, inn_by_loops),
          ({"hidden_sizes": (4,), "attention_sum": "one", "ifm_shortcut": False}, inn_by_loops)],
    DeepIFM: [({"hidden_sizes": (6,), "batch_norm": True}, deepifm_by_loops)],
    AFM: [({"attention_dim": 3}, afm_by_loops)],
    NFM: [({"hidden_sizes": (6,)}, nfm_by_loops)],
    DeepFM: [({"hidden_sizes": (6, 5)}, deepfm_by_loops)],
    FFM: [({}, ffm_by_loops)],
}
# with and without the pairs within a field, for the models that have the option
CASES = [(model_class, options, by_loops, same_field_pairs)
         for model_class, cases in EQUATIONS.items() for options, by_loops in cases
         for same_field_pairs in ((True, False) if "same_field_pairs" in _keywords(model_class) else (True,))]


@pytest.mark.parametrize(("model_class", "options", "by_loops", "same_field_pairs"), CASES,
                         ids=[f"{c.__name__}-{'-'.join(map(str, o.values()))}-{'same' if s else 'cross'}_field"
                              for c, o, _, s in CASES])
def test_forward_equals_its_equation_by_loops(model_class, options, by_loops, same_field_pairs):
    model = build(model_class, same_field_pairs, **options)
    batch = double_batch()
    with torch.no_grad():
        torch.testing.assert_close(model(batch), by_loops(model, batch, same_field_pairs))


def test_every_model_is_covered():
    assert {AFM, FFM, FM, IFM, INN, NFM, DeepFM, DeepIFM, LinearModel} <= set(MODELS)
    uncovered = [model.__name__ for model in MODELS if not EQUATIONS.get(model)]
    assert not uncovered, f"no loop-equation case in EQUATIONS for {uncovered}"


# --- what every model must do ---------------------------------------------------------------------


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_every_trainable_parameter_receives_a_gradient(model_class):
    model = model_class(schema=mixed_schema(), embedding_dim=4)
    with torch.no_grad():  # off the zero/one initial values that would hide a missing gradient path
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    model.train()
    batch = random_batch(mixed_schema(), rows=8)
    model.loss(model(batch), batch.labels).backward()
    unused = UNUSED_PARAMETERS.get(model_class, set())
    missing = [name for name, p in model.named_parameters()
               if p.requires_grad and name not in unused and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"{model_class.__name__}: no gradient reaches {missing}"


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_a_batch_of_unit_values_scores_and_learns_exactly_as_with_the_values_applied(model_class):
    model = build(model_class).train()
    torch.manual_seed(0)
    batch = random_batch(mixed_schema(), rows=8, empty=0.0)
    batch.feature_values = torch.ones_like(batch.feature_values)
    results = []
    for unit_values in (False, True):
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout
        scores = model(dataclasses.replace(batch, unit_values=unit_values))
        scores.sum().backward()
        results.append((scores, [parameter.grad for parameter in model.parameters()]))
    (scores, grads), (unit_scores, unit_grads) = results
    assert torch.equal(scores, unit_scores)
    assert all((g is None and u is None) or torch.equal(g, u) for g, u in zip(grads, unit_grads))


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_every_model_overfits_one_small_batch(model_class):
    schema = mixed_schema()
    model = model_class(schema=schema, embedding_dim=8)
    batch = random_batch(schema, rows=16)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.03)
    model.train()
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = model.loss(model(batch), batch.labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], (model_class.__name__, losses[0], losses[-1])


@pytest.mark.parametrize("width", [1, 5])
def test_embedding_rows_give_nn_embeddings_rows_and_gradient(width):
    table = torch.nn.Embedding(30, width, padding_idx=29)
    ids = torch.randint(0, 30, (16, 7))
    ids[0, :3] = 29  # padding
    ids[1, :4] = 3  # one id many times in a row
    upstream = torch.randn(16, 7, width)
    expected = table(ids)
    expected.backward(upstream)
    expected_grad, table.weight.grad = table.weight.grad, None
    rows = embedding_rows(table, ids)
    rows.backward(upstream)
    assert rows.equal(expected)
    torch.testing.assert_close(table.weight.grad, expected_grad)
    assert table.weight.grad[29].abs().sum() == 0


@pytest.mark.slow
def test_a_compiled_model_gives_the_eager_scores_and_gradients_and_still_copies():
    schema, batch = mixed_schema(), random_batch(mixed_schema(), rows=32)
    eager = FM(schema, embedding_dim=8)
    compiled = FM(schema, embedding_dim=8, compile="default")
    compiled.load_state_dict(eager.state_dict())
    for model in (eager, compiled):
        model.loss(model(batch), batch.labels).backward()
    torch.testing.assert_close(compiled(batch), eager(batch))
    for (name, expected), got in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(got.grad, expected.grad, msg=name)
    assert compiled._compiled_scores is not None and copy.deepcopy(compiled)._compiled_scores is None
    assert "_orig_mod" not in "".join(compiled.state_dict())  # checkpoints keep the eager model's keys


@pytest.mark.slow
def test_a_compiled_ifm_follows_the_pairs_a_sampler_selects_batch_after_batch():
    schema, batch = mixed_schema(), random_batch(mixed_schema(), rows=16)
    eager = IFM(schema, embedding_dim=8).eval()
    compiled = IFM(schema, embedding_dim=8, compile="default").eval()
    compiled.load_state_dict(eager.state_dict())
    for selected in (torch.tensor([0, 3, 5, 7]), torch.tensor([1, 2, 4, 9]), None, torch.arange(6)):
        weights = None if selected is None else torch.randn(len(selected))
        for model in (eager, compiled):
            model.active_pairs, model.active_pair_log_weights = selected, weights
        torch.testing.assert_close(compiled(batch), eager(batch))
