"""kit.host sits just above kit.units and kit.errors: it imports nothing from the layers above
it, except the one-line ``_repr_html_`` hand-offs to the display layer (read with ``ast``)."""
import ast
import pathlib

import kit.host

HOST_DIR = pathlib.Path(kit.host.__file__).parent
ALLOWED = ("kit.units", "kit.errors", "kit.host")


def _imports(path: pathlib.Path):
    """(module imported, enclosing function name or None, node) for every kit import."""
    tree = ast.parse(path.read_text())
    mod = ["kit", "host"] + ([] if path.stem == "__init__" else [path.stem])
    package = mod if path.stem == "__init__" else mod[:-1]
    parents = {id(c): p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}

    def function_of(node):
        while id(node) in parents:
            node = parents[id(node)]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node
        return None

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in targets:
            if t.startswith("kit"):
                yield t, function_of(node), node


def test_host_imports_only_units_errors_and_itself():
    bad = []
    for path in sorted(HOST_DIR.glob("*.py")):
        for target, fn, node in _imports(path):
            if target.startswith(ALLOWED):
                if fn is not None:
                    bad.append(f"{path.name}:{node.lineno} function-local import of {target}")
                continue
            if fn is None or not fn.name.startswith("_repr_"):
                bad.append(f"{path.name}:{node.lineno} imports {target}")
            elif not target.startswith("kit.viz") or len(fn.body) != 2 or \
                    not isinstance(fn.body[1], ast.Return):
                bad.append(f"{path.name}:{node.lineno} {fn.name} is not a one-line hand-off to kit.viz")
    assert not bad, bad


def test_host_module_has_no_import_cycle_with_viz():
    """kit.viz.state re-exports the host views; the host never imports it."""
    for path in HOST_DIR.glob("*.py"):
        assert not [t for t, _, _ in _imports(path) if t.startswith("kit.viz.state")], path.name
