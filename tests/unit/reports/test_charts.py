"""The report's close-up charts and chart rules: distributions, timelines, gap labels, rings,
Pareto charts per load mode, hover points, and the loads chosen for a close look."""

from __future__ import annotations

import math

import json

import pytest

from infermeter.errors import UserError
from infermeter.reports.charts import SCALE, build_charts
from infermeter.reports.charts.distributions import supported
from infermeter.reports.charts.lines import ALL_FLAGGED, RINGS_CLEAN, RINGS_FLAGGED, gap_labels, rate_styles, ring
from infermeter.reports.data import cell_from_result, load_experiments, points_of
from infermeter.reports.example import write_example_store
from infermeter.reports.samples import focus_of, parse_at

pytest.importorskip("matplotlib")


class FakeAx:
    def __init__(self) -> None:
        self.rings: list[tuple] = []
        self.notes: list[str] = []

    def scatter(self, xs, ys, **kw):
        self.rings.append((xs[0], ys[0]))

    def annotate(self, text, xy, **kw):
        self.notes.append(text)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("charts") / "exp"
    write_example_store(root, ["vllm", "tgi"], repeats=2, quick=True, workloads=("short", "rate"))
    return root


@pytest.fixture(scope="module")
def charts(store):
    cells = load_experiments([store])[0].cells
    return {c.id: c for c in build_charts(cells, focus=focus_of(cells))}


def test_rings_mark_the_minority():
    ax = FakeAx()
    assert ring([(ax, float(i), 1.0, i < 2) for i in range(10)]) == RINGS_FLAGGED
    assert ax.rings == [(0.0, 1.0), (1.0, 1.0)]
    ax = FakeAx()
    assert ring([(ax, float(i), 1.0, i != 3) for i in range(10)]) == RINGS_CLEAN
    assert ax.rings == [(3.0, 1.0)]  # the one exception, not nine rings
    ax = FakeAx()
    assert ring([(ax, 1.0, 1.0, True)] * 4) == ALL_FLAGGED and ax.rings == []
    assert ring([(ax, 1.0, 1.0, False)] * 4) is None


def test_gap_labels_name_the_target_and_its_difference():
    ax = FakeAx()
    data = {"vllm": [(1, 100.0), (2, 200.0)], "tgi": [(1, 112.0), (2, 150.0)]}
    assert gap_labels(ax, data, {"vllm": ("#000", "o"), "tgi": ("#111", "s")}, "vllm")
    assert ax.notes == ["tgi +12 %", "tgi -25 %"]


def test_percentiles_the_samples_cannot_support_are_not_marked():
    assert supported(1) == [] and supported(64) == [50.0, 90.0] and supported(100) == [50.0, 90.0, 99.0]


def test_a_p99_from_too_few_requests_is_not_plotted():
    few = cell_from_result({"completed": 40, "p99_ttft_ms": 9.0, "mean_ttft_ms": 5.0})
    assert few.metrics["p99_ttft_ms"] is None and few.metrics["mean_ttft_ms"] == 5.0
    named = cell_from_result({"completed": 400, "p99_itl_ms": 3.0, "p99_ttft_ms": 9.0,
                              "infermeter": {"unsupported_percentiles": {"itl": ["99"]}}})
    assert named.metrics["p99_itl_ms"] is None and named.metrics["p99_ttft_ms"] == 9.0


def test_distributions_per_target_at_the_chosen_load(charts):
    ch = charts["distributions-short-burst-64"]
    # 2 repeats x 64 requests pooled: p99 supported; hover shows each target's marked percentiles
    texts = [t for _x, _y, t in ch.hover]
    assert any(t.startswith("vllm: p99 TTFT") and "(n = 128)" in t for t in texts)
    assert any(t.startswith("tgi: p50 E2EL") for t in texts)
    assert "Too few samples" not in ch.caption


def test_distributions_say_what_too_few_samples_left_out(store):
    cells = load_experiments([store])[0].cells
    cell = next(c for c in cells if c.cell_id == "vllm.short.burst-64.r0")
    [ch] = [c for c in build_charts(cells, focus=focus_of(cells, cell_ids=[cell.cell_id]))
            if c.id.startswith("distributions")]
    assert "TTFT p99 of vllm (n = 64)" in ch.caption
    assert not any("p99" in t for _x, _y, t in ch.hover if "TTFT" in t)


def test_timelines_skip_absent_panels_with_a_note(charts, store):
    vllm, tgi = charts["timeline-vllm.short.burst-64.r0"], charts["timeline-tgi.short.burst-64.r0"]
    assert "Not shown" not in vllm.caption and any("KV cache" in t for _x, _y, t in vllm.hover)
    assert "Not shown: server KV cache (its /metrics has no KV usage)" in tgi.caption
    assert any("in flight" in t for _x, _y, t in tgi.hover) and any("GPU 0" in t for _x, _y, t in tgi.hover)
    (store / "cells" / "vllm.short-rate.rate-8.r0" / "result.telemetry.jsonl").unlink()
    cells = load_experiments([store])[0].cells
    [ch] = [c for c in build_charts(cells, focus=focus_of(cells, at=["short-rate:rate=8"]))
            if c.id == "timeline-vllm.short-rate.rate-8.r0"]
    assert "GPU memory and power (the cell has no telemetry series)" in ch.caption


