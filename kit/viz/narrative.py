"""The words of a result: what each policy is, which are unsafe, and the conclusion of a run,
written from the recorded numbers (never typed in), shared by the notebook that records them
and the report that shows them.

Every function takes the JSON a notebook records with ``kit.lab.record`` (``doc["results"]``)
and returns plain text (no markup: the caller escapes or renders it).
"""
from __future__ import annotations

from ..host.policies import DIRECTMAP_POLICIES
from ..units import BAND_MEANING, NO_BAND, band_fields, format_size, has_band, rate_text

#: the lazy-acceptance chunk the time breakdown is per (kit.sim.trace.ACCEPT_CHUNK)
CHUNK = "4 MiB chunk"
#: what an unsafe policy is called wherever its rate appears
UNSAFE = "UNSAFE"


def policy_description(name: str) -> str:
    """A built-in direct-map policy's own description (kit/host/policies.py), or "" for a
    policy a user wrote."""
    cls = DIRECTMAP_POLICIES.get(name)
    return cls.description if cls is not None else ""


def policy_rows(results: dict):
    """Every (policy, recorded thing) pair of a result, wherever a policy's figures appear."""
    for key in ("policy_table", "safety", "held_back", "sweep"):
        for r in results.get(key) or []:
            if isinstance(r, dict) and "policy" in r:
                yield r["policy"], r
    for key in ("headline", "timeline", "fragmentation"):
        for p, r in (results.get(key) or {}).items():
            if isinstance(r, dict):
                yield p, r
    for r in results.get("simulations") or []:
        if isinstance(r, dict) and "policy" in r:
            yield r["policy"], r


def unsafe_policies(results) -> set:
    """Policies a result shows unsafe: a recorded host RMP fault or ``safe: false``, or a
    built-in that does not claim safety (``DirectMapPolicy.safe``)."""
    out = set()
    if not isinstance(results, dict):
        return out
    for p, r in policy_rows(results):
        cls = DIRECTMAP_POLICIES.get(p)
        if (cls is not None and not cls.safe) or r.get("safe") is False or (r.get("host_rmp_faults") or 0) > 0:
            out.add(p)
    return out


def policy_label(name: str, unsafe: set) -> str:
    """A policy's name, marked where it is unsafe."""
    return f"{name} ({UNSAFE})" if name in unsafe else name


def scenario_text(sc: dict) -> str:
    """``8 guests x 128 vCPUs x 160GiB on 512 cores / 1536GiB`` from a recorded scenario."""
    if not sc:
        return "?"
    g = sc.get("guests", "?")
    mem = sc.get("guest_mem")
    host = sc.get("host_mem")
    mem = format_size(mem) if isinstance(mem, int) else mem
    host = format_size(host) if isinstance(host, int) else host
    return (f"{g} guest{'s' if g != 1 else ''} x {sc.get('vcpus', '?')} vCPUs x {mem} "
            f"on {sc.get('host_cores', '?')} cores / {host}")


def dm4k_share(directmap: dict) -> float:
    """DirectMap4k as a percentage of the direct map (of host memory)."""
    total = sum(directmap.values())
    return 100.0 * directmap.get("DirectMap4k", 0) / total if total else 0.0


def gbps(v: float) -> str:
    return f"{v:.2f} GB/s"


#: where a recorded row keeps each rate's band (``[low, high]`` or None): the band key of a
#: rate key (:func:`kit.sim.experiments.policy_table` rows, a SimResult's JSON, sweep rows)
BAND_KEYS = {"model_gbps": "model_band_gbps", "fault_in_gbps": "rate_band_gbps"}


def rate_of(r: dict, key: str = "fault_in_gbps") -> str:
    """A recorded row's modelled rate with its band (:func:`kit.units.rate_text`; a row that
    carries no band says so)."""
    return rate_text(float(r[key]), r.get(BAND_KEYS.get(key, "")))


def with_band_columns(r: dict) -> dict:
    """A recorded row with each rate's band as two scalar columns right after the rate
    (``model_gbps_low``, ``model_gbps_high``: :func:`kit.units.band_fields`) and the band's
    list left out, for tables and CSV; a rate without a band gets empty band columns."""
    rate_of_band = {b: k for k, b in BAND_KEYS.items()}
    out = {}
    for k, v in r.items():
        if rate_of_band.get(k) in r:        # shown as the columns beside its rate
            continue
        out[k] = v
        if k in BAND_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool):
            out.update(band_fields(k, r.get(BAND_KEYS[k])))
    return out


def band_note(lines) -> str:
    """What a band is, said once after sentences that show rates (empty when none does)."""
    text = " ".join(lines)
    if "(band " in text or NO_BAND in text:
        return (f"Each modelled rate is followed by its band ({BAND_MEANING}): the lowest and highest rate "
                "over the fitted cost parameters' uncertainty, with the assumed parameters as they are.")
    return ""


