"""Blinded, randomised reader studies: design, crash-safe sessions, lesion pairing, statistics, reports.

``Lesion`` (long and short axes in RAS mm) is the unit every part exchanges; see ``pairing``,
``statistics``, ``design``, ``session`` and ``report``.
"""

from neurocontrast.readerstudy.pairing import Lesion, PairingResult, pair_lesions  # noqa: F401

__all__ = ["Lesion", "PairingResult", "pair_lesions"]
