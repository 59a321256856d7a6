"""A full synthetic study (2 readers × 2 conditions × 2 phases × 20 cases, known truth) from
`neurocontrast reader init` to `neurocontrast reader analyze`; the report's counts must match the truth."""

import csv

import numpy as np
import pytest

from neurocontrast import cli
from neurocontrast.errors import NeuroContrastError
from neurocontrast.io import Geometry
from neurocontrast.readerstudy import Lesion, storage
from neurocontrast.readerstudy.design import StudyDesign
from neurocontrast.readerstudy.rois import lesion_roi, case_contrast_metrics
from neurocontrast.readerstudy.synthetic import load_truth, simulate_reads


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    storage.FSYNC = False          # hundreds of simulated edits; durability is tested in test_readerstudy_session
    try:
        folder = tmp_path_factory.mktemp("study")
        assert cli.main(["reader", "init", str(folder), "--synthetic", "20", "--seed", "4"]) == 0
        design = StudyDesign.load(folder)
        truth = load_truth(folder)
        simulated = simulate_reads(design, truth, seed=9)
        out = folder / "analysis"
        assert cli.main(["reader", "status", str(folder)]) == 0
        assert cli.main(["reader", "analyze", str(folder), "--out", str(out)]) == 0
        yield {"folder": folder, "design": design, "truth": truth, "simulated": simulated, "out": out}
    finally:
        storage.FSYNC = True


def test_report_counts_match_the_generated_truth(study):
    rows = _rows(study["out"] / "detection.csv")
    expected = study["simulated"]["expected"]
    n_reference = sum(len(v) for v in study["truth"].values())
    checked = 0
    for row in rows:
        if row["reader"] == "average":
            continue
        key = (row["reader"], row["condition"], float(row["min_long_mm"]))
        assert (int(row["tp"]), int(row["fn"]), int(row["fp"])) == (
            expected[key]["tp"], expected[key]["fn"], expected[key]["fp"]), key
        assert int(row["n_cases"]) == 20
        if key[2] == 0:
            assert int(row["tp"]) + int(row["fn"]) == n_reference
        checked += 1
    assert checked == 2 * 2 * 5
    pairs = _rows(study["out"] / "pairs.csv")
    assert sum(r["kind"] == "duplicate" for r in pairs) == study["simulated"]["n_duplicates"]
    reads = _rows(study["out"] / "reads.csv")
    assert len(reads) == 2 * 2 * 20 + 20 and all(r["status"] == "submitted" for r in reads)
    # crossover: every reader read every case once per condition, half the cases per condition per phase
    for reader in ("R1", "R2"):
        for phase in ("phase1", "phase2"):
            conds = [r["condition"] for r in reads if r["reader"] == reader and r["phase"] == phase]
            assert conds.count("low") == 10 and conds.count("vir") == 10


def test_report_files_and_table5_layout(study):
    out = study["out"]
    for name in ("marks.csv", "reads.csv", "pairs.csv", "detection.csv", "comparisons.csv", "grades_times.csv",
                 "grade_time_tests.csv", "agreement.csv", "contrast.csv", "report.md", "report.html",
                 "se_fdr_by_size.png", "times_grades.png"):
        assert (out / name).stat().st_size > 100, name
    md = (out / "report.md").read_text(encoding="utf-8")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("<table>") >= 4 and "se_fdr_by_size.png" in html
    assert "| Stratum | Metric | R1 low | R1 vir | R1 low vs vir |" in md
    det = {(r["reader"], r["condition"], float(r["min_long_mm"])): r for r in _rows(out / "detection.csv")}
    r = det[("R2", "vir", 0.0)]
    n = int(r["tp"]) + int(r["fn"])
    assert f"({r['tp']}/{n})" in md
    comps = _rows(out / "comparisons.csv")
    assert {c["kind"] for c in comps} == {"conditions", "readers"}
    for c in comps:
        assert 0 <= float(c["p_se_mcnemar_midp"]) <= 1 and 0 <= float(c["p_fdr_wilcoxon"]) <= 1
    # vir is detected far better than low in the simulation (0.8 vs 0.45): McNemar must see it
    all_r1 = next(c for c in comps if c["comparison"] == "R1: low vs vir" and float(c["min_long_mm"]) == 0)
    assert float(all_r1["p_se_mcnemar_midp"]) < 0.05
    from matplotlib.image import imread
    assert imread(str(out / "se_fdr_by_size.png")).shape[2] in (3, 4)


