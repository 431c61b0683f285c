"""Step 1 of a run: resolve a notebook and inspect it, once.

A :class:`Notebook` holds what every later step needs: the file, its parameters as papermill's
inspection reads them from the cell tagged ``parameters`` (``papermill.inspect_notebook``: name
-> inferred type, default, help), the source of its validation cell (the code cell tagged
``validation``) and a hash of its cells, the key of the result store. It is a small frozen
value: a sweep sends it to its workers, which execute it without reading the notebook again.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def canonical(value) -> str:
    """One JSON spelling of a value (sorted keys, no spaces): what hashes and keys are made of."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def notebook_path(name) -> Path:
    """``name`` is a notebook in ``notebooks/`` (without ``.ipynb``) or a path."""
    p = Path(name)
    if p.suffix == ".ipynb" and p.is_dir():
        raise ValueError(f"notebook: {name} is a folder, not a notebook file")
    if p.suffix == ".ipynb" and p.exists():
        return p
    p = NOTEBOOKS / f"{name}.ipynb"
    if not p.exists():
        known = sorted(q.stem for q in NOTEBOOKS.glob("*.ipynb"))
        raise ValueError(f"notebook: unknown {name!r}; allowed: {', '.join(known)}")
    return p


def cells_hash(nb) -> str:
    """SHA-256 of a notebook's cells (types, sources and tags), not of its outputs."""
    h = hashlib.sha256()
    for c in nb.cells:
        h.update(c.cell_type.encode())
        h.update(c.source.encode())
        h.update(canonical(sorted(c.metadata.get("tags", []))).encode())
    return h.hexdigest()


def language(nb) -> str | None:
    """The notebook's language as its metadata names it (``kernelspec.language``, else
    ``language_info.name``), lower case; None when it names none."""
    md = nb.get("metadata", {}) or {}
    for v in ((md.get("kernelspec") or {}).get("language"), (md.get("language_info") or {}).get("name")):
        if isinstance(v, str) and v.strip():
            return v.strip().lower()
    return None


def validation_cell(nb) -> str | None:
    """The source of the code cell tagged ``validation`` (None if there is none)."""
    for c in nb.cells:
        if c.cell_type == "code" and "validation" in c.metadata.get("tags", []):
            return c.source
    return None


@dataclass(frozen=True)
class Notebook:
    """A notebook resolved and inspected (:func:`inspect`)."""

    path: Path
    parameters: dict            # name -> {"name", "inferred_type_name", "default", "help"}
    cells_hash: str
    validation: str | None

    @property
    def name(self) -> str:
        return self.path.stem

    def __repr__(self) -> str:
        return f"<Notebook {self.name}: {', '.join(self.parameters)}>"


def inspect(notebook) -> Notebook:
    """Resolve ``notebook`` (a name in ``notebooks/``, a path, or a :class:`Notebook`, returned
    as it is) and read it once: parameters, validation cell, cells hash."""
    if isinstance(notebook, Notebook):
        return notebook
    # nbformat and papermill take about a second to import: only a run pays it
    import nbformat
    import papermill

    path = notebook_path(notebook).resolve()
    try:
        nb = nbformat.read(str(path), as_version=4)
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, KeyError, TypeError) as e:
        # ValueError covers nbformat's NotJSONError and json.JSONDecodeError
        raise ValueError(f"notebook: cannot read {path.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    lang = language(nb)
    if lang is not None and lang != "python":
        # papermill would write the parameters in that language's syntax and the kit starts a
        # Python kernel: refuse rather than run a notebook in the wrong language
        raise ValueError(f"notebook: {path.name} is a {lang} notebook (kernelspec); the kit runs Python notebooks only")
    return Notebook(path=path, parameters=papermill.inspect_notebook(str(path)),
                    cells_hash=cells_hash(nb), validation=validation_cell(nb))


def parameter_names(nb_path) -> dict:
    """The notebook's parameters (papermill inspection): name -> inferred type and default."""
    return inspect(nb_path).parameters


def notebook_hash(path) -> str:
    """The cells hash of the notebook at ``path`` (:func:`cells_hash`)."""
    return inspect(path).cells_hash


def validation_source(nb_path) -> str | None:
    """The source of the notebook's validation cell (:attr:`Notebook.validation`)."""
    return inspect(nb_path).validation
