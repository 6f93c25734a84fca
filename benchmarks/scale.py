"""Criteo scale on one machine: build time, memory and loading speed of the memory-mapped data path.

    python benchmarks/scale.py --rows 1000000            # writes the data once, then measures
    python benchmarks/scale.py --rows 1000000 5000000 20000000 --folder /tmp/lit_ifm_scale

For each row count it writes (once, seeded) a Criteo-shaped parquet file: a 0/1 ``label``, 13 numeric columns
I1..I13 with 20% missing, and 26 string columns C1..C26 whose values follow a Zipf law over vocabularies from 10 to
1 M values. Then, each step in a fresh process, with ``FieldAwareDataModule(source, task="binary",
categorical=C1..C26, numeric=I1..I13, min_count=2)``:

- cold build: ``.schema`` and ``.setup("fit")`` with an empty cache (read, count, encode, write the store),
  after the imports (torch, Lightning, datasets: a few seconds on their own);
- warm build: the same again, the store already built;
- with ``--csv``, a cold build from a CSV copy of the same rows (streamed by Arrow's CSV reader; Criteo_x1 and
  Avazu_x1 come as CSV);
- training: FM (K = 16) for ``--steps`` steps at batch 4096 through ``Trainer.fit``, and in the same process the
  train DataLoader alone for as many batches: gathering against training speed, with rows shuffled one by one
  (the default), then both again in another process in blocks of rows, as the Criteo and Avazu recipes load
  (``shuffle_block_rows`` of recipes/fm_criteo.yaml); the peak RSS training is the larger of the two.

Each step's process tunes glibc's malloc thresholds first (``lit_ifm.tune_allocator()``), as ``python -m lit_ifm``
does for its own. Each process reports its wall time and its peak resident set (``ru_maxrss``, which counts the pages of the memory
maps it touched), and the peak of its anonymous memory alone (``RssAnon`` sampled every 20 ms: memory that is not
the files' page cache). Prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.parquet as pq
import yaml

NUMERIC = [f"I{index}" for index in range(1, 14)]
CATEGORICAL = [f"C{index}" for index in range(1, 27)]
VOCABULARIES = np.geomspace(10, 1_000_000, len(CATEGORICAL)).round().astype(int)  # 10 .. 1 M values
WRITE_ROWS = 1 << 18
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "fm_criteo.yaml"
BLOCK_ROWS = yaml.safe_load(RECIPE.read_text())["data"]["shuffle_block_rows"]  # the Criteo recipes' loading
WARMUP = 10  # batches neither gathering nor training is timed on


def write_criteo_like(path: Path, rows: int, seed: int = 0) -> None:
    """A seeded Criteo-shaped parquet file of ``rows`` rows, written chunk by chunk (flat in memory)."""
    rng = np.random.default_rng(seed)
    words = [pa.array([f"{(value * 2654435761) % 2**32:08x}" for value in range(size)]) for size in VOCABULARIES]
    effects = [rng.normal(0, 0.5, size) for size in VOCABULARIES[:6]]  # a few fields carry signal
    temporary = path.with_suffix(".partial")
    with pq.ParquetWriter(temporary, pa.schema(
            [("label", pa.int8()), *((name, pa.float64()) for name in NUMERIC),
             *((name, pa.string()) for name in CATEGORICAL)])) as writer:
        for start in range(0, rows, WRITE_ROWS):
            count = min(WRITE_ROWS, rows - start)
            columns = {}
            for name in NUMERIC:
                numbers = np.floor(rng.lognormal(1.0, 2.0, count)) - (rng.random(count) < 0.05) * 3
                numbers[rng.random(count) < 0.2] = np.nan
                columns[name] = pa.array(numbers, mask=np.isnan(numbers))
            ranks = [(rng.zipf(1.2, count) - 1) % size for size in VOCABULARIES]
            for name, vocabulary, rank in zip(CATEGORICAL, words, ranks):
                columns[name] = _with_missing(vocabulary.take(pa.array(rank)), rng.random(count) < 0.02)
            score = sum(effect[rank] for effect, rank in zip(effects, ranks)) - 1.0
            label = (rng.random(count) < 1 / (1 + np.exp(-score))).astype(np.int8)
            writer.write_table(pa.table({"label": label, **columns}))
    os.replace(temporary, path)


def write_csv_copy(parquet: Path, path: Path) -> None:
    """The parquet file's rows as CSV, batch by batch."""
    temporary = path.with_name(path.name + ".partial")
    source = pq.ParquetFile(parquet)
    with pa.csv.CSVWriter(temporary, source.schema_arrow) as writer:
        for batch in source.iter_batches(batch_size=WRITE_ROWS):
            writer.write_batch(batch)
    os.replace(temporary, path)


