"""Lesions marked by their long and short axes, and one-to-one pairing of two sets of lesions.

Ammari et al. 2022 (Methods, "Lesion tracking"): "pairing together lesions whose centers were separated
by a distance smaller than the halved average of their long and short axes"; Bône et al. 2022: "closer
than half the average of their long and short axes". Each lesion has the radius r = (L + S) / 4 (half of
the average of its axes). The literal two-lesion reading, the default ``threshold="mean"``, averages the two
radii: (L_ref + S_ref + L_det + S_det) / 8. Options: ``"ref"`` (r_ref), ``"max"``, ``"min"``, ``"sum"``
(r_ref + r_det), or a fixed distance in mm.

Assignment: the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on costs
``distance − BIG`` for eligible pairs (0 otherwise), with BIG larger than the sum of all eligible
distances, first maximises the number of pairs, then minimises the summed centre distance. ``"greedy"``
takes the closest eligible pairs first (what a naive script does; it can lose pairs).
A detection left unpaired but within the threshold of an already-paired reference lesion is a duplicate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from neurocontrast.errors import NeuroContrastError

Point = Tuple[float, float, float]
Segment = Tuple[Point, Point]

THRESHOLDS = ("mean", "ref", "max", "min", "sum")
ASSIGNMENTS = ("hungarian", "greedy")
DEFAULT_SIZE_STRATA = (0.0, 2.5, 5.0, 7.5, 10.0)


def _segment(value, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise NeuroContrastError(f"{name} must be two (x, y, z) points in RAS mm, got {value!r}") from None
    if array.shape != (2, 3):
        raise NeuroContrastError(f"{name} must be two (x, y, z) points in RAS mm (shape (2, 3)), got shape "
                                 f"{array.shape}")
    if not np.all(np.isfinite(array)):
        raise NeuroContrastError(f"{name} contains NaN or infinite coordinates")
    return array


@dataclass(frozen=True)
class Lesion:
    """One marked lesion: a long axis and a short axis, each two 3D points in patient RAS (mm).

    ``long_mm`` / ``short_mm``: axis lengths (mm); ``center``: (3,) mean of the two axis midpoints (the
    crossing point when the short axis bisects the long one); ``angle_deg``: angle between the axes
    (90 = perpendicular). ``confidence`` (optional, 0–1) is kept for FROC analyses. Raises
    NeuroContrastError on malformed points, a zero-length long axis, or a short axis longer than the long
    one (swap them). Use :meth:`warnings` for soft checks (non-perpendicular axes).
    """

    long_axis: Segment
    short_axis: Segment
    confidence: Optional[float] = None
    label: str = ""

    def __post_init__(self):
        long_axis = _segment(self.long_axis, "long_axis")
        short_axis = _segment(self.short_axis, "short_axis")
        object.__setattr__(self, "long_axis", tuple(tuple(float(v) for v in p) for p in long_axis))
        object.__setattr__(self, "short_axis", tuple(tuple(float(v) for v in p) for p in short_axis))
        if self.long_mm <= 0:
            raise NeuroContrastError("long_axis has zero length: its two points coincide")
        if self.short_mm > self.long_mm + 1e-6:
            raise NeuroContrastError(f"short axis ({self.short_mm:.2f} mm) is longer than the long axis "
                                     f"({self.long_mm:.2f} mm); swap them")
        if self.confidence is not None and not 0.0 <= float(self.confidence) <= 1.0:
            raise NeuroContrastError(f"confidence must lie in [0, 1], got {self.confidence!r}")

    @property
    def long_mm(self) -> float:
        a, b = np.asarray(self.long_axis)
        return float(np.linalg.norm(b - a))

    @property
    def short_mm(self) -> float:
        a, b = np.asarray(self.short_axis)
        return float(np.linalg.norm(b - a))

    @property
    def center(self) -> np.ndarray:
        points = np.asarray(self.long_axis + self.short_axis)
        return 0.5 * (points[0:2].mean(axis=0) + points[2:4].mean(axis=0))

    @property
    def radius_mm(self) -> float:
        """Half of the average of the two axes, (L + S) / 4 (Ammari et al. 2022)."""
        return (self.long_mm + self.short_mm) / 4.0

    @property
    def angle_deg(self) -> float:
        """Angle between the long and short axes in degrees (90 when perpendicular; 90 for a 0-mm short axis)."""
        u = np.subtract(*self.long_axis[::-1])
        v = np.subtract(*self.short_axis[::-1])
        nv = np.linalg.norm(v)
        if nv == 0:
            return 90.0
        cos = abs(float(np.dot(u, v))) / (np.linalg.norm(u) * nv)
        return float(math.degrees(math.acos(min(1.0, cos))))

    def warnings(self, max_angle_deviation_deg: float = 15.0, max_center_offset: float = 0.25) -> List[str]:
        """Soft checks: axes more than ``max_angle_deviation_deg`` from perpendicular, or axis midpoints
        farther apart than ``max_center_offset`` × long axis (the short axis does not cross the long one)."""
        out = []
        deviation = 90.0 - self.angle_deg
        if self.short_mm > 0 and deviation > max_angle_deviation_deg:
            out.append(f"axes are {self.angle_deg:.0f}° apart; expected near-perpendicular (deviation "
                       f"{deviation:.0f}° > {max_angle_deviation_deg:.0f}°)")
        mids = np.asarray(self.long_axis).mean(axis=0), np.asarray(self.short_axis).mean(axis=0)
        offset = float(np.linalg.norm(mids[0] - mids[1]))
        if offset > max_center_offset * self.long_mm:
            out.append(f"short axis midpoint is {offset:.1f} mm from the long axis midpoint")
        return out

    def to_dict(self) -> Dict:
        return {"long_axis": [list(p) for p in self.long_axis], "short_axis": [list(p) for p in self.short_axis],
                "confidence": self.confidence, "label": self.label}

    @classmethod
    def from_dict(cls, data: Dict) -> "Lesion":
        try:
            return cls(long_axis=data["long_axis"], short_axis=data["short_axis"],
                       confidence=data.get("confidence"), label=data.get("label", ""))
        except KeyError as exc:
            raise NeuroContrastError(f"a lesion needs 'long_axis' and 'short_axis', missing {exc}") from None


@dataclass
class PairingResult:
    """Outcome of :func:`pair_lesions`.

    ``pairs``: list of (reference index, detection index); ``distances_mm``: centre distance of each pair;
    ``duplicates``: list of (reference index, detection index) for unpaired detections within the threshold
    of an already-paired reference lesion; ``unpaired_reference``: indices of missed reference lesions
    (false negatives); ``unpaired_detections``: indices of detections that are neither paired nor
    duplicates (false positives). ``duplicates_as_fp`` records the chosen duplicate policy.
    """

    pairs: List[Tuple[int, int]]
    distances_mm: List[float]
    duplicates: List[Tuple[int, int]]
    unpaired_reference: List[int]
    unpaired_detections: List[int]
    n_reference: int
    n_detections: int
    duplicates_as_fp: bool = False
    threshold: Union[str, float] = "mean"
    assignment: str = "hungarian"

    @property
    def false_positive_detections(self) -> List[int]:
        """Detections counted as false positives under the duplicate policy."""
        extra = [d for _, d in self.duplicates] if self.duplicates_as_fp else []
        return sorted(self.unpaired_detections + extra)

    @property
    def tp(self) -> int:
        return len(self.pairs)

    @property
    def fn(self) -> int:
        return len(self.unpaired_reference)

    @property
    def fp(self) -> int:
        return len(self.false_positive_detections)


def _radius_threshold(threshold, r_ref: np.ndarray, r_det: np.ndarray) -> np.ndarray:
    a, b = r_ref[:, None], r_det[None, :]
    if isinstance(threshold, str):
        if threshold == "mean":
            return (a + b) / 2.0
        if threshold == "ref":
            return np.broadcast_to(a, (a.shape[0], b.shape[1])).copy()
        if threshold == "max":
            return np.maximum(a, b)
        if threshold == "min":
            return np.minimum(a, b)
        if threshold == "sum":
            return a + b
        raise NeuroContrastError(f"threshold must be one of {THRESHOLDS} or a distance in mm, got {threshold!r}")
    value = float(threshold)
    if not value > 0:
        raise NeuroContrastError(f"a fixed pairing threshold must be > 0 mm, got {threshold!r}")
    return np.full((a.shape[0], b.shape[1]), value)


def _as_lesions(items: Iterable, name: str) -> List[Lesion]:
    out = []
    for i, item in enumerate(items):
        if isinstance(item, Lesion):
            out.append(item)
        elif isinstance(item, dict):
            out.append(Lesion.from_dict(item))
        else:
            raise NeuroContrastError(f"{name}[{i}] must be a Lesion or a dict with long_axis/short_axis")
    return out


def pair_lesions(reference: Sequence[Lesion], detections: Sequence[Lesion], threshold="mean",
                 assignment: str = "hungarian", duplicates: str = "ignore") -> PairingResult:
    """Pair reference lesions with detected lesions one to one (Ammari et al. 2022; Bône et al. 2022).

    Parameters
    ----------
    reference, detections : sequences of :class:`Lesion` (or their dicts), RAS mm. The same function
        compares a reader with another reader (pass one as ``reference``).
    threshold : "mean" (default, (L_ref+S_ref+L_det+S_det)/8), "ref", "max", "min", "sum", or a float (mm).
        A pair is eligible when the centre distance is strictly below the threshold.
    assignment : "hungarian" (maximum number of pairs, then minimum summed distance) or "greedy".
    duplicates : "ignore" (default: duplicates are neither TP nor FP) or "fp" (count them as FP).

    Returns a :class:`PairingResult`. Raises NeuroContrastError on unknown options or bad lesions.
    """
    if assignment not in ASSIGNMENTS:
        raise NeuroContrastError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")
    if duplicates not in ("ignore", "fp"):
        raise NeuroContrastError(f"duplicates must be 'ignore' or 'fp', got {duplicates!r}")
    ref = _as_lesions(reference, "reference")
    det = _as_lesions(detections, "detections")
    n_ref, n_det = len(ref), len(det)
    pairs: List[Tuple[int, int]] = []
    dist = np.zeros((n_ref, n_det))
    eligible = np.zeros((n_ref, n_det), dtype=bool)
    if n_ref and n_det:
        c_ref = np.array([l.center for l in ref])
        c_det = np.array([l.center for l in det])
        dist = np.linalg.norm(c_ref[:, None, :] - c_det[None, :, :], axis=-1)
        limit = _radius_threshold(threshold, np.array([l.radius_mm for l in ref]),
                                  np.array([l.radius_mm for l in det]))
        eligible = dist < limit
        if assignment == "hungarian":
            from scipy.optimize import linear_sum_assignment

            big = float(dist[eligible].sum()) + 1.0
            cost = np.where(eligible, dist - big, 0.0)
            rows, cols = linear_sum_assignment(cost)
            pairs = [(int(r), int(c)) for r, c in zip(rows, cols) if eligible[r, c]]
        else:
            order = np.argsort(np.where(eligible, dist, np.inf), axis=None, kind="stable")
            used_r, used_d = set(), set()
            for flat in order:
                r, c = divmod(int(flat), n_det)
                if not eligible[r, c]:
                    break
                if r in used_r or c in used_d:
                    continue
                pairs.append((r, c))
                used_r.add(r)
                used_d.add(c)
    pairs.sort()
    paired_ref = {r for r, _ in pairs}
    paired_det = {d for _, d in pairs}
    dup: List[Tuple[int, int]] = []
    unpaired_det: List[int] = []
    for d in range(n_det):
        if d in paired_det:
            continue
        candidates = [r for r in paired_ref if eligible[r, d]]
        if candidates:
            dup.append((min(candidates, key=lambda r: dist[r, d]), d))
        else:
            unpaired_det.append(d)
    return PairingResult(pairs=pairs, distances_mm=[float(dist[r, d]) for r, d in pairs], duplicates=dup,
                         unpaired_reference=[r for r in range(n_ref) if r not in paired_ref],
                         unpaired_detections=unpaired_det, n_reference=n_ref, n_detections=n_det,
                         duplicates_as_fp=duplicates == "fp", threshold=threshold, assignment=assignment)


def stratify(result: PairingResult, reference: Sequence[Lesion], detections: Sequence[Lesion],
             size_thresholds: Sequence[float] = DEFAULT_SIZE_STRATA) -> List[Dict[str, float]]:
    """Nested size strata on one pairing (Ammari Table 5): for each threshold t (long axis, mm),
    reference lesions with L ≥ t count as TP (paired) or FN (unpaired), false-positive detections with
    L ≥ t as FP (duplicates as FP only under the "fp" policy). Pairing is done once on all lesions.
    Returns one dict per threshold: min_long_mm, tp, fn, fp, n_reference, n_duplicates."""
    ref = _as_lesions(reference, "reference")
    det = _as_lesions(detections, "detections")
    if len(ref) != result.n_reference or len(det) != result.n_detections:
        raise NeuroContrastError("stratify needs the same reference and detections that were paired")
    thresholds = [float(t) for t in size_thresholds]
    if any(t < 0 for t in thresholds):
        raise NeuroContrastError(f"size thresholds must be >= 0 mm, got {thresholds}")
    paired_ref = {r for r, _ in result.pairs}
    out = []
    for t in thresholds:
        big_ref = [i for i, l in enumerate(ref) if l.long_mm >= t]
        tp = sum(1 for i in big_ref if i in paired_ref)
        fp = sum(1 for d in result.false_positive_detections if det[d].long_mm >= t)
        n_dup = sum(1 for _, d in result.duplicates if det[d].long_mm >= t)
        out.append({"min_long_mm": t, "tp": tp, "fn": len(big_ref) - tp, "fp": fp, "n_reference": len(big_ref),
                    "n_duplicates": n_dup})
    return out
