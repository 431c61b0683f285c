"""Validation rows: public figures the model is checked against and never fitted to.

``data/validation.csv`` (schema in ``data/README.md``) holds one row per figure: the quantity,
the configuration it was seen on, the published value (empty when the source only bounds it),
the interval ``[low, high]`` a model value must fall in, and its source. The calibration rows
(``data/measurements.csv``) are kept apart: :func:`kit.sim.calibrate.calibrate` never reads
this file.

Quantities the model produces (:data:`QUANTITIES`):

- ``map_exits_per_chunk``: exits that map guest_memfd pages (#NPF, ``vm_exit`` less the
  page-state-change exits, ``user_exit``) per 4 MiB accepted chunk, from the semantic
  model's event ledger (:mod:`kit.host.ledger`) on a lazy-acceptance trace with 4K or 2M
  guest_memfd folios (``gmem``), with the row's VMM (``vmm``: ``default``, or ``prefault``:
  QEMU pre-faulting the range of each page-state change with ``KVM_PRE_FAULT_MEMORY``,
  :class:`kit.kvm.vmm.Vmm`).
- ``cpa_lock_per_chunk``: ``cpa_lock`` acquisitions per accepted chunk (the same trace).
- ``cpa_lock_per_guest``: ``cpa_lock`` acquisitions per guest, its launch and its whole run
  (the analytic engine's events, scaled to the run).
- ``rate_ratio``: the fault-in rate under ``policy`` over the rate under ``baseline_policy``
  (analytic engine, the given cost parameters).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from ..units import GiB
from . import trace as T
from .api import simulate
from .params import DATA, CostParams

VALIDATION = DATA / "validation.csv"
COLUMNS = ("id", "quantity", "workload", "guests", "vcpus", "guest_mem_gib", "host_cores", "host_mem_gib",
           "policy", "baseline_policy", "gmem", "vmm", "measured", "low", "high", "unit", "source", "note")
GMEM = ("4k", "2m")
VMMS = T.VMMS
#: chunks the per-chunk quantities are counted over (1 GiB), and on 4K guest_memfd
CHUNKS = GiB // T.ACCEPT_CHUNK
CHUNKS_4K = 1


@dataclass(frozen=True)
class ValidationRow:
    id: str
    quantity: str
    workload: str
    guests: int
    vcpus: int
    guest_mem_gib: int
    host_cores: int
    host_mem_gib: int
    policy: str
    baseline_policy: str
    gmem: str
    vmm: str
    measured: float | None
    low: float
    high: float
    unit: str
    source: str
    note: str

    def sim_kwargs(self) -> dict:
        return dict(workload=self.workload, guests=self.guests, vcpus=self.vcpus,
                    guest_mem=f"{self.guest_mem_gib}GiB", host_cores=self.host_cores,
                    host_mem=f"{self.host_mem_gib}GiB", policy=self.policy)

    @property
    def config(self) -> str:
        return (f"{self.guests}x{self.vcpus} vCPU x {self.guest_mem_gib} GiB, {self.host_cores} cores, "
                f"{self.policy}" + (f" vs {self.baseline_policy}" if self.baseline_policy else "")
                + f", {self.gmem} guest_memfd" + (f", VMM {self.vmm}" if self.vmm != "default" else ""))


def _events(row: ValidationRow, chunks: int) -> dict:
    """Event totals of a lazy-acceptance run of ``chunks`` chunks per guest of ``row``."""
    host, _, gs = T.build(row.host_mem_gib * GiB, row.host_cores, row.policy,
                          [(row.vcpus, row.guest_mem_gib * GiB)] * row.guests, 0,
                          gmem_hugepages=row.gmem == "2m", vmm=row.vmm)
    return T.lazy_accept(host, gs, touched=[chunks] * row.guests).totals()


def per_chunk(row: ValidationRow, chunks: int = CHUNKS) -> dict:
    """Events per accepted chunk in steady state: a run of ``1 + k`` chunks less a run of 1,
    over ``k`` (the guard unit ``accept_memory`` takes past a run's end and the first chunk's
    direct-map splits cancel out). ``k`` is ``chunks``, at most :data:`CHUNKS_4K` on 4K
    guest_memfd (each 4K page faults in through the vCPU path, about a millisecond each)."""
    most = min(chunks, T.touched_bytes(row.vcpus, row.guest_mem_gib * GiB) // T.ACCEPT_CHUNK - 1)
    k = max(1, min(most, CHUNKS_4K) if row.gmem == "4k" else most)
    a, b = _events(row, 1), _events(row, 1 + k)
    return {e: (b[e] - a[e]) / (k * row.guests) for e in b}


def map_exits_per_chunk(row: ValidationRow, params: CostParams, *, chunks: int = CHUNKS):
    ev = per_chunk(row, chunks)
    return ev["vm_exit"] - ev["user_exit"]


def cpa_lock_per_chunk(row: ValidationRow, params: CostParams, *, chunks: int = CHUNKS):
    return per_chunk(row, chunks)["cpa_lock"]


def cpa_lock_per_guest(row: ValidationRow, params: CostParams, **_):
    r = simulate(**row.sim_kwargs(), engine="analytic", params=params)
    launch = r.setup.get("launch", {}).get("cpa_lock", 0)
    return (r.events["cpa_lock"] + launch) / row.guests


def rate_ratio(row: ValidationRow, params: CostParams, **_):
    a = simulate(**row.sim_kwargs(), engine="analytic", params=params).fault_in_gbps
    b = simulate(**{**row.sim_kwargs(), "policy": row.baseline_policy}, engine="analytic",
                 params=params).fault_in_gbps
    return a / b if b > 0 else math.inf


#: quantity -> (what it is, the function computing it: (row, params) -> value, or None when
#: the row's configuration is outside the model)
QUANTITIES = {
    "map_exits_per_chunk": ("exits mapping guest_memfd pages per 4 MiB accepted chunk", map_exits_per_chunk),
    "cpa_lock_per_chunk": ("cpa_lock acquisitions per 4 MiB accepted chunk", cpa_lock_per_chunk),
    "cpa_lock_per_guest": ("cpa_lock acquisitions per guest, launch and run", cpa_lock_per_guest),
    "rate_ratio": ("fault-in rate under policy / under baseline_policy", rate_ratio),
}
#: vmm -> why rows with that VMM are outside the model (every VMM of :data:`VMMS` is modelled)
NOT_MODELLED: dict[str, str] = {}


def _number(v: str, what: str, where: str, *, integer: bool = False, optional: bool = False):
    if v == "" and optional:
        return None
    try:
        x = int(v) if integer else float(v)
    except ValueError:
        raise ValueError(f"{where}: {what}: expected {'an integer' if integer else 'a number'}, got {v!r}") from None
    if not math.isfinite(x) or x < 0 or (integer and x < 1):
        raise ValueError(f"{where}: {what}: expected a {'positive' if integer else 'non-negative'} "
                         f"finite number, got {v!r}")
    return x


def load_validation(path=VALIDATION) -> list[ValidationRow]:
    """The validation rows of ``path``, every field checked: ``ValueError`` naming the file,
    line and column of the first bad one."""
    path = Path(path)
    lines = [(i, ln) for i, ln in enumerate(path.read_text().splitlines(), 1) if ln and not ln.startswith("#")]
    if not lines:
        raise ValueError(f"{path.name}: no header line")
    header = next(csv.reader([lines[0][1]]))
    missing = [c for c in COLUMNS if c not in header]
    extra = [c for c in header if c not in COLUMNS]
    if missing or extra:
        raise ValueError(f"{path.name}: columns: missing {missing}, unknown {extra}; expected {', '.join(COLUMNS)}")
    out, seen = [], set()
    for (lineno, _), rec in zip(lines[1:], csv.DictReader([ln for _, ln in lines])):
        where = f"{path.name} line {lineno}"
        if None in rec or any(v is None for v in rec.values()):
            raise ValueError(f"{where}: expected {len(COLUMNS)} fields")
        if not rec["id"] or rec["id"] in seen:
            raise ValueError(f"{where}: id: empty or repeated {rec['id']!r}")
        seen.add(rec["id"])
        if rec["quantity"] not in QUANTITIES:
            raise ValueError(f"{where}: quantity: unknown {rec['quantity']!r}; known: {', '.join(QUANTITIES)}")
        if rec["workload"] != "lazy-accept":
            raise ValueError(f"{where}: workload: expected lazy-accept, got {rec['workload']!r}")
        if rec["gmem"] not in GMEM:
            raise ValueError(f"{where}: gmem: expected one of {GMEM}, got {rec['gmem']!r}")
        if rec["vmm"] not in VMMS:
            raise ValueError(f"{where}: vmm: expected one of {VMMS}, got {rec['vmm']!r}")
        if rec["quantity"] == "rate_ratio" and not rec["baseline_policy"]:
            raise ValueError(f"{where}: baseline_policy: a rate_ratio needs one")
        if not rec["source"].strip():
            raise ValueError(f"{where}: source: every validation row names its source")
        ints = {c: _number(rec[c], c, where, integer=True)
                for c in ("guests", "vcpus", "guest_mem_gib", "host_cores", "host_mem_gib")}
        low, high = _number(rec["low"], "low", where), _number(rec["high"], "high", where)
        measured = _number(rec["measured"], "measured", where, optional=True)
        if low > high:
            raise ValueError(f"{where}: low: {low:g} is above high {high:g}")
        out.append(ValidationRow(rec["id"], rec["quantity"], rec["workload"], policy=rec["policy"],
                                 baseline_policy=rec["baseline_policy"], gmem=rec["gmem"], vmm=rec["vmm"],
                                 measured=measured, low=low, high=high, unit=rec["unit"],
                                 source=rec["source"], note=rec["note"], **ints))
    return out


def validate(params: CostParams | None = None, *, path=VALIDATION, chunks: int = CHUNKS) -> list[dict]:
    """Model vs published figure for every validation row: ``id, quantity, config, measured,
    low, high, model, error_pct, within, status, unit, source``. ``status``: ``within``,
    ``MISS`` or ``not modelled: why``."""
    p = params if params is not None else CostParams.load()
    rows = []
    for r in load_validation(path):
        fn = QUANTITIES[r.quantity][1]
        value = fn(r, p, chunks=chunks)
        within = value is not None and r.low <= value <= r.high
        status = ("within" if within else "MISS") if value is not None else \
            "not modelled: " + NOT_MODELLED.get(r.vmm, "outside the model")
        err = (round(100 * (value - r.measured) / r.measured, 1)
               if value is not None and r.measured not in (None, 0) else None)
        rows.append({"id": r.id, "quantity": r.quantity, "config": r.config, "measured": r.measured,
                     "low": r.low, "high": r.high, "model": None if value is None else round(float(value), 3),
                     "error_pct": err, "within": bool(within), "status": status, "unit": r.unit,
                     "source": r.source, "note": r.note})
    return rows