def _with_missing(strings: pa.Array, missing: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), strings)


class MemoryWatch:
    """The peak of this process's anonymous resident memory, sampled every 20 ms."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.sample()

    def sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                self.peak = max(self.peak, int(line.split()[1]) * 1024)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self.sample()
        return {"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_anon": self.peak}


def data_module(source: str, cache_dir: str, batch_size: int = 4096, shuffle_block_rows: int = 1):
    from lit_ifm import FieldAwareDataModule

    return FieldAwareDataModule(source, task="binary", categorical=CATEGORICAL, numeric=NUMERIC, min_count=2,
                                batch_size=batch_size, cache_dir=cache_dir, shuffle_block_rows=shuffle_block_rows)


def gathering_speed(source: str, cache_dir: str, batches: int, shuffle_block_rows: int = 1) -> float:
    """Rows/s of the train DataLoader alone after its first :data:`WARMUP` batches, up to ``batches`` (epoch after
    epoch), as FM's training is timed."""
    data = data_module(source, cache_dir, shuffle_block_rows=shuffle_block_rows)
    data.setup("fit")
    loader, count, epoch = data.train_dataloader(), 0, 0
    while count < batches:
        loader.sampler.set_epoch(epoch)  # a new order each epoch, as in training
        epoch += 1
        for _ in loader:
            count += 1
            if count == WARMUP:
                start = time.perf_counter()
            if count == batches:
                break
    return (batches - WARMUP) * 4096 / (time.perf_counter() - start)


def step_build(source: str, cache_dir: str) -> dict:
    import lit_ifm  # noqa: F401  (imports are not the build's time)

    watch = MemoryWatch()
    start = time.perf_counter()
    data = data_module(source, cache_dir)
    data.schema
    data.setup("fit")
    seconds = time.perf_counter() - start
    size = sum(path.stat().st_size for path in data.prepared.folder.iterdir())
    return {"seconds": seconds, "store_bytes": size, "rows": {name: len(split) for name, split in
                                                             data.prepared.splits.items()},
            "num_features": data.schema.num_features, **watch.stop()}


def training_speed(source: str, cache_dir: str, steps: int, shuffle_block_rows: int = 1) -> tuple[float, int]:
    """Rows/s of FM's training batches after the first :data:`WARMUP` (Trainer.fit, batch 4096), and the model's
    bytes."""
    import lightning as L
    import torch

    from lit_ifm import FM

    data = data_module(source, cache_dir, shuffle_block_rows=shuffle_block_rows)
    data.setup("fit")

    class StepTimer(L.Callback):
        batches = 0

        def on_train_batch_start(self, trainer, module, batch, index):
            self.batches += 1  # across epochs: a 1 M-row file's are 171 batches
            if self.batches == WARMUP + 1:
                self.start = time.perf_counter()

        def on_train_end(self, trainer, module):
            self.seconds = time.perf_counter() - self.start

    torch.manual_seed(0)
    model = FM(data.schema, task="binary", embedding_dim=16, lr=0.001)
    timer = StepTimer()
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        accelerator="cpu", devices=1, callbacks=[timer])
    trainer.fit(model, datamodule=data)
    parameters = sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())
    return (steps - WARMUP) * 4096 / timer.seconds, parameters


