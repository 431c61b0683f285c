"""The kit's flagship experiments, as functions of their parameters returning plain rows.

Notebooks, dashboards, ``kit demo`` and reports call these; none of them holds model logic.
A policy is a built-in's name or a :class:`~kit.host.policies.DirectMapPolicy` a user wrote
(instance or subclass); rows and result keys name it by :func:`~kit.sim.scenario.policy_label`.

- :func:`policy_table`: every policy on every measured configuration (analytic engine), the
  measured mean and spread where the source measured that policy.
- :func:`fragmentation`: the ``conversions`` workload under each policy (DES engine): the
  DirectMap lines and fault-in rate over simulated time.
- :func:`safety`: lazy acceptance with host background activity under each policy: host RMP
  faults (only ``none`` may have any).
- :func:`sweep`: one parameter varied, the others fixed (scaling studies).
"""
from __future__ import annotations

from .api import simulate
from .calibrate import DEFAULT_HOST, HELD_BACK, load_measurements
from .params import CostParams
from .scenario import policy_label


def measured_configs() -> list:
    """The measured configurations (``data/measurements.csv``), each a calibrate.Target."""
    return load_measurements()


def _config_label(cfg) -> str:
    pin = "" if cfg.pinning == "unpinned" else ", node 0"
    return f"{cfg.table}: {cfg.guests}x{cfg.vcpus}x{cfg.guest_mem_gib}G{pin}"


def policy_table(policies, configs="all", *, engine: str = "analytic", seed: int = 0, params=None) -> list[dict]:
    """Rows (config, policy, model_gbps, model_band_gbps (the band: fit and model error, or None),
    measured_gbps, spread, error_pct, within, bottleneck,
    utilisation, directmap, splits, cpa_lock, sim_seconds) for every policy on every measured
    configuration in ``configs`` ("all" or indices into :func:`measured_configs`)."""
    targets = measured_configs()
    picked = range(len(targets)) if configs == "all" else configs
    seen = {}
    for i in picked:
        cfg = targets[i].config
        key = (cfg.guests, cfg.vcpus, cfg.guest_mem_gib, cfg.host_cores, cfg.host_mem_gib, cfg.pinning)
        seen.setdefault(key, []).append(targets[i])
    rows = []
    for key, group in seen.items():
        cfg = group[0].config
        measured = {t.config.policy: t for t in group}
        for p in policies:
            r = simulate(**{**cfg.sim_kwargs(), "policy": p}, engine=engine, seed=seed, params=params)
            t = measured.get(p)
            rows.append({"config": _config_label(cfg), "policy": policy_label(p), "model_gbps": round(r.fault_in_gbps, 3),
                         "model_band_gbps": r.rate_band_gbps,
                         "measured_gbps": t.mean if t else None, "spread": t.spread if t else None,
                         "error_pct": round(100 * (r.fault_in_gbps - t.mean) / t.mean, 1) if t else None,
                         "within": bool(abs(r.fault_in_gbps - t.mean) <= t.spread) if t else None,
                         "bottleneck": f"{r.bottleneck['resource']} ({r.bottleneck['utilisation']:.0%})",
                         "utilisation": r.utilisation, "directmap": r.directmap,
                         "splits": r.splits["split_1g"] + r.splits["split_2m"],
                         "cpa_lock": r.cpa_lock["acquisitions"], "host_rmp_faults": r.host_rmp_faults,
                         "sim_seconds": round(r.sim_seconds, 3), "engine": engine})
    return rows


def fragmentation(policies, *, guest_mem="16GiB", vcpus: int = 8, steps: int = 2000, p4k: float = 0.9,
                  host_cores: int = 64, host_mem="64GiB", seed: int = 0, params=None) -> dict:
    """The conversions workload under each policy on the DES engine: {policy: result}."""
    return {policy_label(p): simulate("conversions", 1, vcpus, guest_mem, host_cores, host_mem, p, "des", seed,
                                      steps=steps, p4k=p4k, params=params) for p in policies}


def safety(policies, *, guest_mem="8GiB", vcpus: int = 8, host_cores: int = 32, host_mem="64GiB",
           seed: int = 0, params=None) -> list[dict]:
    """Lazy acceptance with host kernel allocations and writes beside the guests' pages."""
    rows = []
    for p in policies:
        r = simulate("lazy-accept", 1, vcpus, guest_mem, host_cores, host_mem, p, "des", seed,
                     touched=guest_mem, params=params)
        rows.append({"policy": policy_label(p), "host_rmp_faults": r.host_rmp_faults, "safe": r.safe,
                     "fault_in_gbps": round(r.fault_in_gbps, 3), "rate_band_gbps": r.rate_band_gbps,
                     **r.directmap, "engine": "des"})
    return rows


