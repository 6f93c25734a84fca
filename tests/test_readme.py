"""Every command of README.md and docs/*.md, run as written, with the files its document shows (YAML, Python) and
small stand-ins for the data it names. Commands that need the network, a GPU or several machines are listed in
``NOT_RUN`` with the reason; the tests below fail on any other command that no test runs."""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, SAMPLES
from helpers import run_main

from lit_ifm.__main__ import main

DOCUMENTS = {path.relative_to(REPO).as_posix(): path.read_text()
             for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}
FAST = ["--trainer.max_epochs", "1", "--trainer.enable_model_summary", "false"]
ROWS = "--data.synthetic.rows"

# Commands no test here runs, and why. A test checks that each is still in the docs.
NOT_RUN = {
    "python -m lit_ifm fit --config recipes/fm_frappe.yaml": "downloads reczoo/Frappe_x1 from the HuggingFace Hub",
    "python -m lit_ifm fit --config recipes/fm_criteo.yaml": "downloads reczoo/Criteo_x1 (45.8 M rows) from the Hub",
    "python -m lit_ifm fit --config recipes/fm_frappe.yaml --config recipes/compile.yaml --data.source data/frappe":
        "compiling takes 10-30 s; tests/test_recipes.py trains with recipes/compile.yaml",
    "python -m lit_ifm fit --config recipes/inn_frappe.yaml --trainer.accelerator gpu --trainer.devices 4 "
    "--trainer.strategy ddp": "needs 4 GPUs; tests/test_runs.py trains under DDP on a CPU",
    "torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint $HEAD:29500 -m lit_ifm fit --config "
    "recipes/inn_frappe.yaml --trainer.devices 8 --trainer.num_nodes 2 --trainer.strategy ddp": "needs two nodes",
    "python -m lit_ifm fit --config recipes/ifm_frappe.yaml --data.source data/frappe --trainer.accelerator gpu":
        "needs a GPU; tests/test_data.py gathers batches where the model is",
    "wandb sync runs/wandb/offline-run-*": "uploads to the W&B server",
    "wandb sweep sweeps/inn_frappe.yaml": "needs the W&B server; tests/test_sweeps.py runs each sweep's command",
    "wandb agent <entity>/<project>/<sweep id>": "needs the W&B server; tests/test_sweeps.py runs each sweep's command",
    "python -m lit_ifm fit --config recipes/ifm_movielens_tags.yaml --data.source data/movielens-tags/tags.csv "
    "--model.init_from runs/lit_ifm/<run>/checkpoints/best-epoch=<n>.ckpt":
        "starts from an FM checkpoint of MovieLens tags, where the checkpoint these tests train is Frappe's; "
        "tests/test_recipes.py runs the recipe",
    "python benchmarks/quality.py --dataset movielens-tags --source data/movielens-tags/tags.csv":
        "42 runs on the full data, hours",
    "python benchmarks/table3.py --source data/movielens-tags/tags.csv": "trains FM and IFM on the full data, 3 seeds",
}
# Sections whose commands their own test below runs: (document, heading), None for the whole document.
OWN_TESTS = {("README.md", "Install and test"), ("README.md", "First run"), ("README.md", "Your own data"),
             ("docs/extending.md", None)}


def sections(document: str) -> dict[str, str]:
    """A document's ``## `` sections by heading (the text before the first under ``""``)."""
    parts = re.split(r"^## (.*)$", DOCUMENTS[document], flags=re.M)
    return {"": parts[0], **dict(zip(parts[1::2], parts[2::2]))}


def section(document: str, title: str) -> str:
    """The text of the section whose heading starts with ``title``."""
    found = [text for heading, text in sections(document).items() if heading.startswith(title)]
    assert len(found) == 1, f"no section '## {title}' in {document}"
    return found[0]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def commands(text: str) -> list[str]:
    """The commands of a text's bash blocks: continuation lines joined, comments dropped."""
    found = []
    for block in blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+", " ", line.split(" #")[0]).strip()
            if line and not line.startswith("#"):
                found.append(line)
    return found


