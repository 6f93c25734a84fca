"""IFM's interaction-aware mechanism: the feature aspect's softmax, its limits, the field aspect,
the parameter count and what the field aspect learns on planted interactions."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import mixed_schema, random_batch

from lit_ifm import FM, IFM, INN, DeepIFM, FieldAwareDataModule, FieldBatch, SyntheticConfig
from lit_ifm.data.synthetic import synthetic_schema


def real_pair_mask(model: IFM, batch: FieldBatch) -> torch.Tensor:
    return batch.mask[:, model.pair_left] & batch.mask[:, model.pair_right]  # (B, P)


@pytest.mark.parametrize("attention_sum", ["pairs", "one"])
def test_attention_sums_to_the_real_pair_count_or_one_and_is_zero_on_padding(attention_sum):
    model = IFM(schema=mixed_schema(), embedding_dim=4, attention_sum=attention_sum).eval()
    batch = random_batch(mixed_schema(), rows=10, empty=0.4)
    details = model.interaction_details(batch)
    real = real_pair_mask(model, batch)
    assert not real.all(), "the batch must hold pairs with an empty slot"
    total = real.sum(dim=1).float() if attention_sum == "pairs" else torch.ones(10)
    torch.testing.assert_close(details.attention.sum(dim=1), total)
    assert (details.attention[~real] == 0).all()
    assert details.attention.dtype == torch.float32
    assert len(details.field_pairs) == model.num_pairs == details.slot_pairs.shape[0]
    assert details.field_pairs[0] == ("user", "item")


def test_a_row_without_real_pairs_gives_zero_not_nan():
    model = IFM(schema=mixed_schema(), embedding_dim=4)
    batch = random_batch(mixed_schema(), rows=3)
    batch.feature_values[0, 1:] = 0.0  # one real slot: no pair at all
    batch.feature_ids[0, 1:] = model.schema.padding_id
    scores = model(batch)
    scores.sum().backward()
    assert torch.isfinite(scores).all()
    assert (model.batch_aspects(batch).fused()[0] == 0).all()  # no pair contributes
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_high_temperature_makes_attention_uniform():
    model = IFM(schema=mixed_schema(), embedding_dim=4, temperature=1e9).eval()
    with torch.no_grad():
        model.feature_aspect.hidden.weight.normal_(0.0, 3.0)
    batch = random_batch(mixed_schema(), rows=6)
    real = real_pair_mask(model, batch)
    torch.testing.assert_close(model.interaction_details(batch).attention, real.float())  # 1 on each real pair


@pytest.mark.parametrize(("attention_sum", "divided_by_pair_count"), [("pairs", False), ("one", True)])
def test_ones_field_aspect_and_uniform_attention_is_fm(attention_sum, divided_by_pair_count):
    """With T summing to |X| (lit_ifm's default) IFM starts out as FM; with the paper's softmax, as FM / |X|."""
    schema = mixed_schema()
    model = IFM(schema=schema, embedding_dim=5, field_factors=3, temperature=1e12, attention_sum=attention_sum,
                pooled_batch_norm=False).double().eval()
    fm = FM(schema=schema, embedding_dim=5).double().eval()
    with torch.no_grad():
        model.feature_embedding.weight.normal_()
        fm.feature_embedding.weight.copy_(model.feature_embedding.weight)
        model.field_aspect.field_embedding.fill_(1.0)
        model.field_aspect.factor_weights.fill_(1.0 / 3)  # D^T (1 * 1) = 1
    batch = random_batch(schema, rows=8)
    batch.feature_values = batch.feature_values.double()
    pair_count = real_pair_mask(model, batch).sum(dim=1) if divided_by_pair_count else 1
    with torch.no_grad():
        torch.testing.assert_close(model.interaction(batch), fm.interaction(batch) / pair_count)


@pytest.mark.parametrize("model_class", [IFM, INN, DeepIFM])
def test_the_paper_models_penalise_V_by_default_and_a_dict_of_ones_own_replaces_it(model_class):
    schema = synthetic_schema()
    model = model_class(schema, embedding_dim=8)
    assert model.hparams.l2_regularization == {"feature_embedding": 1e-4}  # saved resolved, so checkpoints keep it
    torch.testing.assert_close(model.regularization(), 1e-4 * model.feature_embedding.weight.pow(2).sum())
    own = model_class(schema, embedding_dim=8, l2_regularization={"field_aspect": 0.01})
    assert own.hparams.l2_regularization == {"field_aspect": 0.01}
    assert not model_class(schema, embedding_dim=8, l2_regularization={}).hparams.l2_regularization


def test_pooled_batch_norm_folds_into_the_field_aspect_and_bias_at_inference():
    """Eq. 9 with F' = F gamma / sigma and w0' = w0 + sum_k (beta_k - gamma_k mu_k / sigma_k): the same model."""
    schema = mixed_schema()
    normalised = IFM(schema=schema, embedding_dim=4, variant="unfactorized").double()
    with torch.no_grad():
        for parameter in normalised.parameters():
            parameter.normal_(0.0, 0.5)
    normalised.train()(random_batch(schema, rows=32))  # running statistics from a batch
    normalised.eval()
    norm = normalised.pooling.norm
    plain = IFM(schema=schema, embedding_dim=4, variant="unfactorized", pooled_batch_norm=False).double().eval()
    plain.load_state_dict(normalised.state_dict(), strict=False)
    sigma = (norm.running_var + norm.eps).sqrt()
    with torch.no_grad():
        plain.field_aspect.prototypes.mul_(norm.weight / sigma)
        plain.bias.add_((norm.bias - norm.weight * norm.running_mean / sigma).sum())
    torch.testing.assert_close(normalised.field_aspect_as_used(), plain.field_aspect())
    batch = random_batch(schema, rows=8)
    batch.feature_values = batch.feature_values.double()
    with torch.no_grad():
        torch.testing.assert_close(normalised(batch), plain(batch))


def test_parameter_count_follows_the_paper():
    schema = synthetic_schema()
    m, n, K, K_F, K_a = schema.num_features, schema.num_fields, 16, 6, 5
    fm = m * K + m + 1
    model = IFM(schema=schema, embedding_dim=K, field_factors=K_F, attention_dim=K_a, pooled_batch_norm=False)
    assert model.num_parameters() == fm + n * K_F + K_F * K + K_a * K + 2 * K_a
    normalised = IFM(schema=schema, embedding_dim=K, field_factors=K_F, attention_dim=K_a)
    assert normalised.num_parameters() == model.num_parameters() + 2 * K  # gamma, beta: fold away at inference
    assert FM(schema=schema, embedding_dim=K).num_parameters() == fm
    unfactorized = IFM(schema=schema, embedding_dim=K, attention_dim=K_a, variant="unfactorized",
                       pooled_batch_norm=False)
    assert unfactorized.num_parameters() == fm + n * (n - 1) // 2 * K + K_a * K + 2 * K_a
    assert IFM(schema=schema, embedding_dim=K, attention_dim=K_a, variant="feature_aspect_only",
               pooled_batch_norm=False).num_parameters() == fm + K_a * K + 2 * K_a
    assert IFM(schema=schema, embedding_dim=K, field_factors=K_F, variant="field_aspect_only",
               pooled_batch_norm=False).num_parameters() == fm + n * K_F + K_F * K


def test_same_field_pairs_of_a_multi_valued_field():
    schema = mixed_schema()  # 6 slots, tags takes 3 of them: 3 same-field pairs
    assert IFM(schema=schema).num_pairs == 15
    assert IFM(schema=schema, same_field_pairs=False).num_pairs == 12
    with_pairs = IFM(schema=schema, variant="unfactorized").field_aspect.prototypes.shape[0]
    without = IFM(schema=schema, variant="unfactorized", same_field_pairs=False).field_aspect.prototypes.shape[0]
    assert (with_pairs, without) == (7, 6)  # the 6 field pairs, plus (tags, tags)


def test_a_pair_subset_computes_only_those_pairs():
    model = IFM(schema=mixed_schema(), embedding_dim=4).eval()
    batch = random_batch(mixed_schema(), rows=5)
    embeddings = model.embed(batch)
    full = model.aspects(embeddings, batch.mask)
    pairs = torch.tensor([0, 3, 7])
    subset = model.aspects(embeddings, batch.mask, pairs)
    assert subset.feature.shape == (5, 3, 4) and subset.field.shape == (3, 4)
    torch.testing.assert_close(subset.field, full.field[pairs])
    real = real_pair_mask(model, batch)
    # the drawn pairs' attention sums to the instance's real pairs among all P (|X|), when any was drawn
    torch.testing.assert_close(subset.attention.sum(dim=1), real[:, pairs].any(dim=1) * real.sum(dim=1).float())


def test_field_pair_importance_reports_norms_and_shares():
    model = IFM(schema=mixed_schema(), embedding_dim=4)
    rows = model.field_pair_importance()
    assert len(rows) == 7
    assert {(row.first, row.second) for row in rows} >= {("user", "item"), ("tags", "tags")}
    assert sum(row.share for row in rows) == pytest.approx(1.0)
    assert [row.norm for row in rows] == sorted((row.norm for row in rows), reverse=True)
    with pytest.raises(ValueError, match="field aspect"):
        IFM(schema=mixed_schema(), variant="feature_aspect_only").field_pair_importance()
    assert len(INN(schema=mixed_schema(), embedding_dim=4).field_pair_importance()) == 7


def test_field_aspect_ranks_the_planted_field_pairs_first():
    data = FieldAwareDataModule(synthetic=SyntheticConfig(rows=8000), batch_size=256)
    L.seed_everything(0, verbose=False)
    model = IFM(schema=data.schema, embedding_dim=8, field_factors=8, attention_dim=4, lr=0.02,
                l2_regularization={"field_aspect": 1e-4})
    trainer = L.Trainer(max_epochs=12, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    ranking = model.field_pair_importance()
    assert {(row.first, row.second) for row in ranking[:3]} == {("f0", "f1"), ("f2", "f3"), ("f4", "f7")}, ranking[:5]
    assert ranking[2].norm > 2 * ranking[3].norm, ranking[:5]


@pytest.mark.parametrize("ifm_shortcut", [True, False])
def test_inn_with_the_shortcut_starts_exactly_as_ifm(ifm_shortcut):
    schema = synthetic_schema()
    L.seed_everything(0)
    inn = INN(schema, embedding_dim=8, hidden_sizes=(5,), ifm_shortcut=ifm_shortcut).eval()
    batch = random_batch(schema, rows=16)
    mlp_output = inn.interaction(batch) - (inn.shortcut(inn.batch_aspects(batch).fused()) if ifm_shortcut else 0)
    assert (mlp_output.abs().max() == 0) == ifm_shortcut
