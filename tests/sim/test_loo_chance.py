"""What leave-one-out should score if the stated uncertainties were the only errors
(:func:`kit.sim.calibrate.loo_chance`): its figures against a simulation of exactly those errors
and against brute force, its edge cases and refusals, the pooled noise of the measured means,
and the shipped measurements' leave-one-out."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kit.sim.calibrate import (CHANCE_ALPHA, MEAN_SD_RUNS, Evaluator, Target, _fit, leave_one_out, load_measurements,
                               loo_chance, loo_chance_text, pooled_noise)
from kit.sim.params import CostParams
from tests.sim.test_error_bars import SYNTHETIC, _truth

ONE_SD = math.erf(1 / math.sqrt(2))       # 0.6827: a normal within one standard deviation


def _rows(measured, predicted, spread, pred_sd, noise=None):
    noise = spread if noise is None else noise
    return [{"measured": float(m), "predicted": float(p), "spread": float(s), "noise": float(e),
             "pred_sd": float(h), "within": bool(abs(p - m) <= s)}
            for m, p, s, h, e in zip(measured, predicted, spread, pred_sd, noise)]


def test_the_figures_match_a_simulation_of_the_stated_errors():
    """Measurements and predictions drawn about one true rate with the stated sds (noise known):
    the mean count within, the chance that all are within, the chi-square's mean and its tail
    match the function's."""
    rng = np.random.default_rng(7)
    n, draws = 8, 4000
    truth = rng.uniform(5, 40, n)
    spread = 0.1 * truth
    noise = spread * rng.uniform(0.3, 1.0, n)
    psd = spread * rng.uniform(0, 1.5, n)
    counts, ps = [], []
    for d in range(draws):
        m = truth + rng.normal(0, noise)
        p = truth + rng.normal(0, psd)
        rows = _rows(m, p, spread, psd, noise)
        info = loo_chance(rows, noise_dof=0)
        counts.append(sum(r["within"] for r in rows))
        if d < 1000:
            ps.append(info["chi2_p"])
    chances = [math.erf(s / math.sqrt(2 * (e * e + h * h))) for s, h, e in zip(spread, psd, noise)]
    assert info["expected_within"] == pytest.approx(sum(chances), abs=0.01)
    assert np.mean(counts) == pytest.approx(sum(chances), abs=0.06)          # about 4 standard errors
    assert np.mean(np.asarray(counts) == n) == pytest.approx(np.prod(chances), abs=0.012)
    assert info["chi2_mean"] == pytest.approx(n, rel=0.03)
    # the p-value is uniform under the stated errors: about 5% of the datasets below 0.05, and
    # about half below 0.5
    assert 0.03 <= np.mean(np.asarray(ps) < 0.05) <= 0.07
    assert 0.45 <= np.mean(np.asarray(ps) < 0.5) <= 0.55


def test_an_estimated_noise_widens_the_chance_distribution():
    """With the noise estimated from few runs (a pooled sd on 4 degrees of freedom), the same
    errors are less surprising, and the p-value stays uniform when the data are drawn that way."""
    rows = _rows([10.0] * 6, [12.5] * 6, [1.0] * 6, [0.5] * 6, [1.0] * 6)
    known, rough = loo_chance(rows, noise_dof=0), loo_chance(rows, noise_dof=4)
    assert rough["chi2"] == known["chi2"] and rough["chi2_p"] > known["chi2_p"]
    assert rough["chi2_mean"] > known["chi2_mean"] == pytest.approx(6, rel=0.03)
    rng = np.random.default_rng(3)
    ps = []
    for _ in range(600):
        s2 = rng.chisquare(4) / 4                       # this dataset's noise estimate
        e = rng.normal(0, 1.0, 6) - rng.normal(0, 0.5, 6)
        rows = _rows([10.0] * 6, 10.0 + e, [1.0] * 6, [0.5] * 6, [math.sqrt(s2)] * 6)
        ps.append(loo_chance(rows, noise_dof=4)["chi2_p"])
    assert 0.025 <= np.mean(np.asarray(ps) < 0.05) <= 0.08
    # no prediction uncertainty: the sum of squared errors over an estimated variance, n F(n, dof)
    from scipy.stats import f
    pure = loo_chance(_rows([10.0] * 6, [12.0] * 6, [1.0] * 6, [0.0] * 6, [1.0] * 6), noise_dof=4)
    assert pure["chi2_p"] == pytest.approx(f.sf(pure["chi2"] / 6, 6, 4), abs=0.01)


