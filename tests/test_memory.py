"""glibc's malloc thresholds: set by ``python -m lit_ifm`` and by an explicit call, never by importing lit_ifm or
training one of its models."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
from conftest import REPO
from helpers import run_main

from lit_ifm import FM, FieldAwareDataModule, SyntheticConfig, memory


def test_only_main_and_the_opt_in_call_set_the_thresholds(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(memory, "_glibc_mallopt", lambda: lambda option, value: calls.append((option, value)))
    data = FieldAwareDataModule(synthetic=SyntheticConfig(rows=600), batch_size=128,
                                cache_dir=str(tmp_path / "cache"))  # a store built here, in this test
    L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, default_root_dir=tmp_path).fit(FM(data.schema, embedding_dim=4),
                                                                        datamodule=data)
    assert calls == []
    tuned = [(memory.M_MMAP_THRESHOLD, 32 << 20), (memory.M_TRIM_THRESHOLD, 64 << 20)]
    assert memory.tune_allocator() and calls == tuned
    calls.clear()
    run_main(tmp_path, "fit", "--data.synthetic.rows", "600", "--trainer.fast_dev_run", "1")
    assert calls == tuned


@pytest.mark.parametrize("setting", ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"])
def test_thresholds_the_process_was_started_with_are_kept(monkeypatch, setting):
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: pytest.fail("glibc looked up"))
    monkeypatch.setenv(setting, "glibc.malloc.mmap_threshold=131072" if setting == "GLIBC_TUNABLES" else "131072")
    assert memory.tune_allocator() is False


GIVEN_BACK = textwrap.dedent("""
    import sys
    import numpy as np

    def anon_mib():
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssAnon")) / 1024

    run = ["fit", "--data.synthetic.rows", "600", "--trainer.max_epochs", "1", "--trainer.logger", "false",
           "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    if sys.argv[1] == "main":
        from lit_ifm.__main__ import main
        main(run)
    else:  # the same training through the library, as a notebook runs it
        import lightning as L
        from lit_ifm import FM, FieldAwareDataModule, SyntheticConfig
        data = FieldAwareDataModule(synthetic=SyntheticConfig(rows=600))
        L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                  ).fit(FM(data.schema), datamodule=data)
    blocks = [np.ones(24 << 20, np.uint8) for _ in range(4)]
    before = anon_mib()
    del blocks[:-1]  # the last one stays, so that a heap cannot simply shrink
    print(round(before - anon_mib()))  # MiB of the three freed 24 MiB blocks given back to the system
""")


@pytest.mark.skipif(memory._glibc_mallopt() is None or not Path("/proc/self/status").exists(),
                    reason="glibc's malloc thresholds, read through Linux's /proc")
@pytest.mark.parametrize("entry, started_with, given_back", [
    ("library", {}, 72),  # glibc's own threshold (blocks this large are mapped, and unmapped when freed)
    ("main", {}, 0),  # kept for reuse
    ("main", {"MALLOC_MMAP_THRESHOLD_": str(128 << 10)}, 72),  # the process's own setting stays
])
def test_a_process_keeps_freed_blocks_only_when_main_runs_it(tmp_path, entry, started_with, given_back):
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("MALLOC_") and name not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    done = subprocess.run([sys.executable, "-c", GIVEN_BACK, entry], cwd=tmp_path, capture_output=True, text=True,
                          env={**environment, **started_with, "PYTHONPATH": os.pathsep.join(
                              [str(REPO), environment.get("PYTHONPATH", "")])}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.split()[-1]) == given_back
