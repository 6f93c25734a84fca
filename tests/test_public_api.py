"""What another package may rely on (issue 12, point 1): the names in ``lit_ifm.__all__``, documented and typed."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
import zipfile

import pytest
from conftest import REPO

import lit_ifm

PUBLIC_MODULES = sorted(name for _, name, _ in pkgutil.walk_packages(lit_ifm.__path__, "lit_ifm.")
                        if not any(part.startswith("_") for part in name.split(".")))


def defined_here(module) -> list[tuple[str, object]]:
    """The public classes and functions a module defines (not those it imports)."""
    return [(name, value) for name, value in vars(module).items()
            if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
            and value.__module__ == module.__name__]


def own_members(cls: type) -> list[tuple[str, object]]:
    """Public methods and properties a class adds; an override of a base class's method keeps its documentation."""
    inherited = {name for base in cls.__mro__[1:] for name in vars(base)}
    return [(name, value) for name, value in vars(cls).items()
            if not name.startswith("_") and name not in inherited
            and (inspect.isfunction(value) or isinstance(value, (property, classmethod, staticmethod)))]


def test_every_name_in_all_exists_and_is_lit_ifms_own():
    assert len(lit_ifm.__all__) == len(set(lit_ifm.__all__))
    for name in lit_ifm.__all__:
        value = getattr(lit_ifm, name)
        assert value.__module__.startswith("lit_ifm."), name
    assert {"FieldAwareModel", "InteractionAwareModel", "IFM", "FieldAwareDataModule", "FieldBatch", "FieldSchema",
            "InteractionSampler", "BestCheckpoint", "PredictionWriter", "UserError"} <= set(lit_ifm.__all__)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_class_and_function_has_a_docstring(module_name):
    module = importlib.import_module(module_name)
    assert inspect.getdoc(module), module_name
    missing = [name for name, value in defined_here(module) if not inspect.getdoc(value)]
    for name, value in defined_here(module):
        if inspect.isclass(value):
            missing += [f"{name}.{member}" for member, attribute in own_members(value)
                        if not (attribute.__func__ if isinstance(attribute, (classmethod, staticmethod))
                                else attribute).__doc__]
    assert not missing, f"{module_name}: no docstring on {missing}"


def test_constructors_of_the_public_classes_are_typed():
    untyped = []
    for name in lit_ifm.__all__:
        value = getattr(lit_ifm, name)
        if inspect.isclass(value) and "__init__" in vars(value):
            for parameter in list(inspect.signature(value.__init__).parameters.values())[1:]:
                if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                    continue  # **kwargs pass a base class's typed arguments on (the CLI reads them there)
                if parameter.annotation is inspect.Parameter.empty:
                    untyped.append(f"{name}({parameter.name})")
    assert not untyped


def test_the_wheel_ships_py_typed_and_cli_yaml(tmp_path):
    build = subprocess.run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-3000:]
    with zipfile.ZipFile(next(tmp_path.glob("lit_ifm-*.whl"))) as wheel:
        names = set(wheel.namelist())
    assert {"lit_ifm/py.typed", "lit_ifm/cli.yaml", "lit_ifm/__init__.py"} <= names