def sweep(name: str, values, *, policies, params=None, **fixed) -> list[dict]:
    """Vary one of ``guests``, ``vcpus`` or ``host_cores`` over ``values`` for each policy
    (analytic engine); rows hold the rate, its band (``rate_band_gbps``), the
    bottleneck and every resource's utilisation."""
    if name not in ("guests", "vcpus", "host_cores"):
        raise ValueError(f"name: unknown {name!r}; allowed: guests, vcpus, host_cores")
    rows = []
    for p in policies:
        for v in values:
            r = simulate(**{**fixed, name: v, "policy": p}, params=params)
            rows.append({"policy": policy_label(p), name: v, "fault_in_gbps": round(r.fault_in_gbps, 3),
                         "rate_band_gbps": r.rate_band_gbps,
                         "bottleneck": r.bottleneck["resource"], **{f"util_{k}": round(u, 4) for k, u in r.utilisation.items()}})
    return rows


#: The scheduling assumptions (``kind`` "assumed" in ``data/cost_params.json``) whose influence
#: :func:`assumption_sweep` shows, with the factors it multiplies them by by default.
SCHEDULING_ASSUMPTIONS = ("ctx_switch_us", "sched_slice_us", "accept_spin_share", "smt_threads")
_HOST = dict(host_cores=DEFAULT_HOST[0], host_mem=f"{DEFAULT_HOST[1]}GiB")
OVERSUBSCRIBED = (dict(guests=4, vcpus=HELD_BACK["vcpus"], guest_mem="256GiB", **_HOST),
                  dict(guests=HELD_BACK["guests"], vcpus=HELD_BACK["vcpus"],
                       guest_mem=f"{HELD_BACK['guest_mem_gib']}GiB", **_HOST))


def assumption_sweep(name: str, values, *, configs=OVERSUBSCRIBED, policies=("split-on-demand",),
                     params=None) -> list[dict]:
    """The fault-in rate (analytic engine) with one cost parameter set to each of ``values``,
    the others as shipped, on ``configs`` (default: table B's 4 x 128 vCPUs x 256 GiB and the
    2x over-subscribed 8 x 128 vCPUs x 160 GiB, on table B's host). Rows: param, value, config,
    policy, fault_in_gbps, rate_band_gbps (the band: fit and model error, or None), stretch, handoff_us. :func:`kit.viz.figures.assumption_figure`
    draws them."""
    base = params if params is not None else CostParams.load()
    rows = []
    for v in values:
        p = base.with_values(**{name: v})
        for cfg in configs:
            for pol in policies:
                r = simulate(**cfg, policy=pol, params=p)
                rows.append({"param": name, "value": float(v),
                             "config": f"{cfg['guests']}x{cfg['vcpus']}x{cfg['guest_mem']} on {cfg['host_cores']}",
                             "policy": policy_label(pol), "fault_in_gbps": round(r.fault_in_gbps, 4),
                             "rate_band_gbps": r.rate_band_gbps,
                             "stretch": round(r.scheduling["stretch"], 4),
                             "handoff_us": round(r.scheduling["handoff_us"], 3)})
    return rows


#: the configuration the source measured but the calibration never sees (data/measurements.csv,
#: held back): 8 guests x 128 vCPUs x 160 GiB on a 512-core, 1.5 TiB EPYC host
HEADLINE = dict(guests=8, vcpus=128, guest_mem="160GiB", host_cores=512, host_mem="1.5TiB")
#: a smaller lazy-acceptance run the discrete-event engine times in about a second per policy,
#: large enough that the direct map and the lock waits move as the guests fault in
TIMELINE = dict(guests=2, vcpus=32, guest_mem="16GiB", host_cores=64, host_mem="128GiB")


def headline(policies, *, seed: int = 0, params=None, **config) -> dict:
    """Lazy acceptance at :data:`HEADLINE` (or ``config``) under each policy, analytic engine:
    {policy: result} with the rate, the final DirectMap lines, safety and
    ``time_per_chunk``. Milliseconds per policy."""
    cfg = {**HEADLINE, **config}
    return {policy_label(p): simulate("lazy-accept", policy=p, engine="analytic", seed=seed, params=params, **cfg)
            for p in policies}


def timeline(policies, *, seed: int = 0, params=None, **config) -> dict:
    """Lazy acceptance at :data:`TIMELINE` (or ``config``) under each policy on the
    discrete-event engine: {policy: result} whose ``series`` hold the fault-in rate, the
    DirectMap lines and the lock waits over simulated time."""
    cfg = {**TIMELINE, **config}
    return {policy_label(p): simulate("lazy-accept", policy=p, engine="des", seed=seed, params=params, **cfg)
            for p in policies}
