"""``kit calibrate``: fit the free cost parameters to ``data/measurements.csv``.

Each measured configuration is traced once on the semantic model (the events do not depend on
the cost parameters); the fit then only re-times the traces with the analytic engine, with
``scipy.optimize.least_squares`` over the parameters marked ``fitted`` (bounded). A residual
is (model - measured) / allowed spread: the standard deviation for mean+sd rows, 15% of the
mean of the runs for per-run rows. Every row must end within its spread.

Assumptions for rows the source leaves open (named here, shown in the residual table):
table A gives no host, taken as table B's (512 cores, 1536 GiB); ``numa-node-0`` pinning puts
the vCPU threads on one of ``NUMA_NODES`` nodes' cores.

How good the fit is beyond its own rows (docs/sim-model.md, "Error bars and validation"):

- :func:`leave_one_out`: each measured configuration predicted by a fit of the others (a
  re-fit per row, from the same start as the full fit), and whether the remaining rows still
  determine every fitted parameter.
- :func:`sensitivities`: elasticities ``d ln(rate) / d ln(param)`` of every row's modelled
  rate, for every parameter the fit reads from the parameter table; a count (CPUs per socket,
  threads per core) or a 0/1 switch by the step to its next whole value instead.
- :func:`covariance`: the fitted parameters' uncertainty, linearised at the optimum from
  the Jacobian of the residuals (residuals are in units of the rows' spreads, so
  ``(J^T J)^-1``), inflated by the reduced chi-square when the rows scatter more than their
  spreads say, with a weak prior of the fit's bounds so a direction no row determines stays
  bounded instead of infinite. :func:`calibrate` stores it with the fitted set;
  :meth:`CostParams.band_sets` turns it into a rate's band.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from types import SimpleNamespace
from pathlib import Path

import numpy as np

from .api import analytic_trace, scenario, simulate
from .params import DATA, LOG_FLOOR, MODEL_ERROR_MAX, CostParams

MEASUREMENTS = DATA / "measurements.csv"
RUN_TOLERANCE = 0.15
NUMA_NODES = 2
DEFAULT_HOST = (512, 1536)
HELD_BACK = dict(guests=8, vcpus=128, guest_mem_gib=160, host_cores=512, host_mem_gib=1536)


@dataclass(frozen=True)
class Config:
    table: str
    host_cores: int
    host_mem_gib: int
    guests: int
    vcpus: int
    guest_mem_gib: int
    pinning: str
    policy: str

    def sim_kwargs(self) -> dict:
        cores = self.host_cores // NUMA_NODES if self.pinning != "unpinned" else self.host_cores
        return dict(guests=self.guests, vcpus=self.vcpus, guest_mem=f"{self.guest_mem_gib}GiB",
                    host_cores=cores, host_mem=f"{self.host_mem_gib}GiB", policy=self.policy)

    @property
    def label(self) -> str:
        pin = "" if self.pinning == "unpinned" else f", {self.pinning}"
        return f"{self.table}: {self.guests}x{self.vcpus} vCPU x {self.guest_mem_gib} GiB{pin}, {self.policy}"


#: Runs behind each mean+sd row: "Average fault-in rate across 3 runs" (Michael Roth, review of
#: "[PATCH v1 11/26] x86/sev: Invalidate pages from the direct map when adding them to the RMP
#: table", 2024-01-16).
MEAN_SD_RUNS = 3
#: The chi-square tail below which :func:`loo_chance_text` calls the left-out errors larger than
#: the stated uncertainties explain (the usual 5% test).
CHANCE_ALPHA = 0.05


@dataclass
class Target:
    config: Config
    mean: float
    spread: float          # allowed |model - mean|
    kind: str              # mean_sd | runs
    runs: tuple = ()

    @property
    def n_runs(self) -> int:
        """Runs behind the mean: :data:`MEAN_SD_RUNS` for a mean+sd row, else the runs given."""
        return MEAN_SD_RUNS if self.kind == "mean_sd" else len(self.runs)

    @property
    def rel_sd(self) -> float:
        """The runs' own standard deviation relative to their mean (the source's sd for a
        mean+sd row, the sample sd for per-run rows); NaN with fewer than two runs."""
        if self.kind == "mean_sd":
            return self.spread / self.mean
        if len(self.runs) < 2:
            return float("nan")
        return float(np.std(self.runs, ddof=1)) / self.mean


def pooled_noise(targets) -> dict:
    """The measured means' noise, from the run-to-run spread pooled over every row: three runs
    give a standard deviation too rough to use alone (two degrees of freedom), so each row's
    relative sd is pooled, weighted by its degrees of freedom (runs - 1), on the assumption
    that the method's relative noise is the same for every configuration. Returns ``rel_sd``
    (pooled), ``dof`` and ``noise``: each row's mean's sd, ``rel_sd x mean / sqrt(runs)``
    (with no row of two runs or more, or runs that never differ: its spread, ``rel_sd`` NaN and
    ``dof`` 0: no estimate of the noise)."""
    dof = [max(t.n_runs - 1, 0) if t.rel_sd == t.rel_sd else 0 for t in targets]
    total = sum(dof)
    rel = math.sqrt(sum(d * t.rel_sd ** 2 for d, t in zip(dof, targets) if d) / total) if total else 0.0
    if not rel > 0:                 # no row of two runs, or runs all equal: no estimate of the noise
        return {"rel_sd": float("nan"), "dof": 0, "noise": [t.spread for t in targets]}
    return {"rel_sd": rel, "dof": total,
            "noise": [rel * t.mean / math.sqrt(max(t.n_runs, 1)) for t in targets]}


def load_measurements(path=MEASUREMENTS) -> list[Target]:
    """The measured rows grouped by configuration (runs of one configuration together)."""
    lines = [ln for ln in Path(path).read_text().splitlines() if ln and not ln.startswith("#")]
    groups: dict[Config, list[dict]] = {}
    for row in csv.DictReader(lines):
        cores = int(row["host_cores"]) if row["host_cores"] else DEFAULT_HOST[0]
        mem = int(row["host_mem_gib"]) if row["host_mem_gib"] else DEFAULT_HOST[1]
        cfg = Config(row["table"], cores, mem, int(row["guests"]), int(row["vcpus_per_guest"]),
                     int(row["guest_mem_gib"]), row["pinning"], row["policy"])
        groups.setdefault(cfg, []).append(row)
    out = []
    for cfg, rows in groups.items():
        if rows[0]["kind"] == "mean_sd":
            out.append(Target(cfg, float(rows[0]["gbps"]), float(rows[0]["sd"]), "mean_sd"))
        else:
            runs = tuple(float(r["gbps"]) for r in rows)
            m = float(np.mean(runs))
            out.append(Target(cfg, m, RUN_TOLERANCE * m, "runs", runs))
    return out


class Evaluator:
    """Traces each configuration once (analytic sample), then re-times it for any parameters."""

    def __init__(self, targets, *, seed: int = 0):
        self.targets = targets
        self.items = []
        for t in targets:
            s = scenario(**t.config.sim_kwargs(), seed=seed)
            self.items.append((s, analytic_trace(s)))

    def predict(self, params: CostParams, rows=None) -> np.ndarray:
        """Modelled rates (GB/s) of every configuration, or of the indices in ``rows``."""
        picked = self.items if rows is None else [self.items[i] for i in rows]
        point = params.without_covariance()
        return np.asarray([simulate(**_kw(s), params=point, trace=tr).fault_in_gbps
                           for s, tr in picked])


def _kw(s) -> dict:
    return dict(workload=s.workload, guests=s.guests, vcpus=s.vcpus, guest_mem=s.guest_mem,
                host_cores=s.host_cores, host_mem=s.host_mem, policy=s.directmap_policy, engine="analytic",
                seed=s.seed)


def residual_table(targets, predicted) -> list[dict]:
    rows = []
    for t, m in zip(targets, predicted):
        rows.append({"config": t.config.label, "measured": round(t.mean, 3),
                     "spread": round(t.spread, 3), "kind": t.kind,
                     "runs": list(t.runs), "model": round(float(m), 3),
                     "error_pct": round(100 * (m - t.mean) / t.mean, 1),
                     "residual": round(float((m - t.mean) / t.spread), 3),
                     "within": bool(abs(m - t.mean) <= t.spread)})
    return rows


def _start(base: CostParams, names) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fit's start and bounds in log space (the fit moves ``log(value)``)."""
    lo, hi = np.transpose([base.log_bounds(n) for n in names]) if names else (np.zeros(0), np.zeros(0))
    x0 = np.clip(np.log([max(base[n], LOG_FLOOR) for n in names]), lo + 1e-9, hi - 1e-9)
    return x0, lo, hi


