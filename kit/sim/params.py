"""Cost parameters: what each recorded cost event takes, with the source of every figure.

A parameter is either taken from a source (a published figure: the mail or kernel code it
comes from is named in its ``source``), an assumption named as such (nothing published
measures it: the value is a round guess whose influence the calibration notebook shows), or
fitted by ``kit calibrate`` to ``data/measurements.csv``. ``docs/cost-figures.md`` lists every
cost figure with its source, ``docs/sources.md`` the measurements'. The default set is
``data/cost_params.json``; ``kit calibrate`` rewrites it, with the fit's covariance of the
fitted parameters' logarithms, from which :meth:`CostParams.band_sets` gives a modelled rate's
band (docs/sim-model.md, "Error bars and validation").
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "data"
DEFAULT_PATH = DATA / "cost_params.json"
KINDS = ("source", "assumed", "fitted")
#: width of a modelled rate's band, in standard deviations of the fitted parameters
BAND_SIGMAS = 1.0
#: the smallest value a fitted parameter takes in the fit's log space (a lower bound of 0)
LOG_FLOOR = 1e-6


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

    def __init__(self, params=BASE, *, name: str = "base", covariance: dict | None = None):
        self._p = {p.name: p for p in params}
        self.name = name
        self._cov = covariance

    @property
    def covariance(self) -> dict | None:
        """The fit's covariance of the fitted parameters' logarithms, ``{"names", "matrix",
        "method"}`` (``kit calibrate`` writes it beside the values), or None."""
        return self._cov

    def with_covariance(self, names, matrix, method: str) -> "CostParams":
        """This set with the covariance of ``log(value)`` of the parameters ``names``."""
        m = np.asarray(matrix, dtype=float)
        if m.shape != (len(names), len(names)) or not np.all(np.isfinite(m)):
            raise ValueError(f"params: covariance must be a finite {len(names)}x{len(names)} matrix")
        bad = [n for n in names if n not in self._p]
        if bad:
            raise ValueError(f"params: covariance of unknown cost parameters {bad}")
        cov = {"names": list(names), "matrix": m.tolist(), "method": str(method)}
        return CostParams(self._p.values(), name=self.name, covariance=cov)

    def without_covariance(self) -> "CostParams":
        """The same values without a covariance (a point estimate: no band computed)."""
        return CostParams(self._p.values(), name=self.name)

    def log_bounds(self, name: str) -> tuple[float, float]:
        """A fitted parameter's bounds in the fit's log space."""
        p = self._p[name]
        return math.log(max(p.lower, LOG_FLOOR)), math.log(max(p.upper, LOG_FLOOR))

    def band_sets(self, sigmas: float = BAND_SIGMAS) -> list:
        """The parameter sets a band is drawn from: the fitted point moved by ``sigmas``
        standard deviations along each principal axis of the covariance, both ways (2n sets,
        clipped to the fit's bounds). Empty when the set carries no covariance, or one that
        is not of its fitted parameters (a stale covariance says nothing)."""
        cov = self._cov
        if not cov or sorted(cov["names"]) != sorted(self.fitted):
            return []
        names = cov["names"]
        x = np.log([max(self[n], LOG_FLOOR) for n in names])
        lo, hi = np.transpose([self.log_bounds(n) for n in names])
        w, v = np.linalg.eigh(np.asarray(cov["matrix"], dtype=float))
        out = []
        for i in range(len(names)):
            step = sigmas * math.sqrt(max(w[i], 0.0)) * v[:, i]
            for sign in (1.0, -1.0):
                y = np.clip(x + sign * step, lo, hi)
                out.append(self.with_values(**dict(zip(names, np.exp(y).tolist()))))
        return out

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
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"params: {k} must be a non-negative number, got {v!r}")
        return CostParams([replace(p, value=float(values.get(p.name, p.value))) for p in self],
                          name=name or self.name, covariance=self._cov)

    def values(self) -> dict:
        return {p.name: p.value for p in self}

    def to_json(self) -> dict:
        out = {"name": self.name, "params": [asdict(p) for p in self]}
        if self._cov:
            out["covariance"] = self._cov
        return out

    @classmethod
    def from_json(cls, data: dict) -> "CostParams":
        params = []
        for d in data["params"]:
            if d.get("kind") not in KINDS:
                raise ValueError(f"params: {d.get('name')}: kind must be one of {KINDS}")
            params.append(Param(**d))
        out = cls(params, name=data.get("name", "loaded"))
        cov = data.get("covariance")
        if cov is not None:
            try:
                out = out.with_covariance(cov["names"], cov["matrix"], cov.get("method", ""))
            except (KeyError, TypeError) as e:
                raise ValueError(f"params: covariance: expected names and matrix ({e})") from None
        return out

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path=None) -> "CostParams":
        """The default set (``data/cost_params.json``), or the base set if it is missing."""
        path = Path(path) if path else DEFAULT_PATH
        if not path.exists():
            if path == DEFAULT_PATH:
                return cls()
            raise ValueError(f"params: no parameter file {path}")
        return cls.from_json(json.loads(path.read_text()))
