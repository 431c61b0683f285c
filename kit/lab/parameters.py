"""Step 2 of a run: parameters read and checked, once, before any kernel starts.

Names are checked against the notebook's ``parameters`` cell (:class:`~kit.lab.notebook.Notebook`
holds papermill's inspection of it); values by executing the notebook's own validation cell on
the defaults overridden by the given values, in this process (the kernel runs the same cell
again as the notebook's first step). Values given as text (``-p NAME VALUE``, ``--grid
NAME=V1,V2``) are read by the type of the parameter's default.

Parameter values never become code. papermill writes each value into the notebook as Python
source, and only some types are written as a literal: ``str``, ``int``, ``float``, ``bool``,
``None`` and lists and dicts of these (``papermill.translators.Translator.translate``); any
other object (a tuple, bytes, a set, ...) is written as ``"<its str()>"`` without escaping, so
a tuple holding a quote runs as code in the kernel. :func:`check_value` lets through exactly
the types papermill writes as literals (exact types, finite floats, UTF-8 text, string dict
keys, nesting at most :data:`MAX_DEPTH` deep) and refuses anything else with a ``ValueError``
naming the parameter; every path to a kernel (``-p``, ``--grid``, :func:`kit.lab.run`,
:func:`kit.lab.sweep`, :func:`kit.lab.execute.execute` itself) goes through it.
"""
from __future__ import annotations

import ast
import itertools
import math

from ..units import parse_int
from .limits import SWEEP_RUNS, SWEEP_SEEDS
from .notebook import Notebook, canonical, inspect

#: How deep lists and dicts may nest in a parameter value.
MAX_DEPTH = 32

#: What a parameter value may be made of (exact types; no subclasses).
SAFE_TYPES = "str, int, float, bool, None, and lists and dicts (with str keys) of these"


def _where(name: str, path: str) -> str:
    return f"{name}{path}"


def check_value(name: str, value, _path: str = "", _depth: int = 0):
    """``value`` if papermill writes it into a notebook as a literal that reads back as the same
    value; else ``ValueError`` naming the parameter (and the item, e.g. ``x[2]``). Exact types
    only: a ``str`` subclass could change how it is escaped, a numpy scalar is not a literal."""
    t = type(value)
    where = _where(name, _path)
    if value is None or t is bool:
        return value
    if t is int:
        try:
            repr(value)
        except ValueError:          # more digits than int <-> str converts (sys.int_info)
            raise ValueError(f"{where}: an integer too long to write as a literal") from None
        return value
    if t is float:
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a finite number")
        return value
    if t is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where}: text that is not valid UTF-8 ({value!r})") from None
        return value
    if t is list or t is dict:
        if _depth >= MAX_DEPTH:
            raise ValueError(f"{name}: lists and dicts nested more than {MAX_DEPTH} deep")
        if t is list:
            for i, v in enumerate(value):
                check_value(name, v, f"{_path}[{i}]", _depth + 1)
        else:
            for k, v in value.items():
                if type(k) is not str:
                    raise ValueError(f"{where}: dict key {k!r} is a {type(k).__name__}; dict keys must be str")
                check_value(name, k, f"{_path}[{k!r}]", _depth + 1)
                check_value(name, v, f"{_path}[{k!r}]", _depth + 1)
        return value
    hint = ""
    if t is tuple:
        hint = "; write it as a list [...]"
    elif t is bytes:
        hint = "; write it as text"
    raise ValueError(f"{where}: a {t.__name__} cannot be passed to a notebook (allowed: {SAFE_TYPES}){hint}")


def check_params(params: dict) -> dict:
    """Every value of ``params`` through :func:`check_value`; returns ``params``."""
    for name, value in params.items():
        if type(name) is not str:
            raise ValueError(f"parameters: a parameter name must be text, got {name!r}")
        check_value(name, value)
    return params


def _literal(text: str):
    """``ast.literal_eval`` of ``text``; a too deep or too large literal is a ``ValueError``."""
    try:
        return ast.literal_eval(text)
    except (RecursionError, MemoryError, OverflowError):
        raise ValueError("too deeply nested or too large") from None


def parse_value(name: str, text: str, info: dict):
    """A parameter value from text, by the type of the notebook's default."""
    kind = info.get("inferred_type_name", "None")
    default = info.get("default")
    if type(text) is not str:
        raise ValueError(f"{name}: expected text, got {type(text).__name__}")
    check_value(name, text)                     # UTF-8 text (argv may hold undecodable bytes)
    try:
        if kind == "int":
            v = parse_int(text)                  # ASCII digits only: "cannot read '١٢' as int"
        elif kind == "float":
            if not text.isascii():               # float() reads other scripts' digits too
                raise ValueError
            v = float(text)
        elif kind == "bool":
            if text.lower() in ("true", "1", "yes"):
                v = True
            elif text.lower() in ("false", "0", "no"):
                v = False
            else:
                raise ValueError
        elif kind in ("list", "dict", "tuple"):
            v = _literal(text)
            if kind in ("list", "tuple") and type(v) is not list:
                raise ValueError(f"{name}: expected a list [...], got {text!r}")
            if kind == "dict" and type(v) is not dict:
                raise ValueError(f"{name}: expected a dict {{...}}, got {text!r}")
        elif kind == "str":
            v = text
        else:
            # untyped: a literal, or else the text itself
            try:
                v = _literal(text)
            except (ValueError, SyntaxError):
                v = text
    except (ValueError, SyntaxError) as e:
        if str(e).startswith(f"{name}:"):
            raise
        raise ValueError(f"{name}: cannot read {text!r} as {kind} (default {default})") from None
    return check_value(name, v)