def _fit(base: CostParams, ev: Evaluator, targets, rows=None):
    """Least squares over the ``fitted`` parameters of ``base`` on the targets ``rows`` (all
    by default): (fitted CostParams, scipy's result)."""
    from scipy.optimize import least_squares
    rows = list(range(len(targets))) if rows is None else list(rows)
    names = base.fitted
    if not names:                  # nothing free: the set as it is
        r = ev.predict(base, rows) - np.asarray([targets[i].mean for i in rows])
        return base.with_values(name="fitted"), SimpleNamespace(
            x=np.zeros(0), nfev=0, message="no fitted parameters",
            cost=0.5 * float(np.sum((r / np.asarray([targets[i].spread for i in rows])) ** 2)))
    x0, lo, hi = _start(base, names)
    mean = np.asarray([targets[i].mean for i in rows])
    spread = np.asarray([targets[i].spread for i in rows])

    def f(x):
        p = base.with_values(**dict(zip(names, np.exp(x).tolist())))
        return (ev.predict(p, rows) - mean) / spread

    fit = least_squares(f, x0, bounds=(lo, hi), x_scale=1.0, diff_step=1e-3, max_nfev=200)
    return base.with_values(name="fitted", **dict(zip(names, np.exp(fit.x).tolist()))), fit


