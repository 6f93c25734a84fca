"""Recommend and rank: ranking metrics, item attributes in negatives and lists, top-N for a context."""

from __future__ import annotations

import json
import re

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, SAMPLES
from helpers import error_line

import lit_ifm
from lit_ifm import FM, IFM, FieldAwareDataModule, SyntheticConfig
from lit_ifm.data import FieldBatch
from lit_ifm.errors import ConfigError, DataError
from lit_ifm.metrics import GroupAUC, Ranking
from lit_ifm.models.scoring import encoded_rows

GENRES, ITEMS, USERS = 8, 40, 1000


def trainer(tmp_path, **options) -> L.Trainer:
    # the first validation batches of a positive-only log hold positives only: no sanity check
    defaults = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu",
                "default_root_dir": tmp_path, "enable_checkpointing": False, "max_epochs": 1, "num_sanity_val_steps": 0}
    return L.Trainer(**{**defaults, **options})


def item_log(folder, rows: int = 3000, seed: int = 0, users: int = USERS):
    """A positive-only log of random (user, item) pairs whose items carry a genre and a year: nothing but the
    pairing of an item with its own attributes tells a positive from a negative. Returns the file and the
    attributes of each item."""
    rng = np.random.default_rng(seed)
    genre_of, year_of = rng.integers(0, GENRES, ITEMS), rng.integers(1990, 2020, ITEMS)
    item = rng.integers(0, ITEMS, rows)
    path = folder / "log.csv"
    pd.DataFrame({"user": rng.integers(0, users, rows), "item": item, "genre": genre_of[item],
                  "year": year_of[item]}).to_csv(path, index=False)
    return path, genre_of, year_of


def item_data(path, **options) -> FieldAwareDataModule:
    settings = {"task": "binary", "categorical": ["user", "item", "genre"], "numeric": ["year"],
                "negatives_per_positive": 2, "item_field": "item", "batch_size": 256}
    return FieldAwareDataModule(str(path), **{**settings, **options})


# --- the grouped AUC ------------------------------------------------------------------------------------


def loop_gauc(preds: list[float], target: list[int], groups: list[int]) -> float:
    """FuxiCTR's gAUC, pair by pair: per group with both classes, the share of (positive, negative) pairs ordered
    right (ties one half), weighted by the group's rows."""
    total = weight = 0.0
    for group in set(groups):
        rows = [index for index, g in enumerate(groups) if g == group]
        positives = [preds[i] for i in rows if target[i]]
        negatives = [preds[i] for i in rows if not target[i]]
        if not positives or not negatives:
            continue
        right = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in positives for n in negatives)
        total += len(rows) * right / (len(positives) * len(negatives))
        weight += len(rows)
    return total / weight


@pytest.mark.parametrize("seed", range(5))
def test_group_auc_equals_the_pairwise_loop(seed):
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(50, 400))
    preds = rng.integers(0, 6, rows) / 5.0  # coarse scores: many ties, within and across groups
    target = rng.integers(0, 2, rows)
    groups = rng.integers(0, 12, rows) * 7
    metric = GroupAUC()
    for chunk in np.array_split(np.arange(rows), 3):  # updated batch by batch, as test steps do
        metric.update(torch.tensor(preds[chunk]), torch.tensor(target[chunk]), torch.tensor(groups[chunk]))
    expected = loop_gauc(preds.tolist(), target.tolist(), groups.tolist())
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-6)


def test_group_auc_of_groups_with_one_class_only_is_nan():
    metric = GroupAUC()
    metric.update(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]), torch.tensor([0, 1]))
    assert torch.isnan(metric.compute())


# --- ranking evaluation -----------------------------------------------------------------------------------


