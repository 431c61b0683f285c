"""`kit calibrate` prints the fit's error bars: uncertainty, leave-one-out, sensitivities and the
validation rows, and writes the covariance with the fitted set."""
import json

from kit.lab.commands import build_parser
from kit.sim.params import CostParams


def test_calibrate_prints_leave_one_out_sensitivities_and_validation(tmp_path):
    out = tmp_path / "cost_params.json"
    args = build_parser().parse_args(["calibrate", "-o", str(out)])
    res = args.command(args)
    text = "\n".join(res.lines)
    names = CostParams.load().fitted
    assert "parameter uncertainty (1 sd" in text and all(n in text for n in names)
    assert "leave-one-out: each row predicted by a fit of the other 7 (8 fits" in text
    assert "predicted" in text and "undetermined" in text and "jackknife 1 sd" in text
    # each left-out prediction with its own band, and how many measurements meet it
    head = next(ln for ln in text.splitlines() if ln.startswith("config") and "overlaps" in ln)
    assert head.split()[:5] == ["config", "measured", "spread", "predicted", "band"]
    assert "within their spread of the prediction's band (from the left-out fit's covariance" in text
    assert "d ln(rate) / d ln(param)" in text and "(assumed)" in text
    # a count is stepped, not differentiated: threads per core 2 -> 1
    assert "counts and switches, the rows' rate change at the next whole value" in text
    assert "smt_threads 2 -> 1 threads" in text
    assert "validation rows (data/validation.csv, never fitted)" in text and "map-exits-4k-gmem" in text
    # the pre-faulting row is modelled now (QEMU commit 4cdc489eb9c2's KVM_PRE_FAULT_MEMORY)
    assert next(ln for ln in text.splitlines() if ln.startswith("map-exits-prefault")).rstrip().endswith("within")
    assert "held back (8 x 128 vCPUs x 160 GiB" in text and "presplit-4k" in text
    saved = json.loads(out.read_text())
    assert sorted(saved["covariance"]["names"]) == sorted(names)
    # the leave-one-out's model error is written with the set, said in one line, and equal to
    # the shipped set's (the same fit of the same data)
    extra = float(text.split("a model error of ")[1].split("%")[0])
    assert saved["covariance"]["model_error"] == extra / 100 > 0
    assert f"model error recorded with the set: {extra:g}% of a rate" in text
    assert CostParams.load(out).model_error == CostParams.load().model_error
    assert res.status == 0        # the fit's own rows still judge the exit status