def elasticities(params: CostParams, ev: Evaluator, names, *, step: float = 1e-2, rows=None) -> np.ndarray:
    """``d ln(rate) / d ln(param)`` (rows x names) by central differences in log space: the
    rate's relative change per relative change of the parameter. A parameter at 0 has
    elasticity 0 (a relative change of it is no change). A parameter at the largest value its
    unit admits (:attr:`kit.sim.params.Param.limit`: a share of 1) is differentiated from
    below only: above it the model clamps it, and a central difference would halve the slope."""
    rows = list(range(len(ev.items))) if rows is None else list(rows)
    limit = {p.name: p.limit for p in params}
    out = np.zeros((len(rows), len(names)))
    for j, n in enumerate(names):
        v = params[n]
        if v <= 0:
            continue
        down = ev.predict(params.with_values(**{n: v * np.exp(-step)}), rows)
        if v * np.exp(step) > limit[n]:
            up, width = ev.predict(params, rows), step
        else:
            up, width = ev.predict(params.with_values(**{n: v * np.exp(step)}), rows), 2 * step
        out[:, j] = (np.log(np.maximum(up, 1e-300)) - np.log(np.maximum(down, 1e-300))) / width
    return out


def count_step(value: float, unit: str) -> float:
    """The whole value a count parameter is compared with: a 0/1 switch flipped, any other
    count one less (one more when it is 1 or less)."""
    if unit == "0/1":
        return 0.0 if value >= 0.5 else 1.0
    return value - 1.0 if value > 1.0 else value + 1.0


def sensitivities(params: CostParams, ev: Evaluator, *, names=None, step: float = 1e-2) -> dict:
    """Every configuration's elasticity to every parameter in ``names`` (default: every
    parameter of the table with a nonzero value, fitted ones first): ``{"names", "kinds",
    "rows": [{"config", name: elasticity, ...}], "max_abs": {name: largest |elasticity|},
    "counts"}``. 1.0 means a 1% larger parameter gives a 1% larger rate; -1.0 a 1% smaller one.

    A count or a 0/1 switch (:attr:`kit.sim.params.Param.is_count`, read from its unit: CPUs
    per socket, threads per core) has no elasticity: it takes whole values only and the model
    may step at them (a host's sockets are ``ceil(CPUs / cpus_per_socket)``), so a derivative
    there depends on the side it is taken from. It is left out of ``names`` and reported in
    ``counts`` instead: ``{name: {"from", "to", "unit", "change": [per row, rate(to) / rate(from)
    - 1]}}``, the rate's relative change when it moves to the next whole value
    (:func:`count_step`)."""
    table = {p.name: p for p in params}
    if names is None:
        order = {"fitted": 0, "assumed": 1, "source": 2}
        names = [p.name for p in sorted(params, key=lambda p: order.get(p.kind, 3))
                 if p.value > 0 or p.is_count]
    counts = [n for n in names if table[n].is_count]
    names = [n for n in names if not table[n].is_count]
    e = elasticities(params, ev, names, step=step)
    rows = [{"config": t.config.label, **{n: round(float(e[i, j]), 4) + 0.0 for j, n in enumerate(names)}}
            for i, t in enumerate(ev.targets)]
    steps = {}
    if counts:
        r0 = ev.predict(params)
        for n in counts:
            to = count_step(params[n], table[n].unit)
            r1 = ev.predict(params.with_values(**{n: to}))
            steps[n] = {"from": params[n], "to": to, "unit": table[n].unit,
                        "change": [round(float(v), 4) + 0.0 for v in r1 / np.maximum(r0, 1e-300) - 1.0]}
    return {"names": list(names), "kinds": {n: table[n].kind for n in names}, "rows": rows,
            "max_abs": {n: round(float(np.max(np.abs(e[:, j]))) if len(e) else 0.0, 4)
                        for j, n in enumerate(names)},
            "counts": steps}


