"""Shared pieces of the hostile-input tests: the hostile values, a digest of a model's whole
state, and the check that a refused call changed nothing.

:func:`digest` walks every object reachable from its roots (a ``Host``, a ``Kvm``: RMP arrays,
direct-map levels and counts, frame owners, the ledger, attributes, memslots, guest_memfd
files, vCPUs, SEV state, ...) and hashes what it finds, so "nothing changed" means nothing at
all, not just the fields a test thought of.
"""
from __future__ import annotations

import errno as _errno
import hashlib
import math

import numpy as np
import hypothesis.strategies as st

from kit.errors import KvmError

# ------------------------------------------------------------------ hostile values
#: values of the wrong type for an int, size, bool or object parameter
WRONG_TYPES = (None, "1", "x", "", 1.5, float("nan"), float("inf"), np.float64(1.0), np.bool_(True),
               [1], (1,), {}, {1}, b"1", object(), 1j)
#: ints no count, index, address or size of the model accepts
BAD_INTS = (-1, -(2 ** 63), 2 ** 64, 2 ** 64 + 1, 2 ** 200, np.int64(-1), -4096)
BOOLS = (True, False, np.bool_(False))
HOSTILE = WRONG_TYPES + BAD_INTS + BOOLS


# ------------------------------------------------------------------ the whole state
def digest(*roots) -> str:
    """A hash of everything reachable from ``roots`` (object attributes, containers, numpy
    arrays, generator states). Functions and classes count by name only."""
    h = hashlib.blake2b(digest_size=20)
    seen: dict[int, int] = {}
    alive = []          # temporaries (field dicts, generator states) stay alive: ids are not reused
    stack = list(reversed(roots))
    while stack:
        o = stack.pop()
        if isinstance(o, _Tag):
            h.update(o.text)
            continue
        if o is None or isinstance(o, (bool, int, str, bytes, complex)):
            h.update(f"{type(o).__name__}:{o!r};".encode())
            continue
        if isinstance(o, float):
            h.update(f"f:{'nan' if math.isnan(o) else repr(o)};".encode())
            continue
        if isinstance(o, np.ndarray):
            h.update(f"a:{o.dtype}:{o.shape};".encode())
            h.update(np.ascontiguousarray(o).tobytes())
            continue
        if isinstance(o, np.generic):
            h.update(f"n:{o.dtype}:{o.item()!r};".encode())
            continue
        if isinstance(o, type) or callable(o) and not hasattr(o, "__dict__") or _is_function(o):
            h.update(f"c:{getattr(o, '__qualname__', type(o).__name__)};".encode())
            continue
        oid = id(o)
        if oid in seen:
            h.update(f"ref:{seen[oid]};".encode())
            continue
        seen[oid] = len(seen)
        alive.append(o)
        if isinstance(o, np.random.Generator):
            stack.append(o.bit_generator.state)
            continue
        if isinstance(o, dict):
            items = list(o.items())
            stack.append(_Tag(f"}}{len(items)};"))
            for k, v in reversed(items):
                stack.extend((v, k))
            stack.append(_Tag("{"))
            continue
        if isinstance(o, (list, tuple)):
            stack.append(_Tag(f"]{len(o)};"))
            stack.extend(reversed(o))
            stack.append(_Tag(f"{type(o).__name__}["))
            continue
        if isinstance(o, (set, frozenset)):
            stack.append(_Tag(f">{len(o)};"))
            stack.extend(sorted(o, key=lambda x: (type(x).__name__, repr(x)), reverse=True))
            stack.append(_Tag("<"))
            continue
        fields = dict(vars(o)) if hasattr(o, "__dict__") else {}
        for slot in getattr(type(o), "__slots__", ()):
            if hasattr(o, slot):
                fields[slot] = getattr(o, slot)
        stack.append(fields)
        stack.append(_Tag(f"o:{type(o).__qualname__};"))
    return h.hexdigest()


class _Tag:
    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text.encode()


def _is_function(o) -> bool:
    return type(o).__name__ in ("function", "method", "builtin_function_or_method", "method-wrapper")


# ------------------------------------------------------------------ one refused call
#: what a refusal may raise: a bad argument (naming it), or the kernel's errno
REFUSALS = (ValueError, TypeError, KvmError)


