"""The package's shape: every module declares what it exports, and the code passes the linter."""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import neuavatar

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> list[str]:
    names = ["neuavatar"]
    for info in pkgutil.walk_packages(neuavatar.__path__, "neuavatar."):
        if not info.name.endswith("__main__"):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_every_module_declares_exports_that_exist(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list) and exported, f"{name} has no __all__ list"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


def test_cli_help_and_version():
    for args, expect in ((["--help"], "preprocess"), (["--version"], neuavatar.__version__)):
        run = subprocess.run([sys.executable, "-m", "neuavatar", *args], capture_output=True, text=True)
        assert run.returncode == 0 and expect in run.stdout
    unknown = subprocess.run([sys.executable, "-m", "neuavatar", "fly"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown command 'fly'" in unknown.stderr


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (it comes with `pip install -e .[dev]`)")
    run = subprocess.run([ruff, "check", "shared", "tests", "bench"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
