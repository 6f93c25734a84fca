"""``python -m lit_ifm fit|validate|test|predict --config recipes/<model>_<dataset>.yaml``"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from lit_ifm.data import FieldAwareDataModule
from lit_ifm.models import FieldAwareModel

_PACKAGE = Path(__file__).resolve().parent
_COMMANDS = ("fit", "validate", "test", "predict")


def default_config_files() -> list[str]:
    """``cli.yaml``: inside the installed package, or at the top of a source checkout."""
    for candidate in (_PACKAGE / "cli.yaml", _PACKAGE.parent / "cli.yaml"):
        if candidate.is_file():
            return [str(candidate)]
    return []


class LitIFMCLI(LightningCLI):
    """LightningCLI with the data's schema and task linked into the model, so no recipe types a size."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.schema", "model.init_args.schema", apply_on="instantiate")
        parser.link_arguments("data.task", "model.init_args.task")

    def after_fit(self) -> None:
        """Report test metrics of the best validation checkpoint, as the paper's protocol does."""
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


def main(args: list[str] | None = None) -> LitIFMCLI:
    return LitIFMCLI(
        FieldAwareModel,
        FieldAwareDataModule,
        subclass_mode_model=True,
        parser_kwargs={command: {"default_config_files": default_config_files()} for command in _COMMANDS},
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
