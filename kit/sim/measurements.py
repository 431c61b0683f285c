"""The schema of a measurements file (``data/measurements.csv``, or ``kit calibrate --data FILE``)
and its check: every row and column read before any fit, a bad one refused with one line
naming the file, the row, the column and what is allowed.

:data:`COLUMNS` is the one table of the schema; ``docs/data.md`` shows it (a test keeps the two
equal, through :func:`schema_table`). Lines starting with ``#`` are comments (the source and
its assumptions), the first other line is the header, and rows are counted as in the file (the
first line is line 1), so an editor jumps straight to a bad cell.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from ..host.policies import DIRECTMAP_POLICIES
from .calibrate import DEFAULT_HOST
from .scenario import SCENARIO_PARAMS as SP


@dataclass(frozen=True)
class Column:
    """One column: ``kind`` int, float, choice or text; ``required`` (or only for some
    ``kind`` of row); ``allowed``: the choices, or a bound in words; ``help``: what it holds."""

    name: str
    kind: str
    help: str
    allowed: str = ""
    required: bool = True
    choices: tuple = ()
    pattern: str = ""
    min: float | None = None


#: The largest measurements file read (the kit's own is under 4 KiB).
MAX_FILE_BYTES = 1 << 20
#: The most measured rows a file may hold.
MAX_ROWS = 1024
#: The most configurations (rows grouped as one measurement): ``kit calibrate`` traces each
#: once, and its leave-one-out re-fits once per configuration over all the others (time grows
#: with the square: 8 configurations take about 6 s, 64 about 6 min).
MAX_CONFIGURATIONS = 64

#: The kinds of row: one mean with its standard deviation, or one run of several.
ROW_KINDS = ("mean_sd", "run")
#: vCPU pinning: none, or all vCPU threads on one NUMA node's cores.
PINNING = r"unpinned|numa-node-[0-9]+"

COLUMNS: tuple[Column, ...] = (
    Column("table", "text", "which table of the source the row comes from (rows of one configuration "
           "and table are runs of one measurement)", "any text"),
    Column("host_cores", "int", f"host cores (empty: {DEFAULT_HOST[0]}, the source's host)", ">= 1",
           required=False, min=1),
    Column("host_mem_gib", "int", f"host memory in GiB (empty: {DEFAULT_HOST[1]})", ">= 1", required=False, min=1),
    Column("guests", "int", "guests, all of one size", SP["guests"].bounds_text(), min=1),
    Column("vcpus_per_guest", "int", "vCPUs of each guest", SP["vcpus"].bounds_text(), min=1),
    Column("guest_mem_gib", "int", "memory of each guest in GiB", ">= 1", min=1),
    Column("pinning", "choice", "where the vCPU threads run", "unpinned or numa-node-N", pattern=PINNING),
    Column("policy", "choice", "the host's direct-map policy", ", ".join(DIRECTMAP_POLICIES),
           choices=tuple(DIRECTMAP_POLICIES)),
    Column("kind", "choice", "mean_sd: a mean and its standard deviation; run: one run of several",
           ", ".join(ROW_KINDS), choices=ROW_KINDS),
    Column("run", "int", "the run's number (kind run)", ">= 1, or empty", required=False, min=1),
    Column("gbps", "float", "fault-in rate in decimal GB/s (1e9 bytes per second), all guests together",
           "a number > 0", min=0),
    Column("sd", "float", "standard deviation in GB/s (required for kind mean_sd)", "a number >= 0, or empty",
           required=False, min=0),
)
COLUMN_NAMES = tuple(c.name for c in COLUMNS)
#: The columns that name a configuration (those of :class:`kit.sim.calibrate.Config`): rows
#: equal in all of them are one measurement.
CONFIG_COLUMNS = ("table", "host_cores", "host_mem_gib", "guests", "vcpus_per_guest", "guest_mem_gib", "pinning",
                  "policy")


def _bad(path, line: int, column: str, value: str, allowed: str) -> ValueError:
    return ValueError(f"{path}: row {line}, column {column}: {value!r} is not allowed; allowed: {allowed}")


def _cell(path, line: int, col: Column, value: str):
    value = value.strip()
    if not value:
        if col.required:
            raise ValueError(f"{path}: row {line}, column {col.name}: empty; allowed: {col.allowed}")
        return None
    if col.kind in ("int", "float"):
        try:
            v = int(value) if col.kind == "int" else float(value)
        except ValueError:
            raise _bad(path, line, col.name, value, col.allowed) from None
        if v != v or (col.min is not None and (v < col.min or (col.name == "gbps" and v <= 0))):
            raise _bad(path, line, col.name, value, col.allowed)
        return v
    if col.choices and value not in col.choices:
        raise _bad(path, line, col.name, value, col.allowed)
    if col.pattern and not re.fullmatch(col.pattern, value):
        raise _bad(path, line, col.name, value, col.allowed)
    return value


def check_measurements(path) -> list[dict]:
    """The rows of a measurements file, every cell checked against :data:`COLUMNS`; a
    ``ValueError`` of one line (file, row, column, what is allowed) at the first bad cell."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(f"{path}: {size} bytes; a measurements file holds at most {MAX_FILE_BYTES} bytes "
                             "(kit.sim.measurements.MAX_FILE_BYTES)")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the measurements: {type(e).__name__}: {e}") from None
    numbered = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.startswith("#")]
    if not numbered:
        raise ValueError(f"{path}: no header line; expected the columns {','.join(COLUMN_NAMES)}")
    head_line, head = numbered[0]
    header = [h.strip() for h in next(csv.reader([head]))]
    missing = [c for c in COLUMN_NAMES if c not in header]
    extra = [c for c in header if c not in COLUMN_NAMES]
    if missing or extra:
        what = "; ".join(x for x in (f"missing {', '.join(missing)}" if missing else "",
                                     f"unknown {', '.join(extra)}" if extra else "") if x)
        raise ValueError(f"{path}: row {head_line} (header): {what}; expected the columns {','.join(COLUMN_NAMES)}")
    if len(numbered) - 1 > MAX_ROWS:
        raise ValueError(f"{path}: {len(numbered) - 1} measured rows; at most {MAX_ROWS} "
                         "(kit.sim.measurements.MAX_ROWS)")
    rows = []
    for line, raw in numbered[1:]:
        cells = next(csv.reader([raw]))
        if len(cells) != len(header):
            raise ValueError(f"{path}: row {line}: {len(cells)} cells, the header has {len(header)} "
                             f"({','.join(header)})")
        row = {c.name: _cell(path, line, c, cells[header.index(c.name)]) for c in COLUMNS}
        if row["kind"] == "mean_sd" and row["sd"] is None:
            raise ValueError(f"{path}: row {line}, column sd: empty; a mean_sd row needs its standard deviation")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no measured rows after the header")
    configs = {tuple(r[c] for c in CONFIG_COLUMNS) for r in rows}
    if len(configs) > MAX_CONFIGURATIONS:
        raise ValueError(f"{path}: {len(configs)} configurations; at most {MAX_CONFIGURATIONS} "
                         "(kit.sim.measurements.MAX_CONFIGURATIONS: leave-one-out re-fits once per configuration)")
    return rows


def schema_table() -> str:
    """:data:`COLUMNS` as a Markdown table (docs/data.md holds it)."""
    out = ["| column | holds | allowed | required |", "| --- | --- | --- | --- |"]
    for c in COLUMNS:
        out.append(f"| `{c.name}` | {c.help} | {c.allowed} | {'yes' if c.required else 'no'} |")
    return "\n".join(out)