def covariance(params: CostParams, ev: Evaluator, targets, *, rows=None) -> tuple[np.ndarray, dict]:
    """Covariance of the fitted parameters' logarithms at ``params`` (a fit's optimum), from
    the Jacobian of the residuals over the targets ``rows``: ``(J^T J + P)^-1 x s``. ``J`` is
    ``d((model - measured) / spread) / d ln(param)``, so with spreads that are standard
    deviations ``(J^T J)^-1`` is the linearised covariance; ``s = max(1, chi^2 / (m - n))``
    widens it when the rows scatter more than their spreads (a noisier dataset, a wider band);
    ``P`` is a weak prior (half the log-width of each parameter's fit bounds as one standard
    deviation) so that a direction no row determines comes out as wide as the bounds, not
    infinite. Returns (matrix, info)."""
    rows = list(range(len(targets))) if rows is None else list(rows)
    names = params.fitted
    if not names:
        return np.zeros((0, 0)), {"chi2": 0.0, "dof": 0, "scale": 1.0, "singular_values": []}
    pred = ev.predict(params, rows)
    spread = np.asarray([targets[i].spread for i in rows])
    mean = np.asarray([targets[i].mean for i in rows])
    jac = elasticities(params, ev, names, step=1e-3, rows=rows) * (pred / spread)[:, None]
    lo, hi = np.transpose([params.log_bounds(n) for n in names])
    prior = np.diag(1.0 / np.maximum((hi - lo) / 2, 1e-9) ** 2)
    chi2 = float(np.sum(((pred - mean) / spread) ** 2))
    dof = len(rows) - len(names)
    scale = max(1.0, chi2 / dof) if dof > 0 else 1.0
    cov = np.linalg.inv(jac.T @ jac + prior) * scale
    sv = np.linalg.svd(jac, compute_uv=False) if len(rows) else np.zeros(0)
    return cov, {"chi2": chi2, "dof": dof, "scale": scale, "singular_values": sv.tolist(),
                 "jacobian": jac, "prior": prior}


#: a fitted direction counts as determined by the rows when the Jacobian's smallest singular
#: value is at least this share of its largest (below, the rows fix only a combination)
IDENTIFIED = 1e-3


def _identified(jac: np.ndarray, names) -> list[str]:
    """The fitted parameters the rows of ``jac`` leave undetermined (the largest component of
    each right singular vector whose singular value is below ``IDENTIFIED`` of the largest)."""
    if jac.size == 0:
        return list(names)
    _, sv, vt = np.linalg.svd(jac, full_matrices=True)
    sv = np.concatenate([sv, np.zeros(len(names) - len(sv))]) if len(sv) < len(names) else sv
    top = sv.max() if len(sv) else 0.0
    weak = [i for i, v in enumerate(sv) if v < IDENTIFIED * top or top == 0]
    return sorted({names[int(np.argmax(np.abs(vt[i])))] for i in weak})


