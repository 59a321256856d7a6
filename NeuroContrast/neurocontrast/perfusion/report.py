"""The one-page PNG overview of a perfusion result (matplotlib, Agg backend, no display needed).

Layout: one row per shown slice (up to 3, the slices with the largest Tmax > 6 s area first, else the
largest brain area): baseline S0 with the AIF (red) and VOF (blue) voxels, then CBF, CBV, MTT, Tmax
(fixed 0–10 s window) and TTP, each column with one colour bar; the Tmax > 6 s hypoperfusion outline is
drawn in white on the CBF and Tmax maps. Bottom: AIF (raw and VOF-rescaled) and VOF ΔR2* curves with
their quality figures (for an AIF-free method such as the Tmax net, the histogram of its Tmax in the brain
instead), and the hypoperfusion volumes (Tmax > 4/6/8/10 s) and mismatch in a table.
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from neurocontrast.perfusion.maps import MAP_UNITS

#: Display settings per map: (title, unit (from :data:`~neurocontrast.perfusion.maps.MAP_UNITS`), colormap,
#: fixed window or None for 0 to the 98th percentile).
MAP_STYLE: Dict[str, Tuple[str, str, str, Optional[Tuple[float, float]]]] = {
    name: (title, MAP_UNITS[name], cmap, window) for name, title, cmap, window in (
        ("cbf", "CBF", "turbo", None), ("cbv", "CBV", "turbo", None), ("mtt", "MTT", "turbo", None),
        ("tmax", "Tmax", "turbo", (0.0, 10.0)), ("ttp", "TTP", "turbo", None),
        ("tmax_uncertainty", "Tmax uncertainty", "magma", None))
}


def _select_slices(brain: np.ndarray, hyp: Optional[np.ndarray], n: int = 3) -> List[int]:
    """Up to ``n`` slice indices: the most hypoperfused first, then the largest brain slices, in z order."""
    nz = brain.shape[0]
    if nz <= n:
        return list(range(nz))
    score = brain.reshape(nz, -1).sum(1).astype(float)
    order: List[int] = []
    if hyp is not None and hyp.any():
        order.append(int(np.argmax(hyp.reshape(nz, -1).sum(1))))
    # spread the others over the brain-containing slices
    occupied = np.flatnonzero(score > 0.3 * score.max())
    candidates = np.linspace(occupied[0], occupied[-1], n + 2)[1:-1].round().astype(int) if occupied.size else []
    for c in candidates:
        if len(order) >= n:
            break
        if all(abs(int(c) - o) > 0 for o in order):
            order.append(int(c))
    return sorted(order[:n])


def _window(values: np.ndarray, fixed: Optional[Tuple[float, float]]) -> Tuple[float, float]:
    if fixed is not None:
        return fixed
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 1.0
    hi = float(np.percentile(v, 98))  # robust: large vessels would otherwise set the window
    return 0.0, hi if hi > 0 else 1.0


def overview_figure(result, path: str, title: Optional[str] = None, max_slices: int = 3) -> str:
    """Draw the overview of a :class:`~neurocontrast.perfusion.pipeline.PerfusionResult` to ``path`` (PNG).

    Returns the path. Uses the Agg backend (works headless). Maps are shown inside the brain mask only.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib import gridspec

    maps = result.maps
    names = [n for n in MAP_STYLE if n in maps]
    brain = np.asarray(result.brain_mask, dtype=bool)
    hyp = result.hypoperfusion_mask
    slices = _select_slices(brain, hyp, max_slices)
    rows, cols = len(slices), 1 + len(names)
    geo = result.geometry
    sx, sy = geo.spacing[0], geo.spacing[1]
    ny, nx = brain.shape[1:]
    # crop to the brain's bounding box (+ margin) so the maps fill their panels
    ys, xs = np.nonzero(brain.any(axis=0))
    m = 3
    y0, y1 = max(0, ys.min() - m), min(ny, ys.max() + m + 1)
    x0, x1 = max(0, xs.min() - m), min(nx, xs.max() + m + 1)
    if result.vof_mask is not None and result.vof_mask.any():
        vy, vx = np.nonzero(result.vof_mask.any(axis=0))
        y0, y1 = min(y0, max(0, vy.min() - m)), max(y1, min(ny, vy.max() + m + 1))
        x0, x1 = min(x0, max(0, vx.min() - m)), max(x1, min(nx, vx.max() + m + 1))
    aspect = ((y1 - y0) * sy) / ((x1 - x0) * sx)
    panel_w = 2.35
    fig_w = panel_w * cols + 0.6
    maps_h = rows * panel_w * aspect + 0.06 * (rows - 1)
    heights = [maps_h, 0.13, 0.75, 3.2]  # maps, colour bars, room for their labels, curves and table
    fig_h = sum(heights) + 0.85 + 0.45
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=110, facecolor="white")
    outer = gridspec.GridSpec(4, 1, height_ratios=heights, hspace=0.0,
                              left=0.05, right=0.985, top=1 - 0.85 / fig_h, bottom=0.45 / fig_h)
    grid = gridspec.GridSpecFromSubplotSpec(rows, cols, subplot_spec=outer[0], hspace=0.06, wspace=0.05)
    cbar_grid = gridspec.GridSpecFromSubplotSpec(1, cols, subplot_spec=outer[1], wspace=0.05)
    rep = result.report
    head = title or "NeuroContrast perfusion"
    method = rep.get("method", "?")
    sub = f"method {method}   TR {rep.get('input', {}).get('tr_s', 0):g} s"
    te = rep.get("input", {}).get("te_s")
    if te:
        sub += f"   TE {te * 1000:g} ms"
    factor = rep.get("parameters", {}).get("vof_rescaling_factor")
    if factor:
        sub += f"   AIF×{factor:.2f} (VOF rescaling)"
    smoothing = rep.get("parameters", {}).get("smoothing_fwhm_mm")
    if smoothing:
        sub += f"   in-plane smoothing FWHM {smoothing:g} mm"
    fig.suptitle(head, x=0.05, ha="left", y=1 - 0.18 / fig_h, fontsize=14, fontweight="bold")
    fig.text(0.05, 1 - 0.5 / fig_h, sub, ha="left", fontsize=9.5, color="#444444")

    s0 = result.baseline_signal
    legend_done = False
    for r, z in enumerate(slices):
        crop = (slice(y0, y1), slice(x0, x1))
        bmask = brain[z][crop]
        ax = fig.add_subplot(grid[r, 0])
        if s0 is not None:
            img = s0[z][crop]
            vmax = np.percentile(s0[brain], 99) if brain.any() else img.max()
            ax.imshow(img, cmap="gray", vmin=0, vmax=vmax, interpolation="nearest",
                      extent=(0, (x1 - x0) * sx, (y1 - y0) * sy, 0))
        else:
            ax.imshow(bmask, cmap="gray", extent=(0, (x1 - x0) * sx, (y1 - y0) * sy, 0))
        for mask, colour, label in ((result.aif_mask, "#ff3030", "AIF"), (result.vof_mask, "#30a0ff", "VOF")):
            if mask is not None and mask[z][crop].any():
                yy, xx = np.nonzero(mask[z][crop])
                ax.scatter((xx + 0.5) * sx, (yy + 0.5) * sy, s=14, marker="s", facecolors="none",
                           edgecolors=colour, linewidths=1.1, label=label)
        ax.set_ylabel(f"slice {z}", fontsize=9)
        if ax.collections and not legend_done:
            ax.legend(loc="lower left", fontsize=7, framealpha=0.6, handletextpad=0.2, borderpad=0.3)
            legend_done = True
        if r == 0:
            ax.set_title("baseline S0, AIF / VOF", fontsize=10)
            if np.allclose(np.asarray(geo.direction).reshape(3, 3), np.eye(3), atol=0.2):
                for xpos, letter, ha in ((0.02, "R", "left"), (0.98, "L", "right")):
                    ax.text(xpos, 0.97, letter, transform=ax.transAxes, color="#ffd700", fontsize=9,
                            fontweight="bold", va="top", ha=ha)
        _clean(ax)
        for c, name in enumerate(names, start=1):
            label, unit, cmap, fixed = MAP_STYLE[name]
            arr = maps[name]
            lo, hi = _window(arr[brain], fixed)
            ax = fig.add_subplot(grid[r, c])
            shown = np.ma.masked_where(~bmask, arr[z][crop])
            cm = plt.get_cmap(cmap).with_extremes(bad="black")
            im = ax.imshow(shown, cmap=cm, vmin=lo, vmax=hi, interpolation="nearest",
                           extent=(0, (x1 - x0) * sx, (y1 - y0) * sy, 0))
            ax.set_facecolor("black")
            if hyp is not None and name in ("cbf", "tmax") and hyp[z].any():
                ax.contour(np.arange(x1 - x0) * sx + sx / 2, np.arange(y1 - y0) * sy + sy / 2,
                           hyp[z][crop].astype(float), levels=[0.5], colors="white", linewidths=1.0)
            if r == 0:
                ax.set_title(label, fontsize=10)
            _clean(ax)
            if r == rows - 1:
                cax = fig.add_subplot(cbar_grid[0, c])
                cb = fig.colorbar(im, cax=cax, orientation="horizontal")
                cb.ax.tick_params(labelsize=7.5)
                cb.set_label(unit, fontsize=8)
    fig.text(0.985, 1 - 0.5 / fig_h, "white outline: Tmax > 6 s", ha="right", fontsize=9, color="#444444")

    bottom = gridspec.GridSpecFromSubplotSpec(1, 2, subplot_spec=outer[3], width_ratios=[1.5, 1.0], wspace=0.12)
    ax = fig.add_subplot(bottom[0, 0])
    if result.aif is not None or result.vof is not None:
        _curve_panel(ax, result, rep, factor)
    else:  # an AIF-free method: the distribution of its Tmax instead of an empty curve panel
        _tmax_histogram_panel(ax, result, brain)

    ax = fig.add_subplot(bottom[0, 1])
    ax.axis("off")
    ax.set_title("hypoperfusion and summary", fontsize=10)
    rows_txt = []
    vols = rep.get("volumes_ml") or {}
    for key, value in vols.items():
        thr = key.replace("tmax_gt_", "Tmax > ").replace("s", " s")
        rows_txt.append([thr, f"{value:.1f} mL" if value is not None else "–"])
    mism = rep.get("mismatch")
    if mism:
        rows_txt.append(["core", f"{mism.get('core_ml', 0):.1f} mL"])
        rows_txt.append(["mismatch", f"{mism.get('mismatch_ml', 0):.1f} mL"])
        ratio = mism.get("ratio")
        rows_txt.append(["mismatch ratio", "∞" if ratio is None else f"{ratio:.2f}"])
    summary = rep.get("map_summary_in_brain", {})
    for name in ("cbf", "cbv", "mtt", "tmax"):
        if name in summary:
            label, unit = MAP_STYLE[name][0], MAP_STYLE[name][1]
            rows_txt.append([f"median {label}", f"{summary[name]['median']:.2f} {unit}"])
    params = rep.get("parameters", {})
    if "brain_volume_ml" in params:
        rows_txt.append(["brain mask", f"{params['brain_volume_ml']:.0f} mL ({params.get('brain_mask', '')[:9]})"])
    total = rep.get("timings_s", {}).get("total_s")
    if total is not None:
        rows_txt.append(["compute time", f"{total:.2f} s"])
    if rows_txt:
        table = ax.table(cellText=rows_txt, colWidths=[0.48, 0.52], loc="upper center", cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(8.5)
        table.scale(1.0, 1.25)
        for (row, _col), cell in table.get_celld().items():
            cell.set_edgecolor("#dddddd")
            if row % 2 == 0:
                cell.set_facecolor("#f4f6f8")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110, facecolor="white")
    plt.close(fig)
    return path


