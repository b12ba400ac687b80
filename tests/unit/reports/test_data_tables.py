"""Reports without drawing: loading, statistics, tables, ratios, escaping, compare."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from infermeter.reports.charts import Chart, palette
from infermeter.reports.compare import compare_groups, warnings_for
from infermeter.reports.compare_sides import Group, Run
from infermeter.reports.data import cell_from_result, load_experiments, load_run, mean_ci, memory_of, points_of
from infermeter.reports.example import write_example_store
from infermeter.reports.html import render_html
from infermeter.reports.markdown import md_table, md_text
from infermeter.reports.tables import all_cells_table, comparison_tables, ratio_cell, targets_table

EVIL = "<script>alert(1)</script>"
# a valid 1x1 PNG
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360"
                    "000002000001e221bc330000000049454e44ae426082")


def _result(out_tok=128, n=10, failed=0, exact=True, client_bound=False, tput=1000.0, ttft=100.0, errors=None):
    return {"completed": n - failed, "failed": failed, "num_prompts": n, "duration": 2.0,
            "total_output_tokens": out_tok * (n - failed), "output_throughput": tput, "request_throughput": 5.0,
            "total_token_throughput": tput * 2, "mean_ttft_ms": ttft, "p99_ttft_ms": ttft * 2,
            "mean_tpot_ms": 10.0, "errors": errors or [],
            "infermeter": {"work": {"exact": exact}, "client": {"client_bound": client_bound},
                           "load": {"mode": "burst", "value": n}, "warnings": []}}


def test_mean_ci_uses_student_t():
    m, ci, n = mean_ci([10.0, 12.0, 14.0])
    assert (m, n) == (12.0, 3)
    assert ci == pytest.approx(4.303 * 2.0 / 3 ** 0.5, rel=1e-3)  # t(0.975, df=2) * s / sqrt(n)
    assert mean_ci([5.0]) == (5.0, None, 1)
    assert mean_ci([None, float("nan")]) == (None, None, 0)


def test_palette_is_keyed_by_sorted_names():
    a = palette(["vllm", "tgi", "sglang"])
    b = palette(["sglang", "vllm", "tgi"])
    assert a == b and len({c for c, _ in a.values()}) == 3


def test_ratio_says_better_for_throughput_up_and_latency_down():
    a = points_of([cell_from_result(_result(tput=1000, ttft=100), {"target": "a", "cell_id": "a"})])[0]
    b = points_of([cell_from_result(_result(tput=1500, ttft=150), {"target": "b", "cell_id": "b"})])[0]
    assert ratio_cell(a, b, "output_throughput") == ("1.50× better", "better")
    assert ratio_cell(a, b, "mean_ttft_ms") == ("1.50× worse", "worse")
    u = points_of([cell_from_result(_result(tput=1500, exact=False), {"target": "u", "cell_id": "u"})])[0]
    text, kind = ratio_cell(a, u, "output_throughput")
    assert kind == "flag" and "unequal work" in text and "better" not in text


def test_memory_found_defensively():
    flat = {"infermeter": {"telemetry": {"summary": {"memory_ready_mib": 1000, "memory_peak_mib": 1500}}}}
    assert memory_of(flat) == {"ready": 1000.0, "peak": 1500.0}
    gpus = {"infermeter": {"telemetry": {"summary": {"gpus": {
        "0": {"ready": {"mem_used_bytes": 2 * 1048576}, "peak": {"mem_used_bytes": 3 * 1048576}},
        "1": {"ready": {"mem_used_bytes": 2 * 1048576}}}}}}}
    assert memory_of(gpus) == {"ready": 4.0, "peak": 3.0}
    assert memory_of({"infermeter": {"telemetry": None}}) == {}


def test_memory_from_what_telemetry_really_writes():
    """The shape a run's telemetry summary has, made by the telemetry package itself."""
    from infermeter.telemetry.summary import summarize_gpus

    gib = 1 << 30
    samples = [{"kind": "gpu", "gpu": 0, "t": t, "phase": ph, "mem_used_bytes": m, "mem_total_bytes": 80 * gib}
               for t, ph, m in [(0.0, "idle", 1 * gib), (1.0, "ready", 60 * gib), (2.0, "load", 75 * gib),
                                (3.0, "cooldown", 70 * gib)]]
    devices = summarize_gpus(samples, window=(1.5, 2.5), origin=1.5)
    result = {"infermeter": {"telemetry": {"gpu": {"available": True, "devices": devices}}}}
    assert memory_of(result) == {"ready": 60 * 1024.0, "peak": 75 * 1024.0}
    assert memory_of({}) == {}


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    root = tmp_path_factory.mktemp("five") / "exp"
    write_example_store(root, ["vllm", "sglang", "tgi", "lmdeploy", EVIL], repeats=2, quick=True,
                        workloads=("short", "long"))
    return load_experiments([root])[0]