def test_an_exact_prediction_is_within_one_sd_two_times_in_three():
    rows = _rows([10.0] * 8, [10.0] * 8, [1.0] * 8, [0.0] * 8)
    info = loo_chance(rows)
    assert all(r["p_within"] == round(ONE_SD, 3) and r["z"] == 0 for r in rows)
    assert info["p_all_within"] == pytest.approx(ONE_SD ** 8) == info["p_all_within_exact"]
    assert info["chi2"] == 0 and info["chi2_p"] == 1.0 and info["extra_pct"] == 0
    assert info["p_at_most_within"] == pytest.approx(1.0)


def test_errors_far_beyond_the_stated_ones_are_named():
    rows = _rows([10.0] * 8, [16.0] * 8, [1.0] * 8, [1.0] * 8)
    info = loo_chance(rows)
    assert info["chi2_p"] == 0 and info["p_at_most_within"] == pytest.approx((1 - math.erf(0.5)) ** 8)
    assert all(r["z"] == pytest.approx(6 / math.sqrt(2), abs=1e-3) for r in rows)
    assert info["extra_pct"] > 0 and ": larger than those uncertainties explain" in loo_chance_text(
        {**info, "rows": 8, "within": 0})


def test_the_count_distribution_is_the_brute_force_one():
    """P(at most k rows within) against the sum over all 2^n outcomes, for unequal chances."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        n = int(rng.integers(1, 8))
        spread = rng.uniform(0.5, 2, n)
        noise, psd = rng.uniform(0.1, 2, n), rng.uniform(0, 2, n)
        within = rng.integers(0, 2, n).astype(bool)
        rows = _rows(np.zeros(n), np.where(within, 0.0, 10.0), spread, psd, noise)
        info = loo_chance(rows)
        p = [math.erf(s / math.sqrt(2 * (e * e + h * h))) for s, e, h in zip(spread, noise, psd)]
        k = int(within.sum())
        brute = sum(math.prod(pi if o else 1 - pi for pi, o in zip(p, out))
                    for out in itertools.product((0, 1), repeat=n) if sum(out) <= k)
        assert info["p_at_most_within"] == pytest.approx(brute, abs=1e-12)
        assert info["p_all_within"] == pytest.approx(math.prod(p))


def test_the_extra_model_error_brings_the_chi_square_to_its_mean():
    rows = _rows([10.0, 20.0, 30.0], [13.0, 17.0, 36.0], [1.0, 2.0, 3.0], [0.5, 0.5, 1.0], [0.5, 1.0, 1.0])
    info = loo_chance(rows)
    e = info["extra_pct"] / 100
    chi2 = sum((r["predicted"] - r["measured"]) ** 2
               / (r["noise"] ** 2 + r["pred_sd"] ** 2 + (e * r["predicted"]) ** 2) for r in rows)
    assert info["chi2"] > info["chi2_mean"] and chi2 == pytest.approx(info["chi2_mean"], rel=0.02)
    assert loo_chance(_rows([10.0], [10.5], [1.0], [0.5], [0.5]))["extra_pct"] == 0


def test_no_stated_uncertainty_and_a_miss():
    """A row with no noise and no prediction uncertainty that misses: infinitely unlikely, and
    no relative model error of a prediction of 0 explains it."""
    info = loo_chance(_rows([5.0], [0.0], [1.0], [0.0], [0.0]))
    assert info["chi2"] == math.inf and info["chi2_p"] == 0.0
    assert ": larger than those uncertainties explain" in loo_chance_text({**info, "rows": 1, "within": 0})
    assert info["extra_pct"] == math.inf
    hit = loo_chance(_rows([5.0], [5.0], [1.0], [0.0], [0.0]))
    assert hit["chi2"] == 0 and hit["p_all_within"] == 1.0


@pytest.mark.parametrize("field,value", [("predicted", float("nan")), ("noise", float("nan")), ("pred_sd", -1.0),
                                         ("spread", float("inf")), ("measured", None), ("noise", True)])
def test_a_bad_row_is_refused_by_name(field, value):
    rows = _rows([10.0, 11.0], [10.0, 12.0], [1.0, 1.0], [0.5, 0.5])
    rows[1][field] = value
    with pytest.raises(ValueError, match=rf"rows\[1\].*{field}"):
        loo_chance(rows)
    with pytest.raises(ValueError, match="noise_dof"):
        loo_chance(rows[:1], noise_dof=-1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(1, 100), st.floats(-0.5, 0.5), st.floats(0.01, 0.3), st.floats(0, 0.3),
                          st.floats(0.001, 0.3)), min_size=1, max_size=12), st.integers(0, 30))
def test_chances_are_probabilities(cases, dof):
    rows = _rows([m for m, *_ in cases], [m * (1 + d) for m, d, *_ in cases], [s * m for m, _, s, *_ in cases],
                 [h * m for m, _, _, h, _ in cases], [e * m for m, *_, e in cases])
    info = loo_chance(rows, noise_dof=dof)
    # simulated with an estimated noise (dof > 0): a few thousandths of sampling error
    tol = 1e-12 if dof == 0 else 0.02
    for r, (m, d, s, h, e) in zip(rows, cases):
        assert 0 <= r["p_within"] <= 1
        if dof == 0:                    # never above an error-free prediction
            assert r["p_within"] <= round(math.erf(s / (e * math.sqrt(2))), 3) + 1e-3
        assert abs(r["z"]) == pytest.approx(abs(d) / math.hypot(h, e), rel=1e-3, abs=2e-3)
    assert 0 <= info["p_all_within"] <= info["p_all_within_exact"] + tol
    assert 0 <= info["p_at_most_within"] <= 1 + 1e-9 and 0 <= info["chi2_p"] <= 1
    assert 0 <= info["expected_within"] <= len(rows) and info["extra_pct"] >= 0


def test_the_measured_means_noise_is_pooled_over_the_rows():
    """Table A gives a mean and sd "across 3 runs", table B the three runs: each row's relative
    sd on 2 degrees of freedom, pooled; a row's noise is that times its mean over sqrt(3)."""
    targets = load_measurements()
    pool = pooled_noise(targets)
    rel = [t.spread / t.mean if t.kind == "mean_sd" else np.std(t.runs, ddof=1) / np.mean(t.runs) for t in targets]
    assert all(t.n_runs == MEAN_SD_RUNS == 3 for t in targets)
    assert pool["dof"] == 2 * len(targets)
    assert pool["rel_sd"] == pytest.approx(math.sqrt(np.mean(np.square(rel))))
    for t, e in zip(targets, pool["noise"]):
        assert e == pytest.approx(pool["rel_sd"] * t.mean / math.sqrt(3))