def pct(v: float) -> str:
    """A percentage with the digits it needs: 83.5%, 0.13%, 0.0001%."""
    if v == 0:
        return "0%"
    if abs(v) >= 10:
        return f"{v:.1f}%"
    if abs(v) >= 0.01:
        return f"{v:.2f}%"
    return f"{v:.2g}%"


def micros(v: float) -> str:
    """Microseconds, switched to ms or s where that reads better."""
    if v >= 1e6:
        return f"{v / 1e6:.2f} s"
    if v >= 1e3:
        return f"{v / 1e3:.1f} ms"
    return f"{v:.1f} µs"


def _largest(parts: dict) -> tuple[str, float]:
    k = max(parts, key=parts.get)
    return k, parts[k]


def headline_sentences(head: dict, unsafe: set) -> list[str]:
    """The conclusion at the headline configuration: fastest safe policy, its rate, its
    fragmentation, and where each policy's chunk time goes."""
    if not head:
        return []
    any_run = next(iter(head.values()))
    where = scenario_text(any_run.get("scenario", {}))
    engine = any_run.get("engine", "?")
    safe = {p: r for p, r in head.items() if p not in unsafe}
    out = []
    if safe:
        best = max(safe, key=lambda p: safe[p]["fault_in_gbps"])
        r = safe[best]
        part, us = _largest(r.get("time_per_chunk") or {"?": 0.0})
        total = sum((r.get("time_per_chunk") or {}).values())
        out.append(f"At {where} ({engine} engine), the fastest safe policy is {best}: "
                   f"{rate_of(r)}, DirectMap4k {pct(dm4k_share(r['directmap']))} of host memory, "
                   f"no host RMP fault; one vCPU spends {micros(total)} per {CHUNK}, most of it {part} "
                   f"({micros(us)}).")
        close = overlapping(r, {p: q for p, q in safe.items() if p != best})
        if close:
            out.append(f"The model does not tell {best} apart from {', '.join(close)}: their bands overlap.")
        for p, r in safe.items():
            if p == best:
                continue
            tp = r.get("time_per_chunk") or {}
            part, us = _largest(tp) if tp else ("?", 0.0)
            out.append(f"{p}: {rate_of(r)} ({r['fault_in_gbps'] / max(safe[best]['fault_in_gbps'], 1e-12):.0%} "
                       f"of {best}), DirectMap4k {pct(dm4k_share(r['directmap']))}; of its {micros(sum(tp.values()))} "
                       f"per {CHUNK}, {part} takes {micros(us)} ({us / max(sum(tp.values()), 1e-12):.0%}).")
    for p in head:
        if p in unsafe:
            r = head[p]
            out.append(f"{p} is {UNSAFE}: {rate_of(r)} here, but the host kernel takes RMP faults "
                       "writing its own pages (see the safety section); it is no option.")
    return out


def conclusion(results) -> list[str]:
    """The conclusion of a recorded run as sentences of this run's numbers: measured rows
    reproduced, the headline configuration (which policy, how fast, how safe, at what
    fragmentation), fragmentation as guests fault in, and safety. Empty for a result these
    do not apply to."""
    if not isinstance(results, dict):
        return []
    unsafe = unsafe_policies(results)
    out = []
    s = results.get("summary")
    if isinstance(s, dict) and "measured_rows" in s:
        out.append(f"{s['within_spread']} of {s['measured_rows']} measured rows (data/measurements.csv) are "
                   "reproduced within their measured spread.")
    out += headline_sentences(results.get("headline") or {}, unsafe)
    tl = results.get("timeline") or {}
    if tl:
        where = scenario_text(next(iter(tl.values())).get("scenario", {}))
        grow = []
        for p, r in tl.items():
            ser = (r.get("series") or {}).get("DirectMap4k") or []
            total = sum(r.get("directmap", {}).values()) or 1
            if ser:
                grow.append(f"{p} {pct(100 * ser[0] / total)} -> {pct(100 * ser[-1] / total)}")
        if grow:
            out.append(f"As {where} fault in (discrete-event engine), DirectMap4k as a share of host memory goes: "
                       + "; ".join(grow) + ".")
    safety = results.get("safety") or []
    if safety:
        faults = ", ".join(f"{r['policy']} {r['host_rmp_faults']}" for r in safety)
        out.append(f"Host RMP faults in the safety workload: {faults}.")
    out += scaling_sentences(results, unsafe)
    out += band_sentences(results.get("bands") or [])
    note = band_note(out)
    return out + ([note] if note else [])


