"""Report size and build time, and the size of a stored executed notebook per run, each with a
reference measured in the same run.

- ``kit report`` of the demo's result (notebooks/directmap-policies.ipynb, every policy):
  size and build time (median of ``--repeat`` builds), against Bokeh's own ``file_html`` of the
  same figures with INLINE resources (the plots alone, no tables, prose or provenance);
- the stored executed notebook of one run: as papermill writes it, as ``kit run`` keeps it
  (BokehJS once, only the bundles its plots need) and as a sweep's run keeps it (no BokehJS:
  the sweep's report embeds it once), against what Bokeh's ``output_notebook(INLINE)`` would
  store (every bundle, twice: the load output's two MIME types).

Run: python benchmarks/report.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    import nbformat
    import papermill
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.resources import INLINE, Resources

    from kit.lab.execute import finish, ipc_kernel_manager
    from kit.lab.notebook import NOTEBOOKS
    from kit.lab.record import read_notebook_results
    from kit.lab.report import build
    from kit.viz.figures import result_figures

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        raw = d / "raw.ipynb"
        t0 = time.perf_counter()
        papermill.execute_notebook(str(NOTEBOOKS / "directmap-policies.ipynb"), str(raw),
                                   parameters={"outdir": str(d)}, kernel_name="python3", progress_bar=False,
                                   cwd=str(d), kernel_manager_class=ipc_kernel_manager())
        print(f"directmap-policies executed in {time.perf_counter() - t0:.1f} s")
        docs = read_notebook_results(raw)
        kept, bare = d / "kept.ipynb", d / "bare.ipynb"
        shutil.copy(raw, kept)
        shutil.copy(raw, bare)
        finish(kept, bokehjs="inline")
        finish(bare, bokehjs="none")
        bokeh_default = 2 * sum(len(js) for js in INLINE.js_raw)     # output_notebook(INLINE): all bundles, twice
        core = sum(len(js) for js in Resources(mode="inline", components=["bokeh"]).js_raw)
        rest = raw.stat().st_size - 2 * core        # the notebook without the two copies papermill keeps
        ref_nb = bokeh_default + rest
        print("stored notebook per run:")
        for what, n in (("output_notebook(INLINE) (reference)", ref_nb), ("as papermill writes it", raw.stat().st_size),
                        ("kit run (BokehJS once)", kept.stat().st_size), ("sweep run (no BokehJS)", bare.stat().st_size)):
            print(f"  {what:38} {_mb(n):>9}  {n / ref_nb:6.3f} x reference")
        for what, n in (("1,000 runs, kit run", 1000 * kept.stat().st_size), ("1,000 runs, sweep", 1000 * bare.stat().st_size),
                        ("1,000 runs, reference", 1000 * ref_nb)):
            print(f"  {what:38} {n / 1e9:8.2f} GB")
        nb = nbformat.read(str(kept), as_version=4)
        assert any("application/vnd.bokehjs_load.v0+json" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))

        kit_t, ref_t = [], []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            html = build(docs, title="Direct-map policies on SEV-SNP hosts")
            kit_t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ref = file_html(column(*result_figures(docs[-1]["results"])), INLINE, "reference")
            ref_t.append(time.perf_counter() - t0)
        kt, rt = statistics.median(kit_t), statistics.median(ref_t)
        ks, rs = len(html.encode()), len(ref.encode())
        print(f"report: {_mb(ks)}, built in {kt:.2f} s (median of {a.repeat})")
        print(f"reference (bokeh file_html of the same figures, INLINE): {_mb(rs)}, {rt:.2f} s")
        print(f"report / reference: size {ks / rs:.2f}x, build time {kt / rt:.2f}x")


if __name__ == "__main__":
    main()
