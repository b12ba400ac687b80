"""The HTML report in a real headless browser: it renders (a screenshot with the charts in it)
and logs no console message.  Skipped where no Chromium is installed (``apt-get install chromium``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from infermeter.cli.main import main
from infermeter.reports.example import write_example_store

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome", "chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no headless browser: apt-get install -y chromium")


def render(page: Path, shot: Path) -> list[str]:
    """Screenshot ``page``; return the console lines the browser logged while loading it."""
    proc = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--window-size=1400,2400", f"--screenshot={shot}",
                           "--enable-logging=stderr", "--v=0", page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180, cwd=shot.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def colours(png: Path) -> int:
    import matplotlib.image
    import numpy as np

    img = matplotlib.image.imread(str(png))
    return len(np.unique(img.reshape(-1, img.shape[-1])[:, :3], axis=0))


def test_the_report_renders_in_a_browser_without_console_messages(tmp_path):
    pytest.importorskip("matplotlib")
    # the capture works: a page that logs an error is caught
    probe = tmp_path / "probe.html"
    probe.write_text('<!DOCTYPE html><html><body>x<script>console.error("probe-error")</script></body></html>')
    assert any("probe-error" in line for line in render(probe, tmp_path / "probe.png"))

    store = write_example_store(tmp_path / "exp", ["vllm", "tgi"], repeats=1, quick=True, workloads=("short",))
    assert main(["report", str(store), "-o", str(tmp_path / "out")]) == 0
    shot = tmp_path / "shot.png"
    assert render(tmp_path / "out" / "report.html", shot) == []
    assert shot.stat().st_size > 20_000
    assert colours(shot) > 100  # the charts were drawn, not a blank or broken-image page
