"""Cohort manifests: one CSV row per case, mapped onto the argv of the matching single-case command.

A manifest is a CSV file with a ``case_id`` column and one column per per-case input of the job (the
:data:`JOBS` table). Paths are relative to the manifest's folder (absolute paths are kept); an empty cell
means the single-case command's default (for perfusion an empty ``aif_mask`` means ``--aif auto``). Shared
options (method, models, ...) come from the ``neurocontrast batch`` command line, not from the manifest.

Example (perfusion)::

    case_id,dsc,aif_mask,vof_mask,brain_mask,te_s,tr_s
    sub-01,sub-01/dsc.nii.gz,sub-01/aif.nii.gz,sub-01/vof.nii.gz,,0.03,1.5
    sub-02,sub-02/dicom,,sub-02/vof.nii.gz,sub-02/brain.nii.gz,,
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from typing import Dict, List, Optional, Tuple

from neurocontrast.errors import NeuroContrastError


@dataclasses.dataclass(frozen=True)
class Column:
    """One manifest column: ``flag`` is the single-case option it fills (``None``: the positional argument),
    ``kind`` is ``"path"`` (resolved against the manifest folder, must exist, hashed for ``--resume``) or
    ``"float"`` (a number > 0). ``empty`` is the argv used when the cell is empty (default: nothing)."""

    name: str
    flag: Optional[str]
    kind: str = "path"
    required: bool = False
    empty: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Job:
    """A batch job: the single-case command (``command`` argv prefix), its manifest columns, the options the
    batch owns (never taken from the shared options), the report file holding its key numbers and the
    image drawn as the thumbnail (``thumbnail``: a PNG written by the command, or a 3D image whose middle
    axial slice is drawn)."""

    name: str
    command: Tuple[str, ...]
    columns: Tuple[Column, ...]
    owned: Tuple[str, ...]
    fixed: Tuple[str, ...]
    report: str
    thumbnail: str
    memory_per_case: str
    help: str


_CONTRAST_OWNED = ("out", "progress_lines", "brain_mask")

#: The batch jobs: ``neurocontrast batch <name>`` runs ``neurocontrast <command> ... --out <case dir>``.
JOBS: Dict[str, Job] = {
    "perfusion": Job(
        "perfusion", ("perfusion",),
        (Column("dsc", None, required=True), Column("aif_mask", "--aif-mask", empty=("--aif", "auto")),
         Column("vof_mask", "--vof-mask"), Column("brain_mask", "--brain-mask"), Column("core_mask", "--core-mask"),
         Column("te_s", "--te", "float"), Column("tr_s", "--tr", "float")),
        owned=("dsc", "aif_mask", "aif", "vof_mask", "brain_mask", "core_mask", "te", "tr", "out", "no_progress"),
        fixed=("--no-progress",), report="report.json", thumbnail="overview.png", memory_per_case="2GiB",
        help="DSC perfusion maps for every case (neurocontrast perfusion)"),
    "virtual": Job(
        "virtual", ("contrast", "virtual"),
        (Column("t1", "--t1", required=True), Column("flair", "--flair"), Column("t2", "--t2"),
         Column("adc", "--adc"), Column("t1c_low", "--t1c-low", required=True), Column("brain_mask", "--brain-mask")),
        owned=("t1", "flair", "t2", "adc", "t1c_low") + _CONTRAST_OWNED, fixed=(),
        report="info.json", thumbnail="virtual.nii.gz", memory_per_case="6GiB",
        help="virtual full-dose T1c for every case (neurocontrast contrast virtual)"),
    "amplify": Job(
        "amplify", ("contrast", "amplify"),
        (Column("t1", "--t1", required=True), Column("flair", "--flair"), Column("adc", "--adc"),
         Column("t1c", "--t1c", required=True), Column("brain_mask", "--brain-mask")),
        owned=("t1", "flair", "adc", "t1c") + _CONTRAST_OWNED, fixed=(),
        report="info.json", thumbnail="amplified.nii.gz", memory_per_case="6GiB",
        help="amplified T1c (T1c-pro) for every case (neurocontrast contrast amplify)"),
}

#: Case identifiers become folder names: a letter or digit first, then letters, digits, ``.``, ``_``, ``-``.
CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclasses.dataclass
class Case:
    """One manifest row: ``inputs`` maps column → resolved path (only non-empty path cells), ``argv`` is the
    single-case command line without ``--out``, ``problem`` a one-line reason when the row cannot run
    (missing file, bad number): such a case is reported as failed without being sent to a worker."""

    case_id: str
    row: int
    inputs: Dict[str, str]
    argv: List[str]
    problem: Optional[str] = None


def read_manifest(path: str, job: Job, shared_argv: List[str]) -> List[Case]:
    """Read a manifest CSV for ``job``; ``shared_argv`` is appended to every case's argv.

    Returns the cases in row order. Raises NeuroContrastError when the file is not a manifest of this job:
    no ``case_id`` column, an unknown column, a missing required column, an empty, duplicate or unsafe
    ``case_id`` (it becomes a folder name), or no rows. Problems of one case (a missing input file, a
    number that is not > 0, an empty required cell) do not raise: they are kept in :attr:`Case.problem`.
    """
    if not os.path.isfile(path):
        raise NeuroContrastError(f"manifest not found: {path}")
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in reader]
    known = {c.name for c in job.columns}
    if "case_id" not in fields:
        raise NeuroContrastError(f"manifest {path} has no case_id column (columns: {', '.join(fields) or 'none'})")
    unknown = [f for f in fields if f not in known and f != "case_id"]
    if unknown:
        raise NeuroContrastError(f"manifest {path}: unknown column(s) {', '.join(unknown)} for batch {job.name} "
                                 f"(expected case_id, {', '.join(c.name for c in job.columns)})")
    missing = [c.name for c in job.columns if c.required and c.name not in fields]
    if missing:
        raise NeuroContrastError(f"manifest {path}: required column(s) {', '.join(missing)} missing for batch {job.name}")
    rows = [r for r in rows if any(r.values())]
    if not rows:
        raise NeuroContrastError(f"manifest {path} has no cases")
    cases: List[Case] = []
    seen: Dict[str, int] = {}
    for i, r in enumerate(rows, start=2):
        cid = r.get("case_id", "")
        if not CASE_ID.match(cid):
            raise NeuroContrastError(f"manifest {path} line {i}: case_id {cid!r} is empty or not a safe folder name "
                                     "(letters, digits, '.', '_', '-'; a letter or digit first)")
        if cid in seen:
            raise NeuroContrastError(f"manifest {path} line {i}: case_id {cid!r} repeats line {seen[cid]}")
        seen[cid] = i
        cases.append(_case(cid, i, r, job, base, shared_argv))
    return cases


def _case(cid: str, line: int, row: Dict[str, str], job: Job, base: str, shared_argv: List[str]) -> Case:
    argv: List[str] = list(job.command)
    inputs: Dict[str, str] = {}
    problems: List[str] = []
    for col in job.columns:
        value = row.get(col.name, "")
        if not value:
            if col.required:
                problems.append(f"{col.name} is empty")
            argv += list(col.empty)
            continue
        if col.kind == "path":
            value = os.path.normpath(os.path.join(base, value))
            if not os.path.exists(value):
                problems.append(f"{col.name} not found: {value}")
            inputs[col.name] = value
        elif col.kind == "float":
            try:
                number = float(value)
            except ValueError:
                number = float("nan")
            if not number > 0:
                problems.append(f"{col.name} must be a number > 0, got {value!r}")
            value = repr(number) if number > 0 else value
        argv += [value] if col.flag is None else [col.flag, value]
    argv += list(job.fixed) + list(shared_argv)
    return Case(cid, line, inputs, argv, "; ".join(problems) or None)
