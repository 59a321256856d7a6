"""End to end in headless Chromium: the perfusion viewer suggests an AIF, computes maps, shows the colour
bar and the volumes table, and downloads the report PNG (asserts on page text and files, not pixels)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from web_helpers import free_port, shot, start_server, stop


def test_viewer_computes_maps_and_downloads_the_report(browser_page, tmp_path):
    from neurocontrast.perfusion.phantom import generate_phantom, write_phantom

    phantom = generate_phantom(shape=(4, 48, 48), n_frames=40, seed=7)
    paths = write_phantom(phantom, tmp_path / "phantom")
    page = browser_page
    port = free_port()
    proc, link = start_server(["perfusion", paths["dsc"], "--brain-mask", paths["brain_mask"]], port,
                              tmp_path / "server.log")
    try:
        assert "token" not in link  # loopback: no token needed
        page.goto(link)
        page.wait_for_selector("#suggest-aif", timeout=60000)
        page.click("#suggest-aif")
        page.wait_for_function("/points · [1-9]/.test(document.querySelector('#aif-status').innerText)",
                               timeout=30000)
        page.wait_for_selector("#curves")
        page.click("#compute")
        page.wait_for_selector(".volume-row", timeout=120000)
        rows = {r.split("\t")[0].strip(): r.split("\t")[1].strip()
                for r in (x.inner_text() for x in page.locator(".volume-row").all())}
        assert page.locator("#colour-bar").inner_text().startswith("Tmax (s)")
        truth_ml = float((phantom.truth["tmax"] > 6)[phantom.brain_mask].sum()) * np.prod(phantom.geometry.spacing) / 1000
        assert float(rows["Tmax > 6 s"]) == pytest.approx(truth_ml, rel=0.35)
        page.click("#map-cbf")
        page.wait_for_function("document.querySelector('#colour-bar').innerText.startsWith('CBF')")
        shot(page, "web-perfusion.png")
        with page.expect_download(timeout=60000) as info:
            page.click("#report")
        target = tmp_path / "report.png"
        info.value.save_as(target)
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        text = page.inner_text("body")
        assert str(tmp_path) not in text and not re.search(r"\.nii", text)
    finally:
        stop(proc)