def files(text: str) -> dict[str, str]:
    """The YAML and Python blocks whose first line names the file they are, ``# my_project/models.py``."""
    named = {}
    for code in [*blocks(text, "yaml"), *blocks(text, "python")]:
        if match := re.match(r"# ([\w./-]+\.(?:yaml|py))\n", code):
            named[match.group(1)] = code
    return named


def own_test_commands() -> set[str]:
    return {command for document, title in OWN_TESTS
            for command in commands(DOCUMENTS[document] if title is None else section(document, title))}


def generic_commands() -> dict[str, str]:
    """Every command no dedicated test runs and ``NOT_RUN`` does not excuse, with the first document that shows it."""
    found: dict[str, str] = {}
    skip = own_test_commands() | set(NOT_RUN)
    for document, text in DOCUMENTS.items():
        for command in commands(text):
            if command not in skip:
                found.setdefault(command, document)
    return found


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def python_module(command: str) -> list[str]:
    """``python -m <module> <args>`` as ``[<module>, <args>...]``."""
    words = shlex.split(command)
    assert words[:2] == ["python", "-m"], command
    return words[2:]


def test_install_and_test_are_the_commands_ci_runs():
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert commands(section("README.md", "Install and test")) == ci[-2:] == ['pip install -e ".[dev]"', "pytest"]


def test_every_command_not_run_is_in_the_docs_and_says_why():
    shown = {command for text in DOCUMENTS.values() for command in commands(text)}
    for command, reason in NOT_RUN.items():
        assert command in shown, f"NOT_RUN lists a command no document shows: {command}"
        for test_file in re.findall(r"tests/\w+\.py", reason):
            assert (REPO / test_file).is_file(), f"{command}: {reason}"
    assert len(generic_commands()) >= 15  # the docs' commands are found at all


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: ``Criteo scale: the store`` -> ``criteo-scale-the-store``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_reach_files_and_headings():
    for document, text in DOCUMENTS.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"https?://", target):
                continue
            path, _, heading = target.partition("#")
            linked = (REPO / document).parent / path if path else REPO / document
            assert linked.exists(), f"{document} links to {target}: no such file"
            if heading:
                headings = re.findall(r"^#+ (.*)$", linked.read_text(), flags=re.M)
                assert heading in map(anchor, headings), f"{document} links to {target}: no such heading"


