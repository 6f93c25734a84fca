"""``python -m lit_ifm fit|validate|test|predict --config recipes/<model>_<dataset>.yaml``, and
``python -m lit_ifm export --ckpt_path <ckpt> --format torch|onnx --output <folder>`` (:mod:`lit_ifm.serving`)"""

from __future__ import annotations

import difflib
import errno
import inspect
import os
import re
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import NoReturn, Optional

import torch
import yaml
from jsonargparse import Namespace
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from lit_ifm.callbacks.divergence import DivergenceGuard
from lit_ifm.callbacks.monitor import BestCheckpoint, EarlyStopping
from lit_ifm.callbacks.predictions import PredictionWriter
from lit_ifm.callbacks.preemption import PreemptionNotice
from lit_ifm.callbacks.progress import LineProgress, TerminalProgress
from lit_ifm.checkpoints import check_model_class, import_class, model_class_path, read_checkpoint
from lit_ifm.compat import KeepsCheckpointHyperparameters
from lit_ifm.data import FieldAwareDataModule
from lit_ifm.data.datamodule import ENCODING_SETTINGS
from lit_ifm.errors import CheckpointError, ConfigError, UserError
from lit_ifm.memory import tune_allocator
from lit_ifm.models import FieldAwareModel
from lit_ifm.noise import silence_known_noise
from lit_ifm.runs import ReplacingCheckpointIO, checkpoint_run_folder, new_run_folder, run_folder
from lit_ifm.serving.export import export_command

_PACKAGE = Path(__file__).resolve().parent
_COMMANDS = ("fit", "validate", "test", "predict")
_SIGTERM_EXIT = 128 + 15  # the code of a process killed by SIGTERM
_INTERRUPT_EXIT = 128 + 2  # and by SIGINT (Ctrl-C)
# The errors of a file system that a user, not lit_ifm, can fix, with what to do about them.
_FILE_SYSTEM_ERRORS = {
    errno.EACCES: " (choose a folder you may write to, e.g. --trainer.default_root_dir or --data.cache_dir)",
    errno.EPERM: " (choose a folder you may write to)",
    errno.EROFS: " (a read-only file system: choose another folder)",
    errno.ENOTDIR: " (a file stands where a folder is needed)",
    errno.EEXIST: " (a file stands where a folder is needed)",
    errno.ENOSPC: " (free some space, or choose a folder on another disk)",
    errno.EDQUOT: " (over the disk quota: free some space, or choose another folder)",
    errno.EFBIG: " (over the file-size limit, ulimit -f)",
}
RUN_KEY = "lit_ifm_run"  # in a checkpoint: what a resumed fit needs to continue that run


def default_config_files() -> list[str]:
    """``cli.yaml``: inside the installed package, or at the top of a source checkout."""
    for candidate in (_PACKAGE / "cli.yaml", _PACKAGE.parent / "cli.yaml"):
        if candidate.is_file():
            return [str(candidate)]
    return []


