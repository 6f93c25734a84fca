"""CPU latency of one scoring request, IFM exported to ONNX (ONNX Runtime) and to ``torch.export`` against eager torch.

    python benchmarks/serving.py                         # requests of 1 row and of 100 candidate rows
    python benchmarks/serving.py --ckpt_path runs/<run>/checkpoints/best-epoch=7.ckpt
    python benchmarks/serving.py --calls 20 --warmup 5 --embedding-dim 8   # a quick check that it runs

A request is a batch of rows already encoded as ``ids (B, S)`` and ``values (B, S)``; each contender gets them in
its own type (torch tensors, numpy arrays for ONNX Runtime), made before the clock starts. Contenders:

- ``eager torch``: :class:`lit_ifm.serving.ServingModel` run eagerly under ``torch.inference_mode``: the model's
  scores and ``predictions``, as ``predict`` computes each batch (without Lightning's loop around it);
- ``torch.export``: ``model.pt2`` of ``lit_ifm.serving.export``, loaded with ``torch.export.load(...).module()``;
- ``ONNX Runtime``: ``model.onnx`` of the same export, in an ``InferenceSession`` on the CPU.

Each runs ``--warmup`` calls, then its timed calls in ``--rounds`` turns with the others (a shared machine's drift
falls on all alike); the table gives the median of all its timed calls and their 90th percentile. Every contender
computes on ``--threads`` threads. Without ``--ckpt_path`` the model is an untrained IFM with
``recipes/ifm_frappe.yaml``'s settings on a Frappe-shaped schema (10 fields of 538 values): latency does not
depend on the weights.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import machine  # noqa: E402

import lit_ifm  # noqa: E402
from lit_ifm import IFM, SyntheticConfig  # noqa: E402
from lit_ifm.data.synthetic import synthetic_schema  # noqa: E402
from lit_ifm.noise import silence_known_noise  # noqa: E402
from lit_ifm.serving import ServingModel, export, export_checkpoint, trained_sampler  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FRAPPE_SHAPE = SyntheticConfig(num_fields=10, vocabulary_size=538)


def recipe_model(embedding_dim: int | None) -> IFM:
    """IFM with recipes/ifm_frappe.yaml's settings (``embedding_dim`` replacing its K when given)."""
    settings = yaml.safe_load((REPO / "recipes" / "ifm_frappe.yaml").read_text())["model"]["init_args"]
    if embedding_dim is not None:
        settings["embedding_dim"] = embedding_dim
    return IFM(synthetic_schema(FRAPPE_SHAPE), task="binary", **settings)


def request(serving: ServingModel, rows: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` rows with a random feature of value 1 in every slot: the models compute every pair whether its
    slots are filled or not, so a request's cost does not depend on which ids it holds."""
    schema = serving.model.schema
    ids = torch.randint(schema.num_features, (rows, schema.num_slots), generator=generator)
    return ids, torch.ones(rows, schema.num_slots)


def contenders(serving: ServingModel, folder: Path, threads: int) -> dict[str, tuple[Callable, Callable]]:
    """Each contender's call, and the conversion of ``(ids, values)`` tensors to its input (done beforehand)."""
    program = torch.export.load(folder / "torch" / "model.pt2").module()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    runtime = onnxruntime.InferenceSession(folder / "onnx" / "model.onnx", options, providers=["CPUExecutionProvider"])

    def eager(ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return serving(ids, values)

    def exported(ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return program(ids, values)

    def onnx(ids: np.ndarray, values: np.ndarray) -> np.ndarray:
        return runtime.run(["scores"], {"ids": ids, "values": values})[0]

    return {"eager torch": (eager, lambda t: t), "torch.export": (exported, lambda t: t),
            "ONNX Runtime": (onnx, lambda t: t.numpy())}


def latencies(calls: dict[str, tuple[Callable, Callable]], ids: torch.Tensor, values: torch.Tensor, timed: int,
              warmup: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each contender: ``warmup`` untimed calls, then ``timed`` calls in ``rounds`` turns."""
    inputs = {name: (convert(ids), convert(values)) for name, (_, convert) in calls.items()}
    expected = None
    for name, (call, _) in calls.items():
        scores = np.asarray(call(*inputs[name]))
        if expected is not None and not np.allclose(scores, expected, atol=1e-5):
            raise SystemExit(f"{name} scores differ from eager torch's by {np.abs(scores - expected).max():g}")
        expected = scores if expected is None else expected
        for _ in range(warmup):
            call(*inputs[name])
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, (call, _) in calls.items():
            arguments = inputs[name]
            for _ in range(max(1, timed // rounds)):
                start = time.perf_counter()
                call(*arguments)
                times[name].append(time.perf_counter() - start)
    return times


def milliseconds(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    return f"{statistics.median(ordered) * 1e3:.3f} ms (p90 {ordered[int(0.9 * (len(ordered) - 1))] * 1e3:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", help="a trained model's checkpoint (default: an untrained IFM, see above)")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100], help="rows per request")
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per contender and request size")
    parser.add_argument("--warmup", type=int, default=500, help="untimed calls before")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="threads of torch and of ONNX Runtime")
    parser.add_argument("--embedding-dim", type=int, help="K of the untrained IFM (default: the recipe's)")
    args = parser.parse_args()
    silence_known_noise()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        if args.ckpt_path:
            model = lit_ifm.load(args.ckpt_path)
            serving = ServingModel(model, trained_sampler(args.ckpt_path))
            for format in ("torch", "onnx"):
                export_checkpoint(args.ckpt_path, folder / format, format)
            described = f"{type(model).__name__} of {args.ckpt_path}"
        else:
            model = recipe_model(args.embedding_dim)
            serving = ServingModel(model)
            for format in ("torch", "onnx"):
                export(model, folder / format, format)
            described = "untrained IFM with recipes/ifm_frappe.yaml's settings"
        calls = contenders(serving, folder, args.threads)
        generator = torch.Generator().manual_seed(0)
        results = {rows: latencies(calls, *request(serving, rows, generator), args.calls, args.warmup, args.rounds)
                   for rows in args.rows}

    hparams = model.hparams
    print(f"machine: {machine()}; onnxruntime {onnxruntime.__version__} ({args.threads} threads, as torch's)")
    print(f"model: {described}: K={hparams.embedding_dim}, K_a={hparams.get('attention_dim')}, "
          f"K_F={hparams.get('field_factors')}, {model.schema.num_fields} fields in {model.schema.num_slots} slots; "
          f"median of {len(next(iter(results.values()))['eager torch'])} warm calls after {args.warmup}\n")
    print("| request | " + " | ".join(calls) + " | ONNX Runtime's time / eager torch's |")
    print("| --- |" + " --- |" * (len(calls) + 1))
    for rows, times in results.items():
        ratio = statistics.median(times["ONNX Runtime"]) / statistics.median(times["eager torch"])
        print(f"| {rows} row{'s' if rows > 1 else ''} | " + " | ".join(milliseconds(times[name]) for name in calls)
              + f" | {ratio:.2f} |")


if __name__ == "__main__":
    main()
