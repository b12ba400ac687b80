"""``infermeter compare`` on experiment folders (cell by cell) and ``report --baseline`` (charts drawn)."""

from __future__ import annotations

import json

from infermeter.cli.main import main
from infermeter.reports.example import write_example_store


def test_experiments_are_compared_cell_by_cell_and_the_report_shows_the_verdicts(tmp_path, capsys):
    kw = dict(repeats=3, quick=True, workloads=("short",), memory=False)
    a = write_example_store(tmp_path / "a", ["vllm"], seed=0, **kw)
    b = write_example_store(tmp_path / "b", ["vllm"], seed=1, **kw)
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--json", "--metric", "output_throughput"]) == 0
    data = json.loads(capsys.readouterr().out)
    groups = {c["b"]: c for c in data["comparisons"]}
    assert len(groups) == 3 and all(c["runs_a"] == 3 and c["runs_b"] == 3 for c in groups.values())
    v = [c["verdicts"][0] for c in groups.values()]
    assert {x["key"] for x in v} == {"output_throughput"} and all("Welch" in x["method"] for x in v)
    store = tmp_path / "bl"
    assert main(["baseline", "save", "nightly", str(a), "--store", str(store)]) == 0
    assert "9 cell(s)" in capsys.readouterr().out  # 3 loads x 3 repeats
    assert main(["report", str(b), "-o", str(tmp_path / "out"), "--baseline", "nightly", "--store", str(store)]) == 0
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert 'id="baseline"' in html and "Against the baseline" in html and "Welch t interval over repeats" in html
    assert "A: baseline nightly" in html and "Provenance" in html
    assert main(["report", str(b), "-o", str(tmp_path / "o2"), "--baseline", "nope", "--store", str(store)]) == 2
