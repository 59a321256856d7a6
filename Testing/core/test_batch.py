"""``neurocontrast batch``: manifests, a 2-worker LocalCluster on phantom cases (one broken), resume after a kill."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("distributed", reason="neurocontrast batch needs dask[distributed] (in the test extra)")

from neurocontrast.batch.manifest import JOBS, read_manifest  # noqa: E402
from neurocontrast.batch.tasks import is_complete, read_state  # noqa: E402
from neurocontrast.cli import build_parser, main  # noqa: E402
from neurocontrast.errors import NeuroContrastError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HEADER = "case_id,dsc,aif_mask,vof_mask,brain_mask,te_s,tr_s\n"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Four small phantom cases (different seeds); c4's DSC file is not an image."""
    from neurocontrast.perfusion.phantom import generate_phantom, write_phantom

    root = tmp_path_factory.mktemp("cohort")
    for i in (1, 2, 3):
        write_phantom(generate_phantom((3, 32, 32), 36, 1.5, 0.03, 40.0, i), str(root / f"c{i}"))
    (root / "c4").mkdir()
    (root / "c4" / "dsc.nii.gz").write_text("not an image")
    for name in ("aif_mask", "vof_mask"):
        (root / "c4" / f"{name}.nii.gz").write_bytes((root / "c1" / f"{name}.nii.gz").read_bytes())
    rows = [f"c{i},c{i}/dsc.nii.gz,c{i}/aif_mask.nii.gz,c{i}/vof_mask.nii.gz,c{i}/brain_mask.nii.gz,,\n"
            for i in (1, 2, 3)]
    rows.append("c4,c4/dsc.nii.gz,c4/aif_mask.nii.gz,c4/vof_mask.nii.gz,,,\n")
    (root / "manifest.csv").write_text(HEADER + "".join(rows))
    return root


def _summary(out: Path):
    with open(out / "summary.csv", newline="") as fh:
        return {r["case_id"]: r for r in csv.DictReader(fh)}


def test_manifest_rows_become_single_case_command_lines(tmp_path):
    (tmp_path / "a").mkdir()
    for f in ("dsc.nii.gz", "vof.nii.gz"):
        (tmp_path / "a" / f).write_text("x")
    (tmp_path / "m.csv").write_text(HEADER + "s1,a/dsc.nii.gz,,a/vof.nii.gz,,0.03,1.5\n"
                                             "s2,a/missing.nii.gz,,a/vof.nii.gz,,-1,\n")
    s1, s2 = read_manifest(str(tmp_path / "m.csv"), JOBS["perfusion"], ["--method", "ssvd"])
    dsc = str(tmp_path / "a" / "dsc.nii.gz")
    assert s1.problem is None
    assert s1.argv == ["perfusion", dsc, "--aif", "auto", "--vof-mask", str(tmp_path / "a" / "vof.nii.gz"),
                       "--te", "0.03", "--tr", "1.5", "--no-progress", "--method", "ssvd"]
    assert s1.inputs == {"dsc": dsc, "vof_mask": str(tmp_path / "a" / "vof.nii.gz")}
    assert "dsc not found" in s2.problem and "te_s must be a number > 0" in s2.problem
    build_parser().parse_args(s1.argv + ["--out", str(tmp_path / "o")])  # the single-case parser accepts it


