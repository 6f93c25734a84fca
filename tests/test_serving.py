"""Using a trained model: the encoder a checkpoint carries, scoring new rows (Python and CLI), export with it."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from conftest import REPO
from helpers import error_line, run_main

import lit_ifm
from lit_ifm.__main__ import main
from lit_ifm.checkpoints import ENCODING_KEY, SCHEMA_KEY
from lit_ifm.data.encoding import encoder_from_state
from lit_ifm.serving.plain import plain_encoding
from lit_ifm.serving.scoring import encoded_rows

FIELDS = ["--data.categorical", "[user, item, city]", "--data.numeric", "[price]", "--data.multi_valued", "{tags: '|'}",
          "--data.hash_buckets", "{city: 64}", "--data.label", "clicked", "--data.task", "binary",
          "--data.item_field", "item"]


def table(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 30, rows)
    tags = ["|".join(f"t{tag}" for tag in rng.choice(8, rng.integers(0, 4), replace=False)) for _ in range(rows)]
    frame = pd.DataFrame({"id": [f"r{seed}-{row}" for row in range(rows)], "user": [f"u{user}" for user in users],
                          "item": rng.integers(0, 40, rows), "city": [f"c{city}" for city in rng.integers(0, 90, rows)],
                          "price": rng.gamma(2.0, 10.0, rows).round(2),
                          "tags": tags, "clicked": (rng.random(rows) < 0.3 + 0.02 * (users % 10)).astype(int)})
    frame.loc[rng.random(rows) < 0.1, "price"] = np.nan
    return frame


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """An FM trained on a table of categorical, hashed, numeric and multi-valued fields, and new rows to score: some
    values unseen in training, no label column."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "data"
    data.mkdir()
    for split, (rows, seed) in {"train": (600, 0), "valid": (200, 1), "test": (200, 2)}.items():
        table(rows, seed).to_csv(data / f"{split}.csv", index=False)
    new = table(150, 3)
    new.loc[:9, "user"] = "never seen"
    new.drop(columns="clicked").to_csv(root / "new.csv", index=False)
    new.to_csv(root / "labelled.csv", index=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIT_IFM_CACHE", str(root / "cache"))
        run_main(root, "fit", "--data.source", str(data), *FIELDS, "--trainer.max_epochs", "2",
                 "--model.embedding_dim", "8")
    checkpoint = next(root.glob("run-*/checkpoints/best-*.ckpt"))
    return {"root": root, "checkpoint": checkpoint, "new": root / "new.csv", "labelled": root / "labelled.csv"}


def test_the_checkpoint_carries_its_encoder_as_tensors_and_loads_weights_only(trained):
    checkpoint = torch.load(trained["checkpoint"], map_location="cpu", weights_only=True)
    encoder = checkpoint[ENCODING_KEY]["encoder"]
    assert [field["name"] for field in encoder["fields"]] == ["user", "item", "city", "price", "tags"]
    users = encoder["fields"][0]["vocabulary"]
    assert users["utf8"].dtype == torch.uint8 and users["offsets"].dtype == torch.int64  # compact, not a dict
    assert encoder["fields"][2]["hash_buckets"] == 64 and encoder["fields"][4]["separator"] == "|"
    assert checkpoint[ENCODING_KEY]["labels"] == {"task": "binary", "positive_threshold": None, "signed_labels": False}
    model = lit_ifm.load(trained["checkpoint"])
    assert type(model) is lit_ifm.FM and not model.training
    assert checkpoint[SCHEMA_KEY].encoding is None  # on its own key, not twice
    assert pickle.loads(pickle.dumps(model.schema)).encoding is not None  # a spawned DDP rank keeps it
    rebuilt = encoder_from_state(checkpoint[ENCODING_KEY])
    assert rebuilt.fields() == list(model.schema.fields)  # the same ids, fingerprints included


def test_score_takes_a_file_a_dataframe_a_list_of_dicts_and_a_dataset_alike(trained):
    model = lit_ifm.load(trained["checkpoint"])
    frame = pd.read_csv(trained["new"])
    scores = model.score(trained["new"])
    assert scores.shape == (150,) and ((scores > 0) & (scores < 1)).all()  # probabilities
    for rows in (frame, frame.to_dict("records"), datasets.Dataset.from_pandas(frame)):
        np.testing.assert_allclose(model.score(rows), scores, atol=1e-6)
    np.testing.assert_allclose(model.score(frame.iloc[:1]), scores[:1], atol=1e-6)  # one row alone
    ids = np.concatenate([ids for ids, _ in encoded_rows(model, frame.iloc[:10])])
    assert (ids[:, 0] == model.schema.fields[0].oov_id).all()  # "never seen" reads as user's out-of-vocabulary id


def test_predict_from_a_checkpoint_alone_keeps_the_input_columns_and_equals_score(trained, caplog):
    root = trained["root"]
    with caplog.at_level("INFO"):
        run_main(root, "predict", "--ckpt_path", str(trained["checkpoint"]), "--data.source", str(trained["new"]))
    written = pq.read_table(trained["checkpoint"].parent.parent / "predictions.parquet").to_pandas()
    assert list(written.columns) == ["row_id", "id", "user", "item", "city", "price", "tags", "prediction"]
    assert written["id"].tolist() == pd.read_csv(trained["new"])["id"].tolist()
    np.testing.assert_allclose(written["prediction"], lit_ifm.load(trained["checkpoint"]).score(trained["new"]),
                               atol=1e-6)
    assert "OOV scored" in caplog.text and "user   categorical      1      30                0          10" in \
        caplog.text  # the 10 unseen users are counted in the report, as in training
    run_main(root, "predict", "--ckpt_path", str(trained["checkpoint"]), "--data.source", str(trained["new"]),
             "--keep_columns", "[id]")
    assert pq.read_table(trained["checkpoint"].parent.parent / "predictions.parquet").column_names == \
        ["row_id", "id", "prediction"]


def test_test_scores_a_labelled_new_file_and_refuses_one_without_labels(trained, capsys):
    root = trained["root"]
    results = run_main(root, "test", "--ckpt_path", str(trained["checkpoint"]), "--data.source",
                       str(trained["labelled"])).trainer.callback_metrics
    assert 0 < float(results["test/auroc"]) < 1
    line = error_line(capsys, root, "test", "--ckpt_path", str(trained["checkpoint"]), "--data.source",
                      str(trained["new"]))
    assert "new.csv: test needs the label column 'clicked', which the file lacks" in line


def test_rows_missing_a_field_of_the_checkpoint_are_one_line(trained, capsys, tmp_path):
    pd.read_csv(trained["new"]).drop(columns="tags").to_csv(tmp_path / "partial.csv", index=False)
    line = error_line(capsys, trained["root"], "predict", "--ckpt_path", str(trained["checkpoint"]),
                      "--data.source", str(tmp_path / "partial.csv"))
    assert "partial.csv: column 'tags' of the field spec (multi) is not in the file" in line
    with pytest.raises(lit_ifm.DataError, match="column 'tags' of the field spec"):
        lit_ifm.load(trained["checkpoint"]).score(tmp_path / "partial.csv")


def test_the_plain_encoder_of_an_export_gives_lit_ifms_ids(trained, monkeypatch):
    """examples/serve/encoder.py reads encoder.json in plain Python: the ids and values lit_ifm's encoder gives."""
    monkeypatch.syspath_prepend(str(REPO / "examples" / "serve"))
    from encoder import Encoder

    model = lit_ifm.load(trained["checkpoint"])
    path = trained["root"] / "encoder.json"
    path.write_text(json.dumps(plain_encoding(model.schema.encoding)))
    plain = Encoder(path)
    frame = pd.read_csv(trained["new"])
    ids, values = next(encoded_rows(model, frame))
    rows = [{name: (None if isinstance(value, float) and np.isnan(value) else value) for name, value in row.items()}
            for row in frame.to_dict("records")]
    encoded = [plain.encode(row) for row in rows]
    np.testing.assert_array_equal(np.array([row[0] for row in encoded]), ids)
    np.testing.assert_allclose(np.array([row[1] for row in encoded]), values)
    sys.modules.pop("encoder", None)


@pytest.mark.slow
def test_the_example_server_answers_scores_and_top_items_from_an_export(trained, tmp_path):
    """examples/serve: an onnx export served on 127.0.0.1 with the standard library; a bounded set of requests."""
    export = tmp_path / "export"
    main(["export", "--ckpt_path", str(trained["checkpoint"]), "--format", "onnx", "--output", str(export)])
    assert (export / "encoder.json").is_file()
    server = subprocess.Popen([sys.executable, str(REPO / "examples" / "serve" / "server.py"), str(export),
                               "--item-field", "item", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        address = server.stdout.readline().split()[-1]  # "serving <folder> on http://127.0.0.1:<port>"
        assert address.startswith("http://127.0.0.1:")

        def ask(path: str, body: dict | None = None) -> tuple[int, dict]:
            data = None if body is None else json.dumps(body).encode()
            try:
                with urllib.request.urlopen(urllib.request.Request(address + path, data=data), timeout=30) as answer:
                    return answer.status, json.loads(answer.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        assert ask("/health") == (200, {"ok": True})
        model = lit_ifm.load(trained["checkpoint"])
        rows = pd.read_csv(trained["new"]).iloc[:20]
        records = [{name: (None if isinstance(value, float) and np.isnan(value) else value)
                    for name, value in row.items()} for row in rows.to_dict("records")]
        status, answer = ask("/score", {"rows": records})
        assert status == 200
        np.testing.assert_allclose(answer["scores"], model.score(rows), atol=1e-5)
        context = {"user": "u3", "city": "c7", "price": 12.5, "tags": "t1|t2"}
        status, answer = ask("/recommend", {"context": context, "candidates": [1, 2, 3, 4, 5], "k": 3})
        expected = model.score([{**context, "item": item} for item in [1, 2, 3, 4, 5]])
        assert status == 200 and [item["item"] for item in answer["items"]] == [int(i) + 1 for i in
                                                                               np.argsort(-expected)[:3]]
        status, answer = ask("/recommend", {"context": context, "k": 5})  # every item the model knows
        assert status == 200 and [str(item["item"]) for item in answer["items"]] == \
            [entry.item for entry in model.recommend(context, k=5)]
        assert ask("/recommend", {"context": {**context, "item": 3}})[0] == 400  # the item field in the context
        assert ask("/score", {"rows": [{}] * 10_001})[0] == 400  # bounded
        assert ask("/nowhere")[0] == 404
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stdout.close()


@pytest.mark.parametrize(("document", "heading"), [("README.md", "## Use a trained model"), ("docs/serving.md",
                                                                                           "## In Python")])
def test_the_python_the_docs_show_runs(trained, document, heading, tmp_path, monkeypatch):
    text = (REPO / document).read_text().split(heading, 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    code = code.replace("runs/lit_ifm/<run>/checkpoints/best-epoch=<n>.ckpt", str(trained["checkpoint"]))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "new_rows.csv").write_text(trained["new"].read_text())
    namespace = {"rows": pd.read_csv(trained["new"])}
    exec(code, namespace)
    model = lit_ifm.load(trained["checkpoint"])
    np.testing.assert_allclose(namespace["scores"], model.score(trained["new"]), atol=1e-6)
    if document == "README.md":  # top10: the best of every item seen in training, as scoring each of them ranks them
        context = {"user": "u3", "city": "c7", "price": 12.5, "tags": "t1|t2"}
        items = [str(item) for item in sorted(pd.read_csv(trained["root"] / "data" / "train.csv")["item"].unique())]
        scores = model.score([{**context, "item": item} for item in items])
        assert [entry.item for entry in namespace["top10"]] == [items[index] for index in np.argsort(-scores)[:10]]
