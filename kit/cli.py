"""The ``kit`` command line."""
from __future__ import annotations

import argparse
import html
import os
import sys
import time

from . import __version__


def _table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    out = ["  ".join(c.ljust(widths[c]) for c in cols)]
    out += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(out)


def _html_report(rows: list[dict], cols: list[str], params: dict) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows)
    prov = "".join(f"<li>{esc(k)}: {esc(str(v))}</li>" for k, v in params.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>kit demo</title>"
            f"<style>body{{font-family:sans-serif}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}</style>"
            f"</head><body><h1>Direct-map policies on one SNP host</h1>"
            f"<table><tr>{head}</tr>{body}</table><h2>Provenance</h2><ul>{prov}</ul></body></html>")


def cmd_demo(args) -> int:
    from .lab.demo import run_all
    from .units import parse_size
    try:
        mem, guest = (parse_size(getattr(args, n), name=n) for n in ("mem", "guest_mem"))
        if args.cores < 1:
            raise ValueError(f"cores: must be at least 1, got {args.cores}")
        # the demo also runs a 2GiB guest on 4K pages and 128MiB of host kernel pages
        need = guest + 2 * 2**30 + 2**27
        if need > mem:
            raise ValueError(f"guest_mem: {args.guest_mem} plus the demo's 2GiB guest and 128MiB of "
                             f"kernel pages do not fit in mem {args.mem}")
    except (ValueError, TypeError) as e:
        print(f"kit demo: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    print(f"kit {__version__}: host {args.mem}, {args.cores} cores; one SNP guest of {args.guest_mem} "
          f"on 2M folios, one of 2GiB on 4K folios, host kernel writes to its own pages")
    rows = run_all(mem=args.mem, cores=args.cores, guest_mem=args.guest_mem, seed=args.seed)
    cols = ["policy", "DirectMap4k", "DirectMap2M", "DirectMap1G", "DirectMap4k_after_exit",
            "splits", "collapses", "flush_tlb_all", "cpa_lock", "rmpupdate", "psmash", "host_write",
            "state_mib", "wall_s"]
    print(_table(rows, cols))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    params = {"kit_version": __version__, "mem": args.mem, "cores": args.cores,
              "guest_mem": args.guest_mem, "seed": args.seed,
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0))}
    with open(args.out, "w") as f:
        f.write(_html_report(rows, cols, params))
    print(f"report: {os.path.abspath(args.out)}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="kit", description="confidential-VM memory research kit")
    p.add_argument("--version", action="version", version=f"kit {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run the host-model demonstration on every direct-map policy")
    d.add_argument("--mem", default="1.5TiB", help="host memory (default 1.5TiB)")
    d.add_argument("--cores", type=int, default=512, help="host cores (default 512)")
    d.add_argument("--guest-mem", dest="guest_mem", default="160GiB", help="SNP guest memory (default 160GiB)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="reports/index.html", help="HTML report path")
    d.set_defaults(func=cmd_demo)
    args = p.parse_args(argv)
    return args.func(args)
