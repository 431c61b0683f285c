"""Small notebooks the lab's hostile-input and concurrency tests write for themselves."""
from __future__ import annotations

from pathlib import Path

import nbformat


def make_notebook(path, parameters: str, *cells: str, language: str = "python") -> Path:
    """A notebook at ``path``: a cell tagged ``parameters`` with ``parameters``, then ``cells``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": language}
    nb.metadata["language_info"] = {"name": language}
    p = nbformat.v4.new_code_cell(parameters)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p] + [nbformat.v4.new_code_cell(c) for c in cells]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


#: untyped, list, dict and tuple parameters, and a cell that records what it got
UNTYPED = '''value = None  # untyped
items: list = []  # a list
mapping: dict = {}  # a dict
pair: tuple = (1, 2)  # a tuple
label: str = "a"  # text
outdir: str = "out"  # where the result goes'''

RECORD_UNTYPED = '''import kit.lab
kit.lab.record("got", {"value": repr(value), "items": repr(items), "mapping": repr(mapping)},
               outdir=outdir, display=False)'''

#: counts its executions: "start X" before its work and "done X" after it, in ``log``
COUNTER = '''x: int = 0  # a number
text: str = ""  # recorded as it is
log: str = ""  # file the executions are counted in
sleep: float = 0.0  # seconds of work
subdir: bool = False  # also write a file in a subfolder of outdir
outdir: str = "out"  # where the result goes'''

COUNTER_WORK = '''import os, time
import kit.lab

def _note(what):
    if log:
        with open(log, "a") as f:
            f.write(f"{what} {x}\\n")

_note("start")
time.sleep(sleep)
if subdir:
    os.makedirs(os.path.join(outdir, "sub", "deeper"), exist_ok=True)
    with open(os.path.join(outdir, "sub", "deeper", "data.txt"), "w") as f:
        f.write(str(x))
kit.lab.record("count", {"x": x, "y": x * x, "text": text}, params={"x": x, "text": text, "outdir": outdir},
               outdir=outdir)
_note("done")'''


def counter(path) -> Path:
    return make_notebook(path, COUNTER, COUNTER_WORK)


def untyped(path) -> Path:
    return make_notebook(path, UNTYPED, RECORD_UNTYPED)