class LoggedConfig(SaveConfigCallback):
    """Saves ``config.yaml`` in the run's folder, next to its ``checkpoints/``, and hands the same resolved, nested
    config to the logger, with the model's parameter count; models and data modules keep their own
    hyper-parameters out of the logger, so nothing is logged twice."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Lightning's own setup writes to trainer.log_dir, which W&B shares between runs (its save_dir).
        if self.already_saved:
            return
        folder = run_folder(trainer)
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / self.config_filename).write_text(self.parser.dump(self.config, skip_none=False))
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        if trainer.logger is None:
            return
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False, skip_check=True))
        config["num_parameters"] = pl_module.num_parameters()
        trainer.logger.log_hyperparams(config)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # A fit resumed from this checkpoint continues this run: the same folder and the same logger run id.
        saving = trainer.checkpoint_callback
        folder = Path(saving.dirpath).parent if saving is not None and saving.dirpath else trainer.default_root_dir
        version = trainer.logger.version if trainer.logger else None
        checkpoint[RUN_KEY] = {"folder": str(Path(folder).resolve()), "logger_version": version}


def follow_monitor(callbacks: list | None, monitor: str) -> None:
    """Sets ``monitor`` on the configured callbacks that follow the task's metric (:class:`BestCheckpoint`,
    :class:`EarlyStopping` without a monitor of their own); refuses it when none does, rather than ignore it."""
    followers = 0
    for callback in callbacks or []:
        if not isinstance(callback, Namespace):  # an instance (trainer_defaults) has its own settings
            continue
        callback_class = import_class(callback.class_path)
        init_args = callback.get("init_args")
        if callback_class is not None and issubclass(callback_class, (BestCheckpoint, EarlyStopping)) and \
                init_args is not None and init_args.get("monitor") is None:
            init_args.monitor = monitor
            followers += 1
    if not followers:
        raise ConfigError(f"--monitor {monitor}: no callback follows it; it sets lit_ifm.callbacks.BestCheckpoint "
                          "and EarlyStopping that name no monitor of their own")


def absolute_run_folders(trainer: Namespace) -> None:
    """Makes the folders a fit's files go to absolute, so that its checkpoints record where they are (Lightning
    compares that folder when a fit resumes, also from another working directory)."""
    trainer.default_root_dir = os.path.abspath(trainer.default_root_dir or os.getcwd())
    loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
    for logger in loggers:
        if isinstance(logger, Namespace) and logger.get("init_args", {}).get("save_dir") is not None:
            logger.init_args.save_dir = os.path.abspath(logger.init_args.save_dir)


class OneLineParser(LightningArgumentParser):
    """LightningCLI's parser, whose option errors are one line naming the option, with the closest options when
    the name is mistyped, rather than the whole usage (``--help`` prints that)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # parsing a part of the configuration: the caller handles it
            super().error(message, ex)
        sys.stderr.write(f"lit-ifm: error: {self.one_line(message)}\n")
        self.exit(2)

    def one_line(self, message: str) -> str:
        """``message`` of jsonargparse (many lines for a nested key) as one line, with "did you mean"."""
        lines = [line.strip(" -") for line in message.splitlines()]
        if lines[0].startswith("unrecognized arguments:"):
            option = next((word for word in lines[0].split()[2:] if word.startswith("-")), lines[0].split()[-1])
            known = set(re.findall(r"--[\w.]+", self.format_help()))
            return f"unrecognized option {option}{_did_you_mean(option.split('=')[0], known)}"
        key = re.match(r'Parser key "([^"]+)":', lines[0])
        details = [line for line in lines[1:] if line and not line.startswith(_PARSER_NOISE)]
        detail = details[-1] if details else lines[0]
        if not key:
            return detail
        option = f"--{key.group(1)}"
        unknown = re.match(r"Option '([^']+)' is not accepted", detail)
        owner = re.search(r"class_path '([^']+)'", message)
        if unknown and owner:  # a mistyped argument of the chosen class, e.g. --model.lrr
            option = f"{option}.{unknown.group(1)}"
            known = {f"--{key.group(1)}.{name}" for name in _init_arguments(owner.group(1))}
            return f"{option} is not an argument of {owner.group(1)}{_did_you_mean(option, known)}"
        return f"{option}: {detail}"


def _did_you_mean(option: str, known: set[str]) -> str:
    close = difflib.get_close_matches(option, sorted(known), n=3, cutoff=0.75)
    return f"; did you mean {' or '.join(close)}? (--help lists every option)" if close else \
        " (--help lists every option)"


def _init_arguments(class_path: str) -> list[str]:
    cls = import_class(class_path)
    return [] if cls is None else [name for name in inspect.signature(cls.__init__).parameters if name != "self"]


# jsonargparse's lines around the one that says what is wrong
_PARSER_NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value",
                 "Expected a <class 'NoneType'>", "Expected a path but", "Problem with given class_path")


