"""Every W&B sweep file: parameters sampled as the agent samples them and passed as it passes them
(``${args}`` expands to ``--name=value``) are accepted by the CLI and complete a fast_dev_run."""

from __future__ import annotations

import math
import random
import sys

import pytest
import yaml
from conftest import REPO

from lit_ifm.__main__ import main

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))


def sample(spec: dict, rng: random.Random):
    if "values" in spec:
        return rng.choice(spec["values"])
    if "value" in spec:
        return spec["value"]
    low, high = spec["min"], spec["max"]
    distribution = spec.get("distribution", "int_uniform" if isinstance(low, int) else "uniform")
    if distribution == "log_uniform_values":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    if distribution == "int_uniform":
        return rng.randint(low, high)
    if distribution == "uniform":
        return rng.uniform(low, high)
    raise AssertionError(f"add {distribution!r} to this test's sampler")


def test_the_main_frappe_recipes_have_sweeps():
    assert SWEEPS, "no sweep files"
    assert {path.name for path in SWEEPS} >= {"fm_frappe.yaml", "ifm_frappe.yaml", "inn_frappe.yaml"}


@pytest.mark.parametrize("sweep_path", SWEEPS, ids=lambda p: p.stem)
def test_sampled_sweep_parameters_complete_a_fast_dev_run(sweep_path, small_frappe_dir, tmp_path, monkeypatch):
    sweep = yaml.safe_load(sweep_path.read_text())
    assert sweep["metric"]["name"].startswith("best/val/") and sweep["method"] in ("grid", "random", "bayes")
    command = sweep["command"]
    assert command[:5] == ["${env}", "python", "-m", "lit_ifm", "fit"] and command[-1] == "${args}"
    recipe = command[command.index("--config") + 1]
    assert (REPO / recipe).is_file(), recipe
    agent_args = [f"--{name}={sample(spec, random.Random(0))}" for name, spec in sweep["parameters"].items()]
    overrides = ["--trainer.fast_dev_run=1", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                 f"--trainer.default_root_dir={tmp_path}"]
    if "synthetic" not in recipe:
        overrides.append(f"--data.source={small_frappe_dir}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lit-ifm"])
    args = command[4:-1] + agent_args + overrides
    args[args.index("--config") + 1] = str(REPO / recipe)
    cli = main(args)
    assert cli.trainer.state.finished
    for argument in agent_args:
        name, value = argument[2:].split("=", 1)
        section, *path = name.split(".")
        module = {"model": cli.model, "data": cli.datamodule}[section]
        assert str(module.hparams[path[-1]]) == value, argument