def check_names(nb: Notebook, params: dict) -> None:
    """Every name in ``params`` is one of the notebook's parameters (``ValueError`` otherwise)."""
    bad = sorted(map(str, set(params) - set(nb.parameters)))
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
    check_params(params)
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
    items separated by ``;``); a list of texts is returned as it is. (:func:`parse_grid` takes
    a dict's values as they are; this is for showing a grid.)"""
    if not isinstance(grid, dict):
        return list(grid or [])
    return [f"{k}={','.join(_text(x) for x in v)}" for k, v in grid.items()]


def _text(v) -> str:
    if isinstance(v, list):
        return ";".join(map(str, v))
    return str(v)


def _axis_from_text(spec: str, info: dict) -> tuple[str, list]:
    name, sep, values = spec.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"grid: expected NAME=V1,V2,..., got {spec!r}")
    if name not in info:
        raise ValueError(f"grid: unknown parameter {name!r}; allowed: {', '.join(info)}")
    texts = [v for v in values.split(",")]
    if not values or any(not t.strip() for t in texts):
        raise ValueError(f"grid: {name} has an empty value in {spec!r}")
    if info[name].get("inferred_type_name") == "list":
        vals = [check_value(name, [x for x in t.split(";") if x]) if not t.strip().startswith("[")
                else parse_value(name, t, info[name]) for t in texts]
    else:
        vals = [parse_value(name, t.strip(), info[name]) for t in texts]
    return name, vals


def _axis_from_values(name, values, info: dict) -> tuple[str, list]:
    if type(name) is not str or name not in info:
        raise ValueError(f"grid: unknown parameter {name!r}; allowed: {', '.join(info)}")
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise ValueError(f"grid: {name}: expected a list of values, got {values!r}")
    vals = list(values)
    if not vals:
        raise ValueError(f"grid: {name} has no values")
    return name, [check_value(name, v) for v in vals]


def dedupe(name: str, values: list, notes: list | None = None) -> list:
    """``values`` without repeats, by canonical value (``1,1,01`` is one value ``1``: one run,
    one row), in first-seen order; each repeat dropped is described in ``notes``."""
    seen: dict[str, int] = {}
    out = []
    for v in values:
        c = canonical(v)
        if c in seen:
            seen[c] += 1
            continue
        seen[c] = 1
        out.append(v)
    if notes is not None:
        for v in out:
            n = seen[canonical(v)]
            if n > 1:
                notes.append(f"grid: {name}={canonical(v)} given {n} times; run once")
    return out


def parse_grid(specs, info: dict, seeds: int | None = None, notes: list | None = None) -> list[dict]:
    """``["NAME=V1,V2", ...]`` (a list value is written as a literal: ``policies=['a'],['b']``
    is not supported; use ``policies=a;b`` for lists of strings), or a dict NAME -> values
    (values taken as they are) -> every combination, each once: repeated values of an axis are
    dropped (:func:`dedupe`, described in ``notes`` when given). Every value passes
    :func:`check_value`. ``info``: the notebook's parameters (:attr:`Notebook.parameters`)."""
    axes: dict[str, list] = {}
    pairs = ([_axis_from_values(k, v, info) for k, v in specs.items()] if isinstance(specs, dict)
             else [_axis_from_text(spec, info) for spec in specs or []])
    for name, vals in pairs:
        if name in axes:
            raise ValueError(f"grid: {name} given twice")
        axes[name] = dedupe(name, vals, notes)
    if seeds is not None:
        SWEEP_SEEDS.check(seeds)
        if "seed" not in info:
            raise ValueError("seeds: the notebook has no 'seed' parameter")
        if "seed" in axes:
            raise ValueError("seeds: seed is already a grid axis")
        axes["seed"] = list(range(seeds))
    if not axes:
        raise ValueError("grid: empty; give at least one --grid NAME=V1,V2,... or --seeds N")
    names = list(axes)
    runs = math.prod(len(v) for v in axes.values())
    if runs > SWEEP_RUNS.max:
        raise ValueError(f"grid: {runs} runs ({' x '.join(f'{len(v)} {n}' for n, v in axes.items())}); "
                         f"at most {SWEEP_RUNS.max} (the limit: {SWEEP_RUNS.why})")
    return [dict(zip(names, combo)) for combo in itertools.product(*(axes[n] for n in names))]