def leave_one_out(base: CostParams | None = None, *, targets=None, evaluator: Evaluator | None = None,
                  seed: int = 0) -> tuple[list[dict], dict]:
    """Each target predicted by a fit of all the others (from ``base``, the full fit's start):
    rows ``config, measured, spread, predicted, error_pct, residual, within, undetermined``
    (the fitted parameters the other rows leave undetermined), ``band`` (the prediction's
    band, ``[lo, hi]``: :func:`band` from the left-out fit's own :func:`covariance`),
    ``overlaps`` (the measured mean plus or minus its spread meets that band: the row is
    consistent with the prediction's uncertainty, a weaker test than ``within``) and the
    left-out fit's values; info: seconds taken, fits, rows within, rows that overlap, and the
    jackknife standard deviation of each fitted parameter's logarithm (a second estimate of its
    uncertainty, beside :func:`covariance`)."""
    t0 = time.perf_counter()
    base = base if base is not None else CostParams()
    targets = targets if targets is not None else load_measurements()
    ev = evaluator or Evaluator(targets, seed=seed)
    names = base.fitted
    noise = pooled_noise(targets)
    out, logs = [], []
    for i, t in enumerate(targets):
        keep = [k for k in range(len(targets)) if k != i]
        fitted, _ = _fit(base, ev, targets, keep)
        m = float(ev.predict(fitted, [i])[0])
        if names:
            cov, cinfo = covariance(fitted, ev, targets, rows=keep)
            jac = cinfo["jacobian"]
            lo, hi = band(fitted.with_covariance(names, cov, COVARIANCE_METHOD), ev, [i])[0]
            # the prediction's sd under the errors loo_chance tests: the other rows' means
            # carry their noise, not their spread (the Jacobian rescaled to noise units)
            g = elasticities(fitted, ev, names, step=1e-3, rows=[i])[0] * m     # d rate / d ln(param)
            jn = jac * np.asarray([targets[k].spread / noise["noise"][k] for k in keep])[:, None]
            pred_sd = math.sqrt(max(float(g @ np.linalg.inv(jn.T @ jn + cinfo["prior"]) @ g), 0.0))
        else:
            jac, lo, hi, pred_sd = np.zeros((len(keep), 0)), m, m, 0.0
        logs.append(np.log([max(fitted[n], LOG_FLOOR) for n in names]))
        out.append({"config": t.config.label, "measured": round(t.mean, 3), "spread": round(t.spread, 3),
                    "noise": round(noise["noise"][i], 3), "predicted": round(m, 3), "pred_sd": round(pred_sd, 3),
                    "error_pct": round(100 * (m - t.mean) / t.mean, 1),
                    "residual": round((m - t.mean) / t.spread, 3),
                    "within": bool(abs(m - t.mean) <= t.spread),
                    "band": [round(float(lo), 3), round(float(hi), 3)],
                    "overlaps": bool(t.mean - t.spread <= hi and lo <= t.mean + t.spread),
                    "undetermined": ", ".join(_identified(jac, names)),
                    "fitted": {n: fitted[n] for n in names}})
    x = np.asarray(logs)
    n = len(targets)
    jack = np.sqrt((n - 1) / n * np.sum((x - x.mean(axis=0)) ** 2, axis=0)) if n > 1 and names else np.zeros(len(names))
    chance = loo_chance(out, noise_dof=noise["dof"])
    chance["noise_rel_sd"] = round(noise["rel_sd"], 4)
    return out, {"seconds": round(time.perf_counter() - t0, 2), "fits": n,
                 "within": sum(r["within"] for r in out), "overlaps": sum(r["overlaps"] for r in out), "rows": n,
                 "jackknife_log_sd": {nm: float(v) for nm, v in zip(names, jack)}, **chance}


#: Draws of the simulated null distribution in :func:`loo_chance` (seeded: the same figures
#: every run); the tail probability it gives is good to about +-0.003 at 0.05.
CHANCE_DRAWS = 20_000


