"""A W&B logger that never prompts and never hangs."""

from __future__ import annotations

import netrc
import os
from typing import Literal
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_info

WandbMode = Literal["auto", "online", "offline", "disabled"]
_DEFAULT_BASE_URL = "https://api.wandb.ai"


def resolve_wandb_mode(mode: WandbMode = "auto", timeout: float = 3.0) -> tuple[str, str]:
    """The W&B mode to run in, and why.

    ``auto``: ``$WANDB_MODE`` when set; otherwise online when an API key is known (``$WANDB_API_KEY``
    or ``wandb login``'s netrc entry) and the server answers within ``timeout`` seconds; otherwise
    offline (``wandb sync`` uploads the run later).

    >>> resolve_wandb_mode("disabled")
    ('disabled', 'asked for')
    """
    if mode != "auto":
        return mode, "asked for"
    environment = os.environ.get("WANDB_MODE", "").strip().lower()
    if environment:
        return ("offline" if environment == "dryrun" else environment), "from WANDB_MODE"
    base_url = os.environ.get("WANDB_BASE_URL", _DEFAULT_BASE_URL)
    if not (os.environ.get("WANDB_API_KEY") or _netrc_has_key(base_url)):
        return "offline", "no W&B API key (set WANDB_API_KEY or run `wandb login` to log online)"
    if not _reachable(base_url, timeout):
        return "offline", f"an API key is set but {base_url} did not answer within {timeout:.0f} s"
    return "online", "an API key is set and the server answers"


def _netrc_has_key(base_url: str) -> bool:
    try:
        return netrc.netrc().authenticators(urlparse(base_url).hostname or "") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(base_url: str, timeout: float) -> bool:
    import httpx

    try:
        httpx.head(base_url, timeout=timeout)
        return True
    except httpx.HTTPError:
        return False


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` with the mode chosen up front (:func:`resolve_wandb_mode`), said once,
    and the run directory under ``save_dir`` (W&B's own default ignores ``$WANDB_DIR``).

    Args:
        project: the W&B project.
        name: the run's display name.
        save_dir: where the run's files go (``<save_dir>/wandb``).
        mode: ``auto``, ``online``, ``offline`` or ``disabled``.
        entity: the W&B team or user.
        group: group runs, e.g. the sweep or the experiment.
        tags: tags of the run.
        log_model: upload checkpoints as W&B artifacts (online only).
    """

    def __init__(
        self,
        project: str = "lit_ifm",
        name: str | None = None,
        save_dir: str = "runs",
        mode: WandbMode = "auto",
        entity: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        log_model: bool = False,
    ):
        resolved, reason = resolve_wandb_mode(mode)
        rank_zero_info(f"W&B logging {resolved} ({reason})")
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(name=name, save_dir=save_dir, project=project, log_model=log_model and resolved == "online",
                         mode=resolved, entity=entity, group=group, tags=tags)
        self.mode = resolved
