"""Shared pytest fixtures.

- ``shared_data(relpath)``: the path of a file in ``../shared/data``; skips with a clear reason where the
  folder is absent (a user's fresh clone), but FAILS under CI (``CI=true``), where the data must be present.
- The ``Testing`` folder and the Slicer module folders are put on ``sys.path`` so tests can import
  ``PerfusionNetLib``, ``ReaderStudyLib``... (see ``Testing/mrml/conftest.py`` for the MRML scene).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NEUROCONTRAST_SHARED_DATA", REPO.parent / "shared" / "data"))

for sub in ("NeuroContrast", "PerfusionNet", "VirtualGadolinium", "ReaderStudy"):
    path = str(REPO / sub)
    if path not in sys.path:
        sys.path.insert(0, path)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_shared(relpath: str) -> Path:
    """Path of ``../shared/data/<relpath>``; skip (or fail under CI=true) if it is missing."""
    path = SHARED_DATA / relpath
    if not path.exists():
        message = f"shared test data {path} is absent (it lives beside the project in ../shared/data)"
        if _in_ci():
            pytest.fail(message + "; under CI it must be present")
        pytest.skip(message)
    return path


@pytest.fixture
def shared_data():
    """Fixture form of :func:`require_shared`: ``shared_data("dsc/osipi/dsc_data.csv")``."""
    return require_shared


@pytest.fixture(autouse=True)
def _single_thread_torch():
    """Keep torch to the machine's cores without oversubscription in tests."""
    try:
        import torch
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    yield
