"""Callbacks that cost nothing on the steps where they have nothing to do."""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L

# The hooks Lightning calls once a batch.
BATCH_HOOKS = tuple(f"on_{stage}_batch_{moment}" for stage in ("train", "validation", "test", "predict")
                    for moment in ("start", "end")) + (
    "on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad")


class SkipsIdleBatchHooks:
    """A callback mixin: the batch hooks a class leaves as Lightning's no-op become ``None``, which Lightning does
    not call (it calls a hook only when it is callable). Lightning otherwise calls each of its 12 batch hooks on
    every callback every step, a few microseconds each: with cli.yaml's callbacks, 54 calls a step, about a
    tenth of FM's step at batch 128 under cProfile. A subclass that defines such a hook gets it called as usual;
    it must not call ``super()``'s version of a hook its parent left idle.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for hook in idle_hooks(cls):
            setattr(cls, hook, None)


def skip_idle_batch_hooks(callbacks: Iterable[L.Callback]) -> None:
    """What :class:`SkipsIdleBatchHooks` does for a class, done on callbacks already made: on each, the batch hooks
    that are still Lightning's no-op become ``None`` (a hook set on the instance, as ``LambdaCallback`` sets them, is
    kept). lit_ifm's models do it at ``setup`` for every callback of the trainer, Lightning's own
    (``ModelCheckpoint``, ``ModelSummary``) and users' alike."""
    for callback in callbacks:
        for hook in idle_hooks(callback):
            try:
                setattr(callback, hook, None)
            except AttributeError:  # a frozen dataclass, or a __setattr__ of its own, keeps its no-op
                pass


def idle_hooks(owner: type | L.Callback) -> list[str]:
    """The batch hooks that a callback class, or a callback, leaves as Lightning's no-op."""
    idle = []
    for hook in BATCH_HOOKS:
        found = getattr(owner, hook, None)
        if getattr(found, "__func__", found) is getattr(L.Callback, hook):  # on a callback: its method
            idle.append(hook)
    return idle
