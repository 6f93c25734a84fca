from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FRAPPE_FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]

# Keep every cache of the suite out of the user's home and every logger offline.
_CACHE = Path(tempfile.mkdtemp(prefix="lit_ifm_tests_"))
os.environ.setdefault("HF_HOME", str(_CACHE / "hf"))
os.environ.setdefault("LIT_IFM_CACHE", str(_CACHE / "datasets"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_DIR", str(_CACHE / "wandb"))
# Lightning 2.6's CLI calls jsonargparse APIs that jsonargparse 4.5x deprecates: not ours to fix.
os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")


# Small samples of public data sets, shipped with the tests (each folder's README says what and whence).
SAMPLES = REPO / "tests" / "data"


def data_root() -> Path:
    """The full data sets, which a clone of the repository alone does not have: ``$LIT_IFM_DATA``, else the
    ``shared/data`` folder beside the repository."""
    return Path(os.environ.get("LIT_IFM_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def frappe_dir() -> Path:
    """The full Frappe libFM files (60,607 / 17,316 / 8,659 rows); a test that asks for them skips without them."""
    folder = data_root() / "frappe"
    if not (folder / "frappe.train.libfm").is_file():
        pytest.skip(f"needs the full Frappe files, not found in {folder}: set LIT_IFM_DATA to the folder that "
                    "holds frappe/")
    return folder


@pytest.fixture(scope="session")
def small_frappe_dir() -> Path:
    """300 rows of each Frappe split, in the full files' layout and names: wherever a test reads Frappe but not
    its size."""
    return SAMPLES / "frappe"


@pytest.fixture(autouse=True)
def _seed_and_one_thread(monkeypatch):
    """Every test starts from the same seeds, on one thread: with tiny tensors torch's thread pool costs far more
    than it saves (10x on a busy 2-core machine). What an earlier in-process run left in the environment does not
    reach this test: seed_everything's seed (it sets the training order), nor W&B's service socket, which a
    test's new processes would otherwise share with this one, as a notebook's would; nor a W&B run an in-process fit
    left open (a later WandbLogger would join it, with a warning)."""
    for leftover in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "WANDB_SERVICE"):
        monkeypatch.delenv(leftover, raising=False)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
