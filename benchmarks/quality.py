"""Do the paper's models win? IFM, INN and DeepIFM against FM, AFM, NFM and DeepFM, two protocols, seeds.

    python benchmarks/quality.py --source ../shared/data/frappe --write-results   # ~3 h on 2 cores
    python benchmarks/quality.py --source ../shared/data/frappe --protocols binary --seeds 2019 --models fm ifm
    python benchmarks/quality.py --dataset movielens-tags --source ../shared/data/movielens-tags/tags.csv

Data sets (``--dataset``): ``frappe``, the paper's libFM files or a Hub id; ``movielens-tags``, the paper's second
experiment, one positive-only file of (user, movie, tag) split 70/20/10, with two negatives per positive made by
pairing the user and movie with a random other tag.

Protocols:

- ``binary``: the peer libraries' (../shared/peers): labels 0/1, K = 64, batch 1024, Adam lr 1e-3, at most
  20 epochs, early stopping on validation AUC (patience 2), attention size 64, NFM hidden (64), DeepFM
  hidden (256, 256), dropout 0, no pre-training. Every other argument is the model's default.
- ``regression``: the paper's protocol through the shipped recipes ``recipes/<model>_<dataset>.yaml``, as they
  are (labels -1/+1, RMSE, K = 256, early stopping on validation RMSE), every model but FM
  starting from the FM checkpoint of the same seed (the paper's pre-training; ``--no-pretrain`` for none).

Every run is ``python -m lit_ifm fit`` in a process of its own (one torch thread, ``--jobs`` at a time).
Its best-validation checkpoint then scores the validation and test splits here. The table gives mean and
standard deviation over seeds; the paired bootstrap resamples the test rows (the same rows for both models
and every seed) and gives the 95% interval of the seed-averaged difference. ``--write-results`` puts the
tables into benchmarks/RESULTS.md between the data set's markers (``quality`` for Frappe, ``quality-movielens-tags``);
runs are kept under ``--output`` and reused, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torchmetrics.functional.classification import binary_auroc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lit_ifm  # noqa: E402
from lit_ifm import FieldAwareDataModule  # noqa: E402

FRAPPE_FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]


@dataclass(frozen=True)
class Dataset:
    """What the benchmark needs to know of a data set beyond its ``--source``."""

    recipes: str  # the regression protocol's recipes, recipes/<model>_<recipes>.yaml
    data: dict = field(default_factory=dict)  # FieldAwareDataModule's arguments besides source, task and labels
    results: str = "quality"  # the marker of its section in benchmarks/RESULTS.md
    runs: str = "quality"  # its runs' folder under runs/


DATASETS = {
    "frappe": Dataset("frappe", {"categorical": FRAPPE_FIELDS}),
    "movielens-tags": Dataset(
        "movielens_tags", {"categorical": ["user", "movie", "tag"], "negatives_per_positive": 2, "item_field": "tag"},
        results="quality-movielens-tags", runs="quality-movielens-tags"),
}
MODELS = {"fm": "FM", "afm": "AFM", "nfm": "NFM", "deepfm": "DeepFM", "ifm": "IFM", "inn": "INN", "deepifm": "DeepIFM"}
PAPER_MODELS = ("ifm", "inn", "deepifm")
BASELINES = ("fm", "afm", "nfm", "deepfm")
# The peers' protocol: what it sets beyond K, the optimizer and dropout (shared by every model).
BINARY_OPTIONS = {"afm": {"attention_dim": 64}, "ifm": {"attention_dim": 64}, "inn": {"attention_dim": 64},
                  "deepifm": {"attention_dim": 64}, "nfm": {"hidden_sizes": [64]}, "deepfm": {"hidden_sizes": [256, 256]}}
METRIC = {"binary": ("auroc", "AUC", +1), "regression": ("rmse", "RMSE", -1)}  # name, label, better direction


def binary_config(model: str, dataset: Dataset, folder: Path) -> dict:
    """The peers' protocol as a config file for ``python -m lit_ifm fit``."""
    best = {"monitor": "val/auroc", "mode": "max"}
    return {
        "model": {"class_path": f"lit_ifm.{MODELS[model]}", "init_args": {
            "embedding_dim": 64, "optimizer": "adam", "lr": 1e-3, "interaction_dropout": 0.0,
            **BINARY_OPTIONS.get(model, {})}},
        "data": {"task": "binary", **dataset.data, "batch_size": 1024, "eval_batch_size": 8192},
        "trainer": {"max_epochs": 20, "logger": False, "enable_progress_bar": False, "callbacks": [
            {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
             "init_args": {**best, "dirpath": str(folder), "filename": "best-{epoch}"}},
            {"class_path": "lightning.pytorch.callbacks.EarlyStopping", "init_args": {**best, "patience": 2}}]},
    }