def loop_ranking(scores: np.ndarray, relevant: np.ndarray, groups: np.ndarray, k: int) -> dict[str, float]:
    """HR@K, MRR and NDCG@K (binary gains) list by list, over the lists with a relevant row."""
    hits, reciprocal, gains = [], [], []
    for group in np.unique(groups):
        order = np.argsort(-scores[groups == group], kind="stable")
        ranked = relevant[groups == group][order]
        if not ranked.any():
            continue
        hits.append(float(ranked[:k].any()))
        reciprocal.append(1.0 / (1 + int(np.argmax(ranked))))
        discounts = 1.0 / np.log2(np.arange(2, len(ranked) + 2))
        ideal = (np.sort(ranked)[::-1][:k] * discounts[:k]).sum()
        gains.append((ranked[:k] * discounts[:k]).sum() / ideal)
    return {f"hr@{k}": np.mean(hits), "mrr": np.mean(reciprocal), f"ndcg@{k}": np.mean(gains)}


def test_test_reports_ranking_metrics_of_the_ranking_field(tmp_path):
    data = FieldAwareDataModule(task="binary", synthetic=SyntheticConfig(rows=3000), ranking_field="f2", ranking_k=3,
                                batch_size=128, eval_batch_size=50)
    L.seed_everything(3, verbose=False)
    model = FM(data.schema, task="binary", embedding_dim=8, ranking=data.ranking)
    run = trainer(tmp_path)
    run.fit(model, datamodule=data)
    reported = run.test(model, datamodule=data, verbose=False)[0]
    split = data.prepared.splits["test"]
    ids, values, labels = split.gather(np.arange(len(split)))
    batch = FieldBatch(torch.from_numpy(ids), torch.from_numpy(values), torch.from_numpy(labels),
                       torch.arange(len(ids)))
    with torch.no_grad():
        scores = model.eval()(batch).numpy()
    groups, relevant = split.feature_ids[:, 2], split.labels > 0
    for name, expected in loop_ranking(scores, relevant, groups, 3).items():
        assert reported[f"test/{name}"] == pytest.approx(expected, abs=1e-5), name
    assert reported["test/gauc"] == pytest.approx(loop_gauc(scores.tolist(), relevant.tolist(), groups.tolist()),
                                                  abs=1e-5)
    assert not any(name.startswith("val/") and "@" in name for name in run.callback_metrics)


def test_ranking_field_must_be_one_single_valued_field(tmp_path, capsys):
    tags = ["fit", "--data.source", str(SAMPLES / "movielens-tags"), "--data.categorical", "[user, movie]",
            "--data.multi_valued", "{tag: '|'}", "--data.negatives_per_positive", "1", "--data.item_field", "movie",
            "--trainer.max_epochs", "1"]
    assert "'tag' is multi" in error_line(capsys, tmp_path, *tags, "--data.ranking_field", "tag")
    line = error_line(capsys, tmp_path, *tags, "--data.ranking_field", "users")
    assert line == "lit-ifm: error: ranking_field 'users' is not a field; the fields are ['user', 'movie', 'tag']"


def test_ranking_is_no_part_of_the_checkpoint(tmp_path):
    data = FieldAwareDataModule(synthetic=SyntheticConfig(rows=600), ranking_field="f0")
    model = FM(data.schema, embedding_dim=4, ranking=data.ranking)
    run = trainer(tmp_path, max_steps=1, limit_val_batches=0)
    run.fit(model, datamodule=data)
    run.save_checkpoint(tmp_path / "fm.ckpt")
    loaded = lit_ifm.load(tmp_path / "fm.ckpt")
    assert loaded.ranking is None and not loaded.ranking_metrics
    assert Ranking("f0").slot(data.schema) == 0


@pytest.mark.slow
def test_two_ddp_processes_rank_whole_lists(tmp_path):
    data = FieldAwareDataModule(task="binary", synthetic=SyntheticConfig(rows=1500), ranking_field="f0",
                                eval_batch_size=32)  # a user's rows fall on both ranks

    def fresh():
        L.seed_everything(7, verbose=False)
        return FM(data.schema, task="binary", embedding_dim=8, ranking=data.ranking)

    single = trainer(tmp_path).test(fresh(), datamodule=data, verbose=False)[0]
    double = trainer(tmp_path, devices=2, strategy="ddp_fork").test(fresh(), datamodule=data, verbose=False)[0]
    for name in ("ndcg@10", "hr@10", "mrr", "gauc"):
        assert double[f"test/{name}"] == pytest.approx(single[f"test/{name}"], abs=1e-6), name