def loo_chance(rows: list[dict], *, noise_dof: int = 0, seed: int = 0) -> dict:
    """What leave-one-out would score if the stated uncertainties were the only errors, to read
    its count of rows within against. Each row needs ``measured``, ``predicted``, ``spread``,
    ``noise`` (the measured mean's sd: :func:`pooled_noise`), ``pred_sd`` (the left-out
    prediction's sd, linearised from the left-out fit with the other rows' noise as their
    errors: ``sqrt(g^T C g)`` with ``g = d rate / d ln(param)``; :func:`leave_one_out`) and
    ``within``. The measured mean and the prediction are taken
    as normal about the same true rate with those sds, independent (the row is not in that
    fit), and the rows independent of each other (they are not quite: two rows that alone
    determine a parameter each predict the other). Then:

    - each row gets ``z``, its error in units of ``sqrt(noise^2 + pred_sd^2)``, and
      ``p_within``, its chance of ending within its spread (``erf(spread / (sd sqrt 2))`` with
      the noise known; from the simulated datasets below with it estimated);
    - ``expected_within``: their sum, the mean count of rows within; ``p_all_within``: the
      chance that every row is within; ``p_all_within_exact`` the same with ``pred_sd`` = 0 (an
      error-free prediction on these measurements); ``p_at_most_within``: the chance of as few
      rows within as were, or fewer;
    - ``chi2``, the sum of ``z^2``, and ``chi2_p``, the chance of one at least as large, from
      :data:`CHANCE_DRAWS` simulated datasets in which the noise is itself estimated on
      ``noise_dof`` degrees of freedom (a pooled sd from a few runs: heavier tails than the
      chi-square distribution; ``noise_dof`` 0 takes the noise as known; :func:`_null`);
      ``chi2_mean``, the simulated mean; a miss where nothing was uncertain has ``chi2`` inf
      and ``chi2_p`` 0;
    - ``extra_pct``: the model error, in percent of each prediction, that as a third variance
      beside the two brings ``chi2`` down to ``chi2_mean`` (0 when it is there already; inf
      when no error can: a row with no stated uncertainty and a prediction of 0 missed). An
      estimate: the simulated mean is kept as it is without that error.

    A small ``chi2_p`` says the left-out errors are larger than the noise and the fit's
    uncertainty explain: the model misses a mechanism, or its uncertainty is too narrow.
    Adds ``z`` and ``p_within`` to every row in place; returns the rest. A row with a missing,
    non-finite or negative figure is a ``ValueError`` naming it (docs/sim-model.md, "Error bars
    and validation")."""
    keys = ("measured", "predicted", "spread", "noise", "pred_sd")
    for i, r in enumerate(rows):
        for k in keys:
            v = r.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or (k != "measured" and k != "predicted" and v < 0):
                raise ValueError(f"rows[{i}] ({r.get('config', 'row')}): {k}: expected a finite number"
                                 f"{'' if k in ('measured', 'predicted') else ' >= 0'}, got {v!r}")
    if isinstance(noise_dof, bool) or not isinstance(noise_dof, int) or noise_dof < 0:
        raise ValueError(f"noise_dof: expected a whole number >= 0, got {noise_dof!r}")
    err = np.asarray([r["predicted"] - r["measured"] for r in rows], dtype=float)
    noise = np.asarray([r["noise"] for r in rows], dtype=float)
    psd = np.asarray([r["pred_sd"] for r in rows], dtype=float)
    spread = np.asarray([r["spread"] for r in rows], dtype=float)
    pred = np.abs([r["predicted"] for r in rows]).astype(float)
    sd = np.hypot(noise, psd)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(sd > 0, err / np.where(sd > 0, sd, 1.0), np.where(err == 0, 0.0, np.sign(err) * np.inf))
    k = sum(bool(r["within"]) for r in rows)
    chi2 = float(np.sum(z ** 2))
    null = _null(noise, psd, spread, noise_dof, seed)
    probs, dist = null["p_within"], null["counts"]
    exact = _null(noise, np.zeros_like(psd), spread, noise_dof, seed)["counts"]
    for r, zi, p in zip(rows, z, probs):
        r["z"], r["p_within"] = (round(float(zi), 3) if math.isfinite(zi) else float(zi)), round(float(p), 3)
    sums = null["chi2"]
    mean = float(sums.mean()) if len(sums) else 0.0
    if not math.isfinite(chi2):
        p_chi2 = 0.0                    # a miss where nothing was uncertain: no chance at all
    else:
        p_chi2 = float(np.mean(sums >= chi2)) if len(sums) else 1.0
    return {"expected_within": round(float(np.sum(probs)), 2), "p_all_within": float(dist[-1]),
            "p_all_within_exact": float(exact[-1]),
            "p_at_most_within": float(dist[:k + 1].sum()), "chi2": round(chi2, 2),
            "chi2_p": p_chi2, "chi2_mean": round(mean, 2),
            "extra_pct": round(100 * _extra_error(err, noise ** 2 + psd ** 2, pred, mean), 1)}


