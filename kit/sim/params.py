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
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "data"
DEFAULT_PATH = DATA / "cost_params.json"
KINDS = ("source", "assumed", "fitted")
#: units of parameters that are counts (CPUs, threads per core) or 0/1 switches: whole numbers,
#: whose influence on a rate is a step to another whole value, not a derivative
COUNT_UNITS = ("CPUs", "threads", "0/1")
#: the largest value a parameter of these units means anything at (the model clamps a share)
UNIT_LIMITS = {"fraction": 1.0, "0/1": 1.0}
#: width of a modelled rate's band, in standard deviations of the fitted parameters
BAND_SIGMAS = 1.0
#: the smallest value a fitted parameter takes in the fit's log space (a lower bound of 0)
LOG_FLOOR = 1e-6
#: The largest model error a parameter set may record (:meth:`CostParams.with_covariance`), as
#: a relative standard deviation of a modelled rate: past 100% a rate's band reaches 0 and says
#: nothing more.
MODEL_ERROR_MAX = 1.0


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
    "ns": (0.0, 1e9, "a time per event: 0 (free) up to one second"),
    "0/1": (0.0, 1.0, "a switch: 0 off, 1 on"),
    "threads": (1.0, 8.0, "hardware threads per core (SMT): 1 to 8"),
    "CPUs": (1.0, 8192.0, "CPUs of one socket: at most a host's cores (kit.host.limits)"),
    "x": (0.0, 1000.0, "a factor"),
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
    """One cost parameter: value and unit, its kind (``source``, ``assumed`` or ``fitted``), where
    the figure comes from, what it means, and the fit's bounds (fitted parameters)."""

    name: str
    value: float
    unit: str
    kind: str          # source | assumed | fitted
    source: str        # where the figure comes from, or why it is assumed, or "fitted"
    doc: str = ""
    lower: float = 0.0     # fit bounds (fitted parameters)
    upper: float = 0.0

    def __post_init__(self):
        if self.kind == "fitted" and self.unit in COUNT_UNITS:
            raise ValueError(f"{self.name}: a count or 0/1 switch ({self.unit}) cannot be fitted: a least-squares "
                             "fit moves a value continuously; give it as source or assumed (kit calibrate prints "
                             "the rate at its next whole value)")

    @property
    def is_count(self) -> bool:
        """A count or a 0/1 switch (its unit is one of :data:`COUNT_UNITS`)."""
        return self.unit in COUNT_UNITS

    @property
    def limit(self) -> float:
        """The largest value the parameter's unit admits (:data:`UNIT_LIMITS`; else infinite)."""
        return UNIT_LIMITS.get(self.unit, math.inf)


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
    Param("dram_gbps_per_socket", 460.8, "GB/s", "source",
          "drivers/edac/amd64_edac.c: 12 DDR5 memory controllers (max_mcs) for family 19h "
          "models 10h-1Fh and A0h-AFh (EPYC 9004); 12 channels x 8 bytes x 4800 MT/s "
          "(DDR5-4800) = 460.8 GB/s peak per socket (docs/cost-figures.md)",
          "DRAM bandwidth of one socket, shared by folio zeroing and the guests' writes"),
    Param("cpus_per_socket", 256.0, "CPUs", "assumed",
          "the measured host's 512 CPUs read as two 128-core EPYC 9004 sockets with 2 threads "
          "per core (the source names only 'an EPYC with 512 cores')",
          "logical CPUs per socket: a host of N CPUs has ceil(N / this) sockets of DRAM bandwidth"),
    Param("smt_threads", 2.0, "threads", "assumed",
          "EPYC 9004 cores run 2 threads; the source's 512 'cores' read as 256 cores x 2 threads",
          "logical CPUs per physical core"),
    Param("sched_slice_us", 750.0, "us", "source",
          "kernel/sched/fair.c normalized_sysctl_sched_base_slice: 0.75 ms (EEVDF, v6.6 and "
          "later), scaled by get_update_sysctl_factor to 1 + ilog2(min(CPUs, 8)): 3 ms on 8 or "
          "more CPUs (docs/cost-figures.md)",
          "the scheduler's normalised base slice: how long a runnable thread runs before the next "
          "one takes its CPU, when over-subscribed"),
    Param("ctx_switch_us", 5.0, "us", "assumed",
          "no published figure for switching SNP vCPU threads (a VM exit, the switch, the refill "
          "of caches and TLB); the calibration notebook shows its influence",
          "cost of one preemption of a vCPU thread at a slice boundary"),
    Param("accept_spin_share", 1.0, "fraction", "assumed",
          "drivers/firmware/efi/unaccepted_memory.c accept_memory: before 'efi/unaccepted: Fix "
          "soft lockups caused by parallel memory acceptance' (commit 50e782a86c98, v6.6-rc7) the "
          "whole arch_accept_memory ran under unaccepted_memory_lock, so every waiter spins in "
          "the guest; after it chunks are accepted in parallel and a conversion's waiters wait "
          "in KVM_SET_MEMORY_ATTRIBUTES for kvm->slots_lock (virt/kvm/kvm_main.c "
          "kvm_vm_set_mem_attributes), a mutex whose waiters spin while its owner runs "
          "(kernel/locking/mutex.c mutex_optimistic_spin, osq_lock) until their CPU is wanted "
          "(need_resched); QEMU converts without the BQL (target/i386/kvm/kvm.c "
          "kvm_handle_hc_map_gpa_range -> kvm_convert_memory). The measured guests' kernel and "
          "VMM are not stated: 1 (every waiter spins; over-subscribed, a mutex waiter would give "
          "its CPU up after a slice: docs/sim-model.md section 4)",
          "share of the vCPUs waiting for their chunk's conversion that spin (runnable: in the "
          "guest, or on the VM's conversion mutex) rather than sleep"),
    Param("invlpg_us", 0.1, "us", "source",
          "arch/x86/mm/tlb.c, comment above tlb_single_page_flush_ceiling: each single flush "
          "is about 100 ns (docs/cost-figures.md)",
          "one page flushed by cpa_flush's INVLPG path, on each CPU"),
    Param("ipi_us", 1.0, "us", "assumed",
          "no published flush_tlb_all latency on EPYC hosts (docs/cost-figures.md); a round 1 us per "
          "interrupted CPU", "interrupt entry, the flush handler and exit on each reached CPU"),
    Param("ipi_send_ns", 20.0, "ns", "assumed",
          "no published figure; smp_call_function_many_cond (kernel/smp.c) queues a call for "
          "each CPU and sends the IPIs one after another",
          "initiator's time per CPU a flush reaches"),
    Param("flush_ack_us", 2.0, "us", "assumed",
          "no published figure (docs/cost-figures.md); the round trip of the last IPI and its "
          "acknowledgement", "initiator's wait for the acknowledgements, beyond sending"),
    Param("tlb_refill_us", 1.0, "us", "assumed",
          "no published figure; a full flush empties the TLB, each later miss walks the page "
          "tables again", "time a CPU loses refilling its TLB after a full flush"),
    Param("invlpgb", 0.0, "0/1", "assumed",
          "what-if, off: broadcast invalidation instead of IPIs (R. van Riel, 'AMD broadcast "
          "TLB invalidation', 20250223194943.3518952-1-riel@surriel.com: IPI shootdowns about "
          "40% of CPU in a reported workload, about 4% with INVLPGB)",
          "1: flush_tlb_all by INVLPGB + TLBSYNC, no CPU interrupted"),
    Param("tlbsync_us", 1.0, "us", "assumed",
          "no published latency of TLBSYNC after INVLPGB",
          "initiator's wait for a broadcast invalidation (invlpgb = 1)"),
    Param("split_us", 2.0, "us", "assumed",
          "no published latency of one split (docs/cost-figures.md); arch/x86/mm/pat/set_memory.c "
          "__split_large_page allocates one table page and writes its entries",
          "pgd_lock hold of one split (without its flush)"),
    Param("instr_us", 1.0, "us", "assumed",
          "no published RMPUPDATE/PVALIDATE/PSMASH microbenchmark (docs/cost-figures.md)",
          "one RMPUPDATE, PSMASH or PVALIDATE (2M or 4K)"),
    Param("exit_us", 2.0, "us", "assumed",
          "no published figure; a VMGEXIT/#NPF round trip through KVM",
          "one guest exit handled inside KVM (also what a flush IPI costs a running vCPU)"),
    Param("map_us", 1.0, "us", "assumed",
          "no published figure for KVM's fault path without the VM exit around it "
          "(arch/x86/kvm/mmu/mmu.c kvm_tdp_map_page: guest_memfd get_pfn, prepare, map); "
          "taken as half of exit_us",
          "KVM's work to map one page outside a VM exit: each mapping of KVM_PRE_FAULT_MEMORY"),
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
    Param("smt_yield", 1.1, "x", "fitted",
          "fitted to data/measurements.csv (4-guest rows: 512 vCPU threads fill every core's "
          "second thread); no published SMT yield for this path",
          "work a physical core does with both threads busy, relative to one thread alone", 1.0, 2.0),
    Param("dm4k_walk_ns", 50.0, "ns", "fitted",
          "fitted to data/measurements.csv (presplit-4k vs split-on-demand); mechanism: kernel "
          "accesses through a 4K direct map take more TLB misses (Xing Zhengjun, 'Test report for "
          "kernel direct mapping performance', 213b4567-46ce-f116-9cdf-bbd0c884eb3c@linux.intel.com: "
          "4K had the lowest average)",
          "TLB miss and page walk per 4K page the kernel reaches through a 4K direct-map entry "
          "(clearing a folio, the conversion exit's per-gfn work)", 0.0, 1000.0),
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
        "method"}`` (``kit calibrate`` writes it beside the values), with the fit's model
        error where one was estimated (``"model_error"``, ``"model_error_method"``:
        :attr:`model_error`), or None."""
        return self._cov

    @property
    def model_error(self) -> float:
        """The model's own error recorded with the fit, as a relative standard deviation of a
        modelled rate: what ``kit calibrate`` estimates from its leave-one-out (the error
        that, beside the measurements' noise and the fit's uncertainty, brings the left-out
        errors' chi-square to its mean: :func:`kit.sim.calibrate.loo_chance`,
        docs/sim-model.md "Error bars and validation"). 0 for a set that records none. A
        rate's band (:meth:`band`) adds it to the fit's uncertainty."""
        return float(self._cov.get("model_error", 0.0)) if self._cov else 0.0

    def with_covariance(self, names, matrix, method: str, *, model_error: float = 0.0,
                        model_error_method: str = "") -> "CostParams":
        """This set with the covariance of ``log(value)`` of the parameters ``names``, and the
        fit's model error (:attr:`model_error`; ``0 <= model_error <=``
        :data:`MODEL_ERROR_MAX`). A new covariance is a new fit: a model error recorded with
        the old one is not carried over."""
        m = np.asarray(matrix, dtype=float)
        if m.shape != (len(names), len(names)) or not np.all(np.isfinite(m)):
            raise ValueError(f"params: covariance must be a finite {len(names)}x{len(names)} matrix")
        bad = [n for n in names if n not in self._p]
        if bad:
            raise ValueError(f"params: covariance of unknown cost parameters {bad}")
        if (isinstance(model_error, bool) or not isinstance(model_error, (int, float))
                or not 0.0 <= model_error <= MODEL_ERROR_MAX):
            raise ValueError(f"params: model_error: a relative standard deviation from 0 to {MODEL_ERROR_MAX:g}, "
                             f"got {model_error!r}")
        cov = {"names": list(names), "matrix": m.tolist(), "method": str(method)}
        if model_error > 0:
            cov.update(model_error=float(model_error), model_error_method=str(model_error_method))
        return CostParams(self._p.values(), name=self.name, covariance=cov)

    def with_model_error(self, model_error: float, method: str) -> "CostParams":
        """This set with ``model_error`` recorded beside its covariance (:attr:`model_error`);
        a set without a covariance has no band to widen, so it is a ``ValueError``."""
        if not self._cov:
            raise ValueError("params: model_error: the set carries no fit covariance to record it with")
        c = self._cov
        return self.with_covariance(c["names"], c["matrix"], c["method"], model_error=model_error,
                                    model_error_method=method)

    def band(self, rate: float, rates, sigmas: float = BAND_SIGMAS) -> list | None:
        """A modelled rate's band: the lowest and highest of ``rate`` and ``rates`` (the rate
        over :meth:`band_sets`: the fit's uncertainty), each side widened by ``sigmas`` times
        the :attr:`model_error` of ``rate``, added in quadrature (the two are independent:
        the model error is what the fit's uncertainty leaves unexplained), the low side at
        least 0. None when ``rates`` is empty (no covariance: no band)."""
        rates = [float(r) for r in rates]
        if not rates:
            return None
        lo, hi = min(rate, *rates), max(rate, *rates)
        e = sigmas * self.model_error * rate
        if e > 0:
            lo, hi = max(rate - math.hypot(rate - lo, e), 0.0), rate + math.hypot(hi - rate, e)
        return [float(lo), float(hi)]

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

    @property
    def counts(self) -> list[str]:
        """The parameters that are counts or 0/1 switches (:attr:`Param.is_count`)."""
        return [p.name for p in self if p.is_count]

    def with_values(self, name: str | None = None, **values) -> "CostParams":
        bad = [k for k in values if k not in self._p]
        if bad:
            raise ValueError(f"params: unknown cost parameters {bad}; known: {', '.join(self._p)}")
        for k, v in values.items():
            check_value(f"params: {k}", self._p[k].unit, v)
        return CostParams([replace(p, value=float(values[p.name])) if p.name in values else p for p in self],
                          name=name or self.name, covariance=self._cov)

    def values(self) -> dict:
        return {p.name: p.value for p in self}

    def to_json(self) -> dict:
        out = {"name": self.name, "params": [asdict(p) for p in self]}
        if self._cov:
            out["covariance"] = self._cov
        return out

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
            try:
                params.append(Param(**{**d, "unit": unit, "value": value, **bounds}))
            except ValueError as e:
                raise ValueError(f"{source}: {e}") from None
        missing = [n for n in base if n not in seen]
        if missing:
            raise ValueError(f"{source}: missing cost parameters: {', '.join(missing)}")
        out = cls(params, name=name)
        cov = data.get("covariance")
        if cov is not None:
            try:
                out = out.with_covariance(cov["names"], cov["matrix"], cov.get("method", ""),
                                          model_error=cov.get("model_error", 0.0),
                                          model_error_method=cov.get("model_error_method", ""))
            except (KeyError, TypeError, AttributeError) as e:
                raise ValueError(f"{source}: covariance: expected names and matrix ({e})") from None
            except ValueError as e:
                raise ValueError(f"{source}: {str(e).removeprefix('params: ')}") from None
        return out

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
