"""``simulate()``: one configuration, from validated parameters to a result object.

parameters -> validated scenario -> host, KVM and guests built -> the workload runs on the
semantic model and records cost events (:mod:`kit.sim.trace`) -> a timing engine turns them
into time (:mod:`kit.sim.mva` or :mod:`kit.sim.des`) -> :class:`SimResult`.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .. import __version__
from ..host.ledger import EVENTS
from ..units import BAND_MEANING, NO_BAND, GiB, band_fields, band_text, format_size, has_band
from . import breakdown, mva, trace as T
from .demands import demand, dm4k_fraction, dram_gbps, schedule
from .params import CostParams
from .scenario import DEFAULTS as _D
from .scenario import ENGINES, HOST_RESERVED, SCENARIO_PARAMS, Scenario, des_groups, scenario  # noqa: F401 (kit.sim.api names)


#: modules loaded when a run first asks for them (docs/architecture.md, "Deferred loading"): a
#: run of the analytic engine (``kit simulate``'s default) never imports the discrete-event
#: engine, which keeps the command's start-up short (benchmarks/startup.py)
DEFERRED = {"des": "kit.sim.des"}


def _des():
    """The discrete-event engine (:mod:`kit.sim.des`), through :data:`DEFERRED`."""
    return importlib.import_module(DEFERRED["des"])


@dataclass
class SimResult:
    """What one simulation gives (``to_json`` for the CLI and the result store)."""

    scenario: Scenario
    fault_in_gbps: float
    directmap: dict
    splits: dict
    cpa_lock: dict
    tlb_flushes: dict
    host_rmp_faults: int
    bottleneck: dict
    utilisation: dict
    sim_seconds: float
    wall_seconds: float
    params: dict
    kit_version: str = __version__
    per_guest_gbps: list = field(default_factory=list)
    events: dict = field(default_factory=dict)
    series: dict = field(default_factory=dict)
    percentiles: dict = field(default_factory=dict)
    safe: bool = True
    trace: str = "full trace"    # what the timing is based on (analytic: a scaled sample)
    stopped: bool = False        # cut short by ``should_stop`` (the figures cover what ran)
    setup: dict = field(default_factory=dict)   # {"boot": events, "launch": events} before the run
    rate_band_gbps: list | None = None   # [lo, hi] of fault_in_gbps: the fit's uncertainty and model error (_rate_band)
    # vCPU scheduling on the host's CPUs (kit.sim.demands.schedule): runnable threads, SMT speed,
    # CPU share, stretch of a thread's work, lock hand-offs delayed by a descheduled waiter
    scheduling: dict = field(default_factory=dict)
    #: microseconds of one vCPU per accepted chunk, part by part (:mod:`kit.sim.breakdown`)
    time_per_chunk: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = asdict(replace(self, scenario=None))
        out["scenario"] = self.scenario.to_json()
        out["engine"] = self.scenario.engine
        out["policy"] = self.scenario.policy
        # the band beside the rate, as every table writes it (kit.units.band_fields), and what
        # it is (or that there is none: no band is made up)
        out.update(band_fields("fault_in_gbps", self.rate_band_gbps, None))
        out["rate_band"] = BAND_MEANING if has_band(self.rate_band_gbps) else NO_BAND
        return out

    def _repr_html_(self) -> str:
        from ..viz.html import result_html
        return result_html(self)

    def summary(self) -> dict:
        s = self.scenario
        return {"workload": s.workload, "policy": s.policy, "engine": s.engine,
                "guests x vcpus x mem": (", ".join(f"{v} x {format_size(m)}" for v, m in s.specs)
                                         if s.mixed else f"{s.guests} x {s.vcpus} x {format_size(s.guest_mem)}"),
                "host": f"{s.host_cores} cores, {format_size(s.host_mem)}",
                "fault-in GB/s (all guests)": round(self.fault_in_gbps, 2),
                f"fault-in GB/s band ({BAND_MEANING})": band_text(self.rate_band_gbps),
                "bottleneck (utilisation)": f"{self.bottleneck['resource']} ({self.bottleneck['utilisation']:.0%})",
                f"time per {self.unit}, us (one vCPU)": round(sum(self.time_per_chunk.values()), 1),
                "cpa_lock acquisitions (whole run)": self.cpa_lock["acquisitions"],
                f"cpa_lock wait, us per {self.unit}": round(self.time_per_chunk.get("cpa_lock_wait", 0.0), 3),
                "cpa_lock hold, us per acquisition": round(self.cpa_lock["hold_us"], 3),
                "splits 1G/2M (whole run)": f"{self.splits['split_1g']}/{self.splits['split_2m']}",
                "splits 1G/2M before the run": ", ".join(
                    f"{part} {ev.get('split_1g', 0)}/{ev.get('split_2m', 0)}"
                    for part, ev in self._setup_parts()),
                "cpa_lock before the run": ", ".join(
                    f"{part} {ev.get('cpa_lock', 0)}" for part, ev in self._setup_parts()),
                "TLB flushes all/range (whole run)": f"{self.tlb_flushes['flush_tlb_all']}/{self.tlb_flushes['flush_tlb_range']}",
                "host RMP faults (whole run)": self.host_rmp_faults,
                "DirectMap4k/2M/1G kB": "/".join(str(self.directmap.get(k, 0)) for k in ("DirectMap4k", "DirectMap2M", "DirectMap1G")),
                "simulated s": round(self.sim_seconds, 3), "wall s": round(self.wall_seconds, 3)}


    @property
    def unit(self) -> str:
        """What one unit of work is: a 4 MiB accepted chunk (lazy-accept) or one conversion."""
        return "4 MiB chunk" if self.scenario.workload == "lazy-accept" else "conversion"

    def _setup_parts(self):
        return [(part, self.setup.get(part, {})) for part in ("boot", "launch")]


def run_trace(s: Scenario, *, progress=None, chunks=None, should_stop=None, monitor=None):
    """The workload of ``s`` on a freshly built host (``chunks``: per guest, fewer chunks).
    ``monitor(host, fraction)`` is called as the trace advances (live host maps)."""
    host, kvm, gs = T.build(s.host_mem, s.host_cores, s.directmap_policy, list(s.specs), s.seed,
                            gmem_hugepages=s.workload == "lazy-accept", vmm=s.vmm)
    if monitor is not None:
        inner = progress

        def progress(f):
            if inner:
                inner(f)
            monitor(host, f)
        monitor(host, 0.0)
    if s.workload == "lazy-accept":
        touched = chunks or [s.touched_chunks(g) for g in range(s.guests)]
        return T.lazy_accept(host, gs, seed=s.seed, touched=touched, progress=progress,
                             should_stop=should_stop)
    return T.conversions(host, gs, steps=s.steps, p4k=s.p4k, seed=s.seed, progress=progress,
                         should_stop=should_stop)


def des_trace(s: Scenario, *, progress=None, should_stop=None, monitor=None):
    """The trace a DES run of ``s`` times: the whole workload (:func:`run_trace`), or for a
    replicated run (:func:`~kit.sim.scenario.des_groups`) every guest built and launched on the
    host, as :func:`kit.sim.trace.build` does them, the first guest of each kind traced over its
    whole lazy-accept work (the others accept nothing), and that work replicated to every guest
    (:func:`replicate`). The set-up before the run (the boot step, every guest's launch, the boot
    DirectMap lines) is the whole scenario's, the same as a trace of every guest's."""
    if des_groups(s) is None:
        return run_trace(s, progress=progress, should_stop=should_stop, monitor=monitor)
    return replicate(run_trace(s, chunks=_sample_chunks(s), progress=progress, should_stop=should_stop,
                               monitor=monitor), s)


def _sample_chunks(s: Scenario) -> list[int]:
    """Per guest of ``s``, the chunks a replicated run traces (:func:`des_trace`): the first guest
    of each kind all its touched chunks, every other guest none."""
    first: dict = {}
    for g, spec in enumerate(s.specs):
        first.setdefault(spec, g)
    return [s.touched_chunks(g) if first[s.specs[g]] == g else 0 for g in range(s.guests)]


def replicate(tr, s: Scenario):
    """A trace in which one guest of each kind did its work (``tr``: the first guest of its kind
    in ``tr.guests``, e.g. :func:`des_trace`'s) as the trace of all of ``s``'s guests: round by
    round (each guest's next batch, guests in order, as :func:`kit.sim.trace.lazy_accept`
    interleaves them), each guest takes its kind's batch; the DirectMap lines after a round are
    the boot lines plus every guest's change so far (each guest changes them as its kind's
    traced guest did; clipped to the host), shared by the round's batches. RMP faults and oopses
    scale with the guests. The set-up before the run (boot, launch: its events and the boot
    DirectMap lines) is ``tr``'s as it is: every guest's when ``tr`` was built with all of
    ``s``'s guests (:func:`des_trace`), only the traced guests' when it holds those alone."""
    kinds = [spec for spec in dict.fromkeys(s.specs)]
    traced = [tr.guests.index(spec) for spec in kinds]    # the guest of each kind with work
    per_kind = [[b for b in tr.batches if b.guest == t] for t in traced]
    kind_of = [kinds.index(spec) for spec in s.specs]
    keys = ("DirectMap4k", "DirectMap2M", "DirectMap1G")
    boot = tr.directmap_boot
    # each traced batch's change of the lines (the traced guests interleaved in trace order)
    delta: dict = {}
    prev = np.asarray([boot.get(k, 0) for k in keys], dtype=float)
    for b in tr.batches:
        cur = np.asarray([b.directmap.get(k, 0) for k in keys], dtype=float)
        delta[id(b)] = cur - prev
        prev = cur
    total_kb = sum(boot.values())
    line = np.asarray([boot.get(k, 0) for k in keys], dtype=float)
    batches = []
    for j in range(max((len(bs) for bs in per_kind), default=0)):
        row = [(g, per_kind[kind_of[g]][j]) for g in range(s.guests) if j < len(per_kind[kind_of[g]])]
        for _, b in row:
            line = line + delta[id(b)]
        dm4k = int(min(max(line[0], 0), total_kb))
        dm1g = int(min(max(line[2], 0), total_kb - dm4k)) // (1 << 20) * (1 << 20)
        dm = {"DirectMap4k": dm4k, "DirectMap2M": total_kb - dm4k - dm1g}
        if "DirectMap1G" in boot:
            dm["DirectMap1G"] = dm1g
        batches.extend(T.Batch(g, b.chunks, b.bytes, b.events, dm) for g, b in row)
    scale = s.guests / max(len(kinds), 1)
    return replace(tr, guests=list(s.specs), batches=batches, vmsa_pages=sum(v for v, _ in s.specs),
                   host_rmp_faults=int(round(tr.host_rmp_faults * scale)), oopses=int(round(tr.oopses * scale)))


TRACE_CORES = 512               # core count of the host the analytic engine's trace is built on
ANALYTIC_SAMPLE = 1 * GiB       # bytes of one guest the analytic engine's trace covers
ANALYTIC_STEPS = 500            # conversions the analytic engine's trace covers
_TRACE_CACHE: dict = {}


def analytic_trace(s: Scenario):
    """The analytic engine's trace: the workload run on the semantic model for one guest (the
    guests of a scenario are identical and take the same path per chunk) over its first
    ``ANALYTIC_SAMPLE`` (lazy-accept) or ``ANALYTIC_STEPS`` conversions; per-chunk events are
    stationary (a test compares with full traces). Cached by scenario. The demand per chunk
    comes from the sample; the amount of work, the event totals and the final DirectMap
    lines are scaled to the full scenario (:func:`_extrapolate`). The key is the sample
    scenario, whose equality compares policies by :func:`~kit.sim.scenario.policy_key`: a
    user's policy never shares a trace with the built-in of the same name."""
    # the semantic trace does not depend on the host's core count (only ASID recycling, which
    # these workloads never reach, records per-core work), so one trace serves every core count
    # and the trace covers one guest of each kind, so the number of identical guests is not
    # part of the key either: the sample is the key
    distinct = tuple(dict.fromkeys(s.specs))          # one guest of each kind, in order
    sample = replace(s, engine="analytic", host_cores=TRACE_CORES, guests=len(distinct), specs=distinct,
                     vcpus=distinct[0][0], guest_mem=distinct[0][1], steps=min(s.steps, ANALYTIC_STEPS))
    key = sample
    if key not in _TRACE_CACHE:
        chunks = [min(sample.touched_chunks(g), ANALYTIC_SAMPLE // T.ACCEPT_CHUNK)
                  for g in range(len(distinct))]
        if len(_TRACE_CACHE) > 64:
            _TRACE_CACHE.pop(next(iter(_TRACE_CACHE)))
        _TRACE_CACHE[key] = run_trace(sample, chunks=chunks)
    return _TRACE_CACHE[key]


_SETUP_CACHE: dict = {}


def setup_trace(s: Scenario) -> dict:
    """Every guest of ``s`` built and launched on its host as :func:`kit.sim.trace.build` does,
    with no workload: ``{"boot": events, "launch": events, "directmap": lines}``. The
    analytic engine traces the work of one guest of each kind (:func:`analytic_trace`); its
    result's set-up events and the DirectMap lines its work starts from are every guest's, as a
    discrete-event run's are (how the guests' VMSAs share 2M regions of the direct map is not
    linear in the guests, so it is traced, not scaled). Cached by scenario (its core count,
    engine and steps aside: the set-up does not read them)."""
    key = replace(s, engine="analytic", host_cores=TRACE_CORES, steps=_D["steps"])
    if key not in _SETUP_CACHE:
        host, _, gs = T.build(s.host_mem, TRACE_CORES, s.directmap_policy, list(s.specs), s.seed,
                              gmem_hugepages=s.workload == "lazy-accept", vmm=s.vmm)
        boot, launch = T.setup_events(host, gs)
        if len(_SETUP_CACHE) > 64:
            _SETUP_CACHE.pop(next(iter(_SETUP_CACHE)))
        _SETUP_CACHE[key] = {"boot": boot, "launch": launch, "directmap": host.directmap.counts()}
    return _SETUP_CACHE[key]


def _trace_index(tr, s) -> list[int]:
    """Which trace guest stands for each scenario guest (the same one, or its kind's sample)."""
    if len(tr.guests) == s.guests:
        return list(range(s.guests))
    return [tr.guests.index(spec) for spec in s.specs]


def _batch_demands(tr, s, p):
    """Per guest: [(chunks, ChunkDemand, bytes per chunk)] per batch, and the whole-run means.
    Batches that share their events and DirectMap lines (a replicated trace's copies,
    :func:`replicate`) share one demand."""
    per, means = [], []
    work = T.ACCEPT_CHUNK if tr.workload == "lazy-accept" else 0
    index = _trace_index(tr, s)
    vcpus = sum(v for v, _ in s.specs)
    by_guest: dict = {}
    for b in tr.batches:
        by_guest.setdefault(b.guest, []).append(b)
    memo: dict = {}
    for g in range(s.guests):
        rows, tot, n, frac, nbytes = [], np.zeros(len(EVENTS)), 0, 0.0, 0
        for b in by_guest.get(index[g], ()):
            key = (id(b.events), id(b.directmap), b.chunks, b.bytes)
            hit = memo.get(key)
            if hit is None:
                ev = np.asarray([b.events.get(k, 0) for k in EVENTS], dtype=float)
                f4k = dm4k_fraction(b.directmap)
                hit = memo[key] = (ev, f4k, (b.chunks, demand(ev, b.chunks, p, s.host_cores, f4k, work, bool(work),
                                                              vcpus), b.bytes / max(b.chunks, 1)), b)
            ev, f4k, row, _ = hit
            rows.append(row)
            tot += ev
            n += b.chunks
            frac += f4k * b.chunks
            nbytes += b.bytes
        per.append(rows)
        means.append((n, demand(tot, n, p, s.host_cores, frac / max(n, 1), work, bool(work), vcpus),
                      nbytes / max(n, 1)))
    return per, means


def simulate(workload=_D["workload"], guests=_D["guests"], vcpus=_D["vcpus"], guest_mem=_D["guest_mem"],
             host_cores=_D["host_cores"], host_mem=_D["host_mem"], policy=_D["policy"],
             engine=_D["engine"], seed=_D["seed"], *, params: CostParams | None = None,
             steps=_D["steps"], p4k=_D["p4k"], touched=_D["touched"], guest_specs=None, vmm=_D["vmm"],
             progress=None, should_stop=None, trace=None, monitor=None) -> SimResult:
    """Run one configuration. Every argument is validated first through the scenario table
    (:func:`~kit.sim.scenario.scenario`; ``ValueError`` naming it). ``policy``: a built-in's
    name or a :class:`~kit.host.policies.DirectMapPolicy` (instance or subclass).
    ``params``: a :class:`CostParams` (default: ``data/cost_params.json``). ``trace``: reuse
    a trace of the same scenario (e.g. to time it with both engines).

    Live use (des engine): ``progress(fraction)`` over the whole run (tracing on the semantic
    model is the first 90%); ``should_stop()`` ends the run early (``result.stopped``);
    ``monitor(phase, fraction, data)`` with phase ``"trace"`` (data: the host being driven)
    or ``"timing"`` (data: a partial result's ``series`` dict and rate)."""
    t0 = time.perf_counter()
    s = scenario(workload, guests, vcpus, guest_mem, host_cores, host_mem, policy, engine, seed,
                 steps=steps, p4k=p4k, touched=touched, guest_specs=guest_specs, vmm=vmm)
    p = params if params is not None else CostParams.load()
    if not isinstance(p, CostParams):
        raise ValueError(f"params: expected a CostParams, got {type(p).__name__}")
    if trace is not None:
        tr = trace
    elif s.engine == "analytic":
        tr = analytic_trace(s)
    else:
        tr = des_trace(s, progress=(lambda f: progress(0.9 * f)) if progress else None,
                       should_stop=should_stop,
                       monitor=(lambda h, f: monitor("trace", f, h)) if monitor else None)
    per, means = _batch_demands(tr, s, p)
    totals, directmap = tr.totals(), (tr.batches[-1].directmap if tr.batches else tr.directmap_boot)
    series, pct = {}, {}
    note = "full trace"
    setup = {"boot": dict(getattr(tr, "boot", {})), "launch": dict(getattr(tr, "launch", {}))}
    if s.engine == "analytic" and trace is None:
        full = setup_trace(s) if len(tr.guests) < s.guests else None
        totals, directmap, note = _extrapolate(tr, s, full["directmap"] if full else None)
        if full:
            setup = {"boot": dict(full["boot"]), "launch": dict(full["launch"])}
            note += f"; every guest's set-up traced ({s.guests} guests)"
    elif s.engine == "des" and des_groups(s) is not None:
        kinds, timed = len(set(s.specs)), len(des_groups(s))
        note = (f"every guest's set-up traced, the work of one guest of each kind ({kinds} "
                f"kind{'s' if kinds > 1 else ''}), replicated to {s.guests} guests; {timed} of them timed, each for "
                f"{s.guests / timed:.1f} on average")
    if s.engine == "analytic":
        m = mva.solve([(s.specs[g][0], means[g][1]) for g in range(s.guests)], s.host_cores, p)
        per_guest = [m.throughput[g] * means[g][2] / 1e3 for g in range(s.guests)]   # GB/s
        rate = sum(per_guest)
        work = [s.touched_chunks(g) if tr.workload == "lazy-accept" else s.steps for g in range(s.guests)]
        sim_us = _phased_duration(m, work, [(s.specs[g][0], means[g][1]) for g in range(s.guests)],
                                  s.host_cores, p)
        util, waits = m.utilisation, m.waits
        sc = m.sched
        sched = {"runnable": sc.runnable, "smt_speed": sc.speed, "cpu_share": sc.share,
                 "stretch": sc.stretch, "handoff_us": sc.handoff_us, "irq_stretch": sc.irq}
        per_chunk = breakdown.from_mva(tr, _trace_index(tr, s), m, [means[g][1] for g in range(s.guests)], p,
                                       s.host_cores, tr.workload == "lazy-accept",
                                       [s.specs[g][0] for g in range(s.guests)])
    else:
        groups = des_groups(s) or [[g] for g in range(s.guests)]
        snap = None
        if monitor is not None:
            def snap(partial):
                if len(partial.completions):
                    partial = _des().expand(partial, groups)
                    _, rate_, _, _, ser, _ = _des_summary(partial, s, tr, p)
                    monitor("timing", len(partial.completions) / max(1, sum(c for c, _, _ in sum(per, []))),
                            {"series": ser, "fault_in_gbps": rate_})
        r = _des().run([(s.specs[m[0]][0], per[m[0]]) for m in groups], s.host_cores, p,
                    progress=(lambda f: progress(0.9 + 0.1 * f)) if progress else None,
                    should_stop=should_stop, snapshot=snap, seed=s.seed, copies=[len(m) for m in groups])
        r = _des().expand(r, groups)
        sim_us = r.sim_us
        per_guest, rate, util, waits, series, pct = _des_summary(r, s, tr, p)
        sc = schedule(r.runnable_mean, s.host_cores, p)
        delayed = sum(c for c, _ in r.handoffs.values())
        sched = {"runnable": r.runnable_mean, "smt_speed": sc.speed, "cpu_share": sc.share,
                 "stretch": sc.stretch, "handoff_us": sum(t for _, t in r.handoffs.values()) / max(delayed, 1),
                 "irq_stretch": sc.irq, "handoffs_delayed": int(delayed)}
        per_chunk = breakdown.from_des(tr, _trace_index(tr, s), r, p, s.host_cores, tr.workload == "lazy-accept",
                                       util["membw"], sum(v for v, _ in s.specs))
    worst = max(util, key=util.get)
    return SimResult(
        scenario=s,
        fault_in_gbps=float(rate),
        directmap=directmap,
        splits={k: int(totals[k]) for k in ("split_1g", "split_2m", "collapse_2m", "collapse_1g")},
        cpa_lock={"acquisitions": int(totals["cpa_lock"]), "mean_wait_us": float(waits["cpa_lock"]),
                  "hold_us": p["cpa_hold_us"]},
        tlb_flushes={"flush_tlb_all": int(totals["flush_tlb_all"]),
                     "flush_tlb_range": int(totals["flush_tlb_range"]),
                     "ipis": int((totals["flush_tlb_all"] + totals["flush_tlb_range"]) * s.host_cores)},
        host_rmp_faults=int(tr.host_rmp_faults),
        bottleneck={"resource": worst, "utilisation": float(util[worst])},
        utilisation={k: float(v) for k, v in util.items()},
        sim_seconds=float(sim_us / 1e6),
        wall_seconds=time.perf_counter() - t0,
        params={"name": p.name, **p.values()},
        per_guest_gbps=[float(x) for x in per_guest],
        events={k: int(v) for k, v in totals.items()},
        series=series, percentiles=pct,
        safe=tr.host_rmp_faults == 0 and tr.oopses == 0,
        trace=note,
        stopped=bool(getattr(tr, "stopped", False) or (s.engine == "des" and r.stopped)),
        setup=setup,
        rate_band_gbps=_rate_band(tr, s, p, float(rate)),
        scheduling={k: float(v) if k != "handoffs_delayed" else v for k, v in sched.items()},
        time_per_chunk=per_chunk,
    )


def _phased_duration(m, work: list, classes: list, cores: int, p) -> float:
    """Simulated time of the whole run (analytic engine): the guests run together until the
    first has done its work; the others go on without it, re-solved (the host is less loaded:
    fewer runnable threads, less SMT sharing), and so on. ``m``: the solve with every guest."""
    left = [float(w) for w in work]
    active = [g for g in range(len(work)) if left[g] > 0]
    t, X = 0.0, m.throughput
    while active:
        live = [g for g in active if X[g] > 0]
        if not live:
            break
        step = min(left[g] / X[g] for g in live)
        t += step
        for g in live:
            left[g] -= step * X[g]
        active = [g for g in live if left[g] > 1e-9 * max(work[g], 1)]
        if active:
            sub = mva.solve([classes[g] for g in active], cores, p)
            X = dict(zip(active, sub.throughput))
            X = [X.get(g, 0.0) for g in range(len(work))]
    return t


def _rate_band(tr, s, p, rate):
    """The rate's band from the fitted parameters' uncertainty and the model error (``p``'s covariance, written by
    ``kit calibrate``; docs/sim-model.md, "Error bars and validation"): the lowest and highest rate of the
    analytic engine over :meth:`CostParams.band_sets`, relative to its rate at ``p`` and
    applied to ``rate`` (the discrete-event engine's band is the analytic engine's relative
    band, on its sample trace), widened by the model error the fit recorded
    (:meth:`CostParams.band`). None without a covariance of ``p``'s fitted parameters. The
    assumed parameters are held as they are (their influence is in the sensitivities)."""
    sets = p.band_sets()
    if not sets or not rate > 0:
        return None
    base = tr if s.engine == "analytic" else analytic_trace(s)

    def analytic(q, start=None):
        _, means = _batch_demands(base, s, q)
        m = mva.solve([(s.specs[g][0], means[g][1]) for g in range(s.guests)], s.host_cores, q, start=start)
        return sum(m.throughput[g] * means[g][2] / 1e3 for g in range(s.guests)), m
    ref, m0 = analytic(p)
    if not ref > 0:
        return None
    # a fixed point that took many iterations (a lock whose load feeds back on itself): each set
    # begins from p's solution; one the recursion reaches at once begins afresh
    start = m0 if m0.iterations > 5 else None
    return p.band(rate, [rate * analytic(q, start)[0] / ref for q in sets])


def _extrapolate(tr, s, boot_lines=None):
    """Scale a sample trace's event totals to the whole scenario and extend its DirectMap lines
    linearly (each accepted chunk changes them by the same amount; clipped to the host), from
    ``boot_lines`` (every guest's set-up: :func:`setup_trace`) or the sample's own."""
    units = sum(b.chunks for b in tr.batches)
    full = (sum(s.touched_chunks(g) for g in range(s.guests)) if tr.workload == "lazy-accept"
            else s.guests * s.steps)
    k = full / max(units, 1)
    totals = {e: int(round(v * k)) for e, v in tr.totals().items()}
    boot = tr.directmap_boot
    start = boot_lines or boot
    last = tr.batches[-1].directmap if tr.batches else boot
    total_kb = sum(start.values())
    dm = {key: start.get(key, 0) + (last.get(key, 0) - boot.get(key, 0)) * k for key in start}
    dm4k = int(min(max(dm.get("DirectMap4k", 0), 0), total_kb))
    dm1g = int(min(max(dm.get("DirectMap1G", 0), 0), total_kb - dm4k)) // (1 << 20) * (1 << 20)
    out = {"DirectMap4k": dm4k, "DirectMap2M": total_kb - dm4k - dm1g}
    if "DirectMap1G" in start:
        out["DirectMap1G"] = dm1g
    note = (f"sample of {units} {'chunks' if tr.workload == 'lazy-accept' else 'conversions'} "
            f"({len(tr.guests)} guest{'s' if len(tr.guests) > 1 else ''}, one of each kind), scaled x{k:.1f}")
    return totals, out, note


def _des_summary(r, s, tr, p, bins: int = 100):
    """Rates, utilisations, waits, time series and percentiles from a DES run."""
    T_end = max(r.sim_us, 1e-9)
    # the concurrent fault-in rate: bytes done while every guest still had work / that time
    last = np.full(s.guests, -np.inf)
    np.maximum.at(last, r.guest, r.completions)
    ends = np.where(np.bincount(r.guest, minlength=s.guests) > 0, last, T_end)
    t_all = float(ends.min())
    in_all = r.completions <= t_all
    done = np.bincount(r.guest[in_all], weights=r.nbytes[in_all], minlength=s.guests)
    per_guest = [float(done[g] / t_all / 1e3) for g in range(s.guests)]
    rate = sum(per_guest)
    util = {"guest_lock": r.holds["guest_lock"] / s.guests / T_end,
            "vm_lock": r.holds["vm_lock"] / s.guests / T_end,
            "cpa_lock": r.holds["cpa_lock"] / T_end, "pgd_lock": r.holds["pgd_lock"] / T_end}
    waits = {k: float(v[:, 1].mean()) if len(v) else 0.0 for k, v in r.waits.items()}
    edges = np.linspace(0, T_end, bins + 1)
    idx = np.minimum(np.searchsorted(edges, r.completions, side="right") - 1, bins - 1)
    gb = np.bincount(idx, weights=r.nbytes, minlength=bins) / (np.diff(edges) * 1e3)
    # DirectMap after the batch holding the n-th completed chunk (batches in trace order)
    cum = np.cumsum([b.chunks for b in tr.batches])
    done_by_bin = np.searchsorted(r.completions, edges[1:], side="right")
    bi = np.minimum(np.searchsorted(cum, np.maximum(done_by_bin, 1), side="left"), len(cum) - 1)
    dm = {k: [int(tr.batches[i].directmap.get(k, 0)) for i in bi] for k in ("DirectMap4k", "DirectMap2M", "DirectMap1G")}
    lockw = {}
    for k, v in r.waits.items():
        if len(v):
            wi = np.minimum(np.searchsorted(edges, v[:, 0], side="right") - 1, bins - 1)
            lockw[k] = (np.bincount(wi, weights=v[:, 1], minlength=bins) / np.diff(edges)).tolist()
        else:
            lockw[k] = [0.0] * bins
    series = {"t_s": (edges[1:] / 1e6).tolist(), "fault_in_gbps": gb.tolist(), **dm,
              "lock_wait_share": lockw}
    pct = {f"accept_latency_us_p{q}": float(np.percentile(r.latency, q)) for q in (50, 90, 99)} \
        if len(r.latency) else {}
    # DRAM traffic: the folios cleared and the guest's writes of them (lazy-accept)
    traffic = r.nbytes.sum() * (2 if tr.workload == "lazy-accept" else 1)
    util["membw"] = float(traffic / T_end / (dram_gbps(p, s.host_cores) * 1e3))
    util["cores"] = float(min(1.0, r.runnable_mean / s.host_cores))
    return per_guest, rate, util, waits, series, pct