def test_contrast_metrics_rank_the_conditions(study):
    rows = _rows(study["out"] / "contrast.csv")
    by = {}
    for r in rows:
        by.setdefault(r["condition"], []).append(r)
    mean = {c: {k: np.mean([float(x[k]) for x in v]) for k in ("cnr", "lbr", "cep")} for c, v in by.items()}
    # synthetic intensities: brain 100 ± 4; lesions low 115, vir 150, ref 170; pre 100
    assert mean["low"]["lbr"] == pytest.approx(1.15, abs=0.03)
    assert mean["ref"]["lbr"] == pytest.approx(1.70, abs=0.03)
    assert mean["vir"]["cep"] == pytest.approx(50.0, abs=4)
    assert mean["low"]["cnr"] < mean["vir"]["cnr"] < mean["ref"]["cnr"]
    assert mean["vir"]["cnr"] == pytest.approx(50 / 4, rel=0.25)


def test_lesion_roi_rhombus_area_and_errors():
    g = Geometry.from_arrays((3, 60, 60), (0.5, 0.5, 2.0), (-15.0, -15.0, -2.0))
    l = Lesion(long_axis=((-8, 0, 0), (8, 0, 0)), short_axis=((0, -4, 0), (0, 4, 0)))
    rhombus = lesion_roi(l, g)
    rectangle = lesion_roi(l, g, "rectangle")
    assert rhombus.sum() * 0.25 == pytest.approx(16 * 8 / 2, rel=0.1)     # area in mm², one slice thick
    assert rectangle.sum() * 0.25 == pytest.approx(16 * 8, rel=0.1)
    assert rhombus[1].sum() == rhombus.sum()                               # only the lesion's slice
    with pytest.raises(NeuroContrastError):
        lesion_roi(l, g, "ellipse")
    far = Lesion(long_axis=((100, 0, 0), (110, 0, 0)), short_axis=((105, -2, 0), (105, 2, 0)))
    with pytest.raises(NeuroContrastError, match="no voxel"):
        case_contrast_metrics(np.ones(g.shape), g, [far])