# --- item attributes ----------------------------------------------------------------------------------------


def test_negatives_take_a_real_items_attributes(tmp_path):
    path, _, _ = item_log(tmp_path)
    data = item_data(path, item_fields=["item", "genre", "year"])
    vocabulary = {field.name: field for field in data.schema.fields}
    items = data.schema.encoding["items"]
    assert items["fields"] == ["item", "genre", "year"] and len(items["keys"]) == ITEMS
    train = data.prepared.splits["train"]
    negatives = train.labels == 0
    ids, values = train.feature_ids[negatives], train.feature_values[negatives]
    # every (item, genre, year) of a negative is the triple of some training item: read back through the table
    table = {int(key): (int(row[1]), float(value[2])) for key, row, value in
             zip(items["keys"], items["ids"].tolist(), items["values"])}
    assert all(table[int(item)] == (int(genre), float(year)) for item, genre, year in
               zip(ids[:, 1], ids[:, 2], values[:, 3]))
    assert not (ids[:, 2] == vocabulary["genre"].oov_id).any()
    # and those triples are the log's own: each item's genre and year, as generated
    positives = train.feature_ids[~negatives]
    assert len(set(zip(ids[:, 1].tolist(), ids[:, 2].tolist()))) <= len(set(zip(positives[:, 1].tolist(),
                                                                                 positives[:, 2].tolist())))
    assert "negatives keep" not in data.summary


def test_the_report_names_the_fields_negatives_keep_from_their_positive(tmp_path):
    path, _, _ = item_log(tmp_path)
    data = item_data(path)
    assert "negatives keep user, genre, year from their positive row and take only another item" in data.summary
    assert any("negatives keep user, genre, year" in line for line in data.report)


def test_item_fields_must_hold_the_item_field(tmp_path):
    with pytest.raises(ConfigError, match="item_field 'movie' is the key of item_fields"):
        item_data(tmp_path / "log.csv", item_field="movie", item_fields=["item", "genre"])


def binary_auc(tmp_path, data: FieldAwareDataModule) -> float:
    L.seed_everything(0, verbose=False)
    model = FM(data.schema, task="binary", embedding_dim=8, lr=0.02)
    run = trainer(tmp_path, max_epochs=8)
    run.fit(model, datamodule=data)
    return run.test(model, datamodule=data, verbose=False)[0]["test/auroc"]


@pytest.mark.slow  # two trainings of eight epochs
def test_genres_of_negatives_no_longer_give_positives_away(tmp_path):
    """Positives are random pairs, so nothing predicts them; negatives that copy the positive's genre beside
    another item are told apart by the (item, genre) pair alone."""
    path, _, _ = item_log(tmp_path, rows=4000)
    leaking = binary_auc(tmp_path, item_data(path, numeric=[], categorical=["user", "item", "genre"]))
    honest = binary_auc(tmp_path, item_data(path, numeric=[], categorical=["user", "item", "genre"],
                                            item_fields=["item", "genre"]))
    assert leaking > 0.8 and honest < 0.6, (leaking, honest)


# --- recommend --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_ifm(tmp_path_factory):
    """An IFM trained briefly on the item log, saved and loaded back as a user would (its checkpoint's path too)."""
    folder = tmp_path_factory.mktemp("recommend")
    path, genre_of, year_of = item_log(folder)
    data = item_data(path, item_fields=["item", "genre", "year"])
    L.seed_everything(1, verbose=False)
    model = IFM(data.schema, task="binary", embedding_dim=8)
    run = trainer(folder, max_epochs=2)
    run.fit(model, datamodule=data)
    run.save_checkpoint(folder / "ifm.ckpt")
    return lit_ifm.load(folder / "ifm.ckpt"), folder / "ifm.ckpt", genre_of, year_of


