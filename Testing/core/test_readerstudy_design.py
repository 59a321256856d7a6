"""Study design validation, crossover allocation, seeded orders, washout locks, path confinement."""

import json

import pytest

from neurocontrast.errors import NeuroContrastError
from neurocontrast.readerstudy.design import StudyDesign, crossover_design


def make(tmp_path, n_cases=20, **options):
    cases = [f"C{i:02d}" for i in range(n_cases)]
    images = {c: {"low": f"cases/{c}/low.nii.gz", "vir": f"cases/{c}/vir.nii.gz", "ref": f"cases/{c}/ref.nii.gz"}
              for c in cases}
    data = crossover_design(cases, ["R1", "R2"], ["low", "vir"], images,
                            reference={"reader": "R1", "condition": "ref"}, seed=7, **options)
    return StudyDesign.from_dict(data, tmp_path)


def test_crossover_half_per_phase_and_swapped(tmp_path):
    design = make(tmp_path)
    for reader in design.readers:
        alloc = design.allocation(reader)
        p1, p2 = alloc["phase1"], alloc["phase2"]
        assert sorted(p1.values()).count("low") == 10 and sorted(p1.values()).count("vir") == 10
        assert all(p1[c] != p2[c] for c in design.case_ids)          # swapped in the next phase
    assert design.phases("R1") == ["phase1", "phase2", "reference"]
    assert design.phases("R2") == ["phase1", "phase2"]
    assert set(design.allocation("R1")["reference"].values()) == {"ref"}
    # per-reader allocations differ (independent seeded splits)
    assert design.allocation("R1")["phase1"] != design.allocation("R2")["phase1"]


def test_orders_seeded_and_stable_across_restarts(tmp_path):
    design = make(tmp_path)
    design.save()
    again = StudyDesign.load(tmp_path)
    for reader in ("R1", "R2"):
        for phase in ("phase1", "phase2"):
            a = [r.case for r in design.worklist(reader, phase)]
            b = [r.case for r in again.worklist(reader, phase)]
            assert a == b and sorted(a) == sorted(design.case_ids)
    orders = {(r, p): [x.case for x in design.worklist(r, p)] for r in ("R1", "R2") for p in ("phase1", "phase2")}
    assert len({tuple(v) for v in orders.values()}) == 4              # shuffled per reader and phase
    other_seed = StudyDesign.from_dict({**design.data, "seed": 8}, tmp_path)
    assert [x.case for x in other_seed.worklist("R1", "phase1")] != orders[("R1", "phase1")]


def test_sequential_allocation(tmp_path):
    design = make(tmp_path, allocation="sequential")
    alloc = design.allocation("R2")
    assert set(alloc["phase1"].values()) == {"low"} and set(alloc["phase2"].values()) == {"vir"}


def test_washout_lock(tmp_path):
    design = make(tmp_path, n_cases=4, washout_days=14)
    assert design.phase_unlock_time("R2", "phase1", {}) == 0.0
    first = [r.read_id for r in design.worklist("R2", "phase1")]
    assert design.phase_unlock_time("R2", "phase2", {first[0]: 100.0}) is None
    submitted = {rid: 100.0 + i for i, rid in enumerate(first)}
    assert design.phase_unlock_time("R2", "phase2", submitted) == pytest.approx(103.0 + 14 * 86400)


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.nii.gz", "cases/../../x.nii.gz"])
def test_paths_must_stay_inside_the_study_folder(tmp_path, path):
    design = make(tmp_path, n_cases=2)
    data = json.loads(json.dumps(design.data))
    data["cases"][0]["images"]["low"] = path
    with pytest.raises(NeuroContrastError, match="study folder"):
        StudyDesign.from_dict(data, tmp_path)


def test_symlink_escaping_the_folder_is_refused(tmp_path):
    (tmp_path / "study").mkdir()
    (tmp_path / "secret.nii.gz").write_bytes(b"x")
    (tmp_path / "study" / "link.nii.gz").symlink_to(tmp_path / "secret.nii.gz")
    design = make(tmp_path / "study", n_cases=2)
    with pytest.raises(NeuroContrastError, match="outside"):
        design.resolve("link.nii.gz")
    assert design.resolve("cases/C00/low.nii.gz").is_relative_to(design.folder)


@pytest.mark.parametrize("change,message", [
    (lambda d: d.pop("readers"), "missing required key 'readers'"),
    (lambda d: d.update(readers=["R1", "R1"]), "duplicate reader"),
    (lambda d: d.update(allocation="latin"), "allocation"),
    (lambda d: d.update(washout_days=-1), "washout_days"),
    (lambda d: d["cases"][1]["images"].pop("vir"), "no image for condition 'vir'"),
    (lambda d: d.update(reference={"reader": "R9", "condition": "ref"}), "reference reader"),
    (lambda d: d.update(likert={"points": 11}), "likert.points"),
    (lambda d: d.update(likert={"points": 4, "anchors": {"5": "x"}}), "anchor"),
    (lambda d: d.update(seed=-3), "seed"),
    (lambda d: d["cases"][0].update(id="bad id"), "letters"),
    (lambda d: d.update(analysis={"size_strata_mm": [5, 2]}), "size_strata_mm"),
    (lambda d: d.update(analysis={"threshold": "median"}), "threshold"),
])
def test_validation_errors_name_the_field(tmp_path, change, message):
    data = json.loads(json.dumps(make(tmp_path, n_cases=3).data))
    change(data)
    with pytest.raises(NeuroContrastError, match=message):
        StudyDesign.from_dict(data, tmp_path)


def test_load_errors_and_blind_labels(tmp_path):
    with pytest.raises(FileNotFoundError):
        StudyDesign.load(tmp_path)
    (tmp_path / "study.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(NeuroContrastError, match="not valid JSON"):
        StudyDesign.load(tmp_path)
    design = make(tmp_path / "s", n_cases=20)
    labels = {design.blind_label(c) for c in design.case_ids}
    assert len(labels) == 20 and all(l.startswith("K") and len(l) == 7 for l in labels)
    assert not any(c in l for c in design.case_ids for l in labels)