def _curve_panel(ax, result, rep, factor) -> None:
    """AIF (measured and VOF-rescaled) and VOF ΔR2* curves with the baseline span."""
    t = result.times_s
    if result.aif is not None:
        q = rep.get("aif_quality") or {}
        rescaled = result.aif_raw is not None and factor and abs(factor - 1.0) > 1e-3
        if rescaled:
            ax.plot(t, result.aif_raw, color="#d62728", lw=1.0, ls="--", alpha=0.8,
                    label="AIF measured" + _quality_text(q))
            ax.plot(t, result.aif, color="#d62728", lw=2.0, label=f"AIF used (×{factor:.2f}, area = VOF area)")
        else:
            ax.plot(t, result.aif, color="#d62728", lw=2.0, label="AIF" + _quality_text(q))
    if result.vof is not None:
        ax.plot(t, result.vof, color="#1f77b4", lw=1.8, label="VOF" + _quality_text(rep.get("vof_quality") or {}))
    bl = rep.get("parameters", {}).get("baseline_frames")
    tr = rep.get("input", {}).get("tr_s")
    if bl and tr:  # frame indices of the original series
        ax.axvspan(bl[0] * tr, (bl[1] - 1) * tr, color="#cccccc", alpha=0.4, lw=0, label="baseline (S0)")
    ax.set_xlabel("time (s)", fontsize=9)
    ax.set_ylabel("ΔR2* (1/s)", fontsize=9)
    ax.set_title("arterial and venous curves", fontsize=10)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7.5, loc="upper right", framealpha=0.9)