def test_init_from_case_folders_and_errors(tmp_path, capsys):
    from neurocontrast.io import write_volume
    g = Geometry.from_arrays((2, 8, 8))
    for case in ("P1", "P2"):
        for name in ("low", "vir", "ref", "pre"):
            (tmp_path / "cases" / case).mkdir(parents=True, exist_ok=True)
            write_volume(np.zeros((2, 8, 8), np.float32), g, str(tmp_path / "cases" / case / f"{name}.nii.gz"))
    assert cli.main(["reader", "init", str(tmp_path), "--washout-days", "10", "--likert-points", "4"]) == 0
    design = StudyDesign.load(tmp_path)
    assert design.case("P1")["companions"] == {"pre": "cases/P1/pre.nii.gz"}
    assert design.washout_days == 10 and design.likert["points"] == 4
    assert cli.main(["reader", "init", str(tmp_path)]) == 2                # refuses to overwrite
    assert "--force" in capsys.readouterr().err
    assert cli.main(["reader", "analyze", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2


def test_pre_contrast_on_another_grid_is_resampled_in_physical_space(tmp_path):
    from neurocontrast.io import write_volume
    from neurocontrast.readerstudy.report import _on_grid
    fine = Geometry.from_arrays((4, 20, 20), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    coarse = Geometry.from_arrays((2, 10, 10), (2.0, 2.0, 4.0), (0.5, 0.5, 1.0))   # same physical extent
    z, y, x = np.meshgrid(np.arange(2), np.arange(10), np.arange(10), indexing="ij")
    values = (3.0 * (0.5 + 2.0 * x) + 7.0).astype(np.float32)        # linear in the physical x (mm, LPS)
    write_volume(values, coarse, str(tmp_path / "pre.nii.gz"))
    on_fine = _on_grid(tmp_path / "pre.nii.gz", fine, nearest=False)
    assert on_fine.shape == fine.shape
    xs = np.arange(20.0)                                              # physical x of the fine voxel centres
    inner = (xs >= 0.5) & (xs <= 18.5)
    np.testing.assert_allclose(on_fine[1, 5, inner], 3.0 * xs[inner] + 7.0, rtol=1e-5)
    same = _on_grid(tmp_path / "pre.nii.gz", coarse, nearest=True)
    np.testing.assert_array_equal(same, values)


def test_analyze_runs_mrmc_on_the_stored_reads(study):
    """Per-mark FROC data (LL from the pairing, rating = stored confidence) and per-case ratings go through
    the MRMC analysis; the report gets its table and plot. The synthetic readers rate true lesions higher in
    vir (mean 0.75) than in low (0.60) and detect more in vir, so vir must have the higher wAFROC."""
    import json

    from neurocontrast.readerstudy import mrmc
    from neurocontrast.readerstudy.report import StudyData, mrmc_data, pair_reads

    out = study["out"]
    d = json.loads((out / "mrmc_wafroc" / "results.json").read_text(encoding="utf-8"))
    assert d["paradigm"] == "FROC" and set(d["modalities"]) == {"low", "vir"}
    assert d["modalities"]["vir"] > d["modalities"]["low"]
    assert all(d["readers"]["vir"][r] > d["readers"]["low"][r] for r in ("R1", "R2"))
    truth = study["truth"]
    abnormal = sum(1 for c in truth if truth[c])
    assert d["design"]["n_abnormal"] == abnormal and d["design"]["n_normal"] == len(truth) - abnormal
    assert d["design"]["n_lesions"] == sum(len(v) for v in truth.values())
    roc = json.loads((out / "mrmc_auc" / "results.json").read_text(encoding="utf-8"))
    assert roc["paradigm"] == "ROC" and (out / "mrmc_auc" / "imrmc.txt").exists()
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## MRMC: wAFROC by condition" in report and "mrmc_wafroc/reader_foms.png" in report
    assert (out / "mrmc_wafroc" / "reader_foms.png").stat().st_size > 5000
    # the LL ratings are the confidences of the paired marks: recompute one reader's wAFROC by hand
    data = StudyData(study["design"])
    froc, _, notes = mrmc_data(data, pair_reads(data))
    theta, _ = mrmc.fom_jackknife(froc, "wafroc")
    assert theta[1, 0] == pytest.approx(d["readers"]["vir"]["R1"], abs=1e-12)
    marks = _rows(out / "marks.csv")
    assert all(m["confidence"] for m in marks if m["condition"] in ("low", "vir"))


def test_fdr_interval_in_the_report_never_goes_below_zero(study):
    rows = _rows(study["out"] / "detection.csv")
    assert rows and all(float(r["fdr_low"]) >= 0 for r in rows)
    assert all(float(r["fdr_low"]) <= float(r["fdr"]) <= float(r["fdr_high"]) for r in rows)
    # where the papers' Student-t interval would dip below 0, the exact interval stays at or above 0
    assert any(float(r["fdr"]) - float(r["fdr_half_width"] or 0) < 0 for r in rows if r["fdr_half_width"])


def test_mrmc_is_skipped_with_a_reason_when_a_mark_has_no_confidence(study):
    from dataclasses import replace

    from neurocontrast.readerstudy.report import StudyData, mrmc_data, pair_reads

    data = StudyData(study["design"])
    pairings = pair_reads(data)
    key = next(k for k, p in pairings.items() if p["detections"])
    pairings[key]["detections"][0] = replace(pairings[key]["detections"][0], confidence=None)
    froc, roc, notes = mrmc_data(data, pairings)
    assert froc is None and roc is None and any("no confidence" in n for n in notes)
