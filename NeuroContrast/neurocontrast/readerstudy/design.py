"""Study design: a validated JSON file in a study folder, the allocation of reads, case order, washout.

A study folder holds ``study.json``::

    {
      "name": "virtual-contrast",
      "seed": 2022,
      "readers": ["R1", "R2"],
      "conditions": ["low", "vir"],            # conditions read in the phases
      "allocation": "crossover",               # or "sequential" (phase i = condition i, Bône et al.)
      "washout_days": 14,
      "reference": {"reader": "R1", "condition": "ref"},   # optional extra phase for the reference read
      "cases": [{"id": "C01", "images": {"low": "cases/C01/low.nii.gz", "vir": "...", "ref": "..."},
                 "companions": {"pre": "cases/C01/t1.nii.gz"},      # shown beside, optional
                 "healthy_brain_roi": "cases/C01/brain_roi.nii.gz"}],  # optional, for CNR/LBR
      "likert": {"points": 5, "anchors": {"1": "poor", "5": "excellent"}},
      "exclusion": {"max_lesions": 20},
      "analysis": {"size_strata_mm": [0, 2.5, 5, 7.5, 10], "threshold": "mean",
                   "assignment": "hungarian", "duplicates": "ignore"}
    }

Crossover (Ammari et al. 2022): per reader, the cases are split by a seeded permutation into as many
near-equal groups as there are conditions; in phase p group g reads condition (g + p) mod K, so each
reader reads every case once per condition across the K phases, and half the cases in each condition
per phase when K = 2. The reading order within a reader × phase is a permutation drawn from a generator
seeded by (design seed, reader, phase): stable across restarts and machines. A phase is locked until the
reader has submitted every read of the previous phase and ``washout_days`` have passed since the last
submit (14 days in Ammari et al., 10 in Bône et al.).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from neurocontrast.errors import NeuroContrastError

DESIGN_FILE = "study.json"
DEFAULT_STRATA = [0.0, 2.5, 5.0, 7.5, 10.0]
REFERENCE_PHASE = "reference"
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


@dataclass(frozen=True)
class Read:
    """One read: reader × case × phase, in a condition. ``read_id`` is ``<reader>__<phase>__<case>``;
    ``order`` its 0-based position in the reader's worklist for that phase."""

    reader: str
    phase: str
    case: str
    condition: str
    order: int

    @property
    def read_id(self) -> str:
        return f"{self.reader}__{self.phase}__{self.case}"


def _stable_int(*parts) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _check_id(value, what: str) -> str:
    if not isinstance(value, str) or not value or not set(value) <= _ID_CHARS or "__" in value:
        raise NeuroContrastError(f"{what} must be a non-empty string of letters, digits, '-' or '_' "
                                 f"(no '__'), got {value!r}")
    return value


def _is_number(value) -> bool:
    """A finite JSON number (not a boolean, NaN or infinity)."""
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _object(d: Dict, key: str, default, where: str = "study design") -> Dict:
    value = d.setdefault(key, default)
    if not isinstance(value, dict):
        raise NeuroContrastError(f"{where}: '{key}' must be an object ({{...}}), got {type(value).__name__} "
                                 f"{value!r}")
    return value


