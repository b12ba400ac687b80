"""``infermeter report`` and ``infermeter compare`` end to end on synthetic stores (charts drawn)."""

from __future__ import annotations

import base64
import struct
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from infermeter.cli.main import main
from infermeter.reports.charts import SCALE
from infermeter.reports.example import write_example_store

EVIL = "<script>alert(1)</script>"
FIX = Path(__file__).parents[2] / "fixtures" / "vllm"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


class Imgs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs))


def parse(html: str) -> Imgs:
    p = Imgs()
    p.feed(html)
    p.close()
    return p


def run_report(store: Path, out: Path, *extra: str) -> tuple[str, Imgs]:
    rc = main(["report", str(store), "-o", str(out), *extra])
    assert rc == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    return html, parse(html)


def check_images(out: Path, parsed: Imgs, expected: dict[str, tuple[int, int] | None]) -> None:
    """Every expected chart: a PNG file at twice the expected page size with an SVG beside it,
    embedded once in the HTML at the page size."""
    files = {p.stem: p for p in out.glob("*.png")}
    assert set(files) == set(expected)
    assert {p.stem for p in out.glob("*.svg")} == set(expected)
    assert all(p.read_bytes().lstrip().startswith(b"<?xml") and b"<svg" in p.read_bytes() for p in out.glob("*.svg"))
    embedded = {}
    for img in parsed.imgs:
        assert img["src"].startswith("data:image/png;base64,")
        data = base64.b64decode(img["src"].split(",", 1)[1])
        embedded[data] = (int(img["width"]), int(img["height"]))
    assert len(parsed.imgs) == len(expected)
    for stem, size in expected.items():
        data = files[stem].read_bytes()
        assert len(data) > 2000
        w, h = png_size(data)
        page = embedded[data]
        assert (w, h) == (page[0] * SCALE, page[1] * SCALE), stem
        if size is not None:
            assert page == size, stem


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    root = tmp_path_factory.mktemp("three")
    store = write_example_store(root / "exp", ["vllm", "sglang", "tgi"], repeats=2, quick=True)
    html, parsed = run_report(store, root / "out", "--title", "SYNTHETIC example")
    return root / "out", html, parsed


def test_three_backends_every_chart(three):
    out, html, parsed = three
    two, three_p = (1160, 420), (1660, 420)
    check_images(out, parsed, {
        "throughput-short-burst": two, "ttft-short-burst": two, "tpot-itl-short-burst": two,
        "throughput-long-burst": two, "ttft-long-burst": two, "tpot-itl-long-burst": two,
        "single-prompt-length": two, "rate-short-rate": three_p, "pareto-burst": two, "pareto-rate": two,
        "gpu-memory": (750, 420), "errors": (1160, 380), "distributions-short-burst-64": None,
        "distributions-short-rate-rate-8": None,
        **{f"timeline-{t}.{w}.r0": None for t in ("vllm", "sglang", "tgi") for w in ("short.burst-64", "short-rate.rate-8")}})
    assert "<h1>SYNTHETIC example</h1>" in html
    assert "script" not in parsed.tags and "link" not in parsed.tags
    assert "svg" in parsed.tags and "title" in parsed.tags  # hover texts, no script
    assert "http://" not in html and "https://" not in html  # nothing fetched from the network
    assert "sglang vs vllm" in html and "tgi vs vllm" in html
    assert "unequal work: no verdict" in html
    assert "HTTP 503: &lt;html&gt;&lt;body&gt;&lt;h1&gt;503" in html  # error message escaped
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "![" in md and "(pareto-burst.png)" in md and "| sglang vs vllm |" in md.replace("  ", " ")


def test_one_backend_only_the_charts_its_data_supports(tmp_path):
    store = write_example_store(tmp_path / "exp", ["vllm"], repeats=1, quick=True, workloads=("short",),
                                memory=False)
    out = tmp_path / "out"
    html, parsed = run_report(store, out)
    check_images(out, parsed, {"throughput-short-burst": (1160, 420), "ttft-short-burst": (1160, 420),
                               "tpot-itl-short-burst": (1160, 420), "pareto-burst": (1160, 420),
                               "distributions-short-burst-64": None, "timeline-vllm.short.burst-64.r0": None})
    assert " vs vllm" not in html


def test_five_backends_escaped_names_and_errors(tmp_path):
    store = write_example_store(tmp_path / "exp", ["vllm", "sglang", "tgi", "lmdeploy", EVIL], repeats=1,
                                quick=True, workloads=("short", "long"), memory=False, records=False)
    out = tmp_path / "out"
    html, parsed = run_report(store, out)
    check_images(out, parsed, {k: None for k in (
        "throughput-short-burst", "ttft-short-burst", "tpot-itl-short-burst", "throughput-long-burst",
        "ttft-long-burst", "tpot-itl-long-burst", "pareto-burst", "errors")})
    assert "<script>" not in html and "script" not in parsed.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; vs vllm" in html
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "<script>" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md


def test_imported_vllm_results_render(tmp_path):
    assert main(["import", "vllm", str(FIX / "serve_result.json"), str(FIX / "serve_console.log"),
                 str(FIX / "appended_results.json"), "--into", str(tmp_path / "imp")]) in (0, 5)
    out = tmp_path / "out"
    html, parsed = run_report(tmp_path / "imp", out)
    assert "imported" in html and "Every cell" in html
    for p in out.glob("*.png"):
        png_size(p.read_bytes())
    assert len(parsed.imgs) == len(list(out.glob("*.png")))


def test_compare_prints_deltas_and_unequal_work_warning(three, tmp_path, capsys):
    store = write_example_store(tmp_path / "exp", ["vllm", "tgi"], repeats=1, quick=True, workloads=("short",),
                                memory=False, records=False)
    cells = store / "cells"
    capsys.readouterr()
    assert main(["compare", str(cells / "vllm.short.burst-8.r0"), str(cells / "tgi.short.burst-8.r0" / "result.json")]) == 0
    out = capsys.readouterr().out
    assert "Δ" in out and "%" in out and "output throughput" in out and "warning" not in out
    line = next(x for x in out.splitlines() if "output throughput" in x)
    # vllm is faster at burst 8 (B - A < 0), but one run per side is no evidence: no better side
    assert "-" in line and "no verdict: 1 vs 1 runs" in line
    assert main(["compare", str(cells / "vllm.short.burst-64.r0"), str(cells / "tgi.short.burst-64.r0")]) == 0
    out = capsys.readouterr().out
    assert "no verdict: unequal work: 128.0 vs 119.0 output tokens per request" in out


def test_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    assert "is not a folder" in capsys.readouterr().err