def test_recommend_ranks_candidates_with_their_own_attributes(trained_ifm):
    model, _, genre_of, year_of = trained_ifm
    candidates = [3, 17, 5, 29, 11]
    top = model.recommend({"user": 7}, candidates, k=3)
    rows = pd.DataFrame({"user": 7, "item": candidates, "genre": genre_of[candidates], "year": year_of[candidates]})
    expected = model.score(rows)
    order = np.argsort(-expected, kind="stable")[:3]
    assert [entry.item for entry in top] == [candidates[index] for index in order]
    np.testing.assert_allclose([entry.score for entry in top], expected[order], rtol=1e-6)
    assert all(entry.attention is None for entry in top)


def test_recommend_scores_every_item_in_one_forward_pass(trained_ifm, monkeypatch):
    model, _, genre_of, year_of = trained_ifm
    calls = []
    original = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, batch: calls.append(len(batch)) or original(self, batch))
    top = model.recommend({"user": "7"}, k=ITEMS + 5)
    assert calls == [ITEMS]
    assert sorted(int(entry.item) for entry in top) == list(range(ITEMS))  # every training item, by its value
    items = [int(entry.item) for entry in top]
    rows = pd.DataFrame({"user": 7, "item": items, "genre": genre_of[items], "year": year_of[items]})
    monkeypatch.undo()
    np.testing.assert_allclose([entry.score for entry in top], model.score(rows), rtol=1e-6)
    assert [entry.score for entry in top] == sorted((entry.score for entry in top), reverse=True)


def test_recommend_gives_the_attention_of_each_field_pair(trained_ifm):
    model, _, genre_of, year_of = trained_ifm
    top = model.recommend({"user": 7}, [1, 2, 3], k=2, with_attention=True)
    items = [entry.item for entry in top]
    rows = pd.DataFrame({"user": 7, "item": items, "genre": genre_of[items], "year": year_of[items]})
    (ids, values), = encoded_rows(model, rows)
    batch = FieldBatch(torch.from_numpy(ids), torch.from_numpy(values), torch.zeros(2), torch.arange(2))
    with torch.no_grad():
        details = model.interaction_details(batch)  # the model's own explanation of those rows
    for entry, attention in zip(top, details.attention.tolist()):
        assert list(entry.attention) == details.field_pairs  # one slot per field: one slot pair per field pair
        np.testing.assert_allclose(list(entry.attention.values()), attention, rtol=1e-6)


def test_recommend_refuses_unknown_items_and_incomplete_contexts(trained_ifm, tmp_path):
    model, _, _, _ = trained_ifm
    with pytest.raises(DataError, match=r"recommend: 2 candidates are no item the model was trained with, e\.g\. "
                                        r"\[4000, 'x'\]"):
        model.recommend({"user": 7}, [1, 4000, "x"])
    with pytest.raises(DataError, match=r"the context lacks the fields \['user'\]"):
        model.recommend({"hour": 7}, [1, 2])
    data = FieldAwareDataModule(synthetic=SyntheticConfig(rows=600))
    fm = FM(data.schema, embedding_dim=4).eval()
    with pytest.raises(DataError, match="names its item"):
        fm.recommend({"f0": 1})
    path, _, _ = item_log(tmp_path)
    fm = FM(item_data(path).schema, task="binary", embedding_dim=4).eval()
    with pytest.raises(ConfigError, match="FM has no attention over field pairs"):
        fm.recommend({"user": 1, "genre": 2, "year": 2000}, with_attention=True)


# --- the sampled ranking protocol ---------------------------------------------------------------------------


