"""The package's layering (docs/architecture.md): imports only point down.

``units, errors`` <- ``host`` <- ``kvm`` <- ``guest`` <- (``explore``, ``sim``) <- ``viz`` <- ``lab``
<- ``cli``. Imports are read with :mod:`ast` from the source, wherever they stand (module level or
inside a function), so a function-local import that dodges a cycle is caught like any other. The
one exception is the model's hand-off to the display layer: an import inside a ``_repr_*_``
method.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

KIT = Path(__file__).resolve().parents[1] / "kit"

LAYERS = [["units", "errors"], ["host"], ["kvm"], ["guest"], ["explore", "sim"], ["viz"], ["lab"],
          ["cli", "__main__"]]
RANK = {name: i for i, group in enumerate(LAYERS) for name in group}


def module_name(path: Path) -> str:
    parts = path.relative_to(KIT.parent).with_suffix("").parts
    return ".".join(parts).removesuffix(".__init__")


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "kit" and len(parts) > 1 else None


def imports(path: Path):
    """(line, imported module, inside a function?) for every ``kit`` import of one file, with
    relative imports resolved; imports inside ``_repr_*_`` methods are left out."""
    tree = ast.parse(path.read_text(), filename=str(path))
    mod = module_name(path)
    package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    skip: set[int] = set()
    local: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            ids = {id(n) for n in ast.walk(fn)} - {id(fn)}
            (skip if fn.name.startswith("_repr_") else local).update(ids)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    targets = [".".join(base + [node.module])]
                else:
                    targets = [".".join(base + [a.name]) for a in node.names]
            elif node.module:
                targets = [node.module]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:
            if t == "kit" or t.startswith("kit."):
                yield node.lineno, t, id(node) in local


def all_imports():
    for path in sorted(KIT.rglob("*.py")):
        for line, target, local in imports(path):
            yield path, module_name(path), line, target, local


def test_every_kit_package_has_a_layer():
    """A new top-level package or module must be placed in the layer map first."""
    names = {p.stem if p.is_file() else p.name for p in KIT.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert names - set(RANK) == set()


def test_no_import_points_up():
    upward = [f"{m}:{line} imports {t}" for _, m, line, t, _ in all_imports()
              if layer_of(m) in RANK and layer_of(t) in RANK and RANK[layer_of(t)] > RANK[layer_of(m)]]
    assert upward == []


def test_no_import_cycles_between_modules():
    """The import graph of kit's modules (every import, wherever it stands) has no cycle
    (Tarjan's strongly connected components)."""
    graph: dict[str, set[str]] = {}
    for _, m, _, t, _ in all_imports():
        graph.setdefault(m, set()).add(t)
    index, low, on, stack, found = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(set(graph) | {t for ts in graph.values() for t in ts}):
        if v not in index:
            visit(v)
    assert found == []


#: Function-local imports inside one layer that defer a heavy optional dependency, not a cycle
#: (the cycle test above counts them like any other import), with the reason.
DEFERRED = {
    ("kit.viz", "kit.viz.dashboards"): "ipywidgets and jupyter_bokeh load only when a dashboard is asked for",
}


def test_no_function_local_import_within_a_layer():
    """A function-local import of kit code inside one layer would hide a cycle; the only ones
    allowed defer a heavy optional dependency (``DEFERRED``, each with its reason). Across
    layers a local import can only point down (the upward test), so it cannot close a cycle."""
    hidden = [f"{m}:{line} imports {t}" for _, m, line, t, local in all_imports()
              if local and layer_of(m) == layer_of(t) and (m, t) not in DEFERRED]
    assert hidden == []


@pytest.mark.parametrize("src, expect", [
    ("from ..viz.html import x\n", "kit.viz.html"),
    ("from . import uapi\n", "kit.kvm.uapi"),
    ("import kit.sim.api\n", "kit.sim.api"),
])
def test_the_reader_resolves_relative_imports(tmp_path, src, expect, monkeypatch):
    """The checker itself: relative imports resolve to the module they name."""
    pkg = tmp_path / "kit" / "kvm"
    pkg.mkdir(parents=True)
    f = pkg / "vm.py"
    f.write_text(src)
    monkeypatch.setattr(sys.modules[__name__], "KIT", tmp_path / "kit")
    assert [t for _, t, _ in imports(f)] == [expect]


def deferred_edges():
    """(module, target) of the names a module loads on first use (``DEFERRED`` tables: the
    lab's public names, the commands' functions; docs/architecture.md, "Deferred loading").
    They are imports like any other for the layers, only later."""
    from kit import explore, lab
    from kit.lab import commands
    yield from (("kit.lab", f"kit.lab.{m}") for m in lab.DEFERRED.values())
    yield from (("kit.explore", f"kit.explore.{m}") for m in explore.DEFERRED.values())
    yield from (("kit.lab.commands", t.partition(":")[0]) for t in commands.DEFERRED.values())
    from kit import kvm
    from kit.sim import api
    yield from (("kit.kvm", t) for t in kvm.DEFERRED.values())
    yield from (("kit.sim.api", t) for t in api.DEFERRED.values())


def test_deferred_loading_points_down_and_resolves():
    import importlib
    from kit import lab
    from kit.lab import commands
    edges = list(deferred_edges())
    upward = [f"{m} defers {t}" for m, t in edges
              if layer_of(t) in RANK and RANK[layer_of(t)] > RANK[layer_of(m)]]
    assert upward == []
    for name in lab.DEFERRED:
        assert getattr(lab, name) is getattr(importlib.import_module(f"kit.lab.{lab.DEFERRED[name]}"), name)
    for target in commands.DEFERRED.values():
        module, _, function = target.partition(":")
        assert not function or callable(getattr(importlib.import_module(module), function))
    from kit import explore
    for name, module in explore.DEFERRED.items():
        assert getattr(explore, name) is getattr(importlib.import_module(f"kit.explore.{module}"), name)
    assert set(explore.__all__) <= set(explore.DEFERRED) | {"SrcuScheme"}
    from kit import kvm
    from kit.sim import api
    for name, module in kvm.DEFERRED.items():
        assert getattr(kvm, name) is importlib.import_module(module)
    assert api._des() is importlib.import_module(api.DEFERRED["des"])
    assert all(layer_of(t) == layer_of(m) for m, t in edges if m in ("kit.kvm", "kit.sim.api"))


def test_deferred_names_load_once_and_fail_like_a_module():
    """``kit``, ``kit.lab`` and ``kit.explore`` build their PEP 562 ``__getattr__`` with one
    helper (``kit.units.deferred_attributes``): a deferred name is loaded and then bound on
    the package, a renamed one is its new name, a public name that is no deferred name is a
    submodule (``kit``: only ``lab``, ``viz`` and ``sim``), anything else raises the
    ``AttributeError`` a module raises."""
    import kit
    from kit import explore, lab
    from kit.units import deferred_attributes
    assert lab.__getattr__.__qualname__ == explore.__getattr__.__qualname__ == kit.__getattr__.__qualname__
    for module in (kit, lab, explore):
        with pytest.raises(AttributeError, match=rf"^module '{module.__name__}' has no attribute 'no_such_name'$"):
            getattr(module, "no_such_name")
        with pytest.raises(AttributeError, match=rf"^module '{module.__name__}' has no attribute '_private'$"):
            getattr(module, "_private")
    with pytest.raises(AttributeError, match=r"^module 'kit' has no attribute 'guest_side'$"):
        getattr(kit, "guest_side")
    assert kit.sim is sys.modules["kit.sim"]
    assert explore.SrcuScheme is explore.schemes.Srcu and "SrcuScheme" in dir(explore)
    assert lab.record is lab.__dict__["record"] and callable(lab.record)      # the function, bound
    assert set(lab.DEFERRED) <= set(dir(lab))
    # a deferred name's module that cannot load fails as the import does; a submodule that does
    # not exist is an attribute that does not
    space = {"__name__": "kit.lab"}
    get, names = deferred_attributes(space, {"gone": "no_such_module"}, renamed={"old": ("commands", "dispatch")})
    with pytest.raises(ModuleNotFoundError, match="kit.lab.no_such_module"):
        get("gone")
    with pytest.raises(AttributeError, match=r"^module 'kit.lab' has no attribute 'no_such_module'$"):
        get("no_such_module")
    assert get("commands") is sys.modules["kit.lab.commands"] and "commands" not in space
    assert get("old") is sys.modules["kit.lab.commands"].dispatch and space["old"] is get("old")
    assert names() == ["__name__", "gone", "old"]