def _tmax_histogram_panel(ax, result, brain) -> None:
    """Histogram of Tmax in the brain (and the median uncertainty when the map has one) with the 6 s line."""
    tmax = result.maps.get("tmax")
    if tmax is None or not brain.any():
        ax.axis("off")
        return
    values = tmax[brain]
    hi = max(12.0, float(np.percentile(values, 99.5)))
    ax.hist(values, bins=60, range=(0.0, hi), color="#7f7f7f")
    ax.axvline(6.0, color="#d62728", lw=1.5, label="Tmax = 6 s")
    label = f"brain voxels: median Tmax {np.median(values):.1f} s"
    if "tmax_uncertainty" in result.maps:
        label += f", median uncertainty b {np.median(result.maps['tmax_uncertainty'][brain]):.2f} s"
    ax.plot([], [], " ", label=label)
    ax.set_xlabel("Tmax (s)", fontsize=9)
    ax.set_ylabel("voxels", fontsize=9)
    ax.set_title("Tmax distribution (AIF-free method: no arterial curve)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7.5, loc="upper right", framealpha=0.9)


def _quality_text(q: dict) -> str:
    parts = []
    if q.get("peak") is not None:
        parts.append(f"peak {q['peak']:.0f}/s")
    if q.get("time_to_peak_s") is not None:
        parts.append(f"TTP {q['time_to_peak_s']:.1f} s")
    if q.get("fwhm_s") is not None:
        parts.append(f"FWHM {q['fwhm_s']:.1f} s")
    if q.get("snr") is not None:
        parts.append(f"SNR {q['snr']:.0f}")
    return (": " + ", ".join(parts)) if parts else ""


def _clean(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