def test_pareto_charts_never_mix_load_modes(charts):
    assert "pareto" not in charts
    burst, rate = charts["pareto-burst"], charts["pareto-rate"]
    assert burst.hover and all(", burst " in t for _x, _y, t in burst.hover)
    assert rate.hover and all(", rate " in t for _x, _y, t in rate.hover)


def test_backend_charts_carry_gap_labels_and_hover_inside_the_page(charts):
    ch = charts["throughput-short-burst"]
    assert "Labels: each target's difference from vllm at that load." in ch.caption
    assert ch.hover and all(0 <= x <= ch.width and 0 <= y <= ch.height for x, y, _t in ch.hover)
    assert any(t.startswith("tgi · short, burst 64: output throughput") for _x, _y, t in ch.hover)
    assert ch.svg.startswith(b"<?xml") and ch.png[:4] == b"\x89PNG"
    import struct

    assert struct.unpack(">II", ch.png[16:24]) == (ch.width * SCALE, ch.height * SCALE)


def test_rate_chart_tells_sent_from_completed(charts, store):
    ch = charts["rate-short-rate"]
    texts = [t for _x, _y, t in ch.hover]
    assert any("(sent (dashed, hollow))" in t for t in texts) and any("(completed (solid, filled))" in t for t in texts)
    pts = [p for p in points_of(load_experiments([store])[0].cells) if p.load_mode == "rate"]
    styles = rate_styles(pts)
    assert [s.key for s in styles] == ["completion_rate", "sent_rate"] and styles[1].hollow and not styles[0].hollow
    for c in pts[0].cells:
        c.metrics["completion_rate"] = None  # one point without them: the whole chart uses completed / duration
    assert [s.key for s in rate_styles(pts)] == ["request_throughput"]


def test_focus_defaults_to_the_largest_load_with_records_and_reads_at(store):
    cells = load_experiments([store])[0].cells
    f = {(x.workload, x.mode): x for x in focus_of(cells)}
    assert f[("short", "burst")].value == 64 and sorted(f[("short", "burst")].cells) == ["tgi", "vllm"]
    assert len(f[("short", "burst")].cells["vllm"]) == 2  # both repeats
    assert parse_at("short:burst=64") == ("short", "burst", 64.0) and parse_at("rate = 8") == (None, "rate", 8.0)
    for bad in ("burst", "qps=3", "burst=x"):
        with pytest.raises(UserError, match="is not a load"):
            parse_at(bad)
    with pytest.raises(UserError, match="no cell with per-request records"):
        focus_of(cells, at=["burst=8"])
    with pytest.raises(UserError, match="is not a finished cell"):
        focus_of(cells, cell_ids=["nope"])


def test_report_cli_takes_at_and_cell(store, tmp_path, capsys):
    from infermeter.cli.main import main

    assert main(["report", str(store), "-o", str(tmp_path / "o"), "--at", "rate=8"]) == 0
    names = sorted(p.name for p in (tmp_path / "o").glob("distributions-*.png"))
    assert names == ["distributions-short-rate-rate-8.png"]
    assert main(["report", str(store), "-o", str(tmp_path / "o2"), "--at", "burst=3"]) == 2
    err = capsys.readouterr().err
    assert "--at 'burst=3'" in err and len(err.strip().splitlines()) == 1
    assert json.loads((store / "cells" / "vllm.short.burst-64.r0" / "result.json").read_text())["infermeter"][
        "records_file"] == "result.records.jsonl"


def test_timeline_series_from_records():
    from infermeter.core.records import RequestRecord
    from infermeter.reports.charts.timelines import in_flight, tokens_per_second

    recs = [RequestRecord(index=i, warmup=False, scheduled=0.0, input_len=8, requested_output_len=4, sent=s, end=e,
                          token_times=[s + 0.1, s + 0.2], output_tokens_server=4, ok=True)
            for i, (s, e) in enumerate([(0.0, 1.0), (0.5, 2.0)])]
    assert in_flight(recs) == ([0.0, 0.5, 1.0, 2.0], [1, 2, 1, 0])
    xs, ys, width = tokens_per_second(recs)
    assert len(xs) == len(ys) and ys[-1] == ys[-2]  # the last bin is drawn to its right edge
    assert sum(y * width for y in ys[:-1]) == pytest.approx(8)  # every token counted once


def test_a_sampled_series_is_broken_across_a_gap_not_drawn_flat():
    # llama-server answered /metrics only before and after a 3 s burst: before, a flat 0 line across the
    # run showed "0 requests running" while 64 were.
    from infermeter.reports.charts.timelines import broken

    xs, ys, gaps = broken([-0.04, -0.03, -0.02, 2.92], [0.0, 0.0, 0.0, 0.0])
    assert gaps == [(-0.02, 2.92)] and math.isnan(xs[3]) and math.isnan(ys[3]) and xs[-1] == 2.92
    xs, ys, gaps = broken([0.0, 1.0, 2.0, 3.1], [1, 2, 3, 4])  # 1 s sampling: no gap
    assert gaps == [] and xs == [0.0, 1.0, 2.0, 3.1]
