"""GPU check: a short bf16 fit of IFM and INN on synthetic data shaped like Frappe (10 fields, about
5,400 features), samples/s and peak GPU memory, and the same training step in a plain PyTorch loop, so
Lightning's overhead on one GPU is visible. Run through ``benchmarks/gpu_check.sh``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import lightning_seconds, plain_loop_seconds  # noqa: E402

from lit_ifm import IFM, INN, FieldAwareDataModule, SyntheticConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4096, 128])
    parser.add_argument("--embedding-dim", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--accelerator", default="cuda")
    args = parser.parse_args()
    device = "cuda" if args.accelerator in ("cuda", "gpu") else "cpu"
    if device == "cuda":
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    precision = "bf16-mixed"
    start = time.perf_counter()
    config = SyntheticConfig(rows=args.rows, vocabulary_size=540)
    data = FieldAwareDataModule(synthetic=config, pin_memory=device == "cuda")
    data.setup("fit")
    resident = FieldAwareDataModule(synthetic=config, device_resident=True)  # batches gathered on the GPU
    rows = len(data.prepared.splits["train"])
    print(f"synthetic Frappe-shaped data: {rows} training rows, {data.schema.num_features} features, "
          f"built in {time.perf_counter() - start:.1f} s; K={args.embedding_dim}, {precision}")
    print("| model | batch | Lightning samples/s | plain loop samples/s | Lightning / plain | peak GPU memory "
          "| Lightning, device-resident data | resident / plain |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for model_class in (IFM, INN):
        for batch_size in args.batch_sizes:
            data.hparams.batch_size = resident.hparams.batch_size = batch_size
            epochs = args.epochs if batch_size >= 1024 else 2
            model_args = {"embedding_dim": args.embedding_dim, "lr": 0.001}
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            lightning = lightning_seconds(model_class, data, model_args, epochs, args.accelerator, precision)
            peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
            plain = plain_loop_seconds(model_class, data, model_args, epochs, batch_size, device, precision)
            on_device = lightning_seconds(model_class, resident, model_args, epochs, args.accelerator, precision)
            print(f"| {model_class.__name__} | {batch_size} | {rows / lightning:,.0f} | {rows / plain:,.0f} | "
                  f"{plain / lightning:.0%} | {peak:,.0f} MiB | {rows / on_device:,.0f} | {plain / on_device:.0%} |",
                  flush=True)
    for precision in ("bf16-mixed", "16-mixed") if device == "cuda" else ("bf16-mixed",):
        data.hparams.batch_size = 4096
        for model_class in (IFM, INN):
            model = model_class(data.schema, embedding_dim=args.embedding_dim, lr=0.001)
            trainer = L.Trainer(max_epochs=2, accelerator=args.accelerator, devices=1, precision=precision,
                                logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False)
            trainer.fit(model, datamodule=data)
            metrics = {name: round(value.item(), 4) for name, value in trainer.callback_metrics.items()}
            print(f"{precision} {model_class.__name__} 2 epochs: {metrics}", flush=True)


if __name__ == "__main__":
    main()
