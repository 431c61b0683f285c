"""Running the kit's notebooks under papermill with small parameters."""
from __future__ import annotations

import pytest

from kit.lab.batch import run_notebook


@pytest.fixture
def run_nb(tmp_path):
    """run_nb(name, **params) -> (executed notebook path, recorded result documents)."""
    def run(name, **params):
        return run_notebook(name, tmp_path / name, **params)
    return run