def test_sampled_lists_rank_each_test_positive_against_drawn_items(tmp_path):
    path, _, _ = item_log(tmp_path, users=200)  # every test user seen in training: its own context
    data = item_data(path, item_fields=["item", "genre", "year"], ranking_negatives=9, ranking_k=3,
                     eval_batch_size=64)
    test = data.prepared.splits["test"]
    positives = data.ranking.positives
    assert positives == 300 and len(test) == 10 * positives  # 10% of the log's 3,000 rows, each with 9 drawn
    assert (test.labels[:positives] == 1).all() and (test.labels[positives:] == 0).all()
    ids, values = test.feature_ids.astype(np.int64), test.feature_values
    lists = np.concatenate([np.arange(positives), np.repeat(np.arange(positives), 9)])
    np.testing.assert_array_equal(ids[:, 0], ids[lists, 0])  # a list's drawn items share its positive's user
    observed = {(user, item) for split in data.prepared.splits.values()
                for user, item, label in zip(split.feature_ids[:, 0], split.feature_ids[:, 1], split.labels)
                if label > 0}
    assert not any((user, item) in observed for user, item in zip(ids[positives:, 0], ids[positives:, 1]))
    table = {int(key): (int(row[1]), float(value[2])) for key, row, value in zip(
        data.schema.encoding["items"]["keys"], data.schema.encoding["items"]["ids"].tolist(),
        data.schema.encoding["items"]["values"])}
    assert all(table[int(item)] == (int(genre), float(year)) for item, genre, year in
               zip(ids[:, 1], ids[:, 2], values[:, 3]))
    assert "each positive ranked against 9 sampled items" in data.summary

    L.seed_everything(2, verbose=False)
    model = FM(data.schema, task="binary", embedding_dim=8, ranking=data.ranking)
    run = trainer(tmp_path, max_epochs=2)
    run.fit(model, datamodule=data)
    reported = run.test(model, datamodule=data, verbose=False)[0]
    batch = FieldBatch(torch.from_numpy(ids), torch.from_numpy(values), torch.from_numpy(test.labels.copy()),
                       torch.arange(len(ids)))
    with torch.no_grad():
        scores = model.eval()(batch).numpy()
    for name, expected in loop_ranking(scores, test.labels > 0, lists, 3).items():
        assert reported[f"test/{name}"] == pytest.approx(expected, abs=1e-5), name
    # one positive per list: the grouped AUC is the share of drawn items ranked below it
    assert reported["test/gauc"] == pytest.approx(loop_gauc(scores.tolist(), (test.labels > 0).tolist(),
                                                            lists.tolist()), abs=1e-5)



# --- the guide ----------------------------------------------------------------------------------------------


def test_the_guides_settings_and_python_run(tmp_path, capsys):
    """docs/ranking.md's YAML on a log with those columns, and its Python on a checkpoint trained with it."""
    guide = (REPO / "docs" / "ranking.md").read_text()
    (settings,) = re.findall(r"^```yaml\n(.*?)^```", guide, flags=re.DOTALL | re.MULTILINE)
    (code,) = re.findall(r"^```python\n(.*?)^```", guide, flags=re.DOTALL | re.MULTILINE)
    path, _, _ = item_log(tmp_path)
    options = yaml.safe_load(settings)["data"]
    data = FieldAwareDataModule(**{**options, "source": str(path)})
    assert data.ranking == Ranking("user") and data.schema.encoding["items"]["fields"] == options["item_fields"]
    L.seed_everything(0, verbose=False)
    run = trainer(tmp_path)
    run.fit(IFM(data.schema, task="binary", embedding_dim=4), datamodule=data)
    run.save_checkpoint(tmp_path / "last.ckpt")
    namespace = {}
    code = code.replace("runs/lit_ifm/<run>/checkpoints/last.ckpt", str(tmp_path / "last.ckpt"))
    exec(code, namespace)  # noqa: S102 (the guide's own code)
    assert len(capsys.readouterr().out.splitlines()) == 10
    assert [entry.item for entry in namespace["top"]] != [] and namespace["top"][0].attention


def test_an_export_carries_the_item_table_as_plain_json(trained_ifm, tmp_path):
    from lit_ifm.serving.export import export_checkpoint

    model, checkpoint, _, _ = trained_ifm
    folder = export_checkpoint(checkpoint, tmp_path / "export")
    items = json.loads((folder / "encoder.json").read_text())["items"]
    assert items["fields"] == ["item", "genre", "year"] and len(items["keys"]) == ITEMS
    assert items == {name: value.tolist() if isinstance(value, torch.Tensor) else value
                     for name, value in model.schema.encoding["items"].items()}
