"""The memory-mapped store of encoded splits: the same batches as the in-memory path it replaced, the Criteo options
(log buckets, hashing, min_count per field, missing values as ids), and builds that are killed or run twice at once."""

from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.parquet
import pytest
import torch
from conftest import FRAPPE_FIELDS, REPO

from lit_ifm import DataError, FieldAwareDataModule, SyntheticConfig
from lit_ifm.data import build
from lit_ifm.data.encoding import words as word_ids
from lit_ifm.data.rows import readers


def mixed_table(rows: int = 3000, seed: int = 5) -> pd.DataFrame:
    """Integer ids with missing values, prices with missing and zero values, Zipf-like cities with missing values,
    tag lists of 0 to 5 tags, a 0/1 label."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 50, rows).astype(float)
    users[rng.random(rows) < 0.1] = np.nan
    price = np.round(rng.exponential(3, rows), 2)
    price[rng.random(rows) < 0.2] = np.nan
    price[rng.random(rows) < 0.1] = 0
    city = np.array([f"c{v}" for v in rng.zipf(1.5, rows) % 200], dtype=object)
    city[rng.random(rows) < 0.05] = None
    tags = ["|".join(f"t{t}" for t in rng.integers(0, 30, rng.integers(0, 6))) for _ in range(rows)]
    label = (rng.random(rows) < 0.3).astype(int)
    return pd.DataFrame({"user": users, "price": price, "city": city, "tags": tags, "clicked": label})


MIXED = dict(task="binary", categorical=["user", "city"], numeric=["price"], multi_valued={"tags": "|"},
             label="clicked", batch_size=256)


def digest(module: FieldAwareDataModule) -> str:
    """Every split's ids, values and labels, the schema, the report and the first batches of the training and
    validation loaders."""
    digest = hashlib.sha256()
    for name, split in module.prepared.splits.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(split.feature_ids, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(split.feature_values, dtype=np.float32).tobytes())
        digest.update(np.ascontiguousarray(split.labels, dtype=np.float32).tobytes())
    digest.update(repr([tuple(field.__dict__.values()) for field in module.schema.fields]).encode())
    digest.update(repr((module.schema.num_features, module.schema.label_range)).encode())
    digest.update("\n".join(module.report).encode())
    digest.update(module.summary.replace(module.source, "<source>").encode())
    module.setup()
    for loader in (module.train_dataloader(), module.val_dataloader()):
        for index, batch in enumerate(loader):
            for tensor in (batch.feature_ids, batch.feature_values, batch.labels, batch.row_ids):
                digest.update(tensor.numpy().tobytes())
                digest.update(str(tensor.dtype).encode())
            if index == 2:
                break
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def mixed_sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mixed")
    table = mixed_table()
    table.to_csv(root / "all.csv", index=False)
    (root / "parquet").mkdir()
    table.to_parquet(root / "parquet" / "all.parquet", index=False)
    (root / "splits").mkdir()
    for name, part in zip(("train", "valid", "test"), (table.iloc[:2000], table.iloc[2000:2600], table.iloc[2600:])):
        part.to_csv(root / "splits" / f"{name}.csv", index=False)
    return {"csv_one_file": root / "all.csv", "parquet_one_file": root / "parquet", "csv_splits": root / "splits"}


# Digests of the in-memory path (int64/float32 arrays in RAM, commit 33854a9), which the store replaced.
IN_MEMORY_DIGESTS = {
    "frappe": "cfaf4047725ffa0c",
    "csv_one_file": "92bc71bc74316558",
    "parquet_one_file": "27847cec019a608b",
    "csv_splits": "08569baff23ef7aa",
    "synthetic": "4bec562f952623c6",
}


def digest_case(case: str, mixed_sources: dict[str, Path], request: pytest.FixtureRequest,
                **cache) -> tuple[str, FieldAwareDataModule]:
    if case == "frappe":  # the full files: only this case skips without them
        frappe_dir = request.getfixturevalue("frappe_dir")
        module = FieldAwareDataModule(str(frappe_dir), categorical=FRAPPE_FIELDS, signed_labels=True, batch_size=128,
                                      **cache)
    elif case == "synthetic":
        module = FieldAwareDataModule(synthetic=SyntheticConfig(rows=2000), batch_size=100, **cache)
    else:
        options = {"csv_one_file": {"min_count": 2}, "parquet_one_file": {"max_values": 3}}.get(case, {})
        module = FieldAwareDataModule(str(mixed_sources[case]), **MIXED, **options, **cache)
    return digest(module), module


@pytest.mark.parametrize("case", sorted(IN_MEMORY_DIGESTS))
def test_the_memory_map_gives_the_batches_of_the_in_memory_path(case, mixed_sources, request, tmp_path):
    result, module = digest_case(case, mixed_sources, request)
    assert result == IN_MEMORY_DIGESTS[case]
    train = module.prepared.splits["train"]
    assert train.feature_ids.dtype == np.int32 and not train.feature_ids.flags.writeable  # mapped, read-only
    # values are stored for the slots that carry numbers only: the price, never a categorical or libFM slot
    assert train.value_slots == ((2,) if case in mixed_sources else ())
    assert train.slot_values.shape == (len(train), len(train.value_slots))


@pytest.mark.parametrize("case", ["frappe", "csv_one_file", "parquet_one_file", "csv_splits"])
def test_chunks_of_a_few_rows_give_the_same_store(case, mixed_sources, request, tmp_path, monkeypatch):
    """Counting, encoding and label mapping chunk by chunk give what one chunk gives."""
    monkeypatch.setattr(build, "CHUNK_ROWS", 997)
    assert digest_case(case, mixed_sources, request, cache_dir=str(tmp_path))[0] == IN_MEMORY_DIGESTS[case]


def test_a_store_is_reused_without_reading_the_source(mixed_sources, monkeypatch):
    first = FieldAwareDataModule(str(mixed_sources["csv_splits"]), **MIXED)
    first.schema

    def no_reading(*args, **kwargs):
        raise AssertionError("a store hit must not read the source")

    monkeypatch.setattr(readers, "CsvRows", no_reading)
    start = time.perf_counter()
    again = FieldAwareDataModule(str(mixed_sources["csv_splits"]), **MIXED)
    assert again.schema == first.schema
    assert time.perf_counter() - start < 2
    np.testing.assert_array_equal(again.prepared.splits["test"].feature_ids, first.prepared.splits["test"].feature_ids)
    # other settings are another store
    with pytest.raises(AssertionError, match="must not read"):
        FieldAwareDataModule(str(mixed_sources["csv_splits"]), **MIXED, min_count=3).schema


def test_log_buckets_turn_numbers_into_categorical_ids(tmp_path):
    numbers = [0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 20.0, -1.0, None, 1000.0]
    table = pd.DataFrame({"n": numbers * 3, "label": [0, 1] * 15})
    table.to_csv(tmp_path / "train.csv", index=False)
    table.iloc[:10].to_csv(tmp_path / "valid.csv", index=False)
    pd.DataFrame({"n": [10.5, 5000.0], "label": [1, 0]}).to_csv(tmp_path / "test.csv", index=False)
    module = FieldAwareDataModule(str(tmp_path), task="binary", numeric=["n"], numeric_buckets="log2")
    (field,) = module.schema.fields
    # buckets: 0, 1, 2, floor(ln 3^2) = 1, ln 10^2 = 5.3 -> 5, ln 11^2 = 5.75 -> 5, ln 20^2 = 8.97 -> 8, -1, ln 1000^2 = 47
    assert field.kind == "categorical" and field.vocabulary_size == 7 + 1  # 0, 1, 2, 5, 8, -1, 47 and the OOV id
    ids = module.prepared.splits["validation"].feature_ids[:, 0].tolist()
    assert ids[1] == ids[3] and ids[4] == ids[5] and len({ids[0], ids[1], ids[2], ids[4], ids[6], ids[7], ids[9]}) == 7
    assert ids[8] == module.schema.padding_id  # missing: absent
    values = module.prepared.splits["validation"].feature_values[:, 0].tolist()
    assert values == [1.0] * 8 + [0.0, 1.0]  # a bucket is a feature of value 1, whatever the number
    test = module.prepared.splits["test"].feature_ids[:, 0].tolist()
    assert test == [ids[4], field.oov_id]  # ln 10.5^2 = 5.5: bucket 5, as 10; ln 5000^2 = 72.5: unseen
    with_missing = FieldAwareDataModule(str(tmp_path), task="binary", numeric=["n"], numeric_buckets="log2",
                                        missing_as_id=True)
    missing_id = with_missing.prepared.splits["validation"].feature_ids[8, 0]
    assert missing_id != with_missing.schema.padding_id and missing_id != with_missing.schema.fields[0].oov_id
    assert with_missing.schema.fields[0].vocabulary_size == 8 + 1


def fnv1a_64(text: str) -> int:
    value = 0xCBF29CE484222325
    for byte in text.encode():
        value = ((value ^ byte) * 0x100000001B3) % 2**64
    return value


@pytest.mark.parametrize("min_count", [1, 2, 5])
def test_value_counts_by_hash_keep_the_values_a_counter_keeps(min_count):
    from collections import Counter

    rng = np.random.default_rng(min_count)
    chunks = [[None if value < 0 else f"v{value}" * (1 + value % 3) for value in rng.zipf(1.3, 60) - 2]
              for _ in range(30)]
    counts = word_ids.ValueCounts("city", min_count)
    for chunk in chunks:
        counts.add(pa.array(chunk))
    counter = Counter(value for chunk in chunks for value in chunk if value is not None)
    kept, rare = counts.kept()
    assert kept.to_pylist() == sorted(value for value, count in counter.items() if count >= min_count)
    assert rare == sum(count < min_count for count in counter.values())


def test_two_values_that_share_a_hash_are_refused(monkeypatch):
    monkeypatch.setattr(word_ids, "fnv1a64", lambda strings: np.zeros(len(strings), dtype=np.uint64))
    counts = word_ids.ValueCounts("city", 1)
    with pytest.raises(DataError, match="column 'city': values 'a' and 'b' share a 64-bit hash"):
        counts.add(pa.array(["a", "b"]))


def test_hashing_maps_values_to_a_fixed_number_of_ids(tmp_path):
    words = ["a", "", "bb", "城市", "x" * 40, "12345678"]
    assert word_ids.hash_buckets(pa.array(words), 1000).tolist() == [fnv1a_64(word) % 1000 for word in words]
    rng = np.random.default_rng(0)
    city = [f"city{value}" for value in rng.integers(0, 500, 900)]
    frame = pd.DataFrame({"city": city, "user": rng.integers(0, 5, 900), "label": rng.integers(0, 2, 900)})
    frame.iloc[:600].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[600:800].to_csv(tmp_path / "valid.csv", index=False)
    pd.DataFrame({"city": ["never seen", "city3"], "user": [1, 2], "label": [0, 1]}).to_csv(tmp_path / "test.csv",
                                                                                            index=False)
    module = FieldAwareDataModule(str(tmp_path), task="binary", categorical=["city", "user"], hash_buckets={"city": 64})
    city_field, user = module.schema.fields
    assert city_field.vocabulary_size == 64 + 1 and user.vocabulary_size == 5 + 1 and user.oov_id == 64 + 1 + 5
    train = module.prepared.splits["train"].feature_ids[:, 0]
    assert train.tolist() == [fnv1a_64(word) % 64 for word in city[:600]]
    test = module.prepared.splits["test"].feature_ids[:, 0].tolist()
    assert test == [fnv1a_64("never seen") % 64, fnv1a_64("city3") % 64]  # unseen values hash too
    rare = FieldAwareDataModule(str(tmp_path), task="binary", categorical=["city", "user"], hash_buckets={"city": 64},
                                min_count={"city": 3})
    counts = pd.Series(city[:600]).value_counts()
    expected = [fnv1a_64(word) % 64 if counts[word] >= 3 else 64 for word in city[:600]]
    assert rare.prepared.splits["train"].feature_ids[:, 0].tolist() == expected
    with pytest.raises(DataError, match=r"hash_buckets names \['label'\], which are not categorical fields"):
        FieldAwareDataModule(str(tmp_path), task="binary", categorical=["city"], hash_buckets={"label": 4}).schema


def test_min_count_per_field(tmp_path):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"a": rng.integers(0, 40, 700), "b": rng.integers(0, 40, 700), "label": rng.integers(0, 2, 700)})
    frame.iloc[:500].to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[500:600].to_csv(tmp_path / "valid.csv", index=False)
    frame.iloc[600:].to_csv(tmp_path / "test.csv", index=False)
    module = FieldAwareDataModule(str(tmp_path), task="binary", categorical=["a", "b"], min_count={"a": 15})
    counts = frame.iloc[:500].a.value_counts()
    a, b = module.schema.fields
    assert a.vocabulary_size == int((counts >= 15).sum()) + 1
    assert b.vocabulary_size == frame.iloc[:500].b.nunique() + 1  # b keeps every value
    rare_rows = frame.iloc[:500].a.map(counts).to_numpy() < 15
    assert (module.prepared.splits["train"].feature_ids[rare_rows, 0] == a.oov_id).all()
    assert f"a {int((counts < 15).sum())}" in "\n".join(module.report)
    with pytest.raises(DataError, match=r"min_count names \['c'\], which are not fields"):
        FieldAwareDataModule(str(tmp_path), task="binary", categorical=["a", "b"], min_count={"c": 2}).schema


def test_missing_categorical_values_as_their_own_id(tmp_path):
    frame = pd.DataFrame({"city": ["x", None, "y", None, "x", "y"] * 5, "label": [0, 1] * 15})
    for split in ("train", "valid", "test"):
        frame.to_csv(tmp_path / f"{split}.csv", index=False)
    absent = FieldAwareDataModule(str(tmp_path), task="binary", categorical=["city"])
    own = FieldAwareDataModule(str(tmp_path), task="binary", categorical=["city"], missing_as_id=True)
    assert absent.prepared.splits["train"].feature_ids[1, 0] == absent.schema.padding_id
    ids = own.prepared.splits["train"].feature_ids[:4, 0].tolist()
    assert len(set(ids)) == 3 and own.schema.fields[0].vocabulary_size == 3 + 1
    assert own.prepared.splits["train"].feature_values[:4, 0].tolist() == [1.0] * 4


def test_libfm_values_other_than_one_are_stored_for_their_field_only(tmp_path):
    folder = tmp_path / "toy"
    folder.mkdir()
    for split in ("train", "validation", "test"):
        (folder / f"toy.{split}.libfm").write_text("1 0:1 2:0.5\n-1 1:1 3:2\n1 0:1 3:1\n")
    module = FieldAwareDataModule(str(folder))
    test = module.prepared.splits["test"]
    assert test.value_slots == (1,)
    assert test.feature_values.tolist() == [[1.0, 0.5], [1.0, 2.0], [1.0, 1.0]]


def test_a_spawned_worker_maps_the_store_again(mixed_sources):
    module = FieldAwareDataModule(str(mixed_sources["csv_splits"]), **MIXED)
    module.setup()
    dataset = module.train_dataloader().dataset
    payload = pickle.dumps(dataset)
    assert len(payload) < 20_000  # paths, not rows
    copy = pickle.loads(payload)
    first, second = dataset.__getitems__([5, 1, 7]), copy.__getitems__([5, 1, 7])
    assert first.feature_ids.equal(second.feature_ids) and first.feature_values.equal(second.feature_values)


BUILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from lit_ifm import FieldAwareDataModule
    from lit_ifm.data.store import folder as store

    source, cache, log, mode, processes = sys.argv[1:6]
    build = FieldAwareDataModule._build
    Path(f"{log}.ready.{os.getpid()}").touch()
    while len(list(Path(log).parent.glob(Path(log).name + ".ready.*"))) < int(processes):
        time.sleep(0.05)  # every process asks for the store at about the same time

    def logged_build(self, folder, *args, **kwargs):
        with open(log, "a") as file:
            file.write(f"{os.getpid()} builds\\n")
        time.sleep(1.0)  # long enough for the other process to ask for the same store meanwhile
        build(self, folder, *args, **kwargs)

    def killed(*args, **kwargs):
        os.kill(os.getpid(), 9)  # every array written, the description not yet: a build killed late

    FieldAwareDataModule._build = logged_build
    if mode == "kill":
        store.write_meta = killed
    module = FieldAwareDataModule(source, task="binary", categorical=["user", "city"], numeric=["price"],
                                  label="clicked", cache_dir=cache)
    print(module.schema.num_features, int(module.prepared.splits["train"].feature_ids.sum()))
""")