def _null(noise, psd, spread, dof: int, seed: int) -> dict:
    """The stated errors' consequences: each row's chance of ending within its spread
    (``p_within``), the distribution of the count of rows within (``counts[k]``, k = 0..n) and
    :data:`CHANCE_DRAWS` values of ``sum(z^2)`` (``chi2``; rows with no stated uncertainty left
    out: their z is 0 or infinite, not random).

    With the noise known (``dof`` 0) the chances are exact, ``erf(spread / (sd sqrt 2))``, and
    the counts their convolution. With it estimated on ``dof`` degrees of freedom (one pooled
    sd, shared by the rows), everything comes from datasets in which the true noise is drawn as
    the estimate over ``sqrt(chi2_dof / dof)`` (the estimate's posterior under Jeffreys'
    prior), shared by the rows of a dataset: with no prediction uncertainty the sum is then
    exactly ``n F(n, dof)``, the distribution of squared errors over an estimated variance;
    with prediction uncertainty it is an approximation, on the conservative side when ``dof``
    is small."""
    n = len(noise)
    sd = np.hypot(noise, psd)
    rng = np.random.default_rng(seed)
    live = sd > 0
    shape = (CHANCE_DRAWS, n)
    true = noise / np.sqrt(rng.chisquare(dof, size=(CHANCE_DRAWS, 1)) / dof) if dof > 0 else noise * np.ones(shape)
    e = rng.normal(size=shape) * true - rng.normal(size=shape) * psd
    chi2 = np.sum(e[:, live] ** 2 / sd[live] ** 2, axis=1) if live.any() else np.zeros(0)
    if dof > 0:
        inside = np.abs(e) <= spread
        p_within = inside.mean(axis=0)
        counts = np.bincount(inside.sum(axis=1), minlength=n + 1) / CHANCE_DRAWS
    else:
        p_within = np.asarray([math.erf(s / (d * math.sqrt(2))) if d > 0 else 1.0 for s, d in zip(spread, sd)])
        counts = np.array([1.0])
        for p in p_within:
            counts = np.convolve(counts, [1.0 - p, p])
    return {"p_within": p_within, "counts": counts, "chi2": chi2}


def _extra_error(err, var, pred, target: float) -> float:
    """The relative model error ``e`` for which ``sum(err^2 / (var + (e pred)^2))`` equals
    ``target`` (the sum falls as ``e`` grows: ``scipy.optimize.brentq`` between 0 and a bracket
    doubled until it holds); 0 when the sum is at most that already, inf when no ``e`` gets
    it there (a miss with no variance and no prediction to scale)."""
    from scipy.optimize import brentq

    def excess(e):
        v = var + (e * pred) ** 2
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(v > 0, err ** 2 / np.where(v > 0, v, 1.0), np.where(err == 0, 0.0, np.inf))
        return float(np.sum(terms)) - target
    if len(err) == 0 or excess(0.0) <= 0:
        return 0.0
    hi = 1.0
    while excess(hi) > 0 and hi < 1e6:
        hi *= 2
    return float(brentq(excess, 0.0, hi, xtol=1e-6)) if excess(hi) <= 0 else math.inf


def loo_chance_text(info: dict) -> str:
    """One sentence on a leave-one-out's count of rows within against chance (:func:`loo_chance`
    and the pooled noise in ``info``), as ``kit calibrate`` and the calibration notebook say it."""
    n = info["rows"]
    big = info["chi2_p"] < CHANCE_ALPHA
    rel = info.get("noise_rel_sd")
    noise = (f"the measured means' noise (the runs' sd pooled over the rows, {100 * rel:.1f}% of a mean, "
             "over the square root of the runs)" if rel == rel and rel is not None else "the measured means' noise")
    return (f"leave-one-out against chance: if {noise} and the left-out fits' uncertainty were the only errors, "
            f"{info['expected_within']:.1f} of {n} rows would be within on average ({info['within']} are); "
            f"{info['within']} or fewer with chance {info['p_at_most_within']:.2g}; all {n} with chance "
            f"{info['p_all_within']:.2g} ({info['p_all_within_exact']:.2f} for error-free predictions); "
            f"chi-square of the errors {info['chi2']:.2f} on {n} rows (mean {info['chi2_mean']:.2f} by chance), "
            f"p {info['chi2_p']:.2g}, rows taken as independent: "
            + ("larger than those uncertainties explain" if big
               else f"not significantly larger than those uncertainties explain (at {CHANCE_ALPHA:g})")
            + (f"; a model error of {info['extra_pct']:g}% of each prediction beside them would bring it to its mean"
               if info["extra_pct"] > 0 else ""))


MODEL_ERROR_METHOD = ("leave-one-out of the measured configurations: the relative error of each prediction "
                      "that, beside the measured means' noise and the left-out fits' uncertainty, brings the "
                      "left-out errors' chi-square to its simulated mean (extra_pct)")


def with_model_error(fitted: CostParams, info: dict) -> tuple[CostParams, bool]:
    """``fitted`` with the model error of its :func:`leave_one_out` (``info``'s ``extra_pct``:
    :func:`loo_chance`) recorded beside its covariance (:attr:`CostParams.model_error`), so
    that every rate's band carries it; and whether it was capped at
    :data:`kit.sim.params.MODEL_ERROR_MAX` (a larger, or unbounded, estimate is recorded as the
    cap). A set without a covariance (nothing fitted) is returned as it is. The estimate is
    recorded whether or not the chi-square is significant: it is the error the left-out rows
    show, 0 when they show none."""
    if not fitted.covariance:
        return fitted, False
    e = info["extra_pct"] / 100.0
    capped = not e <= MODEL_ERROR_MAX
    return fitted.with_model_error(MODEL_ERROR_MAX if capped else e, MODEL_ERROR_METHOD), capped


