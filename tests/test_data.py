"""FieldAwareDataModule on every source kind, and its errors on bad input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FRAPPE_FIELDS

from lit_ifm import DataError, FieldAwareDataModule, FieldBatch, SyntheticConfig


def first_batch(module: FieldAwareDataModule, split: str = "validation") -> FieldBatch:
    module.setup()
    loader = {"train": module.train_dataloader, "validation": module.val_dataloader,
              "test": module.test_dataloader}[split]()
    return next(iter(loader))


# --- the paper's libFM files ----------------------------------------------------------------------


def test_frappe_libfm_folder(frappe_dir):
    module = FieldAwareDataModule(str(frappe_dir), categorical=FRAPPE_FIELDS, batch_size=4096)
    schema = module.schema
    assert schema.field_names == tuple(FRAPPE_FIELDS)
    assert schema.num_slots == 10 and schema.slot_fields == tuple(range(10))
    assert [len(module.prepared.splits[s]) for s in ("train", "validation", "test")] == [60607, 17316, 8659]
    first_line = (frappe_dir / "frappe.validation.libfm").read_text().splitlines()[0].split()
    batch = first_batch(module)
    assert batch.feature_ids.dtype == torch.long and batch.feature_values.dtype == torch.float32
    assert batch.labels[0].item() == float(first_line[0])
    # training ids map densely, in id order: one embedding row per id seen in training (this row's all are)
    train_ids = np.unique([int(token.split(":")[0]) for line in (frappe_dir / "frappe.train.libfm").read_text().splitlines()
                           for token in line.split()[1:]])
    raw = [int(token.split(":")[0]) for token in first_line[1:]]
    assert batch.feature_ids[0].tolist() == np.searchsorted(train_ids, raw).tolist()
    assert schema.num_features == len(train_ids) + len(FRAPPE_FIELDS)  # + one out-of-vocabulary id per field
    assert set(module.prepared.splits["train"].labels.tolist()) == {-1.0, 1.0}
    # ids unseen in training map to their field's out-of-vocabulary id, and are reported
    oov = [field.oov_id for field in schema.fields]
    validation_ids = module.prepared.splits["validation"].feature_ids
    assert (validation_ids == np.array(oov)).sum() > 0
    assert any("validation values unseen in training" in line for line in module.report)


def test_libfm_single_file_is_split_70_20_10_with_the_seed(tmp_path, small_frappe_dir):
    lines = (small_frappe_dir / "frappe.test.libfm").read_text().splitlines()
    (tmp_path / "small.libfm").write_text("\n".join(lines) + "\n")

    def test_split(seed: int) -> np.ndarray:
        module = FieldAwareDataModule(str(tmp_path / "small.libfm"), split_seed=seed)
        assert [len(module.prepared.splits[s]) for s in ("train", "validation", "test")] == [210, 60, 30]
        assert module.schema.field_names[0] == "field_0"
        return module.prepared.splits["test"].feature_ids

    np.testing.assert_array_equal(test_split(1), test_split(1))
    assert not np.array_equal(test_split(1), test_split(2))


def test_min_count_maps_rare_training_ids_to_oov_and_reports_them(small_frappe_dir):
    module = FieldAwareDataModule(str(small_frappe_dir), categorical=FRAPPE_FIELDS, min_count=5)
    user = module.schema.fields[0]
    train_users = module.prepared.splits["train"].feature_ids[:, 0]
    counts = np.bincount(train_users)
    assert (train_users == user.oov_id).any()
    assert all(counts[i] >= 5 for i in np.unique(train_users) if i != user.oov_id)
    assert any("below min_count" in line for line in module.report)


# --- tables: CSV, TSV, parquet, JSON lines ---------------------------------------------------------


def write_table(frame: pd.DataFrame, path: Path) -> None:
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")


def mixed_frames() -> dict[str, pd.DataFrame]:
    train = pd.DataFrame({
        "user": ["ann", "bob", "ann", "cid", "bob", "ann"],
        "price": [1.5, 0.0, 2.0, 3.0, 1.0, 0.5],
        "tags": ["a|b", "b", "", "a|b|c", "c", "a"],
        "clicked": [1, 0, 1, 0, 1, 1],
    })
    valid = pd.DataFrame({"user": ["ann", "dan"], "price": [1.0, 2.0], "tags": ["b|z", "a"], "clicked": [0, 1]})
    test = pd.DataFrame({"user": ["bob"], "price": [4.0], "tags": ["c|a|b|a"], "clicked": [1]})
    return {"train": train, "valid": valid, "test": test}


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_table_folder_with_every_field_kind(tmp_path, suffix):
    for split, frame in mixed_frames().items():
        write_table(frame, tmp_path / f"{split}{suffix}")
    module = FieldAwareDataModule(str(tmp_path), task="binary", categorical=["user"], numeric=["price"],
                                  multi_valued={"tags": "|"}, label="clicked", batch_size=8)
    schema = module.schema
    assert [(f.name, f.kind, f.slots) for f in schema.fields] == [
        ("user", "categorical", 1), ("price", "numeric", 1), ("tags", "multi", 3)]
    assert schema.num_slots == 5 and schema.slot_fields == (0, 1, 2, 2, 2)
    user, price, tags = schema.fields
    assert user.vocabulary_size == 4 and tags.vocabulary_size == 4  # 3 values + OOV each

    train = first_batch(module, "train")  # not shuffled? train is shuffled: look rows up by row_ids
    rows = dict(zip(train.row_ids.tolist(), range(len(train))))
    first, third = rows[0], rows[2]
    ann, a, b = train.feature_ids[first, 0], train.feature_ids[first, 2], train.feature_ids[first, 3]
    assert train.feature_values[first].tolist() == [1.0, 1.5, 1.0, 1.0, 0.0]  # tags a|b fill 2 of 3 slots
    assert train.feature_ids[first, 4] == schema.padding_id
    assert train.feature_ids[third, 0] == ann and train.feature_values[third, 2:].tolist() == [0.0, 0.0, 0.0]
    assert train.feature_ids[rows[1], 1] == schema.padding_id and train.feature_values[rows[1], 1] == 0  # 0: absent
    assert a != b and train.labels.tolist() == [float(c) for c in mixed_frames()["train"].clicked.to_numpy()[train.row_ids.numpy()]]

    valid = first_batch(module, "validation")
    assert valid.feature_ids[1, 0] == user.oov_id  # dan was never seen in training
    assert valid.feature_ids[0, 3] == tags.oov_id  # nor was tag z
    test = first_batch(module, "test")
    assert test.feature_values[0, 2:].tolist() == [1.0, 1.0, 1.0]  # c|a|b|a holds 4 values, 3 slots
    assert any("validation values unseen in training" in line and "user 1" in line for line in module.report)
    assert any("test rows with more values than slots, truncated: 1" in line for line in module.report)


def test_csv_numbers_padded_with_spaces_and_true_false_read_as_pandas_reads_them(tmp_path):
    text = "user, price,clicked\n" + "".join(f"u{row % 3}, {row % 4}.5 ,{row % 2 == 1}\n" for row in range(12))
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.csv").write_text(text)
    module = FieldAwareDataModule(str(tmp_path), task="binary", categorical=["user"], numeric=[" price"],
                                  label="clicked")
    expected = pd.read_csv(tmp_path / "test.csv")
    assert module.prepared.splits["test"].feature_values[:, 1].tolist() == expected[" price"].tolist()
    assert expected.clicked.dtype == bool
    assert module.prepared.splits["test"].labels.tolist() == expected.clicked.astype(float).tolist()


def test_hub_layout_local_folder_maps_labels_to_the_task(tmp_path, small_frappe_dir):
    """A folder laid out like reczoo/Frappe_x1 (train/valid/test CSV, one column per field, label 1/0)."""
    files = {"train": "frappe.train.libfm", "valid": "frappe.validation.libfm", "test": "frappe.test.libfm"}
    for split, name in files.items():
        lines = (small_frappe_dir / name).read_text().splitlines()
        rows = [[int(token.split(":")[0]) for token in line.split()[1:]] for line in lines]
        frame = pd.DataFrame(rows, columns=FRAPPE_FIELDS)
        frame["label"] = [1.0 if line.split()[0] == "1" else 0.0 for line in lines]
        frame.to_csv(tmp_path / f"{split}.csv", index=False)
    regression = FieldAwareDataModule(str(tmp_path), categorical=FRAPPE_FIELDS, signed_labels=True)
    assert regression.schema.field_names == tuple(FRAPPE_FIELDS)
    assert set(regression.prepared.splits["train"].labels.tolist()) == {-1.0, 1.0}
    assert regression.schema.label_range == (-1.0, 1.0)
    binary = FieldAwareDataModule(str(tmp_path), task="binary", categorical=FRAPPE_FIELDS)
    assert set(binary.prepared.splits["test"].labels.tolist()) == {0.0, 1.0}
    plain = FieldAwareDataModule(str(tmp_path), categorical=FRAPPE_FIELDS)
    assert set(plain.prepared.splits["train"].labels.tolist()) == {0.0, 1.0}  # never silently reinterpreted


def test_hub_dataset_offline_fails_fast_with_advice(monkeypatch):
    from huggingface_hub import constants

    for offline in (True, False):  # HF_HUB_OFFLINE set, or a network that cannot reach the Hub
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
        monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")
        start = time.monotonic()
        with pytest.raises(DataError, match="Pass a local folder laid out like the Hub repo"):
            FieldAwareDataModule("someone/NotCached_x1", categorical=["a"]).schema
        assert time.monotonic() - start < 15


def test_negative_sampling_draws_unobserved_items(tmp_path):
    rng = np.random.default_rng(0)
    logs = pd.DataFrame({"user": rng.integers(0, 30, 600), "item": rng.integers(0, 50, 600),
                         "hour": rng.integers(0, 4, 600)}).drop_duplicates()
    logs.to_parquet(tmp_path / "logs.parquet", index=False)
    module = FieldAwareDataModule(str(tmp_path / "logs.parquet"), categorical=["user", "item", "hour"],
                                  negatives_per_positive=2, item_field="item", split_seed=3)
    splits = module.prepared.splits
    observed = {tuple(row) for data in splits.values() for row, y in zip(data.feature_ids.tolist(), data.labels) if y > 0}
    for data in splits.values():
        positives, negatives = (data.labels > 0).sum(), (data.labels < 0).sum()
        assert negatives == 2 * positives
        for row in data.feature_ids[data.labels < 0].tolist():
            assert tuple(row) not in observed
    item_oov = module.schema.fields[1].oov_id
    negatives = splits["train"].feature_ids[splits["train"].labels < 0]
    assert (negatives[:, 1] != item_oov).all()


def test_synthetic_default_is_seeded_and_planted():
    config = SyntheticConfig(rows=2000, seed=5)
    first = FieldAwareDataModule(synthetic=config)
    second = FieldAwareDataModule(synthetic=config)
    np.testing.assert_array_equal(first.prepared.splits["train"].labels, second.prepared.splits["train"].labels)
    assert first.schema.num_fields == 10 and len(first.prepared.splits["validation"]) == 400
    binary = FieldAwareDataModule(task="binary", synthetic=config)
    assert set(binary.prepared.splits["train"].labels.tolist()) == {0.0, 1.0}


def test_field_batch_moves_and_indexes():
    module = FieldAwareDataModule(synthetic=SyntheticConfig(rows=500), batch_size=64)
    batch = first_batch(module, "train")
    assert batch.feature_ids.shape == (64, 10) and batch.labels.shape == (64,)
    moved = batch.to("cpu")
    assert isinstance(moved, FieldBatch) and torch.equal(moved.feature_ids, batch.feature_ids)
    assert batch.mask.all()


# --- bad input: the message names the file, the line or column, and what was expected ---------------


def write_libfm(folder: Path, train: str, validation: str = "1 1:1 3:1\n", test: str = "-1 0:1 3:1\n") -> Path:
    folder.mkdir(exist_ok=True)
    for split, text in (("train", train), ("validation", validation), ("test", test)):
        (folder / f"toy.{split}.libfm").write_text(text)
    return folder


GOOD_TRAIN = "1 0:1 2:1\n-1 1:1 3:1\n1 0:1 3:1\n"


@pytest.mark.parametrize("train, message", [
    ("1 0:1 2:1\n-1 1:1 3;1\n", r"toy.train.libfm line 2: malformed libFM token '3;1' in field 'field_1'"),
    ("1 0:1 2:1\n-1 1:1\n", r"toy.train.libfm line 2: 1 features, expected 2 \(one per field"),
    ("1 0:1 2:1\n-1 2:1 3:1\n", r"toy.train.libfm line 2: feature id 2 stands in field 'field_0' \(position 1\) but belongs to field 'field_1'"),
    ("1 0:1 2:1\nyes 1:1 3:1\n", r"toy.train.libfm line 2: label 'yes' is not a number"),
])
def test_bad_libfm_lines(tmp_path, train, message):
    with pytest.raises(DataError, match=message):
        FieldAwareDataModule(str(write_libfm(tmp_path / "toy", train))).schema


def test_feature_id_changing_field_in_a_later_split(tmp_path):
    folder = write_libfm(tmp_path / "toy", GOOD_TRAIN, validation="1 0:1 3:1\n1 3:1 2:1\n")
    with pytest.raises(DataError, match=r"toy.validation.libfm line 2: feature id 3 stands in field 'field_0' .* belongs to field 'field_1'"):
        FieldAwareDataModule(str(folder)).schema


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        FieldAwareDataModule(str(tmp_path / "nowhere")).schema
    folder = write_libfm(tmp_path / "toy", GOOD_TRAIN)
    (folder / "toy.test.libfm").unlink()
    with pytest.raises(DataError, match=r"no test file"):
        FieldAwareDataModule(str(folder)).schema
    (folder / "toy.test.libfm").write_text("")
    with pytest.raises(DataError, match=r"toy.test.libfm: the file is empty"):
        FieldAwareDataModule(str(folder)).schema


def test_bad_table_columns_and_labels(tmp_path):
    frames = mixed_frames()
    for split, frame in frames.items():
        write_table(frame, tmp_path / f"{split}.csv")
    with pytest.raises(DataError, match=r"train.csv: column 'usr' of the field spec \(categorical\) is not in the file"):
        FieldAwareDataModule(str(tmp_path), categorical=["usr"], label="clicked").schema
    with pytest.raises(DataError, match=r"label column 'label' is not in the file"):
        FieldAwareDataModule(str(tmp_path), categorical=["user"]).schema
    with pytest.raises(DataError, match=r"needs a field spec"):
        FieldAwareDataModule(str(tmp_path), label="clicked").schema
    bad = frames["valid"].astype({"clicked": object})
    bad.loc[1, "clicked"] = "maybe"
    write_table(bad, tmp_path / "valid.csv")
    with pytest.raises(DataError, match=r"valid.csv line 3, column 'clicked': label 'maybe' is not a number"):
        FieldAwareDataModule(str(tmp_path), categorical=["user"], label="clicked").schema
    bad = frames["valid"].astype({"price": object})
    bad.loc[0, "price"] = "cheap"
    write_table(bad, tmp_path / "valid.csv")
    with pytest.raises(DataError, match=r"valid.csv line 2, column 'price': value 'cheap' is not a number"):
        FieldAwareDataModule(str(tmp_path), numeric=["price"], label="clicked").schema
    bad.loc[0, "price"] = "1_000"  # a number to Python's float, not to Arrow's (which once re-raised its own error)
    write_table(bad, tmp_path / "valid.csv")
    with pytest.raises(DataError, match=r"valid.csv line 2, column 'price': value '1_000' is not a number"):
        FieldAwareDataModule(str(tmp_path), numeric=["price"], label="clicked").schema
    write_table(frames["valid"].iloc[:0], tmp_path / "valid.csv")
    with pytest.raises(DataError, match=r"valid.csv: the file has no rows"):
        FieldAwareDataModule(str(tmp_path), categorical=["user"], label="clicked").schema


def test_worker_processes_give_the_same_batches():
    config = SyntheticConfig(rows=1000)
    in_process = FieldAwareDataModule(synthetic=config, batch_size=100)
    with_workers = FieldAwareDataModule(synthetic=config, batch_size=100, num_workers=1)
    for module in (in_process, with_workers):
        module.setup()
    for first, second in zip(in_process.val_dataloader(), with_workers.val_dataloader(), strict=True):
        assert torch.equal(first.feature_ids, second.feature_ids) and torch.equal(first.row_ids, second.row_ids)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinning needs a CUDA device")
def test_field_batch_pins_memory():
    module = FieldAwareDataModule(synthetic=SyntheticConfig(rows=500), batch_size=64, pin_memory=True)
    assert first_batch(module, "train").feature_ids.is_pinned()


def test_device_resident_data_trains_where_the_model_is(tmp_path):
    import lightning as L

    from lit_ifm import FM

    with pytest.raises(ValueError, match="set num_workers=0 and pin_memory=false"):
        FieldAwareDataModule(device_resident=True, num_workers=2)
    module = FieldAwareDataModule(synthetic=SyntheticConfig(rows=800), batch_size=64, device_resident=True)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(FM(module.schema, embedding_dim=4), datamodule=module)
    assert next(iter(module.train_dataloader())).labels.device == trainer.strategy.root_device
    assert trainer.callback_metrics["val/rmse"].isfinite()


def test_device_resident_auto_holds_small_data_in_memory_and_on_an_accelerator_that_fits_it_twice(monkeypatch,
                                                                                                   caplog):
    from lit_ifm.data.store import mapped as store

    module = FieldAwareDataModule(synthetic=SyntheticConfig(rows=800))  # device_resident: auto
    rows = sum(len(split) for split in module.prepared.splits.values())
    needed = rows * (10 * 8 + 10 * 4 + 4)  # 10 slots of int64 ids and float32 values, a float32 label
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    monkeypatch.setattr(store, "RESIDENT_BUDGET", needed)
    assert module._resident_on(cpu)
    monkeypatch.setattr(store, "RESIDENT_BUDGET", needed - 1)
    assert not module._resident_on(cpu)  # larger data is read from the memory-mapped store
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2 * needed, 80 * 2**30))
    assert module._resident_on(cuda)
    assert not FieldAwareDataModule(synthetic=SyntheticConfig(rows=800), pin_memory=True)._resident_on(cuda)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2 * needed - 1, 80 * 2**30))
    with caplog.at_level("INFO"):
        assert not module._resident_on(cuda)
    assert f"the splits take {needed / 2**30:.2f} GiB as device tensors, more than half the" in caplog.text
    assert "batches are gathered on the host (--data.device_resident true insists)" in caplog.text
    assert FieldAwareDataModule(synthetic=SyntheticConfig(rows=800), device_resident=True)._resident_on(cuda)


def test_the_data_report_shows_the_schema_and_what_encoding_changed(tmp_path):
    for split, frame in mixed_frames().items():
        write_table(frame, tmp_path / f"{split}.csv")
    module = FieldAwareDataModule(str(tmp_path), task="binary", categorical=["user"], numeric=["price"],
                                  multi_valued={"tags": "|"}, label="clicked", min_count=2)
    head, *table, note = module.summary.splitlines()
    assert head == (f"lit_ifm data from {tmp_path}, task binary: train 6, validation 2, test 1 rows; 66.7% of the "
                    "training labels positive; 3 fields in 5 slots, 8 feature ids")
    assert table == [
        "  field  kind                            slots  values  below min_count  OOV validation  OOV test  truncated rows",
        "  user   categorical                         1       2                1               1         0               -",
        "  price  numeric                             1       -                -               -         -               -",
        "  tags   multi, split on '|', longest 3      3       3                0               1         0          test 1",
    ]
    assert "out-of-vocabulary id" in note


@pytest.mark.parametrize("rows, world, drop_last", [(10, 1, False), (10, 3, False), (10, 3, True), (2, 5, False),
                                                     (1000, 4, False), (7, 2, True)])
def test_the_row_order_is_torchs_without_a_list_of_every_row(rows, world, drop_last):
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
    from torch.utils.data import DistributedSampler

    from lit_ifm.data.loading.sampling import OrderedRows, ShuffledBatches, ShuffledRows

    data = list(range(rows))
    for rank in range(world):
        for seed, epoch in ((0, 0), (2019, 3)):
            ours = ShuffledRows(data, world, rank, seed=seed, drop_last=drop_last)
            torchs = DistributedSampler(data, world, rank, shuffle=True, seed=seed, drop_last=drop_last)
            batches = ShuffledBatches(data, world, rank, batch_size=3, seed=seed, drop_last=drop_last)
            iterator = iter(batches)  # made before the epoch is set, as Lightning does when it resumes a run
            for sampler in (ours, torchs, batches):
                sampler.set_epoch(epoch)
            assert list(ours) == list(torchs) and len(ours) == len(torchs)
            expected = list(torchs)
            assert [batch.tolist() for batch in iterator] == [expected[i: i + 3] for i in range(0, len(expected), 3)]
            assert len(batches) == -(-len(expected) // 3)
        if rows >= world:
            ordered = list(OrderedRows(data, world, rank))
            assert ordered == list(UnrepeatedDistributedSampler(data, world, rank, shuffle=False))


@pytest.mark.parametrize("rows, world, block", [(1000, 1, 8), (1003, 3, 10), (50, 2, 64)])
def test_a_block_shuffle_gives_every_row_once_and_batches_of_whole_blocks(rows, world, block):
    from lit_ifm.data.loading.sampling import ShuffledBatches

    data = list(range(rows))
    epochs = []
    for epoch in (0, 1):
        ranks = []
        for rank in range(world):
            sampler = ShuffledBatches(data, world, rank, batch_size=4 * block, seed=7, block_rows=block)
            sampler.set_epoch(epoch)
            batches = [batch.tolist() for batch in sampler]
            assert batches == [batch.tolist() for batch in sampler]  # the same for the same (seed, epoch)
            assert len(batches) == len(sampler) and sum(map(len, batches)) == sampler.num_samples
            ranks.append(batches)
        seen = [row for batches in ranks for batch in batches for row in batch]
        assert sorted(set(seen)) == data and len(seen) == -(-rows // world) * world  # padded as torch pads
        # every batch but the last: 4 blocks' rows, shuffled; a rank's run may cut a block, the short last block
        # shifts the rest by a few rows
        most = 4 + (world > 1) + (rows % block > 0)
        for batches in ranks:
            for batch in batches[:-1]:
                assert 4 <= len({row // block for row in batch}) <= most and batch != sorted(batch)
        epochs.append(seen)
    assert epochs[0] != epochs[1]


def test_batches_say_when_every_value_is_1(small_frappe_dir, tmp_path):
    from lit_ifm.data.store import mapped as store

    frappe = FieldAwareDataModule(str(small_frappe_dir), batch_size=32)  # every slot holds a feature, none a number
    frappe.setup("fit")
    assert next(iter(frappe.train_dataloader())).unit_values
    frame = pd.DataFrame({"city": ["a", None, "b", "a"] * 30, "price": [1.0, 2.0, 3.0, 1.0] * 30,
                          "label": [0, 1] * 60})
    frame.to_parquet(tmp_path / "all.parquet", index=False)
    options = {"task": "binary", "batch_size": 8, "cache_dir": str(tmp_path / "cache")}
    for case, fields in {"an empty slot": {"categorical": ["city"]}, "a number": {"numeric": ["price"]}}.items():
        for resident in (True, False):  # batches gathered from tensors, and read from the store
            data = FieldAwareDataModule(str(tmp_path / "all.parquet"), device_resident=resident, **options, **fields)
            data.setup("fit")
            batches = list(data.train_dataloader())
            assert all(not batch.unit_values or bool((batch.feature_values == 1).all()) for batch in batches)
            assert not all(batch.unit_values for batch in batches), (case, resident)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "RESIDENT_BUDGET", 0)
        frappe = FieldAwareDataModule(str(small_frappe_dir), batch_size=32, device_resident=False)
        frappe.setup("fit")
        assert all(batch.unit_values for _, batch in zip(range(50), frappe.train_dataloader()))


def test_a_block_shuffled_data_module_trains_on_every_row_once_an_epoch():
    import lightning as L

    from lit_ifm import FM
    from lit_ifm.errors import ConfigError

    with pytest.raises(ConfigError, match="shuffle_block_rows must be at least 1, got 0"):
        FieldAwareDataModule(shuffle_block_rows=0)
    data = FieldAwareDataModule(synthetic=SyntheticConfig(rows=3000), batch_size=64, shuffle_block_rows=16,
                                task="binary")
    data.setup("fit")
    rows = [row for batch in data.train_dataloader() for row in batch.row_ids.tolist()]
    assert sorted(rows) == list(range(len(data.prepared.splits["train"])))
    model = FM(data.schema, task="binary", embedding_dim=4)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == -(-len(rows) // 64)
