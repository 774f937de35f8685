"""Every module of the package is in the import contracts (pyproject's [tool.importlinter]): either the pytest layer,
which may import pytest, or a source module (a subpackage with all it holds) of the contract that forbids it;
`lint-imports` in CI checks them."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
LAYER = {"plugin", "fixtures", "collect", "hookspecs", "stash", "_xdist", "benchmarking", "__init__"}


def test_every_module_is_either_the_pytest_layer_or_forbidden_to_import_pytest() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "forbidden"]
    forbidden = {m.removeprefix("pytest_wan22.") for m in contract["source_modules"]}
    package = REPO / "pytest_wan22"
    modules = {p.stem for p in package.glob("*.py")} | {p.parent.name for p in package.glob("*/__init__.py")}
    assert not forbidden & LAYER
    assert modules - LAYER == forbidden, "add a new module to the contract in pyproject.toml, or to the layer here"
