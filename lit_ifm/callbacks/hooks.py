"""Callbacks that cost nothing on the steps where they have nothing to do."""

from __future__ import annotations

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
        for hook in BATCH_HOOKS:
            if getattr(cls, hook, None) is getattr(L.Callback, hook):
                setattr(cls, hook, None)
