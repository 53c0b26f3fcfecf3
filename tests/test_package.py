"""The public surface, the layering of ARCHITECTURE.md, and the static checks, as tests CI runs."""

from __future__ import annotations

import subprocess
import sys
from inspect import ismodule
from pathlib import Path

import pytest

import modelcanary

ROOT = Path(__file__).resolve().parents[1]


def test_exported_members_are_exactly_all() -> None:
    # subpackages appear as attributes once anything imports them; they are not exports
    public = {name for name, value in vars(modelcanary).items() if not name.startswith("_") and not ismodule(value)}
    assert public | {"__version__"} == set(modelcanary.__all__)
    for name in modelcanary.__all__:
        assert getattr(modelcanary, name) is not None


def test_import_is_light() -> None:
    """The root import pulls in none of the heavy clients (they load where they are used)."""
    heavy = "('mlflow', 'sqlalchemy', 'sklearn', 'pandas', 'starlette', 'ray', 'aiohttp')"
    code = f"import sys, modelcanary; print(sorted(m for m in {heavy} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["lint-imports"], id="import-linter layers"),
        pytest.param(["ruff", "check", "src", "tests"], id="ruff"),
        pytest.param(["mypy"], id="mypy strict"),
    ],
)
def test_static_checks(command: list[str]) -> None:
    tool = Path(sys.executable).parent / command[0]
    result = subprocess.run([str(tool), *command[1:]], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
