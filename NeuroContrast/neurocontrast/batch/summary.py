"""The batch summary: key numbers per case, ``summary.csv`` and a sortable ``summary.html`` with thumbnails."""

from __future__ import annotations

import csv
import html
import json
import os
from typing import Dict, List, Optional

from neurocontrast.batch.tasks import batch_path

#: The first columns of summary.csv, before the key numbers of the job's report.
BASE_COLUMNS = ("case_id", "status", "reason", "seconds")


def key_numbers(job, case_dir: str) -> Dict[str, float]:
    """The report's key numbers of one finished case, flat ``{name: float}``.

    perfusion (``report.json``): ``tmax_gt_<k>s_ml`` hypoperfusion volumes (mL), ``mismatch_*`` (mL, ratio)
    when a core mask was given, ``<map>_median`` in the brain (CBF mL/100 g/min, CBV mL/100 g, MTT/Tmax/TTP s)
    and the AIF quality numbers. virtual/amplify (``info.json``): ``network_passes``, ``<step>_s`` timings and
    ``brain_ml`` (volume of the written brain mask, mL). A missing or unreadable report gives ``{}``.
    """
    import numpy as np

    try:
        with open(os.path.join(case_dir, job.report), encoding="utf-8") as fh:
            report = json.load(fh)
    except (OSError, ValueError):
        return {}
    out: Dict[str, float] = {}
    if job.name == "perfusion":
        for k, v in (report.get("volumes_ml") or {}).items():
            out[f"{k}_ml"] = v
        for k, v in (report.get("mismatch") or {}).items():
            if _is_number(v):
                out[f"mismatch_{k}"] = v
        for name, stats in (report.get("map_summary_in_brain") or {}).items():
            if isinstance(stats, dict) and _is_number(stats.get("median")):
                out[f"{name}_median"] = stats["median"]
        for k, v in (report.get("aif_quality") or {}).items():
            if _is_number(v):
                out[f"aif_{k}"] = v
    else:
        if _is_number(report.get("passes")):
            out["network_passes"] = report["passes"]
        for k, v in (report.get("timings_s") or {}).items():
            if _is_number(v):
                out[f"{k}_s"] = v
        mask_path = os.path.join(case_dir, "brain_mask.nii.gz")
        if os.path.isfile(mask_path):
            import SimpleITK as sitk

            stats = sitk.StatisticsImageFilter()
            mask = sitk.ReadImage(mask_path)
            stats.Execute(mask > 0)
            voxel_ml = float(np.prod(mask.GetSpacing())) / 1000.0
            out["brain_ml"] = stats.GetSum() * voxel_ml
    return {k: round(float(v), 6) for k, v in out.items()}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def make_thumbnail(job, out_dir: str, case_id: str, size_px: int = 320) -> Optional[str]:
    """``_batch/thumbs/<case_id>.png``, at most ``size_px`` on its long side (Lanczos), from the case's PNG
    or the middle axial slice of its main image (1st-99th percentile window). Returns the path, or None when
    the case has nothing to draw."""
    import numpy as np
    from PIL import Image

    source = os.path.join(out_dir, case_id, job.thumbnail)
    if not os.path.isfile(source):
        return None
    path = batch_path(out_dir, "thumbs", f"{case_id}.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if source.endswith(".png"):
        image = Image.open(source).convert("RGB")
    else:
        import SimpleITK as sitk

        volume = sitk.GetArrayFromImage(sitk.ReadImage(source))
        plane = volume[volume.shape[0] // 2].astype(np.float32)
        lo, hi = np.percentile(plane, (1, 99))
        plane = np.clip((plane - lo) / max(hi - lo, 1e-12), 0, 1)[::-1]  # row 0 at the top of the picture
        image = Image.fromarray((255 * plane).astype(np.uint8))
    image.thumbnail((size_px, size_px), Image.LANCZOS)
    image.save(path)
    return path


def write_summary(job, out_dir: str, results: List[Dict], thumbnails: bool = True) -> Dict[str, str]:
    """Write ``summary.csv`` (columns :data:`BASE_COLUMNS` then the union of key numbers, in order of first
    appearance; one row per case in manifest order) and ``summary.html`` (the same table, sortable by
    clicking a header, with a thumbnail per case that links to the case folder). Returns both paths."""
    keys: List[str] = []
    for r in results:
        for k in r.get("numbers", {}):
            if k not in keys:
                keys.append(k)
    csv_path = os.path.join(out_dir, "summary.csv")
    tmp = csv_path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(list(BASE_COLUMNS) + keys)
        for r in results:
            writer.writerow([r["case_id"], r["status"], r.get("reason", ""), _fmt(r.get("seconds"))]
                            + [_fmt(r.get("numbers", {}).get(k)) for k in keys])
    os.replace(tmp, csv_path)
    html_path = os.path.join(out_dir, "summary.html")
    thumbs = {}
    if thumbnails:
        for r in results:
            if r["status"] in ("ok", "skipped"):
                try:
                    t = make_thumbnail(job, out_dir, r["case_id"])
                except Exception:  # a thumbnail is decoration: an unreadable image leaves the cell empty
                    t = None
                if t:
                    thumbs[r["case_id"]] = os.path.relpath(t, out_dir)
    with open(html_path, "w", encoding="utf-8") as fh:
        fh.write(_html(job, results, keys, thumbs))
    return {"csv": csv_path, "html": html_path}


def _fmt(v) -> str:
    if v is None:
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


_SORT_JS = """
document.querySelectorAll('th').forEach((th, col) => th.addEventListener('click', () => {
  const body = th.closest('table').tBodies[0];
  const asc = th.dataset.order !== 'asc'; th.dataset.order = asc ? 'asc' : 'desc';
  const key = tr => { const t = tr.cells[col].dataset.v ?? tr.cells[col].textContent; const n = parseFloat(t);
                      return isNaN(n) ? t.toLowerCase() : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    if (typeof x !== typeof y) return (typeof x === 'number' ? -1 : 1);
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }).forEach(tr => body.appendChild(tr));
}));
"""


def _html(job, results: List[Dict], keys: List[str], thumbs: Dict[str, str]) -> str:
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "skipped", "failed")}
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["thumbnail", *BASE_COLUMNS, *keys])
    rows = []
    for r in results:
        cid = html.escape(r["case_id"])
        thumb = (f'<a href="{cid}/"><img src="{html.escape(thumbs[r["case_id"]])}" alt="{cid}"></a>'
                 if r["case_id"] in thumbs else "")
        cells = [f'<td data-v="">{thumb}</td>', f'<td><a href="{cid}/">{cid}</a></td>',
                 f'<td class="{r["status"]}">{r["status"]}</td>', f'<td>{html.escape(r.get("reason") or "")}</td>',
                 f'<td>{_fmt(r.get("seconds"))}</td>']
        cells += [f"<td>{_fmt(r.get('numbers', {}).get(k))}</td>" for k in keys]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>neurocontrast batch {job.name}</title>
<style>body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse;font-size:13px}}
th,td{{border:1px solid #ccc;padding:3px 6px;text-align:right}} th{{cursor:pointer;background:#eee;position:sticky;top:0}}
td:nth-child(2),td:nth-child(3),td:nth-child(4){{text-align:left}} .failed{{color:#b00;font-weight:bold}}
.ok{{color:#070}} .skipped{{color:#555}} img{{max-width:240px}}</style></head><body>
<h1>neurocontrast batch {job.name}</h1>
<p>{len(results)} cases: {counts['ok']} ok, {counts['skipped']} skipped (unchanged), {counts['failed']} failed.
Click a column header to sort. Demonstration weights and research software: not for clinical use.</p>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table><script>{_SORT_JS}</script></body></html>
"""
