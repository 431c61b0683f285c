"""Step 2 of a run: parameters read and checked, once, before any kernel starts.

Names are checked against the notebook's ``parameters`` cell (:class:`~kit.lab.notebook.Notebook`
holds papermill's inspection of it); values by executing the notebook's own validation cell on
the defaults overridden by the given values, in this process (the kernel runs the same cell
again as the notebook's first step). Values given as text (``-p NAME VALUE``, ``--grid
NAME=V1,V2``) are read by the type of the parameter's default.

One list syntax everywhere (:data:`LIST_SYNTAX`): a list value is its items separated by ``;``
(``-p vcpu_sweep "16;64"``), each read by the type of the default's items, or a list literal
(``-p vcpu_sweep "[16, 64]"``); a grid axis is its values separated by ``,`` outside brackets
and quotes, so a list parameter is swept over several lists with
``--grid vcpu_sweep=16;64,32;128`` (two runs: ``[16, 64]`` and ``[32, 128]``).
:func:`format_value` writes a value in this syntax and :func:`parse_value` reads it back.

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


#: The list syntax of ``-p`` and ``--grid`` (shown in their help and in docs/lab.md).
LIST_SYNTAX = ("a list is its items separated by ';' (16;64) or a literal ([16, 64]); "
               "--grid values are separated by ',' (vcpu_sweep=16;64,32;128 sweeps two lists)")
#: What separates the items of a list value, and the values of a grid axis.
ITEM_SEP, VALUE_SEP = ";", ","

_SCALARS = {"int": int, "float": float, "bool": bool, "str": str}


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError


def _scalar(kind: str, text: str):
    """``text`` read as ``kind`` (int, float, bool, str; anything else: a literal or the text)."""
    if kind == "int":
        return parse_int(text)                  # ASCII digits only: "cannot read '١٢' as int"
    if kind == "float":
        if not text.isascii():                  # float() reads other scripts' digits too
            raise ValueError
        return float(text)
    if kind == "bool":
        return _bool(text)
    if kind == "str":
        return text
    try:
        return _literal(text)
    except (ValueError, SyntaxError):
        return text


def item_kind(info: dict) -> str:
    """The type of a list parameter's items, from its default's items (``int`` for
    ``[8, 16]``, ``float`` when ints and floats mix, ``str``, ``bool``); ``None`` when the
    default is empty or mixes other types (items are then literals, or else text)."""
    try:
        default = ast.literal_eval(info.get("default") or "None")
    except (ValueError, SyntaxError, RecursionError, MemoryError):
        return "None"
    if type(default) not in (list, tuple) or not default:
        return "None"
    kinds = {type(x).__name__ for x in default}
    if kinds <= {"int", "float"} and "float" in kinds:
        return "float"
    return kinds.pop() if len(kinds) == 1 and kinds <= set(_SCALARS) else "None"


def _list(name: str, text: str, info: dict) -> list:
    try:
        whole = _literal(text)
    except (ValueError, SyntaxError):
        if text.lstrip().startswith("["):
            raise
        whole = None
    if type(whole) is list:
        return whole
    if isinstance(whole, (tuple, dict, set, frozenset, bytes)):
        raise ValueError(f"{name}: expected a list [...] or items separated by ';', got {text!r}")
    items = [t.strip() for t in text.split(ITEM_SEP)]
    if not text.strip() or any(not t for t in items):
        raise ValueError(f"{name}: an empty item in {text!r} (a list is A;B;... or [A, B, ...]; [] is empty)")
    kind = item_kind(info)
    return [_scalar(kind, t) for t in items]


def parse_value(name: str, text: str, info: dict):
    """A parameter value from text, by the type of the notebook's default (:data:`LIST_SYNTAX`
    for lists: ``16;64`` or ``[16, 64]``)."""
    kind = info.get("inferred_type_name", "None")
    default = info.get("default")
    if type(text) is not str:
        raise ValueError(f"{name}: expected text, got {type(text).__name__}")
    check_value(name, text)                     # UTF-8 text (argv may hold undecodable bytes)
    try:
        if kind in ("list", "tuple"):
            v = _list(name, text, info)
        elif kind == "dict":
            v = _literal(text)
            if type(v) is not dict:
                raise ValueError(f"{name}: expected a dict {{...}}, got {text!r}")
        else:
            v = _scalar(kind, text)
    except (ValueError, SyntaxError) as e:
        if str(e).startswith(f"{name}:"):
            raise
        raise ValueError(f"{name}: cannot read {text!r} as {kind} (default {default})") from None
    return check_value(name, v)


def _literal_text(value) -> str:
    """A Python literal of ``value`` (lists, dicts, str, numbers, bool, None)."""
    return repr(value)


def format_value(value, info: dict, *, grid: bool = False) -> str:
    """``value`` as text that :func:`parse_value` reads back as it (:data:`LIST_SYNTAX`): a list
    as ``A;B`` where its items allow, else as a literal. ``grid``: as one value of a ``--grid``
    axis (text that holds a separator, a bracket or a quote is written as a quoted literal)."""
    kind = info.get("inferred_type_name", "None")
    check_value("value", value)
    if kind in ("list", "tuple") and type(value) is list:
        short = ITEM_SEP.join(repr(x) if type(x) is float else str(x) for x in value)
        ok = value and _reads_back(short, value, info) and (not grid or _plain(short))
        return short if ok else _literal_text(value)
    if kind == "str" and type(value) is str:
        return value if not grid or _plain(value) else _literal_text(value)
    if kind in _SCALARS and type(value) is _SCALARS[kind]:
        return repr(value) if kind == "float" else str(value)
    if type(value) is str and not _reads_back_literal(value) and (not grid or _plain(value)):
        return value
    return _literal_text(value)


#: characters that make a text mean more than itself in a grid axis (separators, brackets, quotes)
_GRID_SPECIAL = frozenset("'\"[]{}(),\\")


def _plain(text: str) -> bool:
    """Text that a grid axis reads as it is: not empty, no edge spaces, nothing special."""
    return bool(text) and text == text.strip() and not (_GRID_SPECIAL & set(text))


def _unquote(text: str):
    try:
        v = ast.literal_eval(text)
    except (ValueError, SyntaxError, RecursionError, MemoryError):
        return None
    return v if type(v) is str else None


def _reads_back(text: str, value, info: dict) -> bool:
    try:
        return canonical(parse_value("value", text, info)) == canonical(value)
    except ValueError:
        return False


def _reads_back_literal(text: str) -> bool:
    """Whether an untyped parameter would read ``text`` as a literal rather than as text."""
    try:
        _literal(text)
    except (ValueError, SyntaxError):
        return False
    return True


def _split_values(text: str) -> list[str]:
    """A grid axis' values: ``text`` split at the ``,`` that are outside brackets and quotes."""
    out, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = ""
        elif c in "'\"":
            quote = c
        elif c in "[{(":
            depth += 1
        elif c in "]})":
            depth = max(0, depth - 1)
        elif c == VALUE_SEP and depth == 0:
            out.append(text[start:i])
            start = i + 1
        i += 1
    out.append(text[start:])
    return out


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