def test_without_two_runs_anywhere_each_mean_keeps_its_spread():
    targets = [Target(None, 10.0, 1.5, "runs", (10.0,)), Target(None, 20.0, 3.0, "runs", (20.0,))]
    pool = pooled_noise(targets)
    assert pool["dof"] == 0 and pool["noise"] == [1.5, 3.0] and pool["rel_sd"] != pool["rel_sd"]
    same = pooled_noise([Target(None, 10.0, 1.5, "runs", (10.0, 10.0, 10.0))])      # runs that never differ
    assert same["dof"] == 0 and same["noise"] == [1.5]


def test_an_estimated_noise_gives_chances_from_the_same_datasets():
    """With the noise estimated, the count figures come from the simulated datasets: their mean
    count is the sum of the rows' chances, and the count distribution sums to 1."""
    rows = _rows([10.0, 20.0, 30.0, 40.0], [10.5, 19.0, 33.0, 40.0], [1.0, 2.0, 3.0, 4.0], [0.3, 0.5, 1.0, 1.0],
                 [0.5, 1.0, 1.5, 2.0])
    info = loo_chance(rows, noise_dof=6)
    known = loo_chance([dict(r) for r in rows], noise_dof=0)
    assert info["expected_within"] == pytest.approx(sum(r["p_within"] for r in rows), abs=0.01)
    assert 0 < info["p_at_most_within"] <= 1 and info["p_all_within"] <= info["p_all_within_exact"] + 0.02
    assert info["expected_within"] == pytest.approx(known["expected_within"], abs=0.3)