class LitIFMCLI(KeepsCheckpointHyperparameters, LightningCLI):
    """LightningCLI with the data's schema and task linked into the model, so no recipe types a size."""

    _continues_run = False

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.schema", "model.init_args.schema", apply_on="instantiate")
        parser.link_arguments("data.task", "model.init_args.task")
        parser.link_arguments("data.ranking", "model.init_args.ranking", apply_on="instantiate")
        # Optional[str], not `str | None`: jsonargparse reads the type at run time, on Python 3.10 too
        parser.add_argument("--monitor", type=Optional[str], default=None,
                            help="the validation metric that picks the best checkpoint and stops training early, "
                                 "e.g. val/logloss (default: the task's, val/auroc for binary, val/rmse for "
                                 "regression)")
        parser.add_argument("--untrained", type=bool, default=False,
                            help="validate, test and predict: score the model as initialised, without --ckpt_path "
                                 "(without either they stop, rather than report a random model's scores)")
        parser.add_argument("--threads", type=Optional[int], default=None,
                            help="CPU threads torch computes with (default: torch's, one per core, or "
                                 "$OMP_NUM_THREADS)")
        parser.add_argument("--keep_columns", type=Optional[list[str]], default=None,
                            help="predict: the input's columns written beside each prediction, e.g. [user_id] "
                                 "(default: all of them)")

    def parse_arguments(self, parser, args) -> None:
        self.command_line = CommandLine(sys.argv[1:] if args is None else list(args))
        super().parse_arguments(parser, args)

    def apply_checkpoint(self) -> None:
        """Checks ``--ckpt_path`` before any data is read or W&B starts: a readable lit_ifm checkpoint. What the
        command line does not name comes from it: the model's class and settings, and the data's source, field spec
        and task; what it names must agree with it. A file other than the source the checkpoint was trained on is
        scored whole with the checkpoint's encoder (``--data.encoder_from``); a folder of other splits must match the
        checkpoint's vocabularies. A resumed fit continues the
        checkpoint's run. (The data is compared with the checkpoint's when the trainer loads it.)"""
        subcommand = self.subcommand
        config = self.config[subcommand]
        path = subcommand and config.get("ckpt_path")
        if not path:
            return
        checkpoint = read_checkpoint(path)
        saved_class = model_class_path(checkpoint)
        class_path = config.model.class_path
        if saved_class and not self.command_line.names("model"):
            if import_class(saved_class) is None:
                raise CheckpointError(f"--ckpt_path: {path} holds a model of class {saved_class}, which cannot be "
                                      "imported here: install the package that defines it")
            class_path = saved_class
        check_model_class(checkpoint, path, import_class(class_path))
        # The task is linked from the data (and compared with the checkpoint's when the weights load).
        settings = {name: value for name, value in checkpoint.get("hyper_parameters", {}).items()
                    if name not in ("_instantiator", "_class_path", "task")}
        model = {"class_path": class_path, "init_args": settings}
        self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)
        self._data_from_checkpoint(self.config[subcommand].data, checkpoint, path, subcommand)
        if subcommand == "fit" and RUN_KEY in checkpoint:
            self._continue_run(self.config.fit.trainer, checkpoint[RUN_KEY])

    def _data_from_checkpoint(self, data: Namespace, checkpoint: dict, path: str, subcommand: str) -> None:
        """The data settings the checkpoint was trained with, where the command line names none; and, to evaluate
        or predict rows of another source, the checkpoint's encoder."""
        saved = checkpoint.get("datamodule_hyper_parameters") or {}
        taken = {name: asdict(saved[name]) if is_dataclass(saved[name]) else saved[name]
                 for name in ("source", "synthetic", *ENCODING_SETTINGS)
                 if name in saved and name in data and not self.command_line.names(f"data.{name}")}
        source = taken.get("source", data.source)
        if subcommand != "fit" and "encoder_from" in data and not data.encoder_from and "source" in saved \
                and Path(source).expanduser().is_file() and not same_source(source, saved["source"]):
            taken["encoder_from"] = str(path)  # new rows; a data set of other splits must match the checkpoint's
        if taken:
            self.config = self.parser.parse_object({subcommand: {"data": taken}}, self.config)

    def _continue_run(self, trainer: Namespace, run: dict) -> None:
        # The run's folder: where the checkpoint now lies (<run>/checkpoints/), else where it was written.
        checkpoint = Path(self.config.fit.ckpt_path).resolve()
        folder = checkpoint_run_folder(checkpoint) or Path(run["folder"]).resolve()
        loggers = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
        loggers = [logger for logger in loggers if isinstance(logger, Namespace)]
        for logger in loggers:  # the same run id: W&B resumes that run, CSV and TensorBoard write to its folder
            settings = logger.get("init_args", {})
            if "version" in settings and settings.version is None:
                settings.version = run["logger_version"]
            # <save_dir>/<project or name>/<version>: from another working directory, the save_dir that holds it
            if settings.get("save_dir") is not None and folder.parent.name == (settings.get("project") or
                                                                                settings.get("name")):
                settings.save_dir = str(folder.parent.parent)
        if not loggers:
            trainer.default_root_dir = str(folder)
            self._continues_run = True

    def check_trained(self) -> None:
        """``validate``, ``test`` and ``predict`` score a trained model: without ``--ckpt_path`` they stop, unless
        ``--untrained true`` asks for the model as initialised (its scores would otherwise pass for results)."""
        config = self.config[self.subcommand]
        if self.subcommand == "fit":
            if config.untrained:
                raise ConfigError("--untrained is for validate, test and predict; fit trains the model")
            return
        if not config.get("ckpt_path") and not config.untrained:
            raise ConfigError(f"{self.subcommand} needs a trained model: give --ckpt_path (e.g. "
                              "runs/lit_ifm/<run>/checkpoints/last.ckpt), or --untrained true to score the model "
                              "as initialised")

    def before_instantiate_classes(self) -> None:
        self.check_trained()
        self.apply_checkpoint()
        config = self.config[self.subcommand]
        trainer = config.trainer
        if config.monitor:
            follow_monitor(trainer.callbacks, config.monitor)
        if config.threads is not None:
            if config.threads < 1:
                raise ConfigError(f"--threads must be at least 1, got {config.threads} (leave it out for torch's "
                                  "default: one per core, or $OMP_NUM_THREADS)")
            torch.set_num_threads(config.threads)
        if not trainer.logger and not self._continues_run:  # a logger gives each run its folder; give one here
            trainer.default_root_dir = new_run_folder(trainer.default_root_dir or os.getcwd())
        if self.subcommand == "fit":
            absolute_run_folders(trainer)

    def instantiate_trainer(self, **kwargs):
        settings = self.config_init.get(str(self.subcommand), self.config_init).get("trainer") or {}
        callbacks = settings.get("callbacks") or []
        if settings.get("enable_progress_bar") is not False and \
                not any(isinstance(callback, ProgressBar) for callback in callbacks):
            # On a terminal, Lightning's bar redrawn once per logging interval (its metrics change no more often)
            # rather than at every step, which costs FM's small steps a few percent; elsewhere a line per epoch,
            # not a bar redrawn into a file.
            bar = TerminalProgress(refresh_rate=settings.get("log_every_n_steps") or 1) if sys.stdout.isatty() \
                else LineProgress()
            kwargs["callbacks"] = [*callbacks, bar]
        plugins = settings.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(plugin, CheckpointIO) for plugin in plugins):  # checkpoints renamed into place
            kwargs["plugins"] = [*plugins, ReplacingCheckpointIO()]
        if self.subcommand == "fit":
            kwargs["callbacks"] = [*kwargs.get("callbacks", callbacks), PreemptionNotice()]
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, ImportError) as error:  # Lightning's checks of its settings
            if isinstance(error, UserError):
                raise
            raise ConfigError(f"--trainer settings: {str(error).strip()}") from error
        if self.subcommand == "predict" and not any(isinstance(c, PredictionWriter) for c in trainer.callbacks):
            keep = self.config[self.subcommand].get("keep_columns")  # predict writes a file by default, and says where
            trainer.callbacks.append(PredictionWriter(keep_columns=keep))
        return trainer

    def after_fit(self) -> None:
        """Report test metrics of the best validation checkpoint, as the paper's protocol does."""
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)