def start_build(source: Path, cache: Path, log: Path, mode: str = "build", processes: int = 1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", BUILD, str(source), str(cache), str(log), mode, str(processes)],
                            cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_killed_build_leaves_no_store_that_a_later_run_trusts(mixed_sources, tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "builds.log"
    killed = start_build(mixed_sources["csv_splits"], cache, log, "kill")
    killed.communicate(timeout=120)
    assert killed.returncode == -9
    stores = cache / "encoded"
    assert [path.name for path in stores.iterdir() if ".tmp-" in path.name]  # the killed build's folder
    assert not [path for path in stores.iterdir() if path.is_dir() and ".tmp-" not in path.name]  # nothing trusted
    again = start_build(mixed_sources["csv_splits"], cache, log)
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert len(log.read_text().splitlines()) == 2  # built again, from scratch
    assert not [path for path in stores.iterdir() if ".tmp-" in path.name]  # the leftover is cleared
    module = FieldAwareDataModule(str(mixed_sources["csv_splits"]), task="binary", categorical=["user", "city"],
                                  numeric=["price"], label="clicked", cache_dir=str(cache))
    assert out.split() == [str(module.schema.num_features), str(int(module.prepared.splits["train"].feature_ids.sum()))]


@pytest.mark.slow
def test_two_processes_building_the_same_store_build_it_once(mixed_sources, tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "builds.log"
    builds = [start_build(mixed_sources["csv_one_file"], cache, log, processes=2)]
    builds.append(start_build(mixed_sources["csv_one_file"], cache, log, processes=2))
    outputs = [build.communicate(timeout=120) for build in builds]
    assert [build.returncode for build in builds] == [0, 0], [err for _, err in outputs]
    assert len(log.read_text().splitlines()) == 1  # the second waited for the first's store
    assert outputs[0][0] == outputs[1][0]
    assert len([path for path in (cache / "encoded").iterdir() if path.is_dir()]) == 1


def resident_kib(path: Path) -> int:
    """The resident size of this process's memory maps of ``path``."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    return sum(next(int(entry.split()[1]) for entry in lines[index + 1:] if entry.startswith("Rss:"))
               for index, line in enumerate(lines) if line.endswith(str(path)))


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads Linux's /proc/self/smaps")
def test_a_large_store_is_gathered_without_becoming_resident(monkeypatch):
    from lit_ifm.data.store import mapped as store

    module = FieldAwareDataModule(synthetic=SyntheticConfig(rows=20000, num_fields=10), batch_size=64)
    module.setup()
    dataset = module.train_dataloader().dataset
    path = module.prepared.folder / "train.records"
    assert path.stat().st_size == 14000 * 10 * 4  # int32 ids, no values: every slot is categorical
    rng = np.random.default_rng(0)
    expected = {}
    monkeypatch.setattr(store, "RESIDENT_BUDGET", 1 << 30)  # a map smaller than the budget is indexed in place
    for index in range(40):
        rows = rng.integers(0, len(dataset), 64).tolist()
        expected[index] = (rows, dataset.__getitems__(rows))
    assert resident_kib(path) > 256
    module = FieldAwareDataModule(synthetic=SyntheticConfig(rows=20000, num_fields=10), batch_size=64)
    module.setup()  # a fresh map of the same store
    dataset = module.train_dataloader().dataset
    resident = resident_kib(path)  # the first module's map
    monkeypatch.setattr(store, "RESIDENT_BUDGET", 64 * 1024)  # a larger map is read from, not touched
    for rows, batch in expected.values():
        again = dataset.__getitems__(rows)
        assert again.feature_ids.equal(batch.feature_ids) and again.labels.equal(batch.labels)
    run = dataset.__getitems__(list(range(100, 400)))  # a run of rows, as evaluation reads them
    assert resident_kib(path) == resident  # the new map gained no page
    assert run.feature_ids.equal(torch.from_numpy(dataset.split.feature_ids[100:400].astype(np.int64)))


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_reading_a_file_keeps_memory_to_a_chunk(suffix, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    words = pa.array([f"{value:08x}" for value in rng.integers(0, 1 << 32, 100_000)])
    table = pa.table({f"C{i}": pc_take_shuffled(words, rng) for i in range(5)})
    path = tmp_path / f"wide{suffix}"  # about 6 MB
    if suffix == ".parquet":
        pa.parquet.write_table(table, path, row_group_size=2_000, compression="none")  # 50 row groups
        rows = readers.ParquetRows(path)
    else:
        pa.csv.write_csv(table, path)
        monkeypatch.setattr(readers.CsvRows, "BLOCK_BYTES", 1 << 16)
        rows = readers.CsvRows(path)
    before = pa.total_allocated_bytes()
    chunks = rows.chunks(2_000)
    for _ in range(49):
        next(chunks)
    held = pa.total_allocated_bytes() - before
    # pyarrow's pre_buffer held the whole parquet file read so far (7.1 MB here); a row group's buffers are 0.12 MB
    assert held < table.nbytes / 4, f"{held:,} bytes held after 49 of 50 chunks, {table.nbytes:,} in all"


def pc_take_shuffled(words: pa.Array, rng: np.random.Generator) -> pa.Array:
    return words.take(pa.array(rng.permutation(len(words))))


def quoted_table(rows: int = 600, seed: int = 3) -> pd.DataFrame:
    """Integer ids with missing values (written as 12.0), cities with commas, quotes, a line break and pandas'
    missing markers (NA, null, an empty cell), prices with missing and zero values, a 0/1 label."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 40, rows).astype(float)
    users[rng.random(rows) < 0.1] = np.nan
    names = np.array(["Paris", "New York, NY", 'say "hi"', "two\nlines", "NA", "null", "", "007", "7", "3.50"])
    city = names[rng.integers(0, len(names), rows)]
    price = np.round(rng.exponential(3, rows), 2)
    price[rng.random(rows) < 0.2] = np.nan
    price[rng.random(rows) < 0.1] = 0
    label = (rng.random(rows) < 0.4).astype(int)
    return pd.DataFrame({"user": users, "city": city, "price": price, "clicked": label})


def split_arrays(module: FieldAwareDataModule) -> dict[str, tuple[np.ndarray, ...]]:
    return {name: (np.array(split.feature_ids), np.array(split.feature_values), np.array(split.labels))
            for name, split in module.prepared.splits.items()}


def test_csv_gives_the_store_of_the_datasets_reader_and_of_parquet(tmp_path):
    """Arrow's streaming CSV reader gives the ids, values, labels and vocabularies that ``datasets``' CSV reader
    (lit_ifm's before) gives, and the parquet copy of the same rows."""
    table = quoted_table()
    parts = {"train": table.iloc[:400], "valid": table.iloc[400:500], "test": table.iloc[500:]}
    (tmp_path / "csv").mkdir()
    (tmp_path / "parquet").mkdir()
    for name, part in parts.items():
        part.to_csv(tmp_path / "csv" / f"{name}.csv", index=False)
        # parquet holds the rows as pandas reads the CSV: NA, null and '' missing, a line break and quotes kept
        read = pd.read_csv(tmp_path / "csv" / f"{name}.csv")
        assert read.city.isna().sum() == part.city.isin(["NA", "null", ""]).sum() > 0
        assert (read.city == 'say "hi"').sum() == (part.city == 'say "hi"').sum() > 0
        read.to_parquet(tmp_path / "parquet" / f"{name}.parquet", index=False)

    class DatasetsCsv(FieldAwareDataModule):
        def load_rows(self):
            return {split: datasets.load_dataset("csv", data_files=str(tmp_path / "csv" / f"{name}.csv"),
                                                 split="train", cache_dir=str(tmp_path / "hf"))
                    for split, name in zip(("train", "validation", "test"), parts)}

    options = {"task": "binary", "categorical": ["user", "city"], "numeric": ["price"], "label": "clicked",
               "min_count": 2}
    cache = str(tmp_path / "cache")
    arrow = FieldAwareDataModule(str(tmp_path / "csv"), cache_dir=cache, **options)
    city = arrow.schema.fields[1]
    assert [path.name for path in (tmp_path / "cache").iterdir()] == ["encoded"]  # no parsed copy of the file
    assert city.vocabulary_size == 7 + 1  # 6 cities, 007 and 7 apart, and the out-of-vocabulary id
    for other in (DatasetsCsv("datasets-csv", cache_dir=cache, **options),
                  FieldAwareDataModule(str(tmp_path / "parquet"), cache_dir=cache, **options)):
        assert other.schema == arrow.schema  # vocabularies by their fingerprints
        for split, arrays in split_arrays(arrow).items():
            for mine, theirs in zip(arrays, split_arrays(other)[split]):
                np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize("hashed_from", [0, 10**9], ids=["hashes", "index_in"])
def test_word_index_finds_what_arrow_index_in_finds(hashed_from, monkeypatch):
    monkeypatch.setattr(word_ids.WordIndex, "HASHED_FROM", hashed_from)
    rng = np.random.default_rng(0)
    words = pa.array(sorted({f"w{value}" for value in rng.integers(0, 5000, 2000)}))
    tokens = pa.array([None if value < 0 else f"w{value}" for value in rng.integers(-50, 8000, 3000)] + ["", "w"])
    index = word_ids.WordIndex(words)
    assert (index.hashes is None) == bool(hashed_from)
    position, found = index.positions(tokens)
    expected = np.asarray(pc.index_in(tokens, value_set=words).to_numpy(zero_copy_only=False), dtype=float)
    assert found.tolist() == (~np.isnan(expected)).tolist() and 0 < found.sum() < len(tokens)
    assert position[found].tolist() == expected[found].astype(int).tolist()


def test_a_large_map_gives_shuffled_rows_that_span_a_run_as_they_are(tmp_path, monkeypatch):
    from lit_ifm.data.store import mapped as store

    path = tmp_path / "rows.bin"
    np.arange(200, dtype=np.int32).reshape(100, 2).tofile(path)
    mapped = store.MappedArray(path, np.int32, (100, 2))
    monkeypatch.setattr(store, "RESIDENT_BUDGET", 64)  # the map is "large": its rows are read or unmapped again
    for rows in ([10, 11, 12, 13], [10, 12, 11, 13], [13, 11, 12, 10], [7], [5, 5]):
        assert mapped.take(np.array(rows)).tolist() == mapped.array[rows].tolist(), rows


def test_a_large_map_reads_near_rows_together_and_gives_them_in_the_order_asked(tmp_path, monkeypatch):
    from lit_ifm.data.store import mapped as store

    path = tmp_path / "rows.bin"
    np.arange(6000, dtype=np.int32).reshape(1000, 6).tofile(path)  # 24 bytes a row
    mapped = store.MappedArray(path, np.int32, (1000, 6))
    monkeypatch.setattr(store, "RESIDENT_BUDGET", 64)
    monkeypatch.setattr(store, "READ_GAP", 48)  # rows at most two rows apart are read together
    reads = []
    pread = os.pread
    monkeypatch.setattr(os, "pread", lambda *args: reads.append(args[1:]) or pread(*args))
    rng = np.random.default_rng(0)
    blocks = rng.permutation(125)[:8]  # 8 blocks of 8 rows, shuffled together as a block-shuffled batch holds them
    cases = {"blocks": (blocks[:, None] * 8 + np.arange(8)).ravel()[rng.permutation(64)],
             "scattered": rng.choice(1000, 50, replace=False), "repeated": np.array([3, 900, 3, 4, 900, 999]),
             "every other": rng.permutation(np.arange(0, 40, 2)), "end": np.array([999, 0]),
             "none": np.array([], dtype=np.int64)}
    for name, rows in cases.items():
        reads.clear()
        assert mapped.take(rows).tolist() == mapped.array[rows].tolist(), name
        spans = np.split(np.unique(rows), np.flatnonzero(np.diff(np.unique(rows)) > 3) + 1) if len(rows) else []
        assert reads == [(24 * (span[-1] + 1 - span[0]), 24 * span[0]) for span in spans], name
        assert name != "blocks" or len(reads) <= 8  # a read a block at most


def test_csv_column_types_do_not_depend_on_the_first_block(tmp_path, monkeypatch):
    """Arrow's reader fixes a column's type from its first block: a code column of digits that turns to text later,
    and a count column empty at first, must read as the parquet copy's strings and numbers do."""
    monkeypatch.setattr(readers.CsvRows, "BLOCK_BYTES", 1 << 10)  # blocks of about 60 rows
    rows = 3000
    codes = [str(100 + row % 50) if row < 2500 else f"x{row % 7}" for row in range(rows)]
    counts = [np.nan if row < 1000 else float(row % 9) for row in range(rows)]
    frame = pd.DataFrame({"code": codes, "count": counts, "label": np.arange(rows) % 2})
    frame.to_csv(tmp_path / "all.csv", index=False)
    (tmp_path / "parquet").mkdir()
    frame.to_parquet(tmp_path / "parquet" / "all.parquet", index=False)
    options = {"task": "binary", "categorical": ["code"], "numeric": ["count"], "cache_dir": str(tmp_path / "cache")}
    csv = FieldAwareDataModule(str(tmp_path / "all.csv"), **options)
    parquet = FieldAwareDataModule(str(tmp_path / "parquet"), **options)
    assert csv.schema == parquet.schema and csv.schema.fields[0].vocabulary_size == 50 + 7 + 1
    for split, arrays in split_arrays(csv).items():
        for mine, theirs in zip(arrays, split_arrays(parquet)[split]):
            np.testing.assert_array_equal(mine, theirs)


def test_csv_rows_come_in_file_order_a_chunk_at_a_time(tmp_path):
    path = tmp_path / "rows.tsv"  # a byte order mark, a quoted line break, a blank line and a missing cell
    path.write_bytes('\ufeffa\tb\tc\n1\t"x\ny"\t3\n\n4\t5\t6\n7\t\t9\n'.encode())
    rows = readers.CsvRows(path)
    assert rows.column_names == ["a", "b", "c"] and rows.num_rows == 3
    assert [chunk.to_pydict() for chunk in rows.chunks(2, ["c", "b"])] == [
        {"c": ["3", "6"], "b": ["x\ny", "5"]}, {"c": ["9"], "b": [None]}]


# --- trusting a store: its source's content, its own files ----------------------------------------------


def test_a_source_edited_in_place_with_its_times_restored_is_read_again(tmp_path):
    source = tmp_path / "all.csv"
    pd.DataFrame({"user": [f"u{i % 7}" for i in range(200)], "label": [0, 1] * 100}).to_csv(source, index=False)
    options = {"task": "binary", "categorical": ["user"], "cache_dir": str(tmp_path / "cache")}
    assert "100.0% of the training labels positive" not in FieldAwareDataModule(str(source), **options).summary
    times = source.stat()
    source.write_text(source.read_text().replace(",0\n", ",1\n"))  # every label 1: the same size
    os.utime(source, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert source.stat().st_size == times.st_size and source.stat().st_mtime_ns == times.st_mtime_ns
    assert "100.0% of the training labels positive" in FieldAwareDataModule(str(source), **options).summary


@pytest.mark.parametrize("at", ["start", "middle", "end"])
def test_the_content_digest_sees_an_edit_in_the_blocks_it_reads(at, tmp_path):
    from lit_ifm.data.rows.files import BLOCK_BYTES, EDGE_BYTES, SAMPLED_BLOCKS, sampled_digest

    path = tmp_path / "large.libfm"
    size = 2 * EDGE_BYTES + 4 * SAMPLED_BLOCKS * BLOCK_BYTES  # large enough to be sampled
    path.write_bytes(bytes(size))
    before = sampled_digest(path)
    offset = {"start": 10, "middle": EDGE_BYTES + 5, "end": size - 10}[at]  # the first middle block starts there
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(b"1")
    assert sampled_digest(path) != before


def damage_store(folder: Path, damage: str) -> None:
    """One kind of harm done to a built store's files."""
    records, labels = folder / "train.records", folder / "train.labels"
    if damage == "zeroed ids":
        data = bytearray(records.read_bytes())
        data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
        records.write_bytes(bytes(data))
    elif damage == "an id out of range":
        data = np.fromfile(records, dtype=np.int32)
        data[0] = 10**6
        data.tofile(records)
    elif damage in ("label 7", "label -3"):
        data = np.fromfile(labels, dtype=np.float32)
        data[len(data) // 3] = 7.0 if damage == "label 7" else -3.0
        data.tofile(labels)
    elif damage == "truncated records":
        os.truncate(records, records.stat().st_size - 100)
    elif damage == "missing labels":
        labels.unlink()
    elif damage == "meta.json cut short":
        meta = folder / "meta.json"
        meta.write_text(meta.read_text()[:200])
    elif damage == "meta.json edited":
        meta = folder / "meta.json"
        meta.write_text(meta.read_text().replace('"num_features": ', '"num_features": 1', 1))


DAMAGES = ["zeroed ids", "an id out of range", "label 7", "label -3", "truncated records", "missing labels",
           "meta.json cut short", "meta.json edited"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_store_is_found_and_built_again(damage, mixed_sources, tmp_path, caplog):
    options = dict(MIXED, cache_dir=str(tmp_path / "cache"))
    built = FieldAwareDataModule(str(mixed_sources["csv_splits"]), **options)
    expected = split_arrays(built)
    damage_store(built.prepared.folder, damage)
    del built
    caplog.clear()
    again = FieldAwareDataModule(str(mixed_sources["csv_splits"]), **options)
    for split, arrays in split_arrays(again).items():
        for mine, theirs in zip(arrays, expected[split]):
            np.testing.assert_array_equal(mine, theirs)
    said = [record.getMessage() for record in caplog.records if "damaged" in record.getMessage()]
    assert len(said) == 1 and said[0].startswith("lit_ifm: the store ") and "building it again" in said[0]
    assert "\n" not in said[0]
    caplog.clear()
    assert FieldAwareDataModule(str(mixed_sources["csv_splits"]), **options).schema  # intact now: nothing said
    assert not [record for record in caplog.records if "damaged" in record.getMessage()]


def test_a_batch_with_an_id_outside_the_schema_is_refused(tmp_path):
    from lit_ifm.data.store.mapped import EncodedSplit, MappedArray, record_type

    records = np.zeros(8, dtype=record_type(2, 0))
    records["ids"] = [[0, 3]] * 8
    records["ids"][5, 1] = 9  # beyond the padding id 4: a damaged store
    records.tofile(tmp_path / "train.records")
    split = EncodedSplit("train", MappedArray(tmp_path / "train.records", records.dtype, (8,)), None, (),
                         np.ones(8, np.float32), 4)
    assert split.gather(np.array([0, 1]))[0].tolist() == [[0, 3], [0, 3]]
    with pytest.raises(DataError, match=r"row 5 of the train split holds feature id 9, outside 0\.\.4: the store .* "
                                        "is damaged"):
        split.gather(np.array([2, 5]))


def test_empty_tokens_of_a_multi_valued_field_do_not_size_its_slots(tmp_path):
    tags = ["a|||b||c||", "|d|", "a", "", None, "b|c"] * 20  # the longest real list: 3 values in 10 tokens
    pd.DataFrame({"tags": tags, "label": [0, 1] * 60}).to_csv(tmp_path / "all.csv", index=False)
    module = FieldAwareDataModule(str(tmp_path / "all.csv"), task="binary", multi_valued={"tags": "|"},
                                  cache_dir=str(tmp_path / "cache"))
    assert module.schema.fields[0].slots == 3
    assert "multi, split on '|', longest 3" in module.summary
    assert [1.0, 1.0, 1.0] in module.prepared.splits["train"].feature_values.tolist()  # a b c, all three kept


def test_building_stores_leaves_no_lock_files(mixed_sources, tmp_path):
    for min_count in (1, 2, 3):
        module = FieldAwareDataModule(str(mixed_sources["csv_splits"]), **MIXED, min_count=min_count,
                                      cache_dir=str(tmp_path / "cache"))
        assert module.schema
    root = tmp_path / "cache" / "encoded"
    assert len(list(root.glob("*/meta.json"))) == 3
    assert not list(root.glob("*.lock"))


def csv_module_lines(path: Path) -> list[int]:
    """The line on which each data row starts, as Python's csv module reads the file."""
    import csv

    starts = []
    with path.open(newline="") as file:
        reader = csv.reader(file)
        start = 1
        for record in reader:
            if record:
                starts.append(start)
            start = reader.line_num + 1
    return starts[1:]  # without the header's


@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
def test_csv_lines_of_rows_are_those_the_csv_module_counts(line_end, tmp_path):
    from lit_ifm.data.rows.splits import csv_line

    rng = np.random.default_rng(7)
    cells = ["12", f'"a{line_end}b"', f'"x""y{line_end}"', '"q,r"', ""]
    for case in range(20):
        rows = [",".join(rng.choice(cells, 3)) if rng.random() > 0.15 else "" for _ in range(rng.integers(2, 20))]
        rows[0] = rows[0] or "1,2,3"
        path = tmp_path / f"case{case}.csv"
        path.write_bytes(line_end.join(["h1,h2,h3", *rows, ""][: None if case % 3 else -1]).encode())
        expected = csv_module_lines(path)
        for block_bytes in (1, 3, 64, 1 << 24):  # a block may end inside a quoted value or between \r and \n
            assert [csv_line(path, row, block_bytes) for row in range(len(expected))] == expected
