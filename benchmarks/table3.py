"""The paper's Table 3 on MovieLens tags: which field pair matters to IFM, and whether the data lets it matter.

    python benchmarks/table3.py --source ../shared/data/movielens-tags/tags.csv
    python benchmarks/table3.py --source ../shared/data/movielens-tags/tags.csv --seeds 2019 --max-epochs 20

Trains FM, then IFM from FM's checkpoint (recipes/<model>_movielens_tags.yaml, the paper's pre-training), through
``benchmarks/quality.py``'s runs: the quality benchmark's IFM checkpoints are reused, and runs made here are reused
by it. Prints ``field_pair_importance()`` of each seed's IFM (``||F_{f,g}||`` and its share of the sum, mean over
seeds, beside the shares of a freshly initialised F) and whether movie-tag > user-tag > user-movie holds, as the
paper found (60.3% / 35.8% / 3.9%).

Then what the data itself says of each field pair, with no model: the distinct values of each field, the
validation rows whose pair of values was seen in training, and the validation RMSE of predicting a row by the mean
label of the training rows with the same pair of values (the global mean where none). A pair whose lookup is no
better than the global mean carries no label signal on its own.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from itertools import combinations, pairwise
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from quality import DATASETS, data_module, train

import lit_ifm

PAPER_SHARES = {("movie", "tag"): 0.603, ("user", "tag"): 0.358, ("user", "movie"): 0.039}  # Table 3, MovieLens


def importance(model) -> dict[tuple[str, str], tuple[float, float]]:
    """``(first, second) -> (norm, share)`` of an IFM-family model's field pairs."""
    return {(row.first, row.second): (row.norm, row.share) for row in model.field_pair_importance()}


def untrained(model, seed: int):
    """A model of the same class and arguments, freshly initialised with ``seed``: where F starts."""
    torch.manual_seed(seed)
    return type(model)(schema=model.schema, **model.hparams)


def pair_lookup_rmse(train_ids: np.ndarray, train_labels: np.ndarray, ids: np.ndarray, labels: np.ndarray,
                     slots: tuple[int, int]) -> tuple[float, float]:
    """The RMSE of predicting ``labels`` by the mean training label of the same pair of values in ``slots`` (the
    global training mean for a pair unseen in training), and the share of rows whose pair was seen."""
    keys = np.concatenate([train_ids[:, slots], ids[:, slots]]).astype(np.int64)
    pairs, codes = np.unique(keys, axis=0, return_inverse=True)
    codes = codes.reshape(-1)
    train_codes, codes = codes[: len(train_ids)], codes[len(train_ids):]
    sums = np.bincount(train_codes, weights=train_labels, minlength=len(pairs))
    counts = np.bincount(train_codes, minlength=len(pairs))
    seen = counts[codes] > 0
    predictions = np.where(seen, sums[codes] / np.maximum(counts[codes], 1), train_labels.mean())
    return float(np.sqrt(np.mean((predictions - labels) ** 2))), float(seen.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="MovieLens tags' tags.csv")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2019, 2020, 2021])
    parser.add_argument("--max-epochs", type=int, help="cap every run's epochs, for a quick look (runs of their own)")
    parser.add_argument("--output", type=Path, help="where runs are kept (default: quality.py's, "
                        "runs/quality-movielens-tags)")
    args = parser.parse_args()
    dataset = DATASETS["movielens-tags"]
    output = (args.output or REPO / "runs" / dataset.runs).resolve()

    found: dict[tuple[str, str], list[tuple[float, float]]] = {}
    initial: dict[tuple[str, str], list[float]] = {}
    for seed in args.seeds:
        fm, _ = train("regression", "fm", seed, dataset, args.source, output, max_epochs=args.max_epochs)
        ifm, _ = train("regression", "ifm", seed, dataset, args.source, output, fm, args.max_epochs)
        model = lit_ifm.load(ifm)
        for pair, figures in importance(model).items():
            found.setdefault(pair, []).append(figures)
        for pair, (_, share) in importance(untrained(model, seed)).items():
            initial.setdefault(pair, []).append(share)
    mean = {pair: (statistics.mean(n for n, _ in runs), statistics.mean(s for _, s in runs))
            for pair, runs in found.items()}
    print(f"IFM's field-pair importance on MovieLens tags, mean over seeds {' '.join(map(str, args.seeds))}:\n")
    print("| field pair | norm of F_{f,g} | share | per seed (share) | share at initialisation | paper's share |")
    print("| --- | --- | --- | --- | --- | --- |")
    for pair, (norm, share) in sorted(mean.items(), key=lambda item: -item[1][0]):
        per_seed = ", ".join(f"{s:.1%}" for _, s in found[pair])
        print(f"| {pair[0]}-{pair[1]} | {norm:.4f} | {share:.1%} | {per_seed} | {statistics.mean(initial[pair]):.1%} | "
              f"{PAPER_SHARES[pair]:.1%} |")
    paper_order = list(PAPER_SHARES)
    holds = all(mean[a][0] > mean[b][0] for a, b in pairwise(paper_order))
    print(f"\nmovie-tag > user-tag > user-movie, as in the paper: {'holds' if holds else 'does not hold'}"
          f" (here {' > '.join(f'{a}-{b}' for a, b in sorted(mean, key=lambda pair: -mean[pair][0]))})")

    data = data_module("regression", dataset, args.source)
    train_split, validation = data.prepared.splits["train"], data.prepared.splits["validation"]
    train_ids, ids = np.asarray(train_split.feature_ids), np.asarray(validation.feature_ids)
    train_labels, labels = np.asarray(train_split.labels, np.float64), np.asarray(validation.labels, np.float64)
    names = data.schema.field_names
    print("\n| field | distinct values in training | training rows per value |\n| --- | --- | --- |")
    for slot, name in enumerate(names):
        distinct = len(np.unique(train_ids[:, slot]))
        print(f"| {name} | {distinct:,} | {len(train_ids) / distinct:.1f} |")
    constant = float(np.sqrt(np.mean((train_labels.mean() - labels) ** 2)))
    print(f"\nThe data alone, per field pair: validation RMSE of the pair's mean training label (global mean "
          f"{train_labels.mean():+.4f}: RMSE {constant:.4f})\n")
    print("| field pair | validation rows whose pair was seen in training | lookup RMSE |\n| --- | --- | --- |")
    for first, second in combinations(range(len(names)), 2):
        rmse, seen = pair_lookup_rmse(train_ids, train_labels, ids, labels, (first, second))
        print(f"| {names[first]}-{names[second]} | {seen:.1%} | {rmse:.4f} |")


if __name__ == "__main__":
    main()
