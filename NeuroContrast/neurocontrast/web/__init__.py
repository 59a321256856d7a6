"""Browser apps on trame-slicer, the core's side (extra ``[web]``): the command line and the access policy.

- :mod:`~neurocontrast.web.commands`: ``neurocontrast web reader|perfusion`` (parsers need only the standard
  library, so ``neurocontrast web --help`` works without the extra);
- :mod:`~neurocontrast.web.access`: bind address policy and the per-reader access token (no trame needed).

The apps themselves drive the Slicer module logics and import ``slicer``, so they live beside the pure core in
the package :mod:`neurocontrast_web` (scene, reading station, perfusion viewer), imported when an app starts.
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
