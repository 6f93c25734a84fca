"""The analogue of the paper's Table 2: test RMSE and parameter count of each model under one protocol.

    python benchmarks/reproduce.py --dataset frappe --source ../shared/data/frappe

Each model trains from its recipe ``recipes/<model>_<dataset>.yaml`` through the CLI: best validation
epoch (early stopping on validation RMSE, patience from cli.yaml), test RMSE of that checkpoint. FM runs
first; with ``--pretrain`` (default) every other model but FFM starts from FM's best checkpoint, as the
paper does. Prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lit_ifm.__main__ import main as cli_main  # noqa: E402

PAPER_FRAPPE = {"fm": 0.3321, "deepfm": 0.3308, "ffm": 0.3304, "nfm": 0.3171, "afm": 0.3118, "ifm": 0.3080,
                "inn": 0.3071, "ifm_sampling": 0.3085}
NO_PRETRAINING = {"fm", "ffm"}  # FFM's embeddings have another shape


def run(model: str, dataset: str, source: str, output: Path, max_epochs: int, extra: list[str]) -> dict:
    folder = output / model
    args = ["fit", "--config", str(REPO / "recipes" / f"{model}_{dataset}.yaml"), "--data.source", source,
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.max_epochs", str(max_epochs), "--trainer.default_root_dir", str(folder), *extra]
    sys.argv = ["lit-ifm"]
    start = time.perf_counter()
    cli = cli_main(args)
    checkpoint = cli.trainer.checkpoint_callback
    return {
        "model": model,
        "parameters": cli.model.num_parameters(),
        "test_rmse": cli.trainer.callback_metrics["test/rmse"].item(),
        "best_val_rmse": checkpoint.best_model_score.item(),
        "best_checkpoint": checkpoint.best_model_path,
        "epochs": cli.trainer.current_epoch,
        "minutes": (time.perf_counter() - start) / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="frappe")
    parser.add_argument("--source", required=True)
    parser.add_argument("--models", nargs="+", default=["fm", "ffm", "afm", "nfm", "deepfm", "ifm", "inn"])
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--output", default="runs/reproduce")
    parser.add_argument("--no-pretrain", dest="pretrain", action="store_false")
    parser.add_argument("--fm-checkpoint", help="an FM checkpoint to start from instead of training FM first")
    args, overrides = parser.parse_known_args()  # anything else goes to every model's CLI, e.g. --model.lr 0.05
    output = Path(args.output)
    results, fm_checkpoint = [], args.fm_checkpoint
    models = sorted(args.models, key=lambda name: name != "fm")  # FM first: the others start from it
    for model in models:
        extra = list(overrides)
        if args.pretrain and model not in NO_PRETRAINING and fm_checkpoint:
            extra += ["--model.init_from", fm_checkpoint]
        result = run(model, args.dataset, args.source, output, args.max_epochs, extra)
        if model == "fm":
            fm_checkpoint = result["best_checkpoint"]
        results.append(result)
        print(f"RESULT {result}", flush=True)
    fm = next((r["test_rmse"] for r in results if r["model"] == "fm"), None)
    print(f"\n{args.dataset}: max {args.max_epochs} epochs, pre-training from FM: {args.pretrain}, "
          f"overrides: {' '.join(overrides) or 'none'}")
    print("| model | parameters | best val RMSE | test RMSE | vs FM | paper (full Frappe) | epochs | minutes |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        relative = f"{r['test_rmse'] / fm - 1:+.1%}" if fm else "-"
        paper = PAPER_FRAPPE.get(r["model"], "-") if args.dataset == "frappe" else "-"
        print(f"| {r['model']} | {r['parameters']:,} | {r['best_val_rmse']:.4f} | {r['test_rmse']:.4f} | {relative} "
              f"| {paper} | {r['epochs']} | {r['minutes']:.1f} |")


if __name__ == "__main__":
    main()
