"""A synthetic reader study with known truth: tiny images, a crossover design, simulated readers.

Used by ``neurocontrast reader init --synthetic N``, the end-to-end test and the user guide's worked
example. Nothing here is a model of real readers: detection is a Bernoulli draw per true lesion with a
probability per reader × condition, marks are the true axes plus small jitter, false positives are
placed far from every true lesion, and one duplicate mark is added now and then. Because the simulator
decides every outcome itself, it returns the expected TP/FN/FP counts that the analysis must find.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from neurocontrast.io import Geometry, write_volume
from neurocontrast.readerstudy.design import StudyDesign, crossover_design
from neurocontrast.readerstudy.pairing import Lesion
from neurocontrast.readerstudy.rois import lesions_roi, voxel_to_ras

SHAPE_ZYX = (6, 64, 64)
SPACING_XYZ = (1.0, 1.0, 3.0)
INTENSITY = {"pre": 100.0, "low": 115.0, "vir": 150.0, "ref": 170.0}
DEFAULT_DETECTION = {("R1", "low"): 0.45, ("R1", "vir"): 0.8, ("R2", "low"): 0.4, ("R2", "vir"): 0.85}
DEFAULT_FP_RATE = {"low": 0.15, "vir": 0.5}
#: mean confidence of marks on true lesions per condition (false positives: 0.4)
CONFIDENCE_TRUE = {"low": 0.6, "vir": 0.75}
SLOTS = [(16, 16), (16, 46), (46, 16), (46, 46)]  # (y, x) lesion centres, far apart


def _geometry() -> Geometry:
    return Geometry.from_arrays(SHAPE_ZYX, SPACING_XYZ, origin_xyz=(-32.0, -32.0, -7.5))


def _lesion_at(geometry: Geometry, z: int, y: float, x: float, long_mm: float, short_mm: float,
               angle: float) -> Lesion:
    c = voxel_to_ras(geometry, np.array([[z, y, x]]))[0]
    u = np.array([np.cos(angle), np.sin(angle), 0.0])
    v = np.array([-np.sin(angle), np.cos(angle), 0.0])
    return Lesion(long_axis=(tuple(c - u * long_mm / 2), tuple(c + u * long_mm / 2)),
                  short_axis=(tuple(c - v * short_mm / 2), tuple(c + v * short_mm / 2)))


def make_synthetic_study(folder, n_cases: int = 20, readers: Sequence[str] = ("R1", "R2"), seed: int = 0,
                         washout_days: float = 14) -> Dict:
    """Write images (``cases/<id>/{low,vir,ref,pre}.nii.gz`` + ``brain_roi.nii.gz``) and ``study.json``.

    Returns ``{"design": StudyDesign, "truth": {case: [Lesion...]}}``: 0–4 lesions per case of long axis
    2–20 mm in separate quadrants of one slice. Images: brain 100 ± 4 (Gaussian noise), lesion rhombi
    at the condition's intensity (pre 100, low 115, vir 150, ref 170).
    """
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    geometry = _geometry()
    truth: Dict[str, List[Lesion]] = {}
    case_ids = [f"S{i + 1:03d}" for i in range(n_cases)]
    brain = np.zeros(SHAPE_ZYX, dtype=bool)
    brain[:, 4:60, 4:60] = True
    brain_roi = np.zeros(SHAPE_ZYX, dtype=np.uint8)
    brain_roi[1:5, 29:35, 6:12] = 1  # a lesion-free strip inside the brain
    for cid in case_ids:
        n_lesions = int(rng.integers(0, 5)) if cid != case_ids[0] else 3
        slots = rng.permutation(len(SLOTS))[:n_lesions]
        lesions = []
        for slot in slots:
            y, x = SLOTS[int(slot)]
            long_mm = float(rng.uniform(2.2, 20.0))
            short_mm = float(long_mm * rng.uniform(0.4, 0.9))
            lesions.append(_lesion_at(geometry, int(rng.integers(1, 5)), y, x, long_mm, short_mm,
                                      float(rng.uniform(0, np.pi))))
        truth[cid] = lesions
        roi = lesions_roi(lesions, geometry) if lesions else np.zeros(SHAPE_ZYX, dtype=bool)
        case_dir = folder / "cases" / cid
        case_dir.mkdir(parents=True, exist_ok=True)
        for name, value in INTENSITY.items():
            image = np.where(brain, 100.0, 0.0) + rng.normal(0, 4.0, SHAPE_ZYX)
            image[roi] = value + rng.normal(0, 4.0, int(roi.sum()))
            write_volume(image.astype(np.float32), geometry, str(case_dir / f"{name}.nii.gz"))
        write_volume(brain_roi, geometry, str(case_dir / "brain_roi.nii.gz"))
    images = {c: {k: f"cases/{c}/{k}.nii.gz" for k in ("low", "vir", "ref")} for c in case_ids}
    data = crossover_design(case_ids, list(readers), ["low", "vir"], images,
                            reference={"reader": readers[0], "condition": "ref"}, seed=seed,
                            name="synthetic-virtual-contrast", washout_days=washout_days,
                            companions={c: {"pre": f"cases/{c}/pre.nii.gz"} for c in case_ids},
                            healthy_brain_rois={c: f"cases/{c}/brain_roi.nii.gz" for c in case_ids},
                            analysis={"size_strata_mm": [0, 2.5, 5, 7.5, 10], "threshold": "mean",
                                      "assignment": "hungarian", "duplicates": "ignore",
                                      "pre_contrast": "pre"})
    design = StudyDesign.from_dict(data, folder)
    design.save()
    truth_json = {c: [l.to_dict() for l in ls] for c, ls in truth.items()}
    import json

    (folder / "synthetic_truth.json").write_text(json.dumps(truth_json, indent=1), encoding="utf-8")
    return {"design": design, "truth": truth}


def load_truth(folder) -> Dict[str, List[Lesion]]:
    import json

    data = json.loads((Path(folder) / "synthetic_truth.json").read_text(encoding="utf-8"))
    return {c: [Lesion.from_dict(d) for d in ls] for c, ls in data.items()}


def _jitter(lesion: Lesion, rng, mm: float, scale_sd: float = 0.05) -> Lesion:
    """Shift the centre by ≤ ``mm`` (in-plane) and scale both axes by 1 + N(0, scale_sd) (clipped ±10 %)."""
    shift = rng.normal(0, mm / 3, 3)
    shift[2] = 0.0
    shift = shift if np.linalg.norm(shift) <= mm else shift * (mm / np.linalg.norm(shift))
    scale = float(np.clip(1 + rng.normal(0, scale_sd), 0.9, 1.1))
    center = lesion.center

    def move(p):
        return tuple(center + shift + scale * (np.asarray(p) - center))

    return Lesion(long_axis=tuple(move(p) for p in lesion.long_axis),
                  short_axis=tuple(move(p) for p in lesion.short_axis))


def simulate_reads(design: StudyDesign, truth: Dict[str, List[Lesion]], seed: int = 1,
                   detection: Optional[Dict] = None, fp_rate: Optional[Dict] = None,
                   duplicate_rate: float = 0.1, strata: Sequence[float] = (0, 2.5, 5, 7.5, 10)) -> Dict:
    """Read every case of every reader through :class:`ReaderSession` (a simulated clock jumps over the
    washouts) and return the expected counts ``{(reader, condition, stratum): {"tp", "fn", "fp"}}`` and
    ``{"n_duplicates": ...}``. Reference read: the true axes exactly. Reads: detected true lesions with
    ≤ 0.5 mm centre jitter and ±10 % length noise (always within the pairing
    threshold), false positives of 3–12 mm at the slice
    centre (far from the lesion quadrants), occasional duplicates 0.3 mm from a detected lesion. Each mark
    of a read carries a confidence: true lesions and duplicates ~ N(:data:`CONFIDENCE_TRUE` [condition],
    0.15), false positives ~ N(0.4, 0.15), clipped to [0.01, 1].
    """
    from neurocontrast.readerstudy.session import ReaderSession

    rng = np.random.default_rng(seed)
    conf_rng = np.random.default_rng(seed + 7919)
    detection = detection or DEFAULT_DETECTION
    fp_rate = fp_rate or DEFAULT_FP_RATE
    geometry = _geometry()
    clock = {"t": 1.6e9}
    expected: Dict = {}
    n_duplicates = 0
    for reader in design.readers:
        session = ReaderSession(design, reader, clock=lambda: clock["t"])
        try:
            while True:
                read = session.next_read()
                if read is None:
                    clock["t"] += design.washout_days * 86400 + 60
                    read = session.next_read()
                    if read is None:
                        break
                session.open(read.read_id)
                lesions = truth[read.case]
                if read.phase == "reference":
                    marks = list(lesions)
                else:
                    p = detection.get((reader, read.condition), 0.6)
                    found = [l for l in lesions if rng.random() < p]
                    marks = [_jitter(l, rng, 0.5) for l in found]
                    n_fp = int(rng.poisson(fp_rate.get(read.condition, 0.3)))
                    fps = [_lesion_at(geometry, int(rng.integers(1, 5)), 31 + 2 * i, 31, float(rng.uniform(3, 12)),
                                      2.0, 0.0) for i in range(min(n_fp, 2))]
                    dups = []
                    if found and rng.random() < duplicate_rate:
                        dups = [_jitter(found[0], rng, 0.3)]
                        n_duplicates += 1
                    marks = marks + fps + dups
                    for t in strata:
                        key = (reader, read.condition, float(t))
                        counts = expected.setdefault(key, {"tp": 0, "fn": 0, "fp": 0})
                        big = [l for l in lesions if l.long_mm >= t]
                        tp = sum(1 for l in found if l.long_mm >= t)
                        counts["tp"] += tp
                        counts["fn"] += len(big) - tp
                        counts["fp"] += sum(1 for l in fps if l.long_mm >= t)
                if read.phase != "reference":
                    # confidence (0-1) for FROC / ROC analyses, from a separate stream so the marks stay the same
                    hits = len(found)
                    marks = [replace(m, confidence=round(float(np.clip(conf_rng.normal(
                        CONFIDENCE_TRUE.get(read.condition, 0.65) if i < hits or i >= len(marks) - len(dups)
                        else 0.4, 0.15), 0.01, 1.0)), 3)) for i, m in enumerate(marks)]
                for mark in marks:
                    clock["t"] += float(rng.uniform(5, 20))
                    session.add_lesion(mark)
                clock["t"] += float(rng.uniform(10, 60))
                session.set_grade(int(np.clip(np.rint(rng.normal(3.3 if read.condition == "vir" else 2.2, 0.7)), 1, 5)))
                session.submit()
        finally:
            session.close()
    return {"expected": expected, "n_duplicates": n_duplicates}
