"""The fit's bands and the leave-one-out predictions in the figures."""
import math

from bokeh.models import ColumnDataSource, Whisker

from kit.viz import figures as F

ROWS = [{"config": "B: 1x128x512G", "policy": "presplit-4k", "model_gbps": 12.6, "model_band_gbps": [11.4, 13.5],
         "measured_gbps": 13.7, "spread": 2.1},
        {"config": "B: 1x128x512G", "policy": "none", "model_gbps": 16.0, "model_band_gbps": None,
         "measured_gbps": None, "spread": None}]


def test_rate_bars_carry_the_band_as_whiskers():
    data = F.rate_data(ROWS)
    assert data["band_lo"][0] == 11.4 and data["band_hi"][0] == 13.5 and math.isnan(data["band_lo"][1])
    f = F.rate_figure(ColumnDataSource(data))
    whiskers = [w for w in f.center if isinstance(w, Whisker)]
    assert {(str(w.lower), str(w.upper)) for w in whiskers} == {("lower", "upper"), ("band_lo", "band_hi")}
    assert F.rate_top(data) >= 1.1 * 16.0


def test_sweep_lines_carry_their_band():
    rows = [{"policy": "presplit-4k", "vcpus": v, "fault_in_gbps": float(v), "rate_band_gbps": [v * 0.9, v * 1.1]}
            for v in (8, 128)]
    f = F.sweep_figure(rows)
    assert any(isinstance(w, Whisker) for w in f.center)
    bare = F.sweep_figure([{k: v for k, v in r.items() if k != "rate_band_gbps"} for r in rows])
    assert not any(isinstance(w, Whisker) for w in bare.center)


def test_recorded_calibration_draws_residuals_left_out_predictions_and_bands():
    loo = [{"config": "A", "measured": 12.9, "spread": 2.2, "predicted": 12.5, "within": True},
           {"config": "B", "measured": 33.4, "spread": 5.0, "predicted": 27.7, "within": False}]
    figs = F.result_figures({"leave_one_out": loo, "bands": ROWS[:1]})
    assert len(figs) == 2
    assert figs[0].title.text.startswith("Leave-one-out") and "band" in figs[1].title.text