def refused(fn, *roots, name: str | None = None, codes: bool = False, before: str | None = None):
    """Call ``fn``; it must be refused (a :data:`REFUSALS` exception, a ValueError/TypeError
    naming ``name``; with ``codes``, also a non-zero return code) and change nothing reachable
    from ``roots`` (``before``: their digest, if known). Returns a description of what went
    wrong, or None."""
    before = digest(*roots) if before is None else before
    try:
        got = fn()
    except REFUSALS as e:
        if name and not isinstance(e, KvmError) and name not in str(e):
            return f"{type(e).__name__} does not name {name!r}: {e}"
        after = digest(*roots)
        return None if after == before else f"refused with {type(e).__name__} ({e}) but the state changed"
    except Exception as e:   # noqa: BLE001 (anything else is the finding)
        return f"{type(e).__name__}: {e}"
    if codes and isinstance(got, int) and not isinstance(got, bool) and got != 0:
        return None if digest(*roots) == before else f"returned {got} but the state changed"
    return f"accepted (returned {got!r})"


def is_errno(e: BaseException, err: int = _errno.EINVAL) -> bool:
    return isinstance(e, KvmError) and e.errno == err


def hostile_for(kind: str):
    """Random hostile values for a parameter of ``kind`` (the kinds of
    :mod:`tests.test_hostile_api`): never a value that kind accepts."""
    wrong = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
                      st.binary(max_size=2), st.floats(-10, 10).map(np.float64), st.just(object()),
                      st.dictionaries(st.integers(0, 2), st.integers(0, 2), max_size=2))
    bad_int = st.one_of(st.integers(max_value=-1), st.integers(min_value=2 ** 64, max_value=2 ** 200),
                        st.integers(-(2 ** 63), -1).map(np.int64))
    bools = st.sampled_from([True, False, np.bool_(True), np.bool_(False)])
    if kind in ("int", "int?"):
        s = st.one_of(wrong, bad_int, bools, st.lists(st.integers(0, 3), min_size=1, max_size=3))
    elif kind in ("bool", "bool?"):
        s = st.one_of(wrong, st.integers(min_value=2), st.integers(max_value=-1),
                      st.lists(st.booleans(), min_size=1, max_size=2))
    elif kind == "seq":
        s = st.one_of(st.none(), st.floats(), bools, st.integers(),
                      st.lists(st.one_of(st.integers(max_value=-1), st.integers(min_value=2 ** 40),
                                         st.floats(), bools), min_size=1, max_size=3))
    else:       # an object or a name: random text could spell a valid name ("none", "all")
        s = st.one_of(wrong, bad_int, bools).filter(lambda v: not isinstance(v, str))
    if kind.endswith("?"):
        s = s.filter(lambda v: v is not None)
    return s


# ------------------------------------------------------------------ the command line's argument space
#: Values a careless or hostile user types, by what the option takes (the CLI fuzzer,
#: tests/lab/test_hostile_cli.py, and benchmarks/hostile_cli.py draw from these). Paths are
#: relative to a folder :func:`cli_fixtures` prepared; nothing here names a path outside it but
#: ``/`` and ``/proc`` (a folder, and a place nobody can create a file).
NOT_UTF8 = "caf\udce9"                  # what Python makes of the Latin-1 bytes b"caf\xe9" in argv
CLI_INTS = ("0", "-1", "1", "7", "10000000", "1" + "0" * 30, "9" * 50, "١٢", "１２", "1_0", "1e3", "0x10", "nan",
            "inf", "", " ", "3.5", NOT_UTF8)
CLI_SIZES = ("0", "-1", "1", "4KiB", "2MiB", "3.5MiB", "64MiB", "1GiB", "1PiB", "1024TiB", "65536TiB",
             "9" * 80 + "TiB", "1.5XiB", "١GiB", "nan", "", NOT_UTF8)
CLI_TEXT = ("", " ", "x", "none", "all", "split-on-demand", "presplit-4k", "invalidate-4k-flush",
            "split-on-demand-collapse", "oops", "analytic", "des", "fault-in", "conversions", "'; import os",
            "('\", __import__(\"os\").system(\"exit 3\"), \"',)", "b'x'", "{1, 2}", "=1+1", "é", NOT_UTF8,
            "x" * 5000)
