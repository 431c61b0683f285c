"""What leave-one-out should score if the stated uncertainties were the only errors
(:func:`kit.sim.calibrate.loo_chance`): its figures against a simulation of exactly those errors,
its edge cases, the measured mean's noise, and the shipped measurements' leave-one-out."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kit.sim.calibrate import CHANCE_ALPHA, Evaluator, leave_one_out, load_measurements, loo_chance, loo_chance_text

ONE_SD = math.erf(1 / math.sqrt(2))       # 0.6827: a normal within one standard deviation


def _rows(measured, predicted, spread, half, noise=None):
    noise = spread if noise is None else noise
    return [{"measured": float(m), "predicted": float(p), "spread": float(s), "noise": float(e),
             "band": [float(p - h), float(p + h)], "within": bool(abs(p - m) <= s)}
            for m, p, s, h, e in zip(measured, predicted, spread, half, noise)]


def test_the_figures_match_a_simulation_of_the_stated_errors():
    """Measurements and predictions drawn about one true rate with the stated sds: the mean count
    within, the chance that all are within and the mean chi-square match the function's."""
    rng = np.random.default_rng(7)
    n, draws = 8, 4000
    truth = rng.uniform(5, 40, n)
    spread = 0.1 * truth
    noise = spread * rng.uniform(0.3, 1.0, n)
    half = spread * rng.uniform(0, 1.5, n)
    counts, chi2s = [], []
    for _ in range(draws):
        m = truth + rng.normal(0, noise)
        p = truth + rng.normal(0, half)
        rows = _rows(m, p, spread, half, noise)
        info = loo_chance(rows)
        counts.append(sum(r["within"] for r in rows))
        chi2s.append(info["chi2"])
    expected = sum(math.erf(s / math.sqrt(2 * (e * e + h * h))) for s, h, e in zip(spread, half, noise))
    assert np.mean(counts) == pytest.approx(expected, abs=0.1)
    assert info["expected_within"] == pytest.approx(expected, abs=0.01)
    p_all = np.prod([math.erf(s / math.sqrt(2 * (e * e + h * h))) for s, h, e in zip(spread, half, noise)])
    assert np.mean(np.asarray(counts) == n) == pytest.approx(p_all, abs=0.02)
    assert np.mean(chi2s) == pytest.approx(n, rel=0.08)
    # the tail of the chi-square: about 5% of the draws below a p of 0.05
    ps = []
    for _ in range(1000):
        m = truth + rng.normal(0, noise)
        p = truth + rng.normal(0, half)
        ps.append(loo_chance(_rows(m, p, spread, half, noise))["chi2_p"])
    assert 0.03 <= np.mean(np.asarray(ps) < 0.05) <= 0.075


def test_an_exact_prediction_is_within_one_sd_two_times_in_three():
    rows = _rows([10.0] * 8, [10.0] * 8, [1.0] * 8, [0.0] * 8)
    info = loo_chance(rows)
    assert all(r["p_within"] == round(ONE_SD, 3) and r["z"] == 0 for r in rows)
    assert info["p_all_within"] == pytest.approx(ONE_SD ** 8) == info["p_all_within_exact"]
    assert info["p_all_within"] < 0.05                  # all eight within: one time in twenty
    assert info["chi2"] == 0 and info["chi2_p"] == pytest.approx(1.0)
    assert info["p_at_most_within"] == pytest.approx(1.0)


def test_errors_far_beyond_the_stated_ones_are_named():
    rows = _rows([10.0] * 8, [16.0] * 8, [1.0] * 8, [1.0] * 8)
    info = loo_chance(rows)
    assert info["chi2_p"] < 1e-6 and info["p_at_most_within"] == pytest.approx((1 - math.erf(0.5)) ** 8)
    assert all(r["z"] == pytest.approx(6 / math.sqrt(2), abs=1e-3) for r in rows)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(1, 100), st.floats(-0.5, 0.5), st.floats(0.01, 0.3), st.floats(0, 0.3),
                          st.floats(0, 0.3)), min_size=1, max_size=12))
def test_chances_are_probabilities_and_the_band_side_facing_the_measurement_counts(cases):
    rows = [{"measured": m, "predicted": m * (1 + d), "spread": s * m, "noise": s * m,
             "band": [m * (1 + d) * (1 - lo), m * (1 + d) * (1 + hi)], "within": abs(d) <= s}
            for m, d, s, lo, hi in cases]
    info = loo_chance(rows)
    for r, (m, d, s, lo, hi) in zip(rows, cases):
        assert 0 <= r["p_within"] <= round(ONE_SD, 3)
        half = (hi if d <= 0 else lo) * m * (1 + d)
        assert abs(r["z"]) == pytest.approx(abs(d) * m / math.hypot(s * m, half), abs=2e-3)
    assert 0 <= info["p_all_within"] <= info["p_all_within_exact"] + 1e-12
    assert 0 <= info["p_at_most_within"] <= 1 + 1e-9 and 0 <= info["chi2_p"] <= 1
    assert 0 <= info["expected_within"] <= len(rows)


@pytest.fixture(scope="module")
def shipped():
    targets = load_measurements()
    return leave_one_out(targets=targets, evaluator=Evaluator(targets))


def test_the_extra_model_error_brings_the_chi_square_to_its_mean():
    rows = _rows([10.0, 20.0, 30.0], [13.0, 17.0, 36.0], [1.0, 2.0, 3.0], [0.5, 0.5, 1.0], [0.5, 1.0, 1.0])
    info = loo_chance(rows)
    e = info["extra_pct"] / 100
    chi2 = sum((r["predicted"] - r["measured"]) ** 2
               / (r["noise"] ** 2 + (r["band"][1] - r["predicted"]) ** 2 + (e * r["predicted"]) ** 2) for r in rows)
    assert info["chi2"] > 3 and chi2 == pytest.approx(3, rel=0.02)
    assert loo_chance(_rows([10.0], [10.5], [1.0], [0.5], [0.5]))["extra_pct"] == 0


def test_the_measured_means_noise_is_the_runs_sd_over_their_number():
    """Table A gives a mean and sd "across 3 runs"; table B gives the runs."""
    for t in load_measurements():
        if t.kind == "mean_sd":
            assert t.noise == pytest.approx(t.spread / math.sqrt(3))
        else:
            assert t.noise == pytest.approx(np.std(t.runs, ddof=1) / math.sqrt(len(t.runs)))
            assert len(t.runs) == 3


def test_the_shipped_leave_one_out_says_what_chance_makes_of_it(shipped):
    """The sentence ``kit calibrate`` prints follows its figures, whichever way they fall."""
    rows, info = shipped
    assert all({"z", "p_within", "noise"} <= set(r) for r in rows)
    assert 0 <= info["p_all_within"] <= info["p_all_within_exact"] <= 1
    text = loo_chance_text(info)
    assert ("larger than those uncertainties explain" in text) == (info["chi2_p"] < CHANCE_ALPHA)
    assert f"{info['within']} are" in text and (f"{info['extra_pct']:g}%" in text) == (info["chi2_p"] < CHANCE_ALPHA)
    assert info["chi2"] == pytest.approx(sum(r["z"] ** 2 for r in rows), abs=0.01)
