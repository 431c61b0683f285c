"""Notebook parameters: one rule per parameter name, shared by every notebook and by the CLI.

A notebook's validation cell (right after its ``parameters`` cell) calls :func:`check` with its
parameters; a bad value raises ``ValueError`` naming the parameter and what is allowed, before
any work. The rules are plain functions of the value so they can be applied outside a kernel
too (``kit run`` checks values before a kernel starts).
"""
from __future__ import annotations

from ..host.policies import DIRECTMAP_POLICIES
from ..units import parse_size


def _int(lo=1, hi=None):
    def rule(name, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"{lo}..{hi}"
            raise ValueError(f"{name}: expected an integer {rng}, got {v!r}")
        return v
    return rule


def _ints(lo=1, hi=None):
    one = _int(lo, hi)

    def rule(name, v):
        if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)) or not v:
            raise ValueError(f"{name}: expected a non-empty list of integers, got {v!r}")
        return [one(f"{name}[{i}]", x) for i, x in enumerate(v)]
    return rule


def _size(name, v):
    try:
        n = parse_size(v)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{name}: {e}") from None
    if n <= 0:
        raise ValueError(f"{name}: must be positive, got {v!r}")
    return v


def _choice(allowed):
    def rule(name, v):
        if v not in allowed:
            raise ValueError(f"{name}: unknown {v!r}; allowed: {', '.join(map(str, allowed))}")
        return v
    return rule


def _choices(allowed, empty_ok=False):
    def rule(name, v):
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)) or (not v and not empty_ok):
            raise ValueError(f"{name}: expected a non-empty list from: {', '.join(allowed)}; got {v!r}")
        bad = [x for x in v if x not in allowed]
        if bad:
            raise ValueError(f"{name}: unknown {', '.join(map(repr, bad))}; allowed: {', '.join(allowed)}")
        return list(dict.fromkeys(v))
    return rule


def _fraction(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
        raise ValueError(f"{name}: expected a fraction 0..1, got {v!r}")
    return float(v)


def _bool(name, v):
    if not isinstance(v, bool):
        raise ValueError(f"{name}: expected True or False, got {v!r}")
    return v


def _text(name, v):
    if not isinstance(v, str):
        raise ValueError(f"{name}: expected a string, got {v!r}")
    return v


def _configs(name, v):
    from ..sim.calibrate import load_measurements
    n = len(load_measurements())
    if v == "all":
        return list(range(n))
    return _ints(0, n - 1)(name, v)


def _start(name, v):
    """A cost-parameter set to start from: "base" or an existing JSON file."""
    from pathlib import Path
    if v != "base" and not (isinstance(v, str) and Path(v).is_file()):
        raise ValueError(f"{name}: expected \"base\" or a parameter file that exists, got {v!r}")
    return v


RULES = {
    "policy": _choice(DIRECTMAP_POLICIES),
    "policies": _choices(DIRECTMAP_POLICIES), "des_policies": _choices(DIRECTMAP_POLICIES, empty_ok=True),
    "engine": _choice(("analytic", "des")),
    "workload": _choice(("lazy-accept", "conversions")),
    "guests": _int(1, 64), "vcpus": _int(1, 1024), "host_cores": _int(1, 4096),
    "guest_mem": _size, "host_mem": _size, "touched": _size, "fragmentation_guest_mem": _size,
    "seed": _int(0), "steps": _int(1, 1_000_000), "p4k": _fraction,
    "vcpu_sweep": _ints(1, 1024), "guest_sweep": _ints(1, 64), "core_sweep": _ints(1, 4096),
    "min_sev_asid": _int(1, 1007), "vms": _int(1, 4096),
    "pages": _int(1, 1 << 20), "runs": _int(1, 1000),
    "configs": _configs, "start": _start, "des": _bool, "outdir": _text, "title": _text,
    # KVM model notebooks (tour, memory-attributes, asid-mirroring)
    "vm_type": _choice(("sw-protected", "snp")), "owners": _choices(("userspace", "guest")),
    "npf_policies": _choices(("exit", "auto-convert")), "max_exits": _int(1, 1000),
    "gmem_hugepages": _bool, "max_sev_asid": _int(1, 1006),
}


def check(**values) -> dict:
    """Validate notebook parameters by name; returns them (lists de-duplicated, in order)."""
    out = {}
    for name, v in values.items():
        rule = RULES.get(name)
        if rule is None:
            raise ValueError(f"{name}: no validation rule for this parameter; known: {', '.join(sorted(RULES))}")
        out[name] = rule(name, v)
    return out
