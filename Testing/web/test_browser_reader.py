"""End to end in headless Chromium: a reader reads two cases through the token gate; the stored reads
match what the page showed; a browser reload and a killed server lose nothing. Asserts on page text and
the session files, not on pixels. Screenshots go to ``$NEUROCONTRAST_WEB_SCREENSHOTS`` (docs/images)."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
import pytest

from web_helpers import assert_blinded, free_port, mark_lesion, shot, start_server, stop

def test_reader_reads_two_cases_and_the_store_matches(browser_page, synthetic_study, tmp_path):
    from neurocontrast.readerstudy.session import load_reads

    folder, made = synthetic_study
    design = made["design"]
    page = browser_page
    port = free_port()
    log_path = tmp_path / "server.log"
    proc, link = start_server(["reader", str(folder), "--reader", "R1", "--host", "0.0.0.0"], port, log_path)
    try:
        assert "token=" in link
        token = link.split("token=")[1]
        base = f"http://127.0.0.1:{port}/"
        with pytest.raises(urllib.error.HTTPError) as refused:  # no token: refused
            urllib.request.urlopen(base, timeout=10)
        assert refused.value.code == 403
        page.goto(f"{base}?token={token}")
        page.wait_for_selector("#read-title", timeout=60000)
        first_label = page.inner_text("#read-title").split(" · ")[0]
        # case 1: one lesion, grade 4, a comment
        mark_lesion(page)
        page.wait_for_selector(".lesion-row", timeout=20000)
        row = page.locator(".lesion-row").first.inner_text().split()
        shown_long = float(row[1])
        page.click("#grade-4")
        page.fill("#comment", "rim enhancement")
        page.locator("#comment").blur()
        page.wait_for_timeout(800)
        shot(page, "web-reader.png")
        # a browser reload shows the same read with its mark and grade
        page.reload()
        page.wait_for_selector("#read-title", timeout=60000)
        assert page.inner_text("#read-title").startswith(first_label)
        page.wait_for_selector(".lesion-row")
        page.click("#submit")
        page.wait_for_function(f"!document.querySelector('#read-title').innerText.startsWith('{first_label}')",
                               timeout=20000)
        second_label = page.inner_text("#read-title").split(" · ")[0]
        page.click("#grade-2")
        page.wait_for_timeout(500)
        # the server is killed: a new one resumes the open read with its grade
        stop(proc, signal.SIGKILL)
        proc, _ = start_server(["reader", str(folder), "--reader", "R1", "--host", "0.0.0.0"], port, log_path)
        page.goto(f"{base}?token={token}")
        page.wait_for_selector("#read-title", timeout=60000)
        assert page.inner_text("#read-title").startswith(second_label)
        assert "flat" in (page.locator("#grade-2").get_attribute("class") or "")
        page.locator("#exclude").check()
        page.wait_for_timeout(500)
        page.click("#submit")
        page.wait_for_selector("#all-done", timeout=20000)
        assert "2 / 6 submitted" in page.inner_text("#progress")
        assert_blinded({"text": page.inner_text("body")}, design)
        shot(page, "web-reader-done.png")
    finally:
        stop(proc)
    reads = {s["label"]: s for s in load_reads(design, "R1").values() if s["status"] == "submitted"}
    assert set(reads) == {first_label, second_label}
    one, two = reads[first_label], reads[second_label]
    assert one["grade"] == 4 and one["comment"] == "rim enhancement" and len(one["lesions"]) == 1
    long_axis = one["lesions"][0]["long_axis"]
    stored_long = sum((a - b) ** 2 for a, b in zip(*long_axis)) ** 0.5
    assert stored_long == pytest.approx(shown_long, abs=0.06) and stored_long > 1.0
    assert two["grade"] == 2 and two["exclude"] is True and two["lesions"] == []
    assert one["active_seconds"] > 0 and two["active_seconds"] > 0