def calibrate(params: CostParams | None = None, *, path=MEASUREMENTS, seed: int = 0,
              evaluator: Evaluator | None = None, targets=None):
    """Fit the ``fitted`` parameters. Returns (fitted CostParams carrying the fit's
    :func:`covariance`, residual rows, fit info)."""
    base = params if params is not None else CostParams()
    targets = targets if targets is not None else load_measurements(path)
    ev = evaluator or Evaluator(targets, seed=seed)
    names = base.fitted
    fitted, fit = _fit(base, ev, targets)
    pred = ev.predict(fitted)
    cov, cinfo = covariance(fitted, ev, targets)
    if names:
        fitted = fitted.with_covariance(names, cov, COVARIANCE_METHOD)
    info = {"free_parameters": len(names), "names": names, "cost": float(fit.cost),
            "evaluations": int(fit.nfev), "measured_configurations": len(targets),
            "status": fit.message,
            "log_sd": {n: float(np.sqrt(cov[j, j])) for j, n in enumerate(names)},
            "chi2_per_dof": round(cinfo["chi2"] / cinfo["dof"], 4) if cinfo["dof"] > 0 else None,
            "covariance_scale": cinfo["scale"],
            "undetermined": _identified(cinfo["jacobian"], names) if names else []}
    return fitted, residual_table(targets, pred), info


COVARIANCE_METHOD = ("Jacobian of the residuals at the optimum, (J^T J + bounds prior)^-1 x "
                     "max(1, chi2/dof), in log(value)")


def band(params: CostParams, ev: Evaluator, rows=None) -> np.ndarray:
    """Each configuration's rate band ``[[lo, hi], ...]`` from ``params``' covariance: the
    lowest and highest rate over :meth:`CostParams.band_sets` and the point estimate, widened
    by the set's model error (:meth:`CostParams.band`; NaN when the set has no covariance of
    its fitted parameters)."""
    pred = ev.predict(params, rows)
    sets = params.band_sets()
    if not sets:
        return np.full((len(pred), 2), np.nan)
    rates = np.vstack([ev.predict(q, rows) for q in sets])
    return np.asarray([params.band(float(m), rates[:, j]) for j, m in enumerate(pred)])


def band_table(params: CostParams, ev: Evaluator) -> list[dict]:
    """Every measured configuration's modelled rate with its band (:func:`band`) beside the
    measurement: rows ``config, policy, model_gbps, model_band_gbps, measured_gbps, spread,
    within`` (measured within the band widened by the spread), as
    :func:`kit.viz.figures.rate_data` takes them."""
    pred, b = ev.predict(params), band(params, ev)
    rows = []
    for t, m, (lo, hi) in zip(ev.targets, pred, b):
        rows.append({"config": t.config.label.rsplit(", ", 1)[0], "policy": t.config.policy,
                     "model_gbps": round(float(m), 3),
                     "model_band_gbps": None if lo != lo else [round(float(lo), 3), round(float(hi), 3)],
                     "measured_gbps": round(t.mean, 3), "spread": round(t.spread, 3),
                     "within": bool(lo == lo and lo - t.spread <= t.mean <= hi + t.spread)})
    return rows


def held_back(params: CostParams, policies=("presplit-4k", "split-on-demand", "invalidate-4k")) -> list[dict]:
    """The configuration the source measured and the kit holds back (:data:`HELD_BACK`),
    predicted with its band under each policy: rows ``policy, model_gbps, model_band_gbps,
    bottleneck``."""
    h = HELD_BACK
    rows = []
    for pol in policies:
        r = simulate(guests=h["guests"], vcpus=h["vcpus"], guest_mem=f"{h['guest_mem_gib']}GiB",
                     host_cores=h["host_cores"], host_mem=f"{h['host_mem_gib']}GiB", policy=pol,
                     engine="analytic", params=params)
        rows.append({"policy": pol, "model_gbps": round(r.fault_in_gbps, 3),
                     "model_band_gbps": None if r.rate_band_gbps is None else [round(v, 3) for v in r.rate_band_gbps],
                     "bottleneck": r.bottleneck["resource"]})
    return rows