CLI_PATHS = ("", ".", "/", "FOLDER", "FOLDER.html", "FILE", "FILE/sub/out.html", "missing/sub/out.html",
             "out.html", "out.json", "/proc/kit-hostile.html", "dir.ipynb", "bad.ipynb", "p_nan.json",
             "p_str.json", "p_zero.json", "p_neg.json", "p_missing.json", "nonkit.json", "notutf8.json",
             "empty.json", NOT_UTF8 + ".html")
CLI_NOTEBOOKS = ("tour", "probe.ipynb", "bad.ipynb", "dir.ipynb", "missing.ipynb", "", "../x", "FILE", NOT_UTF8)
CLI_GRIDS = ("x=1", "x=1,2", "x=1,1,01", "x=١", "pages=1", "policy=none,oops", "host_mem=1PiB", "=", "x", "x=",
             "x=" + ",".join(map(str, range(100))), "x=[1,(2,)]", "text=('\",)", NOT_UTF8 + "=1")
CLI_PARAMS = (("x", "1"), ("x", "١"), ("x", "nan"), ("outdir", "X"), ("timeout", "5"), ("text", "('\",)"),
              ("text", "b'x'"), ("label", "=cmd"), ("nope", "1"), ("x", NOT_UTF8), ("pages", "10000000"),
              ("host_mem", "1024TiB"))
CLI_JUNK = ("--", "-", "--help-me", "-x", "--out=", "--yes", NOT_UTF8, "\u202e", "%s%n")


def cli_fixtures(folder) -> None:
    """The files :data:`CLI_PATHS` names, in ``folder``: folders, a file, a malformed notebook,
    a small notebook (``probe.ipynb``), cost-parameter files broken in each way."""
    import json
    import shutil
    from pathlib import Path
    folder = Path(folder)
    root = Path(__file__).resolve().parents[1]
    for d in ("FOLDER", "FOLDER.html", "dir.ipynb"):
        (folder / d).mkdir(exist_ok=True)
    (folder / "FILE").write_text("a file")
    (folder / "bad.ipynb").write_text('{"cells": [')
    shutil.copy(root / "tests" / "notebooks" / "data" / "probe.ipynb", folder / "probe.ipynb")
    base = json.loads((root / "data" / "cost_params.json").read_text())

    def params(name, change):
        data = json.loads(json.dumps(base))
        change(data)
        (folder / name).write_text(json.dumps(data))

    def setv(pname, v):
        return lambda d: [p.update(value=v) for p in d["params"] if p["name"] == pname]
    params("p_nan.json", setv("dram_gbps_per_socket", float("nan")))
    params("p_str.json", setv("dram_gbps_per_socket", "fast"))
    params("p_zero.json", setv("dram_gbps_per_socket", 0))
    params("p_neg.json", setv("zero_gbps_core", -1))
    params("p_missing.json", lambda d: d["params"].pop(0))
    (folder / "nonkit.json").write_text('{"a": 1}')
    (folder / "notutf8.json").write_bytes(b"\xff\xfe")
    (folder / "empty.json").write_text("")


def cli_value(option: str, draw_from) -> str:
    """A hostile value for ``option`` (its kind guessed from its name); ``draw_from(seq)``
    picks one element (hypothesis's ``st.sampled_from`` draw, or ``random.choice``)."""
    o = option.lstrip("-")
    if o in ("out", "o", "params", "start", "residuals"):
        return draw_from(CLI_PATHS)
    if o in ("mem", "guest-mem", "host-mem"):
        return draw_from(CLI_SIZES)
    if o in ("grid",):
        return draw_from(CLI_GRIDS)
    if o in ("steps", "seed", "cores", "guests", "vcpus", "host-cores", "timeout", "seeds", "workers", "bound",
             "max-schedules", "time-budget"):
        return draw_from(CLI_INTS)
    if o == "guest":
        return draw_from(CLI_INTS) + ":" + draw_from(CLI_SIZES)
    return draw_from(CLI_TEXT + CLI_INTS)
