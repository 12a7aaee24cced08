"""The package's layout: imports point one way, and the short module names still import.

Layers, each built only on those before it (see ``lpd/__init__.py``):
foundation (config, io, metrics) -> physics -> data -> methods -> training
-> evaluation -> cli. Every import of an lpd module, at the top of a module or
inside a function, is checked.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

import lpd

PACKAGE = Path(lpd.__file__).parent
LAYERS = {"config": 0, "io": 0, "metrics": 0, "physics": 1, "data": 2, "methods": 3,
          "training": 4, "evaluation": 5, "cli": 6}


# Data that every layer reads (it imports nothing of lpd; checked below).
FOUNDATION = {"lpd.methods.registry"}


def _layer(module: str) -> int:
    """The layer of ``lpd.x.y`` (or of a short name, which the top-level package maps)."""
    if module in FOUNDATION:
        return 0
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # the package itself
    name = parts[1]
    if name not in LAYERS:
        name = lpd._MOVED["lpd." + name].split(".")[1]
    return LAYERS[name]


def _is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "lpd":
                yield from (f"lpd.{alias.name}" for alias in node.names
                            if f"lpd.{alias.name}" in lpd._MOVED
                            or alias.name in LAYERS)
            elif node.module.startswith("lpd."):
                for alias in node.names:  # a sub-module by its own name, else the module
                    sub = f"{node.module}.{alias.name}"
                    yield sub if importlib.util.find_spec(node.module).submodule_search_locations \
                        and _is_module(sub) else node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("lpd."))


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("lpd", *path.relative_to(PACKAGE).with_suffix("").parts))
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        if name != "lpd":
            yield name, path


def test_every_module_belongs_to_a_layer():
    for name, _ in _modules():
        assert name.split(".")[1] in LAYERS, f"{name} is in no layer of tests/test_layout.py"


@pytest.mark.parametrize("name,path", list(_modules()), ids=lambda v: str(v))
def test_imports_point_one_way(name, path):
    own = _layer(name)
    for imported in _imports(path):
        assert _layer(imported) <= own, (
            f"{name} (layer {own}) imports {imported} (layer {_layer(imported)}): "
            "imports must point from evaluation towards physics, never back")


def test_short_module_names_import_as_the_moved_modules():
    for short, target in lpd._MOVED.items():
        assert importlib.import_module(short) is importlib.import_module(target)
        assert getattr(lpd, short.split(".")[1]) is importlib.import_module(target)
    from lpd.operators import get_setup

    from lpd.physics.operators import get_setup as moved

    assert get_setup is moved
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lpd.nope  # noqa: B018


def test_the_registry_imports_nothing_of_lpd():
    for name in FOUNDATION:
        path = PACKAGE.joinpath(*name.split(".")[1:]).with_suffix(".py")
        assert list(_imports(path)) == [], name


def test_the_posterior_modules_import_only_those_listed_above_them():
    # lpd/methods/posterior/__init__.py lists its modules in the order they build
    # on each other ("- `model`: ..."); each may import only those before it.
    import re

    import lpd.methods.posterior as posterior

    order = re.findall(r"^- `(\w+)`:", posterior.__doc__, re.M)
    folder = Path(posterior.__file__).parent
    assert sorted(order) == sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    for k, name in enumerate(order):
        for imported in _imports(folder / f"{name}.py"):
            if imported.startswith("lpd.methods.posterior."):
                below = imported.rsplit(".", 1)[1]
                assert below in order[:k], f"posterior.{name} imports posterior.{below}"
