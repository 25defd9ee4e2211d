"""The wheel ships every package and dashboard file the source tree has.

`pip install .` builds from pyproject's explicit package list; a new package left
out of it still passes every other test (they import from the checkout) and then
fails only for a user who installed the wheel."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_python_package_is_in_the_wheel():
    in_tree = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "sensorstream").rglob("__init__.py")}
    assert in_tree - set(TOOL["packages"]) == set(), "add these to [tool.setuptools] packages in pyproject.toml"


def test_every_dashboard_file_is_in_the_wheel():
    patterns = TOOL["package-data"]["sensorstream.dashboard"]
    root = ROOT / "dashboard"
    files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    missing = [f for f in files if not f.endswith(".py") and not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert missing == [], "add patterns for these to [tool.setuptools.package-data] in pyproject.toml"