@pytest.mark.slow
def test_the_quick_start(tmp_path):
    (command,) = commands(section("README.md", "First run"))
    assert python_module(command) == ["lit_ifm", "fit"]
    result = run([*python_module(command), *FAST, ROWS, "1500"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_folder = next(tmp_path.glob("runs/lit_ifm/*"))  # W&B offline (conftest)
    assert sorted(path.name for path in (run_folder / "checkpoints").iterdir()) == ["best-epoch=0.ckpt", "last.ckpt"]
    assert (run_folder / "config.yaml").is_file() and "test/rmse" in result.stdout
    assert "field  kind" in result.stderr  # the schema, one line per field
    assert re.search(r"^epoch 0/1: \d+ steps in [\d.]+ s; train/loss [\d.]+, val/rmse [\d.]+$", result.stdout, re.M)


def write_my_data(folder: Path, config: dict) -> None:
    """train/valid/test CSV files with the columns the README's YAML names."""
    data = config["data"]
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, rows in (("train", 400), ("valid", 100), ("test", 100)):
        frame = pd.DataFrame({name: [f"{name[0]}{value}" for value in rng.integers(0, 15, rows)]
                              for name in data["categorical"]})
        for name in data["numeric"]:
            frame[name] = rng.gamma(2.0, 3.0, rows).round(2)
        for name, separator in data["multi_valued"].items():
            frame[name] = [separator.join(rng.choice(["drama", "comedy", "horror", "news"], rng.integers(1, 3),
                                                     replace=False)) for _ in range(rows)]
        frame[data["label"]] = rng.integers(0, 2, rows)
        frame.to_csv(folder / f"{split}.csv", index=False)


@pytest.mark.slow
def test_your_own_data(tmp_path):
    text = section("README.md", "Your own data")
    ((name, config_text),) = files(text).items()
    config = yaml.safe_load(config_text)
    write_my_data(tmp_path / "my_folder", config)
    (tmp_path / name).write_text(config_text.replace(config["data"]["source"], str(tmp_path / "my_folder")))
    found = [python_module(command) for command in commands(text)]
    assert len(found) == 2 and all(command[:4] == ["lit_ifm", "fit", "--config", name] for command in found)
    for command in found:
        result = run([*command, *FAST, "--trainer.logger", "false"], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert re.search(r"^  genres +multi, split on '\|', longest 2 +2 ", result.stderr, re.M)  # in the data report
        assert "test/auroc" in result.stdout


@pytest.mark.slow
def test_extending(tmp_path):
    text = DOCUMENTS["docs/extending.md"]
    package = tmp_path / "my_project"
    package.mkdir()
    (package / "__init__.py").write_text("")
    written = files(text)
    assert sorted(written) == ["my_project/__main__.py", "my_project/data.py", "my_project/models.py"]
    assert len(blocks(text, "python")) == len(written)  # every code block is a file of the package
    for name, code in written.items():
        (tmp_path / name).write_text(code)
    paths = [str(tmp_path), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    work = tmp_path / "work"  # the commands run from elsewhere: the package is found on PYTHONPATH
    work.mkdir()
    found = [python_module(command) for command in commands(text)]
    assert [command[0] for command in found] == ["lit_ifm", "lit_ifm", "my_project"]
    small = [*FAST, "--model.embedding_dim", "4", ROWS, "600", "--trainer.logger", "false"]
    results = [run([*command, *small], work, env) for command in found]
    for command, result in zip(found, results):
        assert result.returncode == 0, f"{command}: {result.stderr[-3000:]}"
        assert "test/" in result.stdout
    assert re.search(r"^epoch 0: f\d x f\d, \d+% of the norms$", results[0].stdout, re.M)  # the callback's line
    assert "lit_ifm data from synthetic" in results[0].stderr and "user   categorical" in results[2].stderr

    checkpoint = next((work / "runs" / "run-0" / "checkpoints").glob("best-*.ckpt"))  # ProjectedIFM's
    predict = run(["lit_ifm", "predict", "--model.class_path", "my_project.models.ProjectedIFM", "--ckpt_path",
                   str(checkpoint), ROWS, "600", "--trainer.logger", "false"], work, env)
    assert predict.returncode == 0, predict.stderr[-3000:]
    assert f"written to {checkpoint.parent.parent / 'predictions.parquet'}" in predict.stderr


def write_criteo_like(folder: Path) -> None:
    """train/valid/test CSV files with Criteo_x1's columns: label, I1..I13 (a fifth missing), C1..C26."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, rows in (("train", 400), ("valid", 100), ("test", 100)):
        frame = pd.DataFrame({"label": rng.integers(0, 2, rows)})
        for i in range(1, 14):
            frame[f"I{i}"] = np.where(rng.random(rows) < 0.2, np.nan, rng.integers(0, 50, rows))
        for i in range(1, 27):
            frame[f"C{i}"] = [f"{value:08x}" for value in rng.integers(0, 30, rows)]
        frame.to_csv(folder / f"{split}.csv", index=False)


@pytest.fixture(scope="module")
def stand_ins(small_frappe_dir, tmp_path_factory) -> dict[str, str]:
    """The data folders the docs name, and the small folders that stand in for them here."""
    criteo = tmp_path_factory.mktemp("criteo") / "Criteo_x1"
    write_criteo_like(criteo)
    return {"data/frappe": str(small_frappe_dir), "path/to/Criteo_x1": str(criteo),
            "data/frappe/frappe.test.libfm": str(small_frappe_dir / "frappe.test.libfm"),
            "data/movielens-tags/tags.csv": str(SAMPLES / "movielens-tags" / "tags.csv")}


@pytest.fixture(scope="module")
def trained(stand_ins, tmp_path_factory):
    """``checkpoint(recipe, "best" | "last")``: a checkpoint of one epoch of ``recipes/<recipe>.yaml`` on the
    Frappe stand-in, trained once for the commands that name one."""
    folders: dict[str, Path] = {}

    def checkpoint(recipe: str, which: str) -> Path:
        if recipe not in folders:
            root = tmp_path_factory.mktemp(recipe)
            run_main(root, "fit", "--config", str(REPO / "recipes" / f"{recipe}.yaml"), "--data.source",
                     stand_ins["data/frappe"], "--trainer.max_epochs", "1")
            (folders[recipe],) = root.glob("run-*")
        found = sorted((folders[recipe] / "checkpoints").glob("last.ckpt" if which == "last" else "best-*.ckpt"))
        return found[-1]

    return checkpoint


def trains_on_synthetic_data(args: list[str], cwd: Path) -> bool:
    """Whether the recipes a command names (cli.yaml's default, without one) read the embedded synthetic data."""
    source = "synthetic"
    for flag, value in itertools.pairwise(args):
        if flag == "--config":
            source = (yaml.safe_load((cwd / value).read_text()) or {}).get("data", {}).get("source", source)
        elif flag == "--data.source":
            source = value
    return source == "synthetic"


@pytest.mark.parametrize(("command", "document"), list(generic_commands().items()),
                         ids=[f"{Path(document).stem}-{number}"
                              for number, document in enumerate(generic_commands().values())])
def test_command(command, document, tmp_path, stand_ins, trained, monkeypatch):
    """A command as written, in this process: the stand-ins replace the data it names, a checkpoint trained once
    replaces ``runs/lit_ifm/<run>/...``, and the files its document shows lie in its working folder."""
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "lit_ifm"], (
        f"no test runs `{command}` ({document}): run it in a test, or list it in NOT_RUN with the reason")
    args = [stand_ins.get(word, word) for word in words[3:]]
    config = args[args.index("--config") + 1] if "--config" in args else ""
    for index, word in enumerate(args):
        if "<run>" in word:  # an FM checkpoint to start from, or one of the command's own recipe
            recipe = "fm_frappe" if args[index - 1] == "--model.init_from" or not config else Path(config).stem
            args[index] = str(trained(recipe, "last" if word.endswith("last.ckpt") else "best"))
    (tmp_path / "recipes").symlink_to(REPO / "recipes")
    for name, code in files(DOCUMENTS[document]).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(code)
    if args[0] == "export":  # no LightningCLI command: it trains nothing, and takes no trainer settings
        main([*args[:-1], str(tmp_path / args[-1])])
        assert (tmp_path / args[-1] / "signature.json").is_file()
        return
    extra = [ROWS, "1500"] if trains_on_synthetic_data(args, tmp_path) and "--ckpt_path" not in args else []
    if args[0] == "fit":
        extra += ["--trainer.max_epochs", "2" if "--ckpt_path" in args else "1"]

    environment, deterministic = dict(os.environ), torch.are_deterministic_algorithms_enabled()
    try:
        cli = run_main(tmp_path, *args, *extra)
    finally:  # what a run sets for its process (seeds, deterministic algorithms) does not reach the next test
        torch.use_deterministic_algorithms(deterministic)
        os.environ.clear()
        os.environ.update(environment)
    if args[0] == "predict":
        written = (tmp_path / args[args.index("--trainer.callbacks.output_path") + 1]
                   if "--trainer.callbacks.output_path" in args
                   else Path(args[args.index("--ckpt_path") + 1]).parent.parent / "predictions.parquet")
        assert len(pd.read_parquet(written)) > 0
    else:
        assert any(name.startswith("test/") for name in cli.trainer.callback_metrics), command