class CommandLine:
    """What a command line names itself, on the command line or in its ``--config`` files (as opposed to
    defaults): settings a checkpoint supplies otherwise.

    >>> CommandLine(["predict", "--ckpt_path", "a.ckpt", "--data.source=new.csv"]).names("data.source")
    True
    >>> CommandLine(["predict", "--ckpt_path", "a.ckpt"]).names("model")
    False
    """

    def __init__(self, args: list[str]):
        self.options = [arg[2:].split("=", 1)[0] for arg in args if arg.startswith("--")]
        self.configured: list[dict] = []
        for index, arg in enumerate(args):
            value = arg.split("=", 1)[1] if arg.startswith("--config=") else \
                args[index + 1] if arg == "--config" and index + 1 < len(args) else None
            if value is not None and Path(value).is_file():
                loaded = yaml.safe_load(Path(value).read_text())
                self.configured.append(loaded if isinstance(loaded, dict) else {})

    def names(self, key: str) -> bool:
        """Whether ``key`` (``model``, ``data.source``) or a setting inside it is given."""
        if any(option == key or option.startswith(f"{key}.") for option in self.options):
            return True
        for found in self.configured:
            for part in key.split("."):
                found = found.get(part) if isinstance(found, dict) else None
            if found is not None:
                return True
        return False


