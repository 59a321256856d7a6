"""Browser apps on trame-slicer: the reader study reading station and the perfusion viewer (extra ``[web]``).

- :mod:`~neurocontrast.web.access`: bind address policy and the per-reader access token (no trame needed);
- :mod:`~neurocontrast.web.scene`: a trame-slicer ``SlicerApp`` prepared for the module logics;
- :mod:`~neurocontrast.web.reading` / :mod:`~neurocontrast.web.reading_app`: the reading station (the
  ``ReaderStudyLogic`` of the Slicer module over the same ``ReaderSession`` storage) and its page;
- :mod:`~neurocontrast.web.perfusion` / :mod:`~neurocontrast.web.perfusion_app`: the perfusion viewer
  (``PerfusionNetLogic``) and its page.

This package is the one place of the core that imports slicer/vtk/trame, and only when an app starts;
``neurocontrast web --help`` works without the extra.
"""

from __future__ import annotations

import importlib.util

from neurocontrast.errors import NeuroContrastError

#: The install line printed when the extra is missing.
INSTALL_HINT = 'pip install "neurocontrast[web]"   (from a source checkout: pip install -e ".[web]")'


def web_available() -> bool:
    """True when trame-slicer (the ``[web]`` extra) can be imported."""
    return importlib.util.find_spec("trame_slicer") is not None


def require_web() -> None:
    """Raise NeuroContrastError with the install line when the ``[web]`` extra is not installed."""
    if not web_available():
        raise NeuroContrastError(f"the web apps need the [web] extra (trame-slicer): {INSTALL_HINT}")
