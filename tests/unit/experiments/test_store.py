"""The results store: JSON files are the truth, the SQLite index is derived and rebuildable."""

from __future__ import annotations

import json
import sqlite3

import pytest

from infermeter.errors import UserError
from infermeter.experiments.cells import build_plan
from infermeter.experiments.specfile import parse_spec
from infermeter.experiments.store import CELL_COLUMN_NAMES, STORE_SCHEMA_VERSION, Store

SPEC = """\
name: s
targets: {a: {url: "http://127.0.0.1:8000", model: m}}
workloads: {w: {dataset: random, random_input_len: 8, random_output_len: 2}}
load: {burst: [1, 2, 4]}
"""


def fake_result(completed: int, stopped: str | None = None) -> dict:
    return {"completed": completed, "failed": 0, "duration": 1.0, "request_throughput": float(completed),
            "output_throughput": 2.0 * completed, "total_token_throughput": 10.0 * completed,
            "mean_ttft_ms": 5.0, "median_ttft_ms": 4.0, "p99_ttft_ms": 9.0, "backend": "vllm", "model_id": "m",
            "infermeter": {"work": {"exact": True}, "client": {"client_bound": False}, "stopped_early": stopped,
                           "records_file": "result.records.jsonl", "warnings": []}}


@pytest.fixture
def store(tmp_path):
    cells = build_plan(parse_spec(SPEC))
    st = Store(tmp_path / "exp")
    st.write_meta("s", "sweep")
    st.write_plan([c.definition() for c in cells])
    st.rebuild_index()
    return st, cells


def test_index_schema_and_pending_rows(store):
    st, cells = store
    conn = sqlite3.connect(st.index_path)
    assert conn.execute("SELECT version FROM schema_version").fetchone() == (STORE_SCHEMA_VERSION,)
    assert conn.execute("SELECT name, kind FROM experiment").fetchone() == ("s", "sweep")
    cols = [r[1] for r in conn.execute("PRAGMA table_info(cells)")]
    assert cols == CELL_COLUMN_NAMES
    for needed in ("cell_id", "target", "backend", "workload", "dataset", "input_len", "output_len", "load_mode",
                   "load_value", "repeat", "status", "started", "finished", "result_path", "completed",
                   "request_throughput", "total_token_throughput", "median_tpot_ms", "p99_e2el_ms",
                   "work_exact", "client_bound"):
        assert needed in cols
    rows = conn.execute("SELECT cell_id, status, load_value FROM cells ORDER BY seq").fetchall()
    conn.close()
    assert rows == [(c.cell_id, "pending", c.load_value) for c in cells]


def test_cell_lifecycle_and_rebuild_from_files(store):
    st, cells = store
    done, killed, failed = cells
    rec = st.begin_cell(done.definition())
    (st.cell_dir(done.cell_id) / "result.records.jsonl").write_text("{}\n")
    (st.cell_dir(done.cell_id) / "result.json").write_text(json.dumps(fake_result(1)))
    row = st.finish_cell(rec, fake_result(1))
    assert row["status"] == "done" and row["result_path"] == f"cells/{done.cell_id}/result.json"
    assert row["records_path"] == f"cells/{done.cell_id}/result.records.jsonl" and row["work_exact"] is True
    st.begin_cell(killed.definition())  # ... and the process dies here
    (st.cell_dir(killed.cell_id) / "result.records.jsonl").write_text("{}\n")
    st.fail_cell(st.begin_cell(failed.definition()), "target down")
    assert [st.file_state(c.cell_id) for c in cells] == ["done", "partial", "failed"]

    st.index_path.unlink()
    by_id = {r["cell_id"]: r for r in st.rows()}  # rebuilt on demand
    assert by_id[done.cell_id]["status"] == "done" and by_id[done.cell_id]["completed"] == 1
    assert by_id[done.cell_id]["total_token_throughput"] == 10.0
    assert by_id[killed.cell_id]["status"] == "running"
    assert by_id[failed.cell_id]["status"] == "failed" and by_id[failed.cell_id]["error"] == "target down"

    dest = st.set_aside(killed.cell_id)
    assert dest.name == ".partial-1" and (dest / "cell.json").exists() and (dest / "result.records.jsonl").exists()
    assert st.file_state(killed.cell_id) == "absent" and st.attempts(killed.cell_id) == 1
    assert st.begin_cell(killed.definition())["attempt"] == 2
    st.set_aside(killed.cell_id)
    assert sorted(p.name for p in st.cell_dir(killed.cell_id).iterdir()) == [".partial-1", ".partial-2"]


def test_an_interrupted_result_is_not_a_finished_cell(store):
    st, cells = store
    st.begin_cell(cells[0].definition())
    (st.cell_dir(cells[0].cell_id) / "result.json").write_text(json.dumps(fake_result(1, "interrupted (Ctrl-C)")))
    assert st.file_state(cells[0].cell_id) == "partial"
    (st.cell_dir(cells[0].cell_id) / "result.json").write_text(json.dumps(fake_result(1, "error rate 50%")))
    assert st.file_state(cells[0].cell_id) == "done"  # a stop rule ends a cell; it is finished


def test_one_writer_at_a_time(store):
    st, _ = store
    with st.lock():
        assert st.is_locked()
        with pytest.raises(UserError, match="another infermeter process"):
            with Store(st.root).lock():
                pass
    assert not st.is_locked()


def test_reading_something_that_is_not_a_store(tmp_path):
    with pytest.raises(UserError, match="holds no experiment"):
        Store(tmp_path).require()
    with pytest.raises(UserError, match="is not a folder"):
        Store(tmp_path / "nope").require()


def test_credentials_in_spec_headers_never_reach_the_store(tmp_path):
    text = SPEC.replace("model: m}", "model: m, headers: {Authorization: Bearer sk-secret, X-Team: infra}}")
    spec = parse_spec(text)
    cells = build_plan(spec)
    assert cells[0].settings["target"]["headers"]["Authorization"] == "Bearer sk-secret"  # used for requests
    st = Store(tmp_path / "exp")
    st.write_spec(spec.resolved())
    st.write_plan([c.definition() for c in cells])
    st.begin_cell(cells[0].definition())
    written = "".join(p.read_text() for p in st.root.rglob("*") if p.is_file() and p.suffix in (".json", ".yaml"))
    assert "sk-secret" not in written and "infra" in written and "<redacted>" in written


def test_a_folder_of_another_experiment_is_refused(tmp_path):
    from infermeter.experiments.sweep import run_sweep

    Store(tmp_path / "exp").write_meta("other", "sweep")
    spec = parse_spec(SPEC + f"output_dir: {tmp_path / 'exp'}\n")
    with pytest.raises(UserError, match="already holds an experiment"):
        run_sweep(spec)
    with pytest.raises(UserError, match="holds experiment 'other', not 's'"):
        run_sweep(spec, resume=True)


def test_sweep_efficiency_printed_is_the_one_stored(tmp_path):
    # 0.40347 prints as 40.3 % but is stored as 0.4035 (40.4 %) unless both use the same rounded value
    from infermeter.cli.sweep_cmd import efficiency_line
    from infermeter.experiments.sweep import SweepOutcome

    outcome = SweepOutcome(store=Store(tmp_path), planned=1, done_before=0, wall_s=100.0, measured_s=40.347)
    stored = outcome.summary()["efficiency"]
    assert stored == 0.4035
    assert f"efficiency {stored * 100:.1f} %" in efficiency_line(outcome)