def grid_specs(grid, info: dict | None = None) -> list[str]:
    """A grid as ``NAME=V1,V2`` texts (:data:`LIST_SYNTAX`): a dict NAME -> values is written
    out by :func:`format_value` (``info``: the notebook's parameters, for their types); a list
    of texts is returned as it is."""
    if not isinstance(grid, dict):
        return list(grid or [])
    info = info or {}
    return [f"{k}={VALUE_SEP.join(_text(x, info.get(k)) for x in v)}" for k, v in grid.items()]


def _text(v, info: dict | None = None) -> str:
    if info is None:
        info = {"inferred_type_name": "list" if isinstance(v, list) else type(v).__name__}
    try:
        return format_value(v, info, grid=True)
    except ValueError:
        return str(v)


def _axis_from_text(spec: str, info: dict) -> tuple[str, list]:
    name, sep, values = spec.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"grid: expected NAME=V1,V2,..., got {spec!r}")
    if name not in info:
        raise ValueError(f"grid: unknown parameter {name!r}; allowed: {', '.join(info)}")
    texts = _split_values(values)
    if not values or any(not t.strip() for t in texts):
        raise ValueError(f"grid: {name} has an empty value in {spec!r}")
    kind = info[name].get("inferred_type_name")
    vals = []
    for t in texts:
        t = t.strip()
        if kind == "str" and t[:1] in "'\"" and _unquote(t) is not None:
            vals.append(check_value(name, _unquote(t)))     # a quoted text: a ',' inside it
        else:
            vals.append(parse_value(name, t, info[name]))
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
    """``["NAME=V1,V2", ...]`` (:data:`LIST_SYNTAX`: ``policies=a;b,c`` or
    ``policies=['a', 'b'],['c']`` is two lists), or a dict NAME -> values
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


def type_text(info: dict) -> str:
    """A parameter's type as ``kit params`` shows it: ``int``, ``str``, ``list of int``, ..."""
    kind = info.get("inferred_type_name", "None")
    if kind in ("list", "tuple"):
        item = item_kind(info)
        return "list" if item == "None" else f"list of {item}"
    return "any" if kind == "None" else kind


def parameter_rows(nb: Notebook, rule=None) -> list[dict]:
    """One row per parameter of ``nb``: name, type (:func:`type_text`), default, the values
    its rule allows and the notebook's help. ``rule(name, notebook)``: the rule a value is
    checked by (a :class:`~kit.units.Param`, or a function whose docstring's first line says
    what it allows), as :func:`kit.lab.validate.rule`."""
    rows = []
    for name, info in nb.parameters.items():
        r = rule(name, nb.name) if rule is not None else None
        if r is None:
            allowed = ""
        elif hasattr(r, "bounds_text"):
            one = r.item if r.kind == "list" else r
            unit = f" {one.unit}" if one.unit and one.kind in ("int", "float") and one.unit != "fraction" else ""
            allowed = r.bounds_text() + unit
        else:
            allowed = ((r.__doc__ or "").strip().splitlines() or [""])[0]
        rows.append({"name": name, "type": type_text(info), "default": info.get("default"),
                     "allowed": allowed, "help": info.get("help") or ""})
    return rows