def band_sentences(rows: list[dict]) -> list[str]:
    """The measured configurations' modelled rates with their bands beside the measurements
    (rows of :func:`kit.sim.calibrate.band_table`), and how many measurements lie within the
    band widened by their spread."""
    rows = [r for r in rows if isinstance(r, dict) and "model_gbps" in r]
    if not rows:
        return []
    each = "; ".join(f"{r['config']}, {r['policy']}: {rate_of(r, 'model_gbps')}"
                     + (f", measured {r['measured_gbps']:.2f} ± {r['spread']:.2f}" if r.get("measured_gbps") is not None else "")
                     for r in rows)
    within = sum(1 for r in rows if r.get("within"))
    return [f"Modelled rates of the measured configurations: {each}.",
            f"{within} of {len(rows)} measurements lie within the model's band widened by their spread."]


def overlapping(best: dict, others: dict) -> list[str]:
    """The names in ``others`` ({name: row}) whose rate's band overlaps ``best``'s: the model
    does not tell them apart from it."""
    lo = (best.get("rate_band_gbps") or [None])[0]
    if not has_band(best.get("rate_band_gbps")):
        return []
    return [n for n, r in others.items() if has_band(r.get("rate_band_gbps")) and r["rate_band_gbps"][1] >= lo]


def scaling_sentences(results: dict, unsafe: set = frozenset()) -> list[str]:
    """The conclusion of a scaling study (notebooks/lazy-acceptance-scaling.ipynb): each
    policy's rate with its band at the held-back configuration (``held_back`` rows, their
    ``scenario``), the fastest and the policies the model does not tell apart from it, and the
    rates on the fewest host cores of the ``sweep``."""
    held = [r for r in results.get("held_back") or [] if isinstance(r, dict) and "fault_in_gbps" in r]
    if not held:
        return []
    sc = next((r["scenario"] for r in held if isinstance(r.get("scenario"), dict)), {})
    where = f" ({scenario_text(sc)})" if sc else ""
    rates = "; ".join(f"{policy_label(r['policy'], unsafe)} {rate_of(r)}"
                      + (f", bound by {r['bottleneck']}" if r.get("bottleneck") else "") for r in held)
    best = max(held, key=lambda r: r["fault_in_gbps"])
    close = overlapping(best, {r["policy"]: r for r in held if r is not best})
    tie = (f"; within its band: {', '.join(close)} (the model does not tell them apart)" if close else "")
    out = [f"At the held-back configuration{where} the analytic engine gives: {rates}. Fastest: "
           f"{policy_label(best['policy'], unsafe)}{tie}."]
    cores = [r for r in results.get("sweep") or [] if isinstance(r, dict) and "host_cores" in r]
    if cores:
        fewest = min(r["host_cores"] for r in cores)
        out.append(f"On {fewest} host cores: " + "; ".join(
            f"{policy_label(r['policy'], unsafe)} {rate_of(r)}" for r in cores if r["host_cores"] == fewest) + ".")
    return out


def headline_numbers(results) -> dict:
    """The scalar results of a run a person compares across runs (sweep tables, the diff
    view): its top-level scalars and ``summary``, each policy's rate (and DirectMap4k share at
    the headline configuration), the held-back rates, the discrete-event rates, and the
    invariants a race exploration broke. Keys name their unit."""
    out: dict = {}
    if not isinstance(results, dict):
        return out
    unsafe = unsafe_policies(results)

    def name(p: str) -> str:
        return policy_label(p, unsafe)
    for k, v in results.items():
        if isinstance(v, (int, float, str, bool)) and not isinstance(v, bool) or v is None:
            out[k] = v
    for k, v in (results.get("summary") or {}).items() if isinstance(results.get("summary"), dict) else []:
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            out[f"summary.{k}"] = v
    def rate(key: str, value, r: dict) -> None:
        # the rate, then its band's low and high beside it when the row records a band
        # (None: the run had none); a row from before bands were recorded gets no band columns
        out[key] = value
        if "rate_band_gbps" in r:
            out.update(band_fields(key, r.get("rate_band_gbps")))
    for p, r in (results.get("headline") or {}).items():
        rate(f"{name(p)}: fault-in GB/s", round(float(r["fault_in_gbps"]), 3), r)
        out[f"{name(p)}: DirectMap4k % of memory"] = round(dm4k_share(r.get("directmap", {})), 4)
    for r in results.get("held_back") or []:
        if "policy" in r and "fault_in_gbps" in r:
            rate(f"{name(r['policy'])}: fault-in GB/s (held-back configuration)", r["fault_in_gbps"], r)
    for r in results.get("simulations") or []:
        if isinstance(r, dict) and "policy" in r:
            rate(f"{name(r['policy'])}: fault-in GB/s ({r.get('engine', '?')})", round(float(r["fault_in_gbps"]), 3), r)
    for d in results.get("explorations") or []:
        if isinstance(d, dict) and "scheme" in d:
            out[f"{d['scheme']}: invariants broken"] = sum(1 for i in (d.get("invariants") or {}).values()
                                                           if i.get("violations"))
    return out
