"""Step 2 of a run: parameters read and checked, once, before any kernel starts.

Names are checked against the notebook's ``parameters`` cell (:class:`~kit.lab.notebook.Notebook`
holds papermill's inspection of it); values by executing the notebook's own validation cell on
the defaults overridden by the given values, in this process (the kernel runs the same cell
again as the notebook's first step). Values given as text (``-p NAME VALUE``, ``--grid
NAME=V1,V2``) are read by the type of the parameter's default.
"""
from __future__ import annotations

import ast
import itertools

from .notebook import Notebook, inspect


def parse_value(name: str, text: str, info: dict):
    """A parameter value from text, by the type of the notebook's default."""
    kind = info.get("inferred_type_name", "None")
    default = info.get("default")
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if kind in ("list", "dict", "tuple"):
            v = ast.literal_eval(text)
            if kind == "list" and not isinstance(v, list):
                raise ValueError
            return v
        if kind == "str":
            return text
        # untyped: the default's literal type, or a literal, or text
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    except (ValueError, SyntaxError):
        raise ValueError(f"{name}: cannot read {text!r} as {kind} (default {default})") from None


def check_names(nb: Notebook, params: dict) -> None:
    """Every name in ``params`` is one of the notebook's parameters (``ValueError`` otherwise)."""
    bad = sorted(set(params) - set(nb.parameters))
    if bad:
        raise ValueError(f"parameters: unknown {', '.join(bad)} for {nb.name}; allowed: {', '.join(nb.parameters)}")


def parse_pairs(nb: Notebook, pairs) -> dict:
    """``[(NAME, TEXT), ...]`` (``kit run -p NAME VALUE``) -> values, names checked first."""
    params = {}
    for name, text in pairs:
        check_names(nb, {name: None})
        params[name] = parse_value(name, text, nb.parameters[name])
    return params


def validate(notebook, params: dict | None = None) -> dict:
    """Names against the parameters cell, values through the notebook's validation cell;
    returns the parameters. ``notebook``: a :class:`Notebook` or anything
    :func:`~kit.lab.notebook.inspect` takes. Raises ``ValueError`` naming the parameter."""
    nb = inspect(notebook)
    params = dict(params or {})
    check_names(nb, params)
    if nb.validation is None:
        return params
    ns: dict = {}
    for name, i in nb.parameters.items():
        try:
            ns[name] = ast.literal_eval(i["default"])
        except (ValueError, SyntaxError):
            pass
    ns.update(params)
    try:
        exec(compile(nb.validation, f"<{nb.name} validation cell>", "exec"), ns)
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"parameters: the validation cell of {nb.name} failed: {type(e).__name__}: {e}") from None
    return params


def grid_specs(grid) -> list[str]:
    """A grid as ``NAME=V1,V2`` texts: a dict NAME -> values is written out (list values as
    items separated by ``;``); a list of texts is returned as it is."""
    if not isinstance(grid, dict):
        return list(grid or [])
    return [f"{k}={','.join(_text(x) for x in v)}" for k, v in grid.items()]


def _text(v) -> str:
    if isinstance(v, list):
        return ";".join(map(str, v))
    return str(v)


def parse_grid(specs, info: dict, seeds: int | None = None) -> list[dict]:
    """``["NAME=V1,V2", ...]`` (a list value is written as a literal: ``policies=['a'],['b']``
    is not supported; use ``policies=a;b`` for lists of strings) -> every combination.
    ``info``: the notebook's parameters (:attr:`Notebook.parameters`)."""
    axes: dict[str, list] = {}
    for spec in specs or []:
        name, sep, values = spec.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"grid: expected NAME=V1,V2,..., got {spec!r}")
        if name not in info:
            raise ValueError(f"grid: unknown parameter {name!r}; allowed: {', '.join(info)}")
        if name in axes:
            raise ValueError(f"grid: {name} given twice")
        texts = [v for v in values.split(",")]
        if not values or any(not t.strip() for t in texts):
            raise ValueError(f"grid: {name} has an empty value in {spec!r}")
        if info[name].get("inferred_type_name") == "list":
            vals = [[x for x in t.split(";") if x] if not t.strip().startswith("[") else parse_value(name, t, info[name])
                    for t in texts]
        else:
            vals = [parse_value(name, t.strip(), info[name]) for t in texts]
        axes[name] = vals
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ValueError(f"seeds: expected an integer >= 1, got {seeds!r}")
        if "seed" not in info:
            raise ValueError("seeds: the notebook has no 'seed' parameter")
        if "seed" in axes:
            raise ValueError("seeds: seed is already a grid axis")
        axes["seed"] = list(range(seeds))
    if not axes:
        raise ValueError("grid: empty; give at least one --grid NAME=V1,V2,... or --seeds N")
    names = list(axes)
    return [dict(zip(names, combo)) for combo in itertools.product(*(axes[n] for n in names))]