def test_store_loads_every_cell_with_flags(five):
    cells = five.cells
    assert len({c.target for c in cells}) == 5
    assert len(cells) == 5 * (2 * 3 + 2)
    tgi = {c.cell_id: c for c in cells if c.target == "tgi"}
    assert "unequal work" in tgi["tgi.short.burst-64.r0"].flags
    assert "errors" in tgi["tgi.long.burst-128.r0"].flags
    assert any("503" in m for m in tgi["tgi.long.burst-128.r0"].error_messages)
    assert "client-bound" in {f for c in cells if c.target == "sglang" for f in c.flags}
    assert tgi["tgi.short.burst-1.r0"].memory_mib["peak"] > tgi["tgi.short.burst-1.r0"].memory_mib["ready"]


def test_comparison_tables_have_ratio_columns_and_no_winner_on_unequal_work(five):
    tables = comparison_tables(five.cells)
    t = next(t for t in tables if t.id == "short-burst-output_throughput")
    assert t.columns[:6] == ["requests sent at once (burst size)", "vllm", "sglang", "tgi", "lmdeploy", EVIL]
    assert t.columns[6:10] == [f"{x} vs vllm" for x in ("sglang", "tgi", "lmdeploy", EVIL)]
    assert [r[0][0] for r in t.rows] == ["1", "8", "64"]
    last = t.rows[-1]
    assert last[7][1] == "flag" and "no verdict" in last[7][0]  # tgi at 64 did unequal work
    assert "tgi: unequal work" in last[-1][0]
    assert "±" in last[1][0]  # two repeats: a confidence interval
    assert {r[6][1] for r in t.rows[:2]} <= {"better", "worse", "same"}


def test_one_backend_tables_have_no_ratio_column(tmp_path):
    write_example_store(tmp_path / "one", ["vllm"], repeats=1, quick=True, workloads=("short",))
    cells = load_experiments([tmp_path / "one"])[0].cells
    t = comparison_tables(cells)[0]
    assert t.columns == ["requests sent at once (burst size)", "vllm", "flags"]
    assert len(all_cells_table(cells).rows) == 3


def test_html_escapes_server_text(five):
    cells = five.cells
    bad = cell_from_result(_result(failed=2, errors=["", "<b>boom</b> & <img src=x onerror=alert(1)>"]),
                           {"target": EVIL, "cell_id": "evil.cell", "workload": "w"})
    bad.warnings.append("<i>warn</i>")
    cells = cells + [bad]
    chart = Chart("c1", f"title {EVIL}", "caption", PNG, 1, 1)
    html = render_html(title=f"T {EVIL}", intro=[EVIL], warnings=[EVIL], charts=[chart],
                       targets=targets_table(cells), comparisons=comparison_tables(cells),
                       all_cells=all_cells_table(cells), errors=[("evil.cell", bad.error_messages)],
                       cell_warnings=[("evil.cell", bad.warnings)])
    assert "<script>" not in html and "<b>boom" not in html and "<i>warn" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html

    class P(HTMLParser):
        tags: list[str] = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

    p = P()
    p.feed(html)
    p.close()
    assert "script" not in p.tags and p.tags.count("img") == 1 and "table" in p.tags


def test_markdown_escapes_pipes_and_html():
    assert md_text("a|b") == "a\\|b"
    assert md_text("<script>") == "&lt;script&gt;"
    from infermeter.reports.tables import Table
    t = Table("x", "x", ["a|b", "c"], [[("1|2", ""), ("3", "num")]])
    lines = md_table(t).splitlines()
    assert lines[0] == "| a\\|b | c |" and lines[2] == "| 1\\|2 | 3 |"
    assert all(line.count("|") - line.count("\\|") == 3 for line in lines)


def test_compare_deltas_and_unequal_work(tmp_path):
    ra, rb = _result(tput=1000, ttft=100), _result(tput=1200, ttft=80)
    a, b = cell_from_result(ra, cell_id="a"), cell_from_result(rb, cell_id="b")
    comp = compare_groups(Group(("x",), [Run(a, ra, None)]), Group(("x",), [Run(b, rb, None)]))
    v = comp.verdict("mean_ttft_ms")
    assert (v.a, v.b, v.diff) == (100, 80, -20) and v.rel == pytest.approx(-0.2)
    assert v.verdict == "no verdict" and "per-request" in v.reason  # headline numbers alone are no evidence
    assert comp.verdict("output_throughput").rel == pytest.approx(0.2)
    assert warnings_for(a, b) == []
    rc = _result(out_tok=100, tput=1200, client_bound=True)
    c = cell_from_result(rc, cell_id="c")
    comp = compare_groups(Group(("x",), [Run(a, ra, None)]), Group(("x",), [Run(c, rc, None)]))
    assert {x.verdict for x in comp.verdicts} == {"no verdict"}
    assert any("128.0 vs 100.0" in r for r in comp.reasons)
    w = warnings_for(a, c)
    assert any("unequal work" in x and "128.0 vs 100.0" in x for x in w)
    assert any("client-bound" in x for x in w)