@pytest.fixture(scope="module")
def shipped():
    targets = load_measurements()
    return leave_one_out(targets=targets, evaluator=Evaluator(targets))


def test_the_shipped_leave_one_out_says_what_chance_makes_of_it(shipped):
    """The sentence ``kit calibrate`` prints follows its figures, whichever way they fall; each
    prediction's sd is the left-out fit's, linearised."""
    rows, info = shipped
    assert all({"z", "p_within", "noise", "pred_sd"} <= set(r) for r in rows)
    assert all(r["pred_sd"] > 0 for r in rows)
    assert 0 <= info["p_all_within"] <= info["p_all_within_exact"] <= 1
    text = loo_chance_text(info)
    assert (": larger than those uncertainties explain" in text) == (info["chi2_p"] < CHANCE_ALPHA)
    assert f"{info['within']} or fewer" in text and f"{100 * info['noise_rel_sd']:.1f}%" in text
    assert (f"{info['extra_pct']:g}%" in text) == (info["extra_pct"] > 0)
    assert info["chi2"] == pytest.approx(sum(r["z"] ** 2 for r in rows), abs=0.02)


def test_the_prediction_sd_is_the_spread_of_refits_on_noisy_measurements():
    """``pred_sd`` against the thing it linearises: the other rows' means drawn again with their
    noise, the left-out fit done again, the left-out row predicted again. On configurations where
    every fitted parameter stays determined with any row left out (as in test_error_bars), the
    spread of those predictions is ``pred_sd`` (20 refits: about 16% sampling error; a
    factor of sqrt(3), the spread taken for the noise, would fail)."""
    base = CostParams()
    targets = [Target(c, 1.0, 1.0, "mean_sd") for c in SYNTHETIC]
    ev = Evaluator(targets)
    truth = _truth(base)
    for t, r in zip(targets, ev.predict(truth)):
        t.mean, t.spread = float(r), 0.05 * float(r)
    rows, info = leave_one_out(base, targets=targets, evaluator=ev)
    noise = pooled_noise(targets)["noise"]
    rng = np.random.default_rng(5)
    for i in (0, 6):
        keep = [k for k in range(len(targets)) if k != i]
        preds = []
        for _ in range(20):
            drawn = [Target(t.config, t.mean + (rng.normal(0, noise[k]) if k != i else 0.0), t.spread, "mean_sd")
                     for k, t in enumerate(targets)]
            fitted, _ = _fit(base, ev, drawn, keep)
            preds.append(float(ev.predict(fitted, [i])[0]))
        assert 0.6 <= np.std(preds, ddof=1) / rows[i]["pred_sd"] <= 1.6, (i, np.std(preds, ddof=1), rows[i]["pred_sd"])