class StudyDesign:
    """A validated study design bound to its folder. Build with :meth:`load` or :meth:`from_dict`.

    Raises NeuroContrastError with the offending key for every invalid field (unknown allocation, a case
    missing a condition's image, a reference reader not in ``readers``, Likert points outside 2–10,
    paths escaping the study folder...).
    """

    def __init__(self, data: Dict, folder):
        self.folder = Path(folder).resolve()
        self.data = data
        self._validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, folder) -> "StudyDesign":
        """Read ``<folder>/study.json`` (or a design file path; its folder is the study folder)."""
        folder = Path(folder)
        path = folder if folder.suffix == ".json" and not folder.is_dir() else folder / DESIGN_FILE
        folder = path.parent
        if not path.exists():
            raise FileNotFoundError(f"no study design {path} (create it with `neurocontrast reader init`)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise NeuroContrastError(f"{path} is not valid JSON: {exc}") from None
        return cls(data, folder)

    @classmethod
    def from_dict(cls, data: Dict, folder) -> "StudyDesign":
        return cls(json.loads(json.dumps(data)), folder)

    def save(self) -> Path:
        from neurocontrast.readerstudy.storage import write_json_atomic

        path = self.folder / DESIGN_FILE
        write_json_atomic(path, self.data)
        return path

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        d = self.data
        if not isinstance(d, dict):
            raise NeuroContrastError("the study design must be a JSON object")
        for key in ("readers", "conditions", "cases"):
            if key not in d:
                raise NeuroContrastError(f"study design: missing required key '{key}'")
        seed = d.setdefault("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise NeuroContrastError(f"study design: 'seed' must be a non-negative integer, got {seed!r}")
        readers = d["readers"]
        if not isinstance(readers, list) or not readers:
            raise NeuroContrastError("study design: 'readers' must be a non-empty list of reader ids")
        for r in readers:
            _check_id(r, "study design: reader id")
        if len(set(readers)) != len(readers):
            raise NeuroContrastError(f"study design: duplicate reader ids in {readers}")
        conditions = d["conditions"]
        if not isinstance(conditions, list) or not conditions:
            raise NeuroContrastError("study design: 'conditions' must be a non-empty list of condition names")
        for c in conditions:
            _check_id(c, "study design: condition name")
        if len(set(conditions)) != len(conditions):
            raise NeuroContrastError(f"study design: duplicate conditions in {conditions}")
        allocation = d.setdefault("allocation", "crossover")
        if allocation not in ("crossover", "sequential"):
            raise NeuroContrastError(f"study design: 'allocation' must be 'crossover' or 'sequential', "
                                     f"got {allocation!r}")
        washout = d.setdefault("washout_days", 14)
        if not _is_number(washout) or washout < 0:
            raise NeuroContrastError(f"study design: 'washout_days' must be a number >= 0, got {washout!r}")
        reference = d.get("reference")
        needed = list(conditions)
        if reference is not None:
            if not isinstance(reference, dict) or "reader" not in reference or "condition" not in reference:
                raise NeuroContrastError("study design: 'reference' must be {\"reader\": ..., \"condition\": ...}")
            if reference["reader"] not in readers:
                raise NeuroContrastError(f"study design: reference reader {reference['reader']!r} is not in "
                                         f"'readers' {readers}")
            _check_id(reference["condition"], "study design: reference condition")
            if reference["condition"] in conditions:
                raise NeuroContrastError("study design: the reference condition must differ from the read "
                                         "conditions")
            needed.append(reference["condition"])
        cases = d["cases"]
        if not isinstance(cases, list) or len(cases) < 1:
            raise NeuroContrastError("study design: 'cases' must be a non-empty list")
        seen = set()
        for i, case in enumerate(cases):
            if not isinstance(case, dict) or "id" not in case:
                raise NeuroContrastError(f"study design: cases[{i}] must be an object with an 'id'")
            cid = _check_id(case["id"], f"study design: cases[{i}].id")
            if cid in seen:
                raise NeuroContrastError(f"study design: duplicate case id {cid!r}")
            seen.add(cid)
            images = case.get("images")
            if not isinstance(images, dict):
                raise NeuroContrastError(f"study design: case {cid!r} needs an 'images' object")
            companions = _object(case, "companions", {}, f"study design: case {cid!r}")
            for key in companions:
                _check_id(key, f"study design: case {cid!r} companion name")
            for cond in needed:
                if cond not in images:
                    raise NeuroContrastError(f"study design: case {cid!r} has no image for condition {cond!r}")
            for key, rel in images.items():
                self.resolve(rel, f"study design: case {cid!r} image {key!r}")
            for key, rel in companions.items():
                self.resolve(rel, f"study design: case {cid!r} companion {key!r}")
            if case.get("healthy_brain_roi") is not None:
                self.resolve(case["healthy_brain_roi"], f"case {cid!r} healthy_brain_roi")
        likert = _object(d, "likert", {"points": 5, "anchors": {"1": "poor", "5": "excellent"}})
        points = likert.get("points")
        if not _is_int(points) or not 2 <= points <= 10:
            raise NeuroContrastError(f"study design: 'likert.points' must be an integer in 2..10, got {points!r}")
        for key in _object(likert, "anchors", {}, "study design: likert"):
            if not str(key).isdigit() or not 1 <= int(key) <= points:
                raise NeuroContrastError(f"study design: Likert anchor {key!r} is outside 1..{points}")
        exclusion = _object(d, "exclusion", {"max_lesions": 20})
        max_lesions = exclusion.get("max_lesions")
        if max_lesions is not None and (not _is_int(max_lesions) or max_lesions < 1):
            raise NeuroContrastError(f"study design: 'exclusion.max_lesions' must be a positive integer, got "
                                     f"{max_lesions!r}")
        analysis = _object(d, "analysis", {})
        strata = analysis.setdefault("size_strata_mm", list(DEFAULT_STRATA))
        if not isinstance(strata, list) or not strata or any(
                not _is_number(s) or s < 0 for s in strata) or sorted(strata) != strata:
            raise NeuroContrastError(f"study design: 'analysis.size_strata_mm' must be increasing numbers >= 0, "
                                     f"got {strata!r}")
        threshold = analysis.setdefault("threshold", "mean")
        if threshold not in ("mean", "ref", "max", "min", "sum") and not (_is_number(threshold) and threshold > 0):
            raise NeuroContrastError(f"study design: 'analysis.threshold' must be mean/ref/max/min/sum or mm > 0, "
                                     f"got {threshold!r}")
        if analysis.setdefault("assignment", "hungarian") not in ("hungarian", "greedy"):
            raise NeuroContrastError("study design: 'analysis.assignment' must be 'hungarian' or 'greedy'")
        if analysis.setdefault("duplicates", "ignore") not in ("ignore", "fp"):
            raise NeuroContrastError("study design: 'analysis.duplicates' must be 'ignore' or 'fp'")
        idle = d.setdefault("idle_timeout_s", 120)
        if not _is_number(idle) or idle <= 0:
            raise NeuroContrastError(f"study design: 'idle_timeout_s' must be a finite number of seconds > 0, "
                                     f"got {idle!r}")

    # ------------------------------------------------------------------ accessors
    @property
    def name(self) -> str:
        return str(self.data.get("name", self.folder.name))

    @property
    def seed(self) -> int:
        return int(self.data["seed"])

    @property
    def readers(self) -> List[str]:
        return list(self.data["readers"])

    @property
    def conditions(self) -> List[str]:
        return list(self.data["conditions"])

    @property
    def case_ids(self) -> List[str]:
        return [c["id"] for c in self.data["cases"]]

    @property
    def reference(self) -> Optional[Dict]:
        return self.data.get("reference")

    @property
    def washout_days(self) -> float:
        return float(self.data["washout_days"])

    @property
    def likert(self) -> Dict:
        return self.data["likert"]

    @property
    def max_lesions(self) -> Optional[int]:
        return self.data["exclusion"].get("max_lesions")

    @property
    def analysis(self) -> Dict:
        return self.data["analysis"]

    @property
    def idle_timeout_s(self) -> float:
        return float(self.data["idle_timeout_s"])

    def case(self, case_id: str) -> Dict:
        for c in self.data["cases"]:
            if c["id"] == case_id:
                return c
        raise NeuroContrastError(f"unknown case id {case_id!r}")

    def phases(self, reader: Optional[str] = None) -> List[str]:
        """Phase names in order: ``phase1..phaseK`` (K = number of conditions), then ``reference`` for the
        reference reader (or for ``reader=None``) when the design has a reference read."""
        names = [f"phase{i + 1}" for i in range(len(self.conditions))]
        ref = self.reference
        if ref is not None and (reader is None or reader == ref["reader"]):
            names.append(REFERENCE_PHASE)
        return names

    def resolve(self, relative, what: str = "path") -> Path:
        """Absolute path of a design path; it must be relative and stay inside the study folder
        (no absolute paths, no escaping '..', no symlink leading outside). Raises NeuroContrastError."""
        if not isinstance(relative, str) or not relative:
            raise NeuroContrastError(f"{what}: expected a relative path string, got {relative!r}")
        if Path(relative).is_absolute() or relative.startswith(("/", "\\")) or ":" in Path(relative).parts[0]:
            raise NeuroContrastError(f"{what}: {relative!r} must be relative to the study folder")
        path = (self.folder / relative).resolve()
        try:
            path.relative_to(self.folder)
        except ValueError:
            raise NeuroContrastError(f"{what}: {relative!r} points outside the study folder {self.folder}") from None
        return path

    def missing_files(self) -> List[str]:
        """Design paths that do not exist on disk (relative strings)."""
        out = []
        for case in self.data["cases"]:
            entries = list(case["images"].values()) + list(case.get("companions", {}).values())
            if case.get("healthy_brain_roi"):
                entries.append(case["healthy_brain_roi"])
            out += [rel for rel in entries if not self.resolve(rel).exists()]
        return out

    # ------------------------------------------------------------------ allocation
    def allocation(self, reader: str) -> Dict[str, Dict[str, str]]:
        """``{phase: {case: condition}}`` for ``reader`` (crossover or sequential; see module docstring)."""
        if reader not in self.readers:
            raise NeuroContrastError(f"unknown reader {reader!r}; the design lists {self.readers}")
        cases = self.case_ids
        k = len(self.conditions)
        out: Dict[str, Dict[str, str]] = {}
        if self.data["allocation"] == "sequential":
            for p in range(k):
                out[f"phase{p + 1}"] = {c: self.conditions[p] for c in cases}
        else:
            rng = np.random.default_rng([self.seed, _stable_int("allocation", reader)])
            permuted = [cases[i] for i in rng.permutation(len(cases))]
            groups = {case: i % k for i, case in enumerate(permuted)}
            for p in range(k):
                out[f"phase{p + 1}"] = {c: self.conditions[(groups[c] + p) % k] for c in cases}
        ref = self.reference
        if ref is not None and reader == ref["reader"]:
            out[REFERENCE_PHASE] = {c: ref["condition"] for c in cases}
        return out

    def worklist(self, reader: str, phase: Optional[str] = None) -> List[Read]:
        """The reader's reads in reading order (all phases, or one). The order within a phase is a
        permutation seeded by (seed, reader, phase), identical on every call and machine."""
        allocation = self.allocation(reader)
        phases = [phase] if phase is not None else list(allocation)
        reads = []
        for ph in phases:
            if ph not in allocation:
                raise NeuroContrastError(f"reader {reader!r} has no phase {ph!r}; phases: {list(allocation)}")
            cases = self.case_ids
            rng = np.random.default_rng([self.seed, _stable_int("order", reader, ph)])
            order = rng.permutation(len(cases))
            for position, index in enumerate(order):
                case = cases[int(index)]
                reads.append(Read(reader, ph, case, allocation[ph][case], position))
        return reads

    def read(self, read_id: str) -> Read:
        parts = read_id.split("__")
        if len(parts) != 3:
            raise NeuroContrastError(f"read id {read_id!r} is not <reader>__<phase>__<case>")
        for r in self.worklist(parts[0], parts[1]):
            if r.case == parts[2]:
                return r
        raise NeuroContrastError(f"unknown read {read_id!r}")

    def images_for(self, read: Read) -> Dict[str, Path]:
        """``{"main": path, <companion>: path...}`` of a read, resolved inside the study folder."""
        case = self.case(read.case)
        out = {"main": self.resolve(case["images"][read.condition], f"case {read.case!r} image")}
        for key, rel in case.get("companions", {}).items():
            out[key] = self.resolve(rel, f"case {read.case!r} companion {key!r}")
        return out

    def blind_label(self, case_id: str) -> str:
        """Opaque display label of a case (``K`` + 6 hex digits of sha256(seed, case)); no patient hint."""
        return "K" + hashlib.sha256(f"{self.seed}:{case_id}".encode()).hexdigest()[:6].upper()

    def phase_unlock_time(self, reader: str, phase: str, submitted_at: Dict[str, float]) -> Optional[float]:
        """Unix time from which ``phase`` may be read, or None while the previous phase is unfinished.

        ``submitted_at``: read_id → submit time (s since epoch) of the reader's submitted reads. The first
        phase is open at once (returns 0.0); phase p opens ``washout_days`` after the last submit of p − 1.
        """
        phases = self.phases(reader)
        if phase not in phases:
            raise NeuroContrastError(f"reader {reader!r} has no phase {phase!r}; phases: {phases}")
        index = phases.index(phase)
        if index == 0:
            return 0.0
        previous = [r.read_id for r in self.worklist(reader, phases[index - 1])]
        if not all(rid in submitted_at for rid in previous):
            return None
        return max(submitted_at[rid] for rid in previous) + self.washout_days * 86400.0


def crossover_design(case_ids: Sequence[str], readers: Sequence[str], conditions: Sequence[str],
                     images: Dict[str, Dict[str, str]], reference: Optional[Dict] = None, seed: int = 0,
                     **options) -> Dict:
    """A design dict for ``StudyDesign.from_dict``: ``images[case][condition]`` relative paths; options
    override the defaults (washout_days, likert, exclusion, analysis, companions={case: {...}}...)."""
    companions = options.pop("companions", {})
    rois = options.pop("healthy_brain_rois", {})
    cases = []
    for cid in case_ids:
        entry = {"id": cid, "images": dict(images[cid])}
        if cid in companions:
            entry["companions"] = dict(companions[cid])
        if cid in rois:
            entry["healthy_brain_roi"] = rois[cid]
        cases.append(entry)
    data = {"name": options.pop("name", "study"), "seed": seed, "readers": list(readers),
            "conditions": list(conditions), "cases": cases}
    if reference is not None:
        data["reference"] = dict(reference)
    data.update(options)
    return data