def step_train(source: str, cache_dir: str, steps: int, shuffle_block_rows: int) -> dict:
    watch = MemoryWatch()
    gather = gathering_speed(source, cache_dir, steps, shuffle_block_rows)
    training, parameters = training_speed(source, cache_dir, steps, shuffle_block_rows)
    return {"gather_rows_per_s": gather, "train_rows_per_s": training, "model_bytes": parameters, **watch.stop()}


def in_fresh_process(step: str, *args: str) -> dict:
    command = [sys.executable, __file__, "--step", step, *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def gib(count: float) -> str:
    return f"{count / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--folder", default=str(Path(tempfile.gettempdir()) / "lit_ifm_scale"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--csv", action="store_true", help="also time a cold build from a CSV copy")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--block-rows", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps <= WARMUP:
        parser.error(f"--steps must be over {WARMUP}: the first {WARMUP} are not timed")
    if args.step:  # a step's own process tunes glibc's malloc as python -m lit_ifm tunes its own
        import lit_ifm

        lit_ifm.tune_allocator()
    if args.step == "build":
        print(json.dumps(step_build(args.source, args.cache_dir)))
        return
    if args.step == "train":
        print(json.dumps(step_train(args.source, args.cache_dir, args.steps, args.block_rows)))
        return

    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for rows in args.rows:
        source = folder / f"criteo_like_{rows}.parquet"
        if not source.exists():
            start = time.perf_counter()
            write_criteo_like(source, rows)
            print(f"wrote {source} ({gib(source.stat().st_size)}) in {time.perf_counter() - start:.0f} s", flush=True)
        cache_dir = tempfile.mkdtemp(prefix=f"store_{rows}_", dir=folder)
        cold = in_fresh_process("build", "--source", str(source), "--cache-dir", cache_dir)
        warm = in_fresh_process("build", "--source", str(source), "--cache-dir", cache_dir)
        train, blocks = (in_fresh_process("train", "--source", str(source), "--cache-dir", cache_dir, "--steps",
                                          str(args.steps), "--block-rows", str(block_rows))
                         for block_rows in (1, BLOCK_ROWS))
        csv = {}
        if args.csv:
            copy = source.with_suffix(".csv")
            if not copy.exists():
                write_csv_copy(source, copy)
            csv = in_fresh_process("build", "--source", str(copy), "--cache-dir",
                                   tempfile.mkdtemp(prefix=f"csv_{rows}_", dir=folder))
        peak = {key: max(train[key], blocks[key]) for key in ("peak_rss", "peak_anon")}
        print(json.dumps({"rows": rows, "cold": cold, "warm": warm, "train": train, "blocks": blocks, "csv": csv}), flush=True)
        lines.append(
            f"| {rows:,} | {cold['seconds']:.1f} s ({rows / cold['seconds']:,.0f} rows/s) | {warm['seconds'] * 1000:.0f} ms "
            f"| {gib(cold['peak_rss'])} ({gib(cold['peak_anon'])}) | {gib(peak['peak_rss'])} "
            f"({gib(peak['peak_anon'])}; model {gib(train['model_bytes'])}) | {gib(cold['store_bytes'])} "
            f"| {train['gather_rows_per_s']:,.0f} | {train['train_rows_per_s']:,.0f} "
            f"| {train['gather_rows_per_s'] / train['train_rows_per_s']:.0f}x "
            f"| {blocks['gather_rows_per_s']:,.0f} | {blocks['train_rows_per_s']:,.0f} "
            f"| {blocks['gather_rows_per_s'] / blocks['train_rows_per_s']:.0f}x |"
            + (f" {csv['seconds']:.1f} s ({rows / csv['seconds']:,.0f} rows/s; peak RSS {gib(csv['peak_rss'])}) |"
               if csv else ""))
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; FM K=16, batch 4096, "
          f"{args.steps} steps")
    print("| rows | cold build | warm build | peak RSS building (anonymous) | peak RSS training (anonymous; model) "
          f"| store on disk | gathering rows/s | FM training rows/s | gathering / training "
          f"| gathering, blocks of {BLOCK_ROWS} rows | FM training, blocks | gathering / training, blocks |"
          + (" cold build from CSV |" if args.csv else ""))
    print("| --- " * (13 if args.csv else 12) + "|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
