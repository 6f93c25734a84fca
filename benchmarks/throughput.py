"""Training throughput of a model through Lightning against a plain PyTorch loop over the same tensors,
data loading alone, and the time to load data cold and from the cache.

    python benchmarks/throughput.py                       # FM on ../shared/data/frappe, batch 4096
    python benchmarks/throughput.py --model lit_ifm.IFM --batch-size 128

Prints one table; copy it into benchmarks/RESULTS.md with the machine's name.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from lit_ifm import FieldAwareDataModule, FieldBatch

FRAPPE_FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]


def load_class(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def timed_data_module(source: str, cache_dir: str, batch_size: int) -> tuple[FieldAwareDataModule, float]:
    start = time.perf_counter()
    data = FieldAwareDataModule(source, categorical=FRAPPE_FIELDS, signed_labels=True, batch_size=batch_size,
                                cache_dir=cache_dir)
    data.schema
    data.setup("fit")
    return data, time.perf_counter() - start


class EpochTimer(L.Callback):
    def __init__(self):
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        _synchronize(module.device)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        _synchronize(module.device)
        self.seconds.append(time.perf_counter() - self._start)


def _synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def lightning_seconds(model_class, data, model_args, epochs: int, accelerator: str = "cpu",
                      precision: str = "32-true", callbacks: list[L.Callback] = ()) -> float:
    """Seconds of the fastest training epoch after the first, through ``Trainer.fit``."""
    torch.manual_seed(0)
    model = model_class(data.schema, **model_args)
    timer = EpochTimer()
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[*callbacks, timer], accelerator=accelerator, devices=1, precision=precision)
    trainer.fit(model, datamodule=data)
    return min(timer.seconds[1:])  # the first epoch warms up


def plain_loop_seconds(model_class, data, model_args, epochs: int, batch_size: int, device: str = "cpu",
                       precision: str = "32-true") -> float:
    """The same model and tensors in a hand-written loop: no Lightning, no DataLoader."""
    torch.manual_seed(0)
    model = model_class(data.schema, **model_args).to(device)
    optimizer = model.configure_optimizers()
    train = data.prepared.splits["train"]
    ids = torch.from_numpy(train.feature_ids.astype(np.int64))
    values, labels = torch.from_numpy(train.feature_values), torch.from_numpy(np.array(train.labels))
    if torch.device(device).type == "cuda":
        ids, values, labels = ids.pin_memory(), values.pin_memory(), labels.pin_memory()
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    seconds = []
    model.train()
    for _ in range(epochs):
        _synchronize(device)
        start = time.perf_counter()
        order = torch.randperm(len(labels))
        for first in range(0, len(labels), batch_size):
            index = order[first: first + batch_size]
            batch = FieldBatch(ids[index], values[index], labels[index], index).to(device, non_blocking=True)
            with autocast:
                loss = model.loss(model(batch), batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    return min(seconds[1:])


def loading_seconds(data, epochs: int) -> float:
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for _batch in data.train_dataloader():
            pass
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def main() -> None:
    default_data = Path(os.environ.get("LIT_IFM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(default_data / "frappe"))
    parser.add_argument("--model", default="lit_ifm.FM")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--embedding-dim", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    model_class = load_class(args.model)
    model_args = {"embedding_dim": args.embedding_dim, "lr": 0.01}

    cache_dir = tempfile.mkdtemp(prefix="lit_ifm_bench_")
    data, cold = timed_data_module(args.source, cache_dir, args.batch_size)
    data, warm = timed_data_module(args.source, cache_dir, args.batch_size)
    rows = len(data.prepared.splits["train"])

    loading = loading_seconds(data, args.epochs)
    plain = plain_loop_seconds(model_class, data, model_args, args.epochs, args.batch_size)
    lightning = lightning_seconds(model_class, data, model_args, args.epochs)

    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"model {args.model} K={args.embedding_dim}, batch {args.batch_size}, {rows} training rows of {args.source}")
    print("| measure | value |")
    print("| --- | --- |")
    print(f"| data module build, cold cache (parse + encode) | {cold:.2f} s |")
    print(f"| data module build, warm cache (second run) | {warm:.2f} s |")
    print(f"| data loading alone (train DataLoader, one epoch) | {rows / loading:,.0f} samples/s |")
    print(f"| plain PyTorch loop (same model, same tensors) | {rows / plain:,.0f} samples/s |")
    print(f"| Lightning Trainer.fit | {rows / lightning:,.0f} samples/s |")
    print(f"| Lightning / plain loop | {plain / lightning:.0%} |")
    print(f"| data loading / Lightning training speed | {lightning / loading:.1f}x |")


if __name__ == "__main__":
    main()
