"""GPU check: IFM and INN in bf16 on synthetic data shaped like Frappe (10 fields, about 5,400 features), through
the CLI as users run it, a bare Trainer (with the data on the device, the default on an accelerator, and gathered
on the host), and the same step in a plain PyTorch loop; samples/s and peak GPU memory. Run through
``benchmarks/gpu_check.sh``."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import cli_rates, loop_rates, trainer_rates  # noqa: E402

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
    resident = FieldAwareDataModule(synthetic=config)  # on the GPU (auto)
    host = FieldAwareDataModule(synthetic=config, device_resident=False, pin_memory=device == "cuda")
    host.setup("fit")
    rows = len(host.prepared.splits["train"])
    synthetic = [f"--data.synthetic.rows={args.rows}", "--data.synthetic.vocabulary_size=540"]
    hardware = [f"--trainer.accelerator={args.accelerator}", "--trainer.devices=1", f"--trainer.precision={precision}"]
    print(f"synthetic Frappe-shaped data: {rows} training rows, {host.schema.num_features} features, "
          f"built in {time.perf_counter() - start:.1f} s; K={args.embedding_dim}, {precision}; median samples/s of the "
          "epochs after the first")
    print("| model | batch | CLI as users run it | Trainer (data on the device) | Trainer (host batches) | plain loop "
          "| CLI / loop | Trainer / loop | peak GPU memory |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for model_class in (IFM, INN):
        for batch_size in args.batch_sizes:
            resident.hparams.batch_size = host.hparams.batch_size = batch_size
            epochs = args.epochs if batch_size >= 1024 else 2
            model_args = {"embedding_dim": args.embedding_dim, "lr": 0.001}
            try:
                cli = statistics.median(cli_rates(model_class.__name__, model_args, synthetic, batch_size, epochs + 1,
                                                  hardware))
            except RuntimeError as error:  # report and go on: the other columns still say something
                print(f"CLI run failed: {str(error)[-1500:]}", flush=True)
                cli = float("nan")
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            on_device = statistics.median(trainer_rates(model_class, resident, model_args, epochs, args.accelerator,
                                                        precision))
            peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
            on_host = statistics.median(trainer_rates(model_class, host, model_args, epochs, args.accelerator,
                                                      precision))
            loop = statistics.median(loop_rates(model_class, host, model_args, epochs, batch_size, device, precision))
            print(f"| {model_class.__name__} | {batch_size} | {cli:,.0f} | {on_device:,.0f} | {on_host:,.0f} | "
                  f"{loop:,.0f} | {cli / loop:.0%} | {on_device / loop:.0%} | {peak:,.0f} MiB |", flush=True)
    for precision in ("bf16-mixed", "16-mixed") if device == "cuda" else ("bf16-mixed",):
        resident.hparams.batch_size = 4096
        for model_class in (IFM, INN):
            model = model_class(resident.schema, embedding_dim=args.embedding_dim, lr=0.001)
            trainer = L.Trainer(max_epochs=2, accelerator=args.accelerator, devices=1, precision=precision,
                                logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False)
            trainer.fit(model, datamodule=resident)
            metrics = {name: round(value.item(), 4) for name, value in trainer.callback_metrics.items()}
            print(f"{precision} {model_class.__name__} 2 epochs: {metrics}", flush=True)


if __name__ == "__main__":
    main()
