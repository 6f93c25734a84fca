"""Training throughput of IFM with the InteractionSampler computing 10%, 25%, 50% and 100% of the pairs,
against IFM without the sampler, on a Criteo-sized synthetic schema (39 fields, 741 pairs) and a
Frappe-shaped one (10 fields, 45 pairs).

    python benchmarks/sampling.py
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import trainer_rates  # noqa: E402

from lit_ifm import IFM, FieldAwareDataModule, SyntheticConfig  # noqa: E402
from lit_ifm.callbacks import InteractionSampler  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=15_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--attention-dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fields", type=int, nargs="+", default=[39, 10])
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--precision", default="32-true")
    args = parser.parse_args()
    timing = {"accelerator": args.accelerator, "precision": args.precision}
    device = torch.cuda.get_device_name() if args.accelerator in ("cuda", "gpu") else platform.machine()
    print(f"machine: {device}, {os.cpu_count()} cores, torch {torch.__version__}, {args.precision}, "
          f"{torch.get_num_threads()} threads; IFM K={args.embedding_dim}, K_a={args.attention_dim}, "
          f"batch {args.batch_size}, Adam, fastest of {args.epochs - 1} epochs after a warm-up one")
    print("| fields | pairs | computed pairs | samples/s | speed-up over unsampled IFM |")
    print("| --- | --- | --- | --- | --- |")
    for fields in args.fields:
        config = SyntheticConfig(rows=args.rows, num_fields=fields, vocabulary_size=100)
        data = FieldAwareDataModule(synthetic=config, batch_size=args.batch_size)
        data.setup("fit")
        model_args = {"embedding_dim": args.embedding_dim, "attention_dim": args.attention_dim, "lr": 0.01}
        baseline = max(trainer_rates(IFM, data, model_args, args.epochs, **timing))
        pairs = fields * (fields - 1) // 2
        print(f"| {fields} | {pairs} | all, no sampler | {baseline:,.0f} | 1.00x |", flush=True)
        for fraction in (0.1, 0.25, 0.5, 1.0):
            sampler = InteractionSampler(pairs=fraction)
            rate = max(trainer_rates(IFM, data, model_args, args.epochs, callbacks=[sampler], **timing))
            print(f"| {fields} | {pairs} | {sampler.count(pairs)} ({fraction:.0%}) | {rate:,.0f} | "
                  f"{rate / baseline:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