def test_load_run_reads_files_and_cell_dirs(tmp_path, five):
    cell_dir = five.root / "cells" / "vllm.short.burst-8.r0"
    c = load_run(cell_dir)
    assert c.target == "vllm" and c.load_value == 8 and c.metrics["output_throughput"]
    (tmp_path / "r.json").write_text(json.dumps(_result()))
    assert load_run(tmp_path / "r.json").metrics["completed"] == 10
    from infermeter.errors import UserError
    with pytest.raises(UserError):
        load_run(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(UserError):
        load_run(tmp_path / "bad.json")


def test_imported_vllm_cells_load(tmp_path):
    from infermeter.experiments.importers import import_vllm

    fix = Path(__file__).parents[2] / "fixtures" / "vllm"
    import_vllm([fix / "serve_result.json", fix / "serve_console.log"], tmp_path / "imp")
    cells = load_experiments([tmp_path / "imp"])[0].cells
    assert len(cells) == 3 and all("imported" in c.flags for c in cells)
    assert {c.load_mode for c in cells} >= {"burst", "concurrency"}
    assert comparison_tables(cells)


def test_several_folders_merge_and_clashing_targets_are_kept_apart(tmp_path):
    write_example_store(tmp_path / "a", ["vllm"], repeats=1, quick=True, workloads=("short",), name="exp-a")
    write_example_store(tmp_path / "b", ["tgi"], repeats=1, quick=True, workloads=("short",), name="exp-b")
    write_example_store(tmp_path / "c", ["vllm"], repeats=1, quick=True, workloads=("short",), name="exp-c")
    merged = [c for e in load_experiments([tmp_path / "a", tmp_path / "b"]) for c in e.cells]
    assert {c.target for c in merged} == {"vllm", "tgi"}
    clash = [c for e in load_experiments([tmp_path / "a", tmp_path / "c"]) for c in e.cells]
    assert {c.target for c in clash} == {"exp-a/vllm", "exp-c/vllm"}


def test_rates_come_from_the_result_or_else_from_its_records(tmp_path):
    from infermeter.core.records import RequestRecord
    from infermeter.storage.files import RecordWriter

    with_rates = _result()
    with_rates["infermeter"]["rates"] = {"sent_rate": 4.0, "completion_rate": 3.5}
    (tmp_path / "new.json").write_text(json.dumps(with_rates))
    m = load_run(tmp_path / "new.json").metrics
    assert (m["sent_rate"], m["completion_rate"]) == (4.0, 3.5)
    # an older result has no rates: they are derived from its records file (warm-up left out)
    old = _result()
    old["infermeter"]["records_file"] = "old.records.jsonl"
    (tmp_path / "old.json").write_text(json.dumps(old))
    recs = [RequestRecord(index=-1, warmup=True, scheduled=-9.0, input_len=5, requested_output_len=4,
                          sent=-9.0, first_token=-8.9, end=-8.0, token_times=[-8.9], ok=True)]
    recs += [RequestRecord(index=i, warmup=False, scheduled=0.25 * i, input_len=5, requested_output_len=4,
                           sent=0.25 * i, first_token=0.25 * i + 0.1, end=0.5 * i + 3.0,
                           token_times=[0.25 * i + 0.1], ok=True) for i in range(5)]
    with RecordWriter(tmp_path / "old.records.jsonl") as writer:
        for r in recs:
            writer(r)
    m = load_run(tmp_path / "old.json").metrics
    assert m["sent_rate"] == pytest.approx(4.0) and m["completion_rate"] == pytest.approx(2.0)


def test_a_launched_servers_memory_after_load_comes_from_its_launch_record(tmp_path):
    from infermeter.reports.charts import build_charts
    from infermeter.telemetry.summary import summarize_gpus

    gib = 1 << 30
    root = tmp_path / "exp"
    write_example_store(root, ["vllm", "tgi"], repeats=1, quick=True, workloads=("short",))
    servers = root / "servers"
    servers.mkdir(exist_ok=True)
    for i, mem in enumerate((15, 16)):  # started twice: the larger counts
        samples = [{"kind": "gpu", "gpu": 0, "t": t, "phase": ph, "mem_used_bytes": m, "mem_total_bytes": 80 * gib}
                   for t, ph, m in [(0.0, "idle", 0), (5.0, "loading", 8 * gib), (9.0, "ready", mem * gib)]]
        devices = summarize_gpus(samples, window=None, origin=0.0)
        (servers / f"vllm-{i}.json").write_text(json.dumps(
            {"target": "vllm", "startup_s": 9.0, "telemetry": {"gpu": {"devices": devices}}}))
    (servers / "tgi-0.json").write_text("{not json")  # a broken record is skipped
    exp = load_experiments([root])[0]
    vllm = [c for c in exp.cells if c.target == "vllm"]
    assert vllm and all(c.memory_mib["loaded"] == 16 * 1024.0 for c in vllm)
    assert all("loaded" not in c.memory_mib for c in exp.cells if c.target == "tgi")
    memory = [c for c in build_charts(exp.cells) if c.id.endswith("gpu-memory")]
    assert memory and "launched server had loaded its model" in memory[0].caption
