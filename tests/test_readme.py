"""The README's quick start, "your own data" and "your own model" sections, run as written (with fewer rows and
epochs): their commands, their YAML and their code."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

pytestmark = pytest.mark.slow  # every test runs the README's commands in new processes

README = (REPO / "README.md").read_text()
FAST = ["--trainer.max_epochs", "1", "--trainer.enable_model_summary", "false"]


def section(title: str) -> str:
    """The README's text from the heading that starts with ``## <title>`` to the next heading of that level."""
    match = re.search(rf"^## {re.escape(title)}.*?(?=^## )", README, flags=re.S | re.M)
    assert match, f"no section '## {title}' in README.md"
    return match.group(0)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def commands(text: str) -> list[list[str]]:
    """The ``python -m ...`` commands of a section's bash blocks, continuation lines joined."""
    found = []
    for block in blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("python -m "):
                found.append(shlex.split(line.split(" #")[0])[2:])  # after "python -m", without the comment
    return found


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_quick_start(tmp_path):
    (command,) = commands(section("First run"))
    assert command == ["lit_ifm", "fit"]
    result = run([*command, *FAST, "--data.synthetic.rows", "1500"], tmp_path)
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


def test_your_own_data(tmp_path):
    text = section("Your own data")
    (config_text,) = blocks(text, "yaml")
    config = yaml.safe_load(config_text)
    write_my_data(tmp_path / "my_folder", config)
    (tmp_path / "my_data.yaml").write_text(config_text.replace(config["data"]["source"], str(tmp_path / "my_folder")))
    found = commands(text)
    assert len(found) == 2 and all(command[:4] == ["lit_ifm", "fit", "--config", "my_data.yaml"] for command in found)
    for command in found:
        result = run([*command, *FAST, "--trainer.logger", "false"], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert re.search(r"^  genres +multi, split on '\|', longest 2 +2 ", result.stderr, re.M)  # in the data report
        assert "test/auroc" in result.stdout


def test_your_own_model(tmp_path):
    text = section("Your own model")
    package = tmp_path / "my_project"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for code in blocks(text, "python"):
        first_line = code.splitlines()[0]
        assert first_line.startswith("# my_project/"), first_line
        (tmp_path / first_line[2:]).write_text(code)
    paths = [str(tmp_path), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    work = tmp_path / "work"  # the commands run from elsewhere: the package is found on PYTHONPATH
    work.mkdir()
    found = commands(text)
    assert [command[0] for command in found] == ["lit_ifm", "lit_ifm", "my_project"]
    small = [*FAST, "--model.embedding_dim", "4", "--data.synthetic.rows", "600", "--trainer.logger", "false"]
    results = [run([*command, *small], work, env) for command in found]
    for command, result in zip(found, results):
        assert result.returncode == 0, f"{command}: {result.stderr[-3000:]}"
        assert "test/" in result.stdout
    assert re.search(r"^epoch 0: f\d x f\d, \d+% of the norms$", results[0].stdout, re.M)  # the callback's line
    assert "lit_ifm data from synthetic" in results[0].stderr and "user   categorical" in results[2].stderr

    checkpoint = next((work / "runs" / "run-0" / "checkpoints").glob("best-*.ckpt"))  # ProjectedIFM's
    predict = run(["lit_ifm", "predict", "--model.class_path", "my_project.models.ProjectedIFM", "--ckpt_path",
                   str(checkpoint), "--data.synthetic.rows", "600", "--trainer.logger", "false"], work, env)
    assert predict.returncode == 0, predict.stderr[-3000:]
    assert f"written to {checkpoint.parent.parent / 'predictions.parquet'}" in predict.stderr