def run_arguments(protocol: str, model: str, seed: int, dataset: Dataset, source: str, folder: Path,
                  init_from: Path | None, max_epochs: int | None) -> list[str]:
    capped = [] if max_epochs is None else ["--trainer.max_epochs", str(max_epochs)]
    if protocol == "binary":
        config = folder / "protocol.yaml"
        config.write_text(yaml.safe_dump(binary_config(model, dataset, folder)))
        return ["--config", str(config), "--data.source", source, "--seed_everything", str(seed),
                "--trainer.default_root_dir", str(folder), *capped]
    pretrained = [] if init_from is None else ["--model.init_from", str(init_from)]
    return ["--config", str(REPO / "recipes" / f"{model}_{dataset.recipes}.yaml"), "--data.source", source,
            "--seed_everything", str(seed), "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(folder), *pretrained, *capped]


def train(protocol: str, model: str, seed: int, dataset: Dataset, source: str, output: Path,
          init_from: Path | None = None, max_epochs: int | None = None) -> tuple[Path, float]:
    """Fits one model in a process of its own; returns its best checkpoint and the minutes the fit took (a run
    done before is reused; a run capped at ``max_epochs`` has a folder of its own)."""
    folder = output / protocol / (f"{model}-{seed}" if max_epochs is None else f"{model}-{seed}-epochs{max_epochs}")
    done = folder / "done.json"
    if done.is_file():
        record = json.loads(done.read_text())
        return Path(record["checkpoint"]), record["minutes"]
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "lit_ifm", "fit",
               *run_arguments(protocol, model, seed, dataset, source, folder, init_from, max_epochs)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    with open(folder / "log.txt", "w") as log:
        finished = subprocess.run(command, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT)
    if finished.returncode != 0:
        raise RuntimeError(f"{protocol} {model} seed {seed} failed; see {folder / 'log.txt'}")
    checkpoints = sorted(folder.rglob("best-*.ckpt"))
    if len(checkpoints) != 1:
        raise RuntimeError(f"expected one best checkpoint under {folder}, found {checkpoints}")
    minutes = (time.perf_counter() - start) / 60
    done.write_text(json.dumps({"checkpoint": str(checkpoints[0]), "minutes": minutes}))
    print(f"{protocol:10s} {model:8s} seed {seed}: {minutes:.1f} min", flush=True)
    return checkpoints[0], minutes


def data_module(protocol: str, dataset: Dataset, source: str) -> FieldAwareDataModule:
    """The splits the runs trained on (a random split and its negatives come from the default split_seed)."""
    regression = protocol == "regression"
    data = FieldAwareDataModule(source, task="regression" if regression else "binary", **dataset.data,
                                signed_labels=regression, eval_batch_size=8192)
    data.setup()
    return data


@torch.no_grad()
def score(checkpoint: Path, model: str, data: FieldAwareDataModule) -> tuple[np.ndarray, np.ndarray]:
    """Predictions as the metrics see them (probabilities, or clipped values) on the validation and test splits,
    in row order, from one load of the checkpoint."""
    network = getattr(lit_ifm, MODELS[model]).load_from_checkpoint(checkpoint, map_location="cpu").eval()
    return tuple(torch.cat([network.predictions(network(batch)) for batch in loader]).numpy()
                 for loader in (data.val_dataloader(), data.test_dataloader()))


def metric(protocol: str, labels: np.ndarray, predictions: np.ndarray) -> float:
    if protocol == "binary":
        return binary_auroc(torch.from_numpy(predictions), torch.from_numpy(labels).long()).item()
    return float(np.sqrt(np.mean((predictions - labels) ** 2)))


def resampled_metrics(protocol: str, labels: np.ndarray, predictions: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The metric on each bootstrap resample of the test rows ``(R,)``."""
    if protocol == "regression":
        return np.sqrt(((predictions[rows] - labels[rows]) ** 2).mean(axis=1))
    # one AUC per resample (binary_auroc would pool a 2-D input into a single AUC)
    return np.array([binary_auroc(torch.from_numpy(predictions[sample]), torch.from_numpy(labels[sample]).long()).item()
                     for sample in rows])


def report(protocol: str, results: dict, labels: np.ndarray, seeds: list[int], resamples: int) -> list[str]:
    """Markdown: mean and std per model, then the paired bootstrap of the paper's models' differences."""
    key, label, better = METRIC[protocol]
    lines = [f"| model | test {label} (mean ± std over {len(seeds)} seeds) | validation {label} | per seed (test) |",
             "| --- | --- | --- | --- |"]
    for model, runs in results.items():
        test = [run["test"] for run in runs]
        validation = [run["validation"] for run in runs]
        spread = statistics.stdev(test) if len(test) > 1 else 0.0
        lines.append(f"| {MODELS[model]} | {statistics.mean(test):.4f} ± {spread:.4f} | "
                     f"{statistics.mean(validation):.4f} | {', '.join(f'{value:.4f}' for value in test)} |")
    rows = np.random.default_rng(0).integers(0, len(labels), size=(resamples, len(labels)))
    resampled = {model: np.mean([resampled_metrics(protocol, labels, run["predictions"], rows) for run in runs], axis=0)
                 for model, runs in results.items()}
    pairs = [(a, b) for a in PAPER_MODELS for b in (*BASELINES, "ifm") if a != b and {a, b} <= set(results)]
    lines += ["", f"Paired bootstrap over the {len(labels):,} test rows ({resamples:,} resamples, seed-averaged "
              f"{label}; {'higher' if better > 0 else 'lower'} is better):", "",
              f"| difference of test {label} | mean | 95% interval | better in |", "| --- | --- | --- | --- |"]
    for first, second in pairs:
        difference = resampled[first] - resampled[second]
        observed = statistics.mean(r["test"] for r in results[first]) - statistics.mean(r["test"] for r in results[second])
        low, high = np.percentile(difference, [2.5, 97.5])
        share = float(np.mean(better * difference > 0))
        lines.append(f"| {MODELS[first]} - {MODELS[second]} | {observed:+.4f} | [{low:+.4f}, {high:+.4f}] | "
                     f"{share:.1%} of resamples |")
    return lines


def write_results(text: str, marker: str) -> None:
    """Replaces what lies between ``<!-- marker:begin -->`` and ``<!-- marker:end -->`` in benchmarks/RESULTS.md."""
    path = REPO / "benchmarks" / "RESULTS.md"
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    content = path.read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{path} has no {begin} ... {end} section to write into")
    before, rest = content.split(begin, 1)
    after = rest.split(end, 1)[1]
    path.write_text(f"{before}{begin}\n{text}\n{end}{after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="frappe", choices=list(DATASETS))
    parser.add_argument("--source", required=True,
                        help="frappe: the folder of libFM files or a Hub id; movielens-tags: the tags.csv file")
    parser.add_argument("--protocols", nargs="+", default=["binary", "regression"], choices=list(METRIC))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[2019, 2020, 2021])
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--output", type=Path, help="where runs are kept (default: runs/quality for frappe, "
                        "runs/quality-movielens-tags for movielens-tags)")
    parser.add_argument("--max-epochs", type=int, help="cap every run's epochs, for a quick look (runs of their own)")
    parser.add_argument("--no-pretrain", dest="pretrain", action="store_false",
                        help="regression protocol: every model from scratch, not from FM's checkpoint")
    parser.add_argument("--write-results", action="store_true", help="write the tables into benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.pretrain and "regression" in args.protocols and "fm" not in args.models:
        parser.error("the regression protocol starts from FM's checkpoints: add fm to --models, or --no-pretrain")
    start = time.perf_counter()
    runs = [(protocol, model, seed) for protocol in args.protocols for model in args.models for seed in args.seeds]
    dataset = DATASETS[args.dataset]
    output = (args.output or REPO / "runs" / dataset.runs).resolve()
    with ThreadPoolExecutor(args.jobs) as pool:
        # FM's regression runs go first: the other regression runs start from them (the paper's pre-training)
        runs.sort(key=lambda run: (run[0] != "regression" or run[1] != "fm", run[0] == "regression"))
        futures = {}
        for run in runs:
            protocol, model, seed = run
            pretrain = args.pretrain and protocol == "regression" and model != "fm"
            fm = futures[("regression", "fm", seed)] if pretrain else None
            futures[run] = pool.submit(lambda run=run, fm=fm: train(
                *run, dataset, args.source, output, fm.result()[0] if fm is not None else None, args.max_epochs))
        finished = {run: future.result() for run, future in futures.items()}
    checkpoints = {run: checkpoint for run, (checkpoint, _) in finished.items()}
    run_minutes = sum(minutes for _, minutes in finished.values())
    sections = []
    for protocol in args.protocols:
        data = data_module(protocol, dataset, args.source)
        labels = data.prepared.splits["test"].labels
        validation_labels = data.prepared.splits["validation"].labels
        results = {}
        for model in args.models:
            for seed in args.seeds:
                checkpoint = checkpoints[(protocol, model, seed)]
                validation, test = score(checkpoint, model, data)
                results.setdefault(model, []).append({
                    "seed": seed, "predictions": test, "test": metric(protocol, labels, test),
                    "validation": metric(protocol, validation_labels, validation)})
        sections += ["", f"### {protocol} protocol", "", *report(protocol, results, labels, args.seeds, args.resamples)]
    flags = [*([] if args.dataset == "frappe" else ["--dataset", args.dataset]), "--source", args.source,
             *([] if args.protocols == list(METRIC) else ["--protocols", *args.protocols]),
             *([] if args.models == list(MODELS) else ["--models", *args.models]),
             "--seeds", *map(str, args.seeds), *([] if args.pretrain else ["--no-pretrain"]),
             *([] if args.max_epochs is None else ["--max-epochs", str(args.max_epochs)])]
    header = (f"`python benchmarks/quality.py {' '.join(flags)}`: {len(runs)} runs, {run_minutes:.0f} min of training "
              f"in all ({args.jobs} at a time, one thread each); this call took "
              f"{(time.perf_counter() - start) / 60:.0f} min.")
    text = "\n".join([header, *sections])
    print(text)
    if args.write_results:
        write_results(text, dataset.results)


if __name__ == "__main__":
    main()