def same_source(source: str, trained: str) -> bool:
    """Whether two data sources name the same data: the same Hub id, or the same file or folder."""
    if source == trained:
        return True
    try:
        return Path(source).expanduser().resolve() == Path(trained).expanduser().resolve()
    except OSError:
        return False


def main(args: list[str] | None = None,
         data_module: type[FieldAwareDataModule] = FieldAwareDataModule) -> LitIFMCLI | Path:
    """``python -m lit_ifm``: LightningCLI with lit_ifm's defaults (``cli.yaml``), and any mistake in the data or
    the settings reported as one line ``lit-ifm: error: ...`` with exit code 2. As the owner of its process, it
    also sets glibc's malloc thresholds for training (:func:`lit_ifm.memory.tune_allocator`). ``export`` is no
    LightningCLI command (it trains nothing): :func:`lit_ifm.serving.export.export_command` parses its flags and
    returns the export's folder.

    Args:
        args: the command line, e.g. ``["fit", "--config", "recipes/fm_frappe.yaml"]``; default ``sys.argv``.
        data_module: the data module the command line configures (``--data.*``): another package's subclass of
            :class:`FieldAwareDataModule` (its constructor keeps a ``task`` argument, linked to the model's).
    """
    silence_known_noise()
    tune_allocator()  # process-wide: the entry point owns the process, a library import does not
    try:
        command_line = sys.argv[1:] if args is None else args
        if command_line[:1] == ["export"]:
            return export_command(command_line[1:])
        return _cli(args, data_module)
    except SIGTERMException:  # Lightning's, a SystemExit without a code: pre-empted is not completed
        raise SystemExit(_SIGTERM_EXIT) from None
    except KeyboardInterrupt:  # Ctrl-C outside a trainer's loop (which handles its own), e.g. during a store build
        sys.stderr.write("lit-ifm: interrupted\n")
        raise SystemExit(_INTERRUPT_EXIT) from None
    except Exception as error:
        cause = _user_error(error)
        if cause is None:
            raise
        # bad input or settings: the message says where and what; a traceback would only bury it
        sys.stderr.write(f"lit-ifm: error: {cause}\n")
        raise SystemExit(2) from None


def _user_error(error: BaseException | None) -> UserError | None:
    """The :class:`UserError` behind ``error`` (jsonargparse wraps what a constructor raised), or a file that could
    not be written or read for a reason of the machine's (no permission, no space, a file where a folder should be),
    said as a :class:`ConfigError` naming the path."""
    while error is not None and not isinstance(error, UserError):
        if isinstance(error, OSError) and error.errno in _FILE_SYSTEM_ERRORS and error.filename:
            return ConfigError(f"{error.filename}: {error.strerror}{_FILE_SYSTEM_ERRORS[error.errno]}")
        error = error.__cause__
    return error


def _cli(args: list[str] | None, data_module: type[FieldAwareDataModule]) -> LitIFMCLI:
    return LitIFMCLI(
        FieldAwareModel,
        data_module,
        subclass_mode_model=True,
        auto_configure_optimizers=False,  # the model's own optimizer arguments are the one way to set it
        parser_kwargs={command: {"default_config_files": default_config_files()} for command in _COMMANDS},
        parser_class=OneLineParser,
        save_config_callback=LoggedConfig,
        save_config_kwargs={"overwrite": True, "save_to_log_dir": True},
        trainer_defaults={"callbacks": [DivergenceGuard()]},  # added to any recipe's callback list
        args=args,
    )


if __name__ == "__main__":
    main()
