"""Paired bootstrap of test-RMSE differences between checkpoints on the same test split.

    python benchmarks/paired_bootstrap.py --source ../shared/data/frappe \\
        AFM=lit_ifm.AFM:runs/reproduce/afm/checkpoints/best-epoch=2.ckpt \\
        IFM=lit_ifm.IFM:runs/reproduce/ifm/checkpoints/best-epoch=1.ckpt

Prints each later model's RMSE minus the first one's, with a 95% interval over resampled test rows.
"""

from __future__ import annotations

import argparse
import importlib

import numpy as np
import torch

from lit_ifm import FieldAwareDataModule

FRAPPE_FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]


def squared_errors(model, data: FieldAwareDataModule) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.concatenate([((model.predictions(model(batch)) - batch.labels) ** 2).numpy()
                               for batch in data.test_dataloader()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("models", nargs="+", help="NAME=module.Class:checkpoint")
    args = parser.parse_args()
    data = FieldAwareDataModule(args.source, categorical=FRAPPE_FIELDS, signed_labels=True, eval_batch_size=4096)
    data.setup()
    errors = {}
    for spec in args.models:
        name, rest = spec.split("=", 1)
        class_path, checkpoint = rest.split(":", 1)
        module, class_name = class_path.rsplit(".", 1)
        model_class = getattr(importlib.import_module(module), class_name)
        errors[name] = squared_errors(model_class.load_from_checkpoint(checkpoint), data)
    rows = np.random.default_rng(0).integers(0, len(next(iter(errors.values()))), size=(args.resamples, len(data.prepared.splits["test"])))
    (base, base_errors), *others = errors.items()
    for name, model_errors in others:
        difference = np.sqrt(model_errors[rows].mean(1)) - np.sqrt(base_errors[rows].mean(1))
        print(f"{name} - {base}: {np.sqrt(model_errors.mean()):.4f} - {np.sqrt(base_errors.mean()):.4f} = "
              f"{np.sqrt(model_errors.mean()) - np.sqrt(base_errors.mean()):+.4f}, 95% interval "
              f"[{np.percentile(difference, 2.5):+.4f}, {np.percentile(difference, 97.5):+.4f}]")


if __name__ == "__main__":
    main()
