"""Training speed of the path users run, side by side with a bare Trainer, a plain loop and torchfm.

    python benchmarks/throughput.py --write-results      # FM NFM AFM IFM INN x batch 128, 1024, 4096
    python benchmarks/throughput.py --models FM IFM --batch-sizes 1024 --no-peers
    python benchmarks/throughput.py --models FM NFM --compile default   # recipes/compile.yaml

Settings are the peers' (../shared/peers): Frappe as a binary task, K = 64, Adam lr 1e-3, attention size 64,
NFM hidden (64), dropout 0. Every column is samples/s of training batches only (data loading, forward,
backward and the optimizer step; never validation), the median of the timed epochs after the warm-up ones (a new
process runs its first epochs up to a fifth slower). The
columns run in turn, ``--rounds`` times, each first once, so that a shared machine's drift (runs of one loop
here differ by a quarter from minute to minute) falls on all of them alike; each ratio is the median of the
rounds' ratios (their range in brackets), each round's columns run within minutes of each other:

- ``cli``: ``python -m lit_ifm fit`` in a process of its own, exactly as users run it: cli.yaml's callbacks
  (checkpoints, early stopping, field importance, throughput), the W&B logger (offline), validation every
  epoch and the progress lines. The clock is :class:`lit_ifm.callbacks.TrainingThroughput`'s, one more in
  the callback list;
- ``trainer``: ``Trainer.fit`` with no logger, callbacks, checkpoints, progress bar or validation;
- ``loop``: the same model and optimizer in a hand-written loop over in-memory tensors, no DataLoader;
  each of these two in a new process too, like the CLI's, so that none runs in a process another has warmed up;
- ``torchfm``: the peers' harness (``run_peers.py --lib torchfm --quick``: one timed epoch, batch 1024, in its
  own venv: ``--peers-python``) for the models torchfm has, in turn with the others.

``--write-results`` puts the table into benchmarks/RESULTS.md between the ``throughput`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

import lit_ifm
from lit_ifm import FieldAwareDataModule, FieldBatch
from lit_ifm.callbacks import TrainingThroughput

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import BINARY_OPTIONS, FRAPPE_FIELDS  # noqa: E402  (the peers' settings, as the quality benchmark's)

REPO = Path(__file__).resolve().parents[1]
TORCHFM_MODELS = ("FM", "AFM", "NFM", "DeepFM", "FFM")
RESULTS_BEGIN, RESULTS_END = "<!-- throughput:begin -->", "<!-- throughput:end -->"


def peers_model_args(model: str, compile: str | None = None) -> dict:
    """The peers' settings for ``model`` (a lit_ifm class name): K = 64, Adam lr 1e-3 and its own options; with
    ``compile``, torch.compile in that mode (recipes/compile.yaml)."""
    return {"embedding_dim": 64, "optimizer": "adam", "lr": 1e-3, **BINARY_OPTIONS.get(model.lower(), {}),
            **({"compile": compile} if compile else {})}


class RecordedThroughput(TrainingThroughput):
    """:class:`TrainingThroughput`'s clock, each epoch's samples/s also kept (and appended to ``path`` as a JSON
    line when given: the CLI column runs in another process)."""

    def __init__(self, path: str | None = None):
        super().__init__()
        self.path = path
        self.rates: list[float] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if (rate := self.samples_per_second(trainer)) is not None:
            self.rates.append(rate)
            if self.path is not None:
                with open(self.path, "a") as file:
                    file.write(json.dumps(self.rates[-1]) + "\n")


def _synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def trainer_rates(model_class, data, model_args, epochs: int, accelerator: str = "cpu",
                  precision: str = "32-true", callbacks: list[L.Callback] = (), warmup: int = 1) -> list[float]:
    """Samples/s of each epoch after the ``warmup`` first through a bare ``Trainer.fit``."""
    torch.manual_seed(0)
    model = model_class(data.schema, **model_args)
    clock = RecordedThroughput()
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[*callbacks, clock], accelerator=accelerator, devices=1, precision=precision)
    trainer.fit(model, datamodule=data)
    return clock.rates[warmup:]


def loop_rates(model_class, data, model_args, epochs: int, batch_size: int, device: str = "cpu",
               precision: str = "32-true", warmup: int = 1) -> list[float]:
    """The same model and tensors in a hand-written loop, no Lightning, no DataLoader: samples/s of each epoch
    after the ``warmup`` first."""
    torch.manual_seed(0)
    model = model_class(data.schema, **model_args).to(device)
    optimizer = model.configure_optimizers()
    train = data.prepared.splits["train"]
    ids = torch.from_numpy(train.feature_ids.astype(np.int64))
    values, labels = torch.from_numpy(train.feature_values), torch.from_numpy(np.array(train.labels))
    unit_values = train.unit_values(train.feature_values)  # as the data module's batches say it
    if torch.device(device).type == "cuda":
        ids, values, labels = ids.pin_memory(), values.pin_memory(), labels.pin_memory()
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    rates = []
    model.train()
    for _ in range(epochs):
        _synchronize(device)
        start = time.perf_counter()
        order = torch.randperm(len(labels))
        for first in range(0, len(labels), batch_size):
            index = order[first: first + batch_size]
            batch = FieldBatch(ids[index], values[index], labels[index], index, unit_values).to(device, non_blocking=True)
            with autocast:
                loss = model.loss(model(batch), batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        _synchronize(device)
        rates.append(len(labels) / (time.perf_counter() - start))
    return rates[warmup:]


def cli_rates(model: str, model_args: dict, data_args: list[str], batch_size: int, epochs: int,
              trainer_args: list[str] = (), warmup: int = 1) -> list[float]:
    """Samples/s of each epoch after the ``warmup`` first through ``python -m lit_ifm fit`` in a process of its
    own, with cli.yaml as it is (W&B offline) and one more callback, the clock."""
    with tempfile.TemporaryDirectory(prefix="lit_ifm_cli_") as folder:
        clock = Path(folder) / "rates.jsonl"
        arguments = [sys.executable, "-m", "lit_ifm", "fit", "--model", f"lit_ifm.{model}",
                     *(f"--model.{name}={value if isinstance(value, str) else json.dumps(value)}"
                       for name, value in model_args.items()),
                     *data_args, f"--data.batch_size={batch_size}", f"--trainer.max_epochs={epochs}",
                     *trainer_args, "--trainer.callbacks+=throughput.RecordedThroughput",
                     f"--trainer.callbacks.path={clock}"]
        environment = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
                       "PYTHONPATH": os.pathsep.join([str(REPO / "benchmarks"), str(REPO),
                                                      os.environ.get("PYTHONPATH", "")])}
        run = subprocess.run(arguments, cwd=folder, env=environment, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(arguments)} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
        return [json.loads(line) for line in clock.read_text().splitlines()][warmup:]


def isolated_rates(column: str, model: str, batch_size: int, args: argparse.Namespace) -> list[float]:
    """The ``trainer`` or ``loop`` column from a new process, as the CLI's is: no column runs in a process that
    another one has warmed up."""
    run = subprocess.run([sys.executable, __file__, "--column", column, "--models", model, "--batch-sizes",
                          str(batch_size), "--epochs", str(args.epochs), "--warmup", str(args.warmup), "--source",
                          args.source, *(["--compile", args.compile] if args.compile else [])],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"the {column} column failed:\n{run.stderr[-4000:]}")
    return json.loads(run.stdout.splitlines()[-1])


def column_rates(column: str, model: str, batch_size: int, data_args: list[str], args: argparse.Namespace
                 ) -> list[float]:
    """One run of one column: ``cli``, ``trainer``, ``loop`` or ``torchfm``."""
    if column == "cli":
        return cli_rates(model, peers_model_args(model, args.compile), data_args, batch_size, args.epochs, warmup=args.warmup)
    if column == "torchfm":
        rates = torchfm_rates(args.peers_python, [model])
        if model not in rates:
            raise RuntimeError(f"the peers' harness printed no torchfm rate for {model}")
        return [rates[model]]
    return isolated_rates(column, model, batch_size, args)


def torchfm_rates(peers_python: str, models: list[str]) -> dict[str, float]:
    """samples/s of the models torchfm has, through the peers' harness (one timed epoch each, batch 1024)."""
    harness = Path(os.environ.get("LIT_IFM_PEERS", REPO.parent / "shared" / "peers")) / "run_peers.py"
    with tempfile.TemporaryDirectory(prefix="lit_ifm_peers_") as folder:
        run = subprocess.run([peers_python, str(harness), "--lib", "torchfm", "--models", ",".join(models), "--quick"],
                             env={**os.environ, "PEERS_WORK": folder}, capture_output=True, text=True,
                             cwd=harness.parent)
        if run.returncode != 0:
            raise RuntimeError(f"the peers' harness failed:\n{run.stderr[-4000:]}")
        rates = {}
        for line in run.stdout.splitlines():
            if line.startswith("[torchfm] "):
                name, record = line[len("[torchfm] "):].split(" -> ", 1)
                rates[name] = json.loads(record).get("samples_per_s", float("nan"))
        return rates


