"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def plans_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every zoo model exported once per test session (needs TensorFlow: the models extra)."""
    pytest.importorskip("tensorflow", reason="exporting plans needs the 'models' extra")
    from models.export import export_plan
    from models.zoo import ZOO

    out = tmp_path_factory.mktemp("plans")
    for name in ZOO:
        export_plan(name, out, seed=0)
    return out
