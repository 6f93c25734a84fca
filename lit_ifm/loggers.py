"""A W&B logger that never prompts and never hangs."""

from __future__ import annotations

import configparser
import contextlib
import netrc
import os
from typing import Literal
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_info

from lit_ifm.compat import stop_uploading_checkpoints, update_wandb_init
from lit_ifm.errors import ConfigError

WandbMode = Literal["auto", "online", "offline", "disabled"]
_WANDB_MODES = ("online", "offline", "disabled", "dryrun", "run", "shared")  # what wandb itself takes


def resolve_wandb_mode(mode: WandbMode = "auto", timeout: float = 3.0) -> tuple[str, str]:
    """The W&B mode to run in, and why.

    ``auto``: ``$WANDB_MODE`` when set; otherwise online when an API key is known (``$WANDB_API_KEY``
    or ``wandb login``'s netrc entry) and the server accepts it within ``timeout`` seconds; otherwise
    offline (``wandb sync`` uploads the run later).

    >>> resolve_wandb_mode("disabled")
    ('disabled', 'asked for')
    """
    if mode != "auto":
        return mode, "asked for"
    environment = os.environ.get("WANDB_MODE", "").strip().lower()
    if environment and environment not in _WANDB_MODES:
        raise ConfigError(f"WANDB_MODE={environment!r} is not a W&B mode: set online, offline or disabled, or unset "
                          "it")
    if environment:
        return ("offline" if environment == "dryrun" else environment), "from WANDB_MODE"
    base_url = wandb_base_url()
    key = os.environ.get("WANDB_API_KEY") or _netrc_key(base_url)
    if not key:
        return "offline", "no W&B API key (set WANDB_API_KEY or run `wandb login` to log online)"
    refusal = _refusal(base_url, key, timeout)
    if refusal:
        return "offline", refusal
    return "online", "an API key is set and the server accepts it"


def wandb_base_url() -> str:
    """The server wandb will use, found as wandb finds it: ``$WANDB_BASE_URL``, else ``base_url`` in its settings
    files (``./wandb/settings``, then ``$WANDB_CONFIG_DIR/settings``, default ``~/.config/wandb/settings``), else
    the installed wandb's own default."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"].rstrip("/")
    config_dir = os.environ.get("WANDB_CONFIG_DIR") or os.path.join(os.path.expanduser("~"), ".config", "wandb")
    for path in (os.path.join("wandb", "settings"), os.path.join(config_dir, "settings")):
        settings = configparser.ConfigParser()
        with contextlib.suppress(OSError, configparser.Error):
            settings.read(path)
            if settings.get("default", "base_url", fallback=None):
                return settings.get("default", "base_url").rstrip("/")
    import wandb

    return str(wandb.Settings().base_url).rstrip("/")


def _netrc_key(base_url: str) -> str | None:
    try:
        entry = netrc.netrc().authenticators(urlparse(base_url).hostname or "")
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return None
    return entry[2] if entry else None


def _refusal(base_url: str, key: str, timeout: float) -> str | None:
    """Why the server will not take a run, asked in one short request (W&B's client would retry for minutes)."""
    import httpx

    try:
        answer = httpx.post(f"{base_url}/graphql", json={"query": "query Viewer { viewer { id } }"},
                            auth=("api", key), timeout=timeout)
    except httpx.HTTPError:
        return f"an API key is set but {base_url} did not answer within {timeout:.0f} s"
    if answer.status_code != 200:
        return f"{base_url} refused the API key (HTTP {answer.status_code})"
    return None


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
        version: the id of a run to continue (a fit resumed from a checkpoint continues the checkpoint's run).

    When the server answers but refuses the run (a wrong entity or project, no permission), the run is
    logged offline instead, and the first lines say why.
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
        version: str | None = None,
    ):
        resolved, reason = resolve_wandb_mode(mode)
        rank_zero_info(f"W&B logging {resolved} ({reason})")
        os.makedirs(save_dir, exist_ok=True)
        super().__init__(name=name, save_dir=save_dir, project=project, log_model=log_model and resolved == "online",
                         mode=resolved, entity=entity, group=group, tags=tags, version=version)
        # W&B's own copy absolute: a service inherited from a parent process (WANDB_SERVICE) resolves paths in its
        # own working directory. Lightning's stays as given, for the paths the run prints. And no anonymous=None,
        # which Lightning passes and W&B >= 0.22 answers with a warning that the setting does nothing.
        update_wandb_init(self, dir=os.path.abspath(save_dir), anonymous=None)
        self.mode = resolved
        self._run_started = False

    @property
    def experiment(self):
        if not self._run_started and self.mode == "online":
            import wandb

            try:
                run = super().experiment
                self._run_started = True
                return run
            except wandb.errors.Error as error:
                wandb.teardown()  # else the refused run keeps its id in use, and the offline one cannot take it
                self.mode = "offline"
                update_wandb_init(self, mode="offline")
                stop_uploading_checkpoints(self)
                reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
                rank_zero_info(f"W&B logging offline (the server refused the run: {reason})")
        return super().experiment