def paired_ratio(rates: list[float], baselines: list[float], percent: bool = False) -> str:
    """The median of the rounds' ratios, then their range: each round's columns ran within minutes of each
    other, so the machine's drift over the whole run (a third here) cancels out of a round's ratio."""
    ratios = sorted(rate / baseline for rate, baseline in zip(rates, baselines, strict=True))
    style, suffix = (".0%", "") if percent else (".2f", "x")
    return (f"{statistics.median(ratios):{style}}{suffix} ({ratios[0]:{style}}-{ratios[-1]:{style}}{suffix})"
            if len(ratios) > 1 else f"{ratios[0]:{style}}{suffix}")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"lightning {L.__version__}")


def write_results(table: str) -> None:
    results = REPO / "benchmarks" / "RESULTS.md"
    text = results.read_text()
    if RESULTS_BEGIN in text:
        before, rest = text.split(RESULTS_BEGIN, 1)
        text = before + RESULTS_BEGIN + "\n" + table + RESULTS_END + rest.split(RESULTS_END, 1)[1]
    else:
        text += f"\n## Training speed of the path users run\n\n{RESULTS_BEGIN}\n{table}{RESULTS_END}\n"
    results.write_text(text)


def main() -> None:
    default_data = Path(os.environ.get("LIT_IFM_DATA", REPO.parent / "shared" / "data"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(default_data / "frappe"))
    parser.add_argument("--models", nargs="+", default=["FM", "NFM", "AFM", "IFM", "INN"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024, 4096])
    parser.add_argument("--epochs", type=int, default=6, help="per column and round, the warm-up ones included")
    parser.add_argument("--warmup", type=int, default=2, help="epochs not timed: a new process is slower at first")
    parser.add_argument("--rounds", type=int, default=3, help="times each column runs, in turn with the others")
    parser.add_argument("--peers-python", default=str(Path.home() / "peers-venv" / "bin" / "python"))
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--compile", choices=["default", "reduce-overhead", "max-autotune"],
                        help="torch.compile lit_ifm's model in every column (its first epochs are the warm-up)")
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--column", choices=["trainer", "loop"], help=argparse.SUPPRESS)  # one column, as JSON
    args = parser.parse_args()

    started = time.perf_counter()
    data_args = [f"--data.source={args.source}", "--data.task=binary", f"--data.categorical={json.dumps(FRAPPE_FIELDS)}"]
    data = FieldAwareDataModule(args.source, task="binary", categorical=FRAPPE_FIELDS)
    data.setup("fit")
    rows = len(data.prepared.splits["train"])
    if args.column:
        lit_ifm.tune_allocator()  # as python -m lit_ifm does, so that the CLI column differs in nothing else
        model, batch_size = args.models[0], args.batch_sizes[0]
        model_class, model_args = getattr(lit_ifm, model), peers_model_args(model, args.compile)
        data.hparams.batch_size = batch_size
        rates = trainer_rates(model_class, data, model_args, args.epochs, warmup=args.warmup) if \
            args.column == "trainer" else loop_rates(model_class, data, model_args, args.epochs, batch_size,
                                                     warmup=args.warmup)
        print(json.dumps(rates))
        return
    torchfm = set() if args.no_peers else set(TORCHFM_MODELS)
    lines = [f"`python benchmarks/throughput.py {' '.join(sys.argv[1:])}`: {machine()}; {rows:,} training rows of "
             f"Frappe (binary), K = 64, Adam; samples/s: the median of {args.rounds} rounds' medians of "
             f"{args.epochs - args.warmup} timed epochs after {args.warmup} warm-up ones, the columns run in turn "
             "(torchfm: one timed epoch a round, the peers' harness); ratios: the median of the rounds' ratios "
             "(range).",
             "", "| model | batch | CLI as users run it | bare Trainer | plain loop | CLI / loop | Trainer / loop "
             "| torchfm | CLI / torchfm |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    for model in args.models:
        for batch_size in args.batch_sizes:
            columns = ["cli", "trainer", "loop"] + (["torchfm"] if model in torchfm and batch_size == 1024 else [])
            runs = {name: [] for name in columns}  # each round's median samples/s
            for round_ in range(args.rounds):  # in turn, each first once: the machine's drift falls on all alike
                for name in columns[round_ % len(columns):] + columns[:round_ % len(columns)]:
                    runs[name].append(statistics.median(column_rates(name, model, batch_size, data_args, args)))
            cli, bare, loop = (statistics.median(runs[name]) for name in ("cli", "trainer", "loop"))
            versus = f"{statistics.median(runs['torchfm']):,.0f} | {paired_ratio(runs['cli'], runs['torchfm'])}" \
                if "torchfm" in runs else "- | -"
            lines.append(f"| {model} | {batch_size} | {cli:,.0f} | {bare:,.0f} | {loop:,.0f} | "
                         f"{paired_ratio(runs['cli'], runs['loop'], percent=True)} | "
                         f"{paired_ratio(runs['trainer'], runs['loop'], percent=True)} | {versus} |")
            print(lines[-1], flush=True)
    lines.append(f"\n{time.strftime('%Y-%m-%d')}, {(time.perf_counter() - started) / 60:.0f} min.\n")
    if args.write_results:
        write_results("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
