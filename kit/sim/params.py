"""Cost parameters: what each recorded cost event takes, with the source of every figure.

A parameter is either taken from a source (a published figure: the mail or kernel code it
comes from is named in its ``source``), an assumption named as such (nothing published
measures it: the value is a round guess whose influence the calibration notebook shows), or
fitted by ``kit calibrate`` to ``data/measurements.csv``. ``docs/cost-figures.md`` lists every
cost figure with its source, ``docs/sources.md`` the measurements'. The default set is
``data/cost_params.json``; ``kit calibrate`` rewrites it.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "data"
DEFAULT_PATH = DATA / "cost_params.json"
KINDS = ("source", "assumed", "fitted")


#: The values a cost parameter may take, by its unit: ``(min, max, why)``, inclusive. The one
#: definition of a cost parameter's allowed range (docs/cost-figures.md, "Allowed values"):
#: :meth:`CostParams.load` refuses a file with a value outside it, :meth:`CostParams.with_values`
#: a value, and a fitted parameter's fit bounds (``lower``, ``upper``) lie inside it.
#:
#: - a rate (GB/s) divides a byte count: it must be positive (0 would be an infinite time);
#:   10,000 GB/s is past the memory bandwidth of any host;
#: - a time (us) may be 0 (the event costs nothing: a what-if), at most a second per event;
#: - a fraction is 0..1.
VALUE_RANGES = {
    "GB/s": (0.01, 10_000.0, "a rate divides bytes: positive, at most 10 TB/s"),
    "us": (0.0, 1_000_000.0, "a time per event: 0 (free) up to one second"),
    "fraction": (0.0, 1.0, "a fraction"),
}
#: The range of a parameter whose unit :data:`VALUE_RANGES` does not list.
OTHER_RANGE = (0.0, 1e12, "a finite, non-negative figure")
#: The largest cost-parameter file read (the kit's own is a few KiB).
MAX_FILE_BYTES = 1 << 20


def value_range(unit: str) -> tuple[float, float, str]:
    """``(min, max, why)`` of a cost parameter in ``unit`` (:data:`VALUE_RANGES`)."""
    return VALUE_RANGES.get(unit, OTHER_RANGE)


def check_value(name: str, unit: str, value) -> float:
    """``value`` as a float inside its unit's range, or a ``ValueError`` naming ``name``, the
    allowed range and the value (a string, a bool, NaN and infinities included)."""
    lo, hi, why = value_range(unit)
    want = f"a number {lo:g}..{hi:g} {unit} ({why})"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected {want}, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{name}: expected {want}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Param:
    name: str
    value: float
    unit: str
    kind: str          # source | assumed | fitted
    source: str        # where the figure comes from, or why it is assumed, or "fitted"
    doc: str = ""
    lower: float = 0.0     # fit bounds (fitted parameters)
    upper: float = 0.0


# the parameter set as the kit ships it before any fit; ``kit calibrate`` fits the "fitted" ones
BASE = (
    Param("zero_gbps_core", 12.35, "GB/s", "source",
          "A. Arora, 'mm: folio_zero_user: clear contiguous pages' (v6 "
          "20250902080816.3715913-1-ankur.a.arora@oracle.com, v8 "
          "20251027202109.678022-1-ankur.a.arora@oracle.com): 2M pages cleared a page at a time, "
          "one thread, AMD Milan, 11.8-12.9 GB/s; the midpoint (docs/cost-figures.md)",
          "rate at which one core clears a guest_memfd folio"),
    Param("guest_write_gbps_core", 12.35, "GB/s", "assumed",
          "no published guest-side figure; taken equal to the kernel's page clearing rate",
          "rate at which a stress worker writes the memory it was just given"),
    Param("invlpg_us", 0.1, "us", "source",
          "arch/x86/mm/tlb.c, comment above tlb_single_page_flush_ceiling: each single flush "
          "is about 100 ns (docs/cost-figures.md)",
          "one page flushed by cpa_flush's INVLPG path, on each CPU"),
    Param("ipi_us", 1.0, "us", "assumed",
          "no published flush_tlb_all latency on EPYC hosts (docs/cost-figures.md); a round 1 us per "
          "interrupted core", "core time each online CPU loses to one flush IPI"),
    Param("flush_wait_us", 5.0, "us", "assumed",
          "no published figure (docs/cost-figures.md); the initiator waits for every core to acknowledge",
          "time the CPU issuing flush_tlb_all waits"),
    Param("split_us", 2.0, "us", "assumed",
          "no published latency of one split (docs/cost-figures.md); arch/x86/mm/pat/set_memory.c "
          "__split_large_page allocates one table page and writes its entries",
          "pgd_lock hold of one split (without its flush)"),
    Param("instr_us", 1.0, "us", "assumed",
          "no published RMPUPDATE/PVALIDATE/PSMASH microbenchmark (docs/cost-figures.md)",
          "one RMPUPDATE, PSMASH or PVALIDATE (2M or 4K)"),
    Param("exit_us", 2.0, "us", "assumed",
          "no published figure; a VMGEXIT/#NPF round trip through KVM",
          "one guest exit handled inside KVM"),
    Param("guest_lock_us", 1.0, "us", "assumed",
          "no published figure; drivers/firmware/efi/unaccepted_memory.c accept_memory "
          "takes unaccepted_memory_lock twice per range (mark it accepting, clear its bits)",
          "hold of the guest's unaccepted_memory_lock per accepted chunk (a guest spinlock: a "
          "preempted vCPU holds it longer)"),
    Param("convert_us", 250.0, "us", "fitted",
          "fitted to data/measurements.csv",
          "one conversion exit answered by the VMM: the exit to userspace, its conversion "
          "(QEMU kvm_convert_memory: discard of the shared copy, KVM_SET_MEMORY_ATTRIBUTES under "
          "slots_lock) under the VMM's per-VM lock", 50.0, 2000.0),
    Param("cpa_hold_us", 0.4, "us", "fitted",
          "fitted to data/measurements.csv (invalidate-4k rows)",
          "cpa_lock hold of one __change_page_attr chunk (one 4K PTE change)", 0.01, 5.0),
    Param("zero_bw_gbps", 40.0, "GB/s", "fitted",
          "fitted to data/measurements.csv (multi-guest rows)",
          "host memory bandwidth available to folio zeroing, shared by all cores", 5.0, 1000.0),
    Param("dm4k_slowdown", 0.05, "fraction", "fitted",
          "fitted to data/measurements.csv (presplit-4k vs split-on-demand); mechanism: kernel "
          "work through a 4K direct map takes more TLB misses (Xing Zhengjun, 'Test report for "
          "kernel direct mapping performance', 213b4567-46ce-f116-9cdf-bbd0c884eb3c@linux.intel.com: "
          "4K had the lowest average)",
          "extra time of the conversion work when the whole direct map is 4K", 0.0, 1.0),
)


class CostParams:
    """An immutable set of :class:`Param`; ``p["convert_us"]`` is the value."""

    def __init__(self, params=BASE, *, name: str = "base"):
        self._p = {p.name: p for p in params}
        self.name = name

    def __getitem__(self, name: str) -> float:
        try:
            return self._p[name].value
        except KeyError:
            raise KeyError(f"cost parameter {name!r}; known: {', '.join(self._p)}") from None

    def __iter__(self):
        return iter(self._p.values())

    def __repr__(self) -> str:
        return f"<CostParams {self.name}: " + ", ".join(f"{p.name}={p.value:g}" for p in self) + ">"

    @property
    def fitted(self) -> list[str]:
        return [p.name for p in self if p.kind == "fitted"]

    def with_values(self, name: str | None = None, **values) -> "CostParams":
        bad = [k for k in values if k not in self._p]
        if bad:
            raise ValueError(f"params: unknown cost parameters {bad}; known: {', '.join(self._p)}")
        for k, v in values.items():
            check_value(f"params: {k}", self._p[k].unit, v)
        return CostParams([replace(p, value=float(values.get(p.name, p.value))) for p in self],
                          name=name or self.name)

    def values(self) -> dict:
        return {p.name: p.value for p in self}

    def to_json(self) -> dict:
        return {"name": self.name, "params": [asdict(p) for p in self]}

    @classmethod
    def from_json(cls, data, *, source: str = "params") -> "CostParams":
        """A parameter set from its JSON form (:meth:`to_json`), every field checked: the
        parameters are exactly the kit's (:data:`BASE`: none missing, none unknown, none twice),
        each in the kit's unit, its value inside :func:`value_range`, a fitted parameter's fit
        bounds inside it too. Anything else is a ``ValueError`` starting with ``source``."""
        base = {p.name: p for p in BASE}
        if not isinstance(data, dict) or not isinstance(data.get("params"), list):
            raise ValueError(f"{source}: not a kit cost-parameter file (expected an object "
                             '{"name": ..., "params": [{"name", "value", "unit", "kind", "source"}, ...]})')
        name = data.get("name", "loaded")
        if not isinstance(name, str):
            raise ValueError(f"{source}: name: expected a string, got {name!r}")
        known = {f.name for f in fields(Param)}
        params, seen = [], set()
        for i, d in enumerate(data["params"]):
            if not isinstance(d, dict):
                raise ValueError(f"{source}: params[{i}]: expected an object, got {d!r}")
            n = d.get("name")
            if not isinstance(n, str) or n not in base:
                raise ValueError(f"{source}: params[{i}]: unknown cost parameter {n!r}; known: {', '.join(base)}")
            if n in seen:
                raise ValueError(f"{source}: {n}: given twice")
            seen.add(n)
            extra = sorted(set(d) - known)
            if extra:
                raise ValueError(f"{source}: {n}: unknown fields {extra}; allowed: {', '.join(sorted(known))}")
            if d.get("kind") not in KINDS:
                raise ValueError(f"{source}: {n}: kind must be one of {', '.join(KINDS)}, got {d.get('kind')!r}")
            for f in ("unit", "source", "doc"):
                if f in d and not isinstance(d[f], str):
                    raise ValueError(f"{source}: {n}: {f}: expected a string, got {d[f]!r}")
            unit = d.get("unit", base[n].unit)
            if unit != base[n].unit:
                raise ValueError(f"{source}: {n}: unit {unit!r}; the kit reads {n} in {base[n].unit!r}")
            if "value" not in d:
                raise ValueError(f"{source}: {n}: no value")
            value = check_value(f"{source}: {n}", unit, d["value"])
            bounds = {}
            for f in ("lower", "upper"):
                v = d.get(f, 0.0)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"{source}: {n}: {f}: expected a finite number, got {v!r}")
                bounds[f] = float(v)
            if d["kind"] == "fitted":
                lo, hi, _ = value_range(unit)
                if not lo <= bounds["lower"] < bounds["upper"] <= hi:
                    raise ValueError(f"{source}: {n}: fit bounds lower {bounds['lower']:g}, upper "
                                     f"{bounds['upper']:g}: need {lo:g} <= lower < upper <= {hi:g} {unit}")
            params.append(Param(**{**d, "unit": unit, "value": value, **bounds}))
        missing = [n for n in base if n not in seen]
        if missing:
            raise ValueError(f"{source}: missing cost parameters: {', '.join(missing)}")
        return cls(params, name=name)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path=None) -> "CostParams":
        """The default set (``data/cost_params.json``), or the base set if it is missing. A
        file that cannot be read, is not UTF-8 JSON of at most :data:`MAX_FILE_BYTES`, or holds
        a value :meth:`from_json` refuses is a ``ValueError`` naming the file."""
        if path is not None and not str(path).strip():
            raise ValueError("params: empty path (give a cost-parameter file, or leave it out for the default)")
        path = Path(path) if path is not None else DEFAULT_PATH
        if not path.exists():
            if path == DEFAULT_PATH:
                return cls()
            raise ValueError(f"params: no parameter file {path}")
        where = f"params: {path}"
        try:
            if not path.is_file():
                raise ValueError(f"{where}: not a file")
            if path.stat().st_size > MAX_FILE_BYTES:
                raise ValueError(f"{where}: {path.stat().st_size} bytes; a cost-parameter file is at most "
                                 f"{MAX_FILE_BYTES} bytes")
            text = path.read_bytes().decode("utf-8")
            data = json.loads(text)
        except OSError as e:
            raise ValueError(f"{where}: cannot read it: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        except RecursionError:
            raise ValueError(f"{where}: not a kit cost-parameter file (nested too deeply)") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        return cls.from_json(data, source=where)