@pytest.mark.parametrize("text, message", [
    ("dsc,vof_mask\nx,y\n", "no case_id column"),
    (HEADER.strip() + ",method\ns1,a,,,,,,osvd\n", "unknown column(s) method"),
    ("case_id,vof_mask\ns1,a\n", "required column(s) dsc"),
    (HEADER + "s1,a,,,,,\ns1,b,,,,,\n", "repeats line 2"),
    (HEADER + "../evil,a,,,,,\n", "not a safe folder name"),
    (HEADER, "has no cases"),
])
def test_bad_manifest_is_refused_with_a_reason(tmp_path, text, message):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(NeuroContrastError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_manifest(str(tmp_path / "m.csv"), JOBS["perfusion"], [])


def test_shared_options_are_the_single_case_commands(capsys):
    args = build_parser().parse_args(["batch", "perfusion", "m.csv", "--out", "o", "--method", "csvd",
                                      "--smoothing-fwhm", "0"])
    from neurocontrast.batch.commands import shared_argv

    assert shared_argv(args, args.batch_shared) == ["--method", "csvd", "--smoothing-fwhm", "0.0"]
    with pytest.raises(SystemExit):  # a per-case input is a manifest column, not a shared option
        build_parser().parse_args(["batch", "perfusion", "m.csv", "--out", "o", "--vof-mask", "v.nii.gz"])
    assert "--vof-mask" in capsys.readouterr().err


def test_two_worker_cluster_isolates_the_broken_case(cohort, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["batch", "perfusion", str(cohort / "manifest.csv"), "--out", str(out), "--workers", "2",
                 "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 1 and "LocalCluster of 2 worker(s)" in printed
    rows = _summary(out)
    assert [rows[c]["status"] for c in ("c1", "c2", "c3", "c4")] == ["ok", "ok", "ok", "failed"]
    assert "cannot read image" in rows["c4"]["reason"] and "\n" not in rows["c4"]["reason"]
    assert float(rows["c3"]["tmax_gt_6s_ml"]) > 0 and float(rows["c1"]["cbf_median"]) > 0
    assert not (out / "c4").exists() and not (out / "_batch" / "tmp").exists()
    html = (out / "summary.html").read_text(encoding="utf-8")
    assert html.count("<tr>") == 5 and "_batch/thumbs/c1.png" in html and "addEventListener('click'" in html
    # DIR/<case_id>/ holds exactly what the single-case command writes
    single = tmp_path / "single"
    assert main(["perfusion", str(cohort / "c2" / "dsc.nii.gz"), "--aif-mask", str(cohort / "c2" / "aif_mask.nii.gz"),
                 "--vof-mask", str(cohort / "c2" / "vof_mask.nii.gz"), "--brain-mask",
                 str(cohort / "c2" / "brain_mask.nii.gz"), "--no-progress", "--out", str(single)]) == 0
    assert sorted(os.listdir(out / "c2")) == sorted(os.listdir(single))
    for name in ("cbf", "tmax", "hypoperfusion"):
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "c2" / f"{name}.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(single / f"{name}.nii.gz")))
        assert np.array_equal(a, b), name


def test_resume_after_a_killed_batch_loses_no_completed_case(cohort, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "neurocontrast", "batch", "perfusion", str(cohort / "manifest.csv"), "--out",
           str(out), "--workers", "1", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "NeuroContrast") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (out / "_batch" / "state" / "c1.json").exists():
            assert proc.poll() is None, "the batch ended before it could be killed"
            assert time.time() < deadline, "no case finished within 120 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the batch, its scheduler and its worker processes
        proc.wait()
    done = {c for c in ("c1", "c2", "c3") if is_complete(str(out), c, read_state(str(out), c))}
    assert "c1" in done and done != {"c1", "c2", "c3"}, "the kill came after the last case"
    for case in ("c1", "c2", "c3"):  # a case folder exists only when complete
        assert (out / case).exists() == (case in done)
    code = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=180)
    assert code.returncode == 1, code.stderr
    rows = _summary(out)
    assert {c for c, r in rows.items() if r["status"] == "skipped"} == done
    assert {c for c, r in rows.items() if r["status"] == "ok"} == {"c1", "c2", "c3"} - done
    assert rows["c4"]["status"] == "failed"
    assert not (out / "_batch" / "tmp").exists()


def test_a_killed_worker_is_replaced_and_its_case_retried(cohort, tmp_path):
    psutil = pytest.importorskip("psutil")
    manifest = tmp_path / "m.csv"
    manifest.write_text("".join((cohort / "manifest.csv").read_text(encoding="utf-8").splitlines(keepends=True)[:3])
                        .replace(",c1/", f",{cohort}/c1/").replace(",c2/", f",{cohort}/c2/"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "neurocontrast", "batch", "perfusion", str(manifest), "--out", str(out),
           "--workers", "1", "--retries", "1", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO / "NeuroContrast") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline, killed = time.time() + 120, None
        while killed is None:
            assert proc.poll() is None and time.time() < deadline, "no case started"
            running = [p.name.split(".")[0] for p in (out / "_batch" / "tmp").glob("c*")] \
                if (out / "_batch" / "tmp").is_dir() else []
            if running and not (out / "_batch" / "state" / f"{running[0]}.json").exists():
                workers = [c for c in psutil.Process(proc.pid).children()
                           if any("spawn_main" in part for part in c.cmdline())]
                if workers:
                    workers[0].kill()  # the worker process running the case, mid-case
                    killed = running[0]
            time.sleep(0.05)
        printed, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, printed
    rows = _summary(out)
    assert {c: r["status"] for c, r in rows.items()} == {"c1": "ok", "c2": "ok"}
    assert is_complete(str(out), killed, read_state(str(out), killed))
    assert not (out / "_batch" / "tmp").exists()  # the killed attempt's folder is gone


def test_an_existing_scheduler_runs_the_batch(cohort, tmp_path, capsys):
    from dask.distributed import LocalCluster

    manifest = tmp_path / "m.csv"
    manifest.write_text(HEADER + f"c1,{cohort}/c1/dsc.nii.gz,{cohort}/c1/aif_mask.nii.gz,{cohort}/c1/vof_mask.nii.gz,,,\n")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1",
                      dashboard_address=None, scheduler_kwargs={"dashboard": False}) as cluster:
        code = main(["batch", "perfusion", str(manifest), "--out", str(tmp_path / "out"), "--scheduler",
                     cluster.scheduler_address, "--no-progress", "--method", "ssvd"])
    assert code == 0 and f"scheduler {cluster.scheduler_address} (1 workers now)" in capsys.readouterr().out
    assert _summary(tmp_path / "out")["c1"]["status"] == "ok"
    assert read_state(str(tmp_path / "out"), "c1")["argv"][-2:] == ["--method", "ssvd"]


def test_worker_count_follows_cores_and_memory_and_options_are_checked():
    import psutil

    from neurocontrast.batch.runner import BatchOptions, default_workers

    cores = len(os.sched_getaffinity(0))
    assert default_workers(1 << 20, 100) == cores and default_workers(1 << 20, 1) == 1
    assert default_workers(psutil.virtual_memory().total, 100) == 1  # one case needs the whole machine
    assert BatchOptions(memory_per_case="1.5GiB").memory_bytes == 3 << 29
    for bad, message in (({"workers": 0}, "--workers"), ({"retries": -1}, "--retries"),
                         ({"memory_per_case": "lots"}, "--memory-per-case")):
        with pytest.raises(NeuroContrastError, match=message):
            BatchOptions(**bad)
