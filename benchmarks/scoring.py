"""What using a trained model costs on a CPU: the size and load time of a checkpoint that carries its encoder, and
the speed of scoring new rows with ``model.score`` against evaluating the same rows as a test split.

    python benchmarks/scoring.py --models FM              # 1 M distinct values; FM scoring 1 M rows
    python benchmarks/scoring.py --models IFM --rows 200000 --values 1000   # IFM, slower, on fewer rows
    python benchmarks/scoring.py --values 10000 --rows 20000 --models FM   # a quick check that it runs

Checkpoint: an FM (K = 8) over one field of ``--values`` distinct values (each seen once, all kept) and nine small
fields, saved by the Trainer after one step; its size, the encoder's share (the ``lit_ifm_encoding`` entry saved
alone), and the time of ``lit_ifm.load`` (median of 5 loads, the file in the page cache).

Scoring: ``--rows`` rows of ten Frappe-shaped categorical fields in a parquet file. ``model.score(path)`` (reading,
encoding with the checkpoint's encoder, forward passes of 4096 rows) against ``trainer.test`` of the same rows as the
test split of an already-built store (gathering, forward, metrics). Median of ``--repeats`` runs each, alternating.
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import machine  # noqa: E402

import lit_ifm  # noqa: E402
from lit_ifm.checkpoints import ENCODING_KEY  # noqa: E402
from lit_ifm.noise import silence_known_noise  # noqa: E402

FIELDS = [f"f{index}" for index in range(10)]


def quiet_trainer(**settings) -> L.Trainer:
    return L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                     **settings)


def write_splits(folder: Path, frames: dict[str, pd.DataFrame]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, frame in frames.items():
        frame.to_parquet(folder / f"{split}.parquet", index=False)
    return folder


def frappe_like(rows: int, seed: int, wide_values: int | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.integers(0, 538, rows).astype(str) for name in FIELDS})
    if wide_values is not None:
        frame["f0"] = [f"user{index:07d}" for index in rng.permutation(wide_values)[:rows]]
    frame["label"] = (rng.random(rows) < 0.3).astype(int)
    return frame


def checkpoint_figures(values: int, work: Path) -> str:
    frames = {"train": frappe_like(values, 0, values), "valid": frappe_like(1000, 1), "test": frappe_like(1000, 2)}
    data = lit_ifm.FieldAwareDataModule(str(write_splits(work / "wide", frames)), task="binary", categorical=FIELDS,
                                        cache_dir=str(work / "cache"))
    model = lit_ifm.FM(data.schema, task="binary", embedding_dim=8)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    path = work / "wide.ckpt"
    trainer.save_checkpoint(path, weights_only=False)
    encoder = io.BytesIO()
    torch.save(torch.load(path, weights_only=True)[ENCODING_KEY], encoder)
    lit_ifm.load(path)  # the page cache, as a service's second load
    loads = []
    for _ in range(5):
        start = time.perf_counter()
        lit_ifm.load(path)
        loads.append(time.perf_counter() - start)
    return (f"| {values:,} | {path.stat().st_size / 2**20:.1f} MiB | {encoder.tell() / 2**20:.1f} MiB | "
            f"{statistics.median(loads):.2f} s |")


def scoring_figures(model_name: str, rows: int, repeats: int, work: Path) -> str:
    folder = write_splits(work / f"score-{model_name}", {"train": frappe_like(20000, 3), "valid": frappe_like(2000, 4),
                                                          "test": frappe_like(rows, 5)})
    settings = {"task": "binary", "categorical": FIELDS, "cache_dir": str(work / "cache"), "eval_batch_size": 4096}
    data = lit_ifm.FieldAwareDataModule(str(folder), **settings)
    model = getattr(lit_ifm, model_name)(data.schema, task="binary", embedding_dim=64)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    path = work / f"{model_name}.ckpt"
    trainer.save_checkpoint(path, weights_only=False)
    loaded = lit_ifm.load(path)
    scoring, testing = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        loaded.score(folder / "test.parquet")
        scoring.append(time.perf_counter() - start)
        evaluation = lit_ifm.FieldAwareDataModule(str(folder), **settings)
        evaluation.setup("test")  # the store is built already: this opens it
        start = time.perf_counter()
        quiet_trainer().test(loaded, datamodule=evaluation, verbose=False)
        testing.append(time.perf_counter() - start)
    score, test = rows / statistics.median(scoring), rows / statistics.median(testing)
    return f"| {model_name} | {rows:,} | {score / 1e3:.0f}k | {test / 1e3:.0f}k | {score / test:.2f}x |"


def main() -> None:
    silence_known_noise()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)  # the data summaries and Lightning's banners
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--models", nargs="+", default=["FM"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lit_ifm_scoring_") as scratch:
        work = Path(scratch)
        print(f"Machine: {machine()}\n")
        print("| distinct values | checkpoint | its encoder | lit_ifm.load |\n| --- | --- | --- | --- |")
        print(checkpoint_figures(args.values, work), flush=True)
        print("\n| model | rows | score rows/s | test split rows/s | score / test |\n| --- | --- | --- | --- | --- |")
        for name in args.models:
            print(scoring_figures(name, args.rows, args.repeats, work), flush=True)


if __name__ == "__main__":
    main()
