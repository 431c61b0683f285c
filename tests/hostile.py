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
