"""What a new user meets first: a plain install does the main job, the embedded engine and the
client get their own cores on a small machine, the per-request records load typed, and
warnings are one line."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import orjson
import pytest

from infermeter.core.records import RequestRecord
from infermeter.embedded.placement import choose, pin_current_thread, restore
from infermeter.embedded.server import _preexec
from infermeter.errors import UserError
from infermeter.storage.files import RecordWriter, read_records

ROOT = Path(__file__).resolve().parents[3]


def _names(deps: list[str]) -> set[str]:
    return {re.split(r"[<>=!;\[ ]", d, maxsplit=1)[0].lower() for d in deps}


def test_plain_install_has_charts_and_chat_templates():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = _names(project["dependencies"])
    extras = {k: _names(v) for k, v in project["optional-dependencies"].items()}
    assert {"matplotlib", "jinja2"} <= core  # report and sonnet/chat runs need no extra
    assert "transformers" not in core and "transformers" in extras["hf"]
    assert "pyarrow" in extras["parquet"]
    assert {"pyarrow", "pandas", "duckdb"} <= extras["test"]  # the export tests read with them
    # no message sends a user to an extra for what a plain install has
    for path in (ROOT / "src").rglob("*.py"):
        text = path.read_text()
        assert "infermeter[plots]" not in text, path
        assert "jinja2 is not installed" not in text, path


@pytest.mark.parametrize("allowed, engine, client, threads, pinned", [
    ([0, 1], (0,), (1,), 1, True),
    ([2, 3], (2,), (3,), 1, True),  # within what taskset allowed
    ([0, 1, 2], (0, 1), (2,), 2, True),
    ([0], None, None, 1, False),
    (list(range(8)), None, None, 7, False),
])
def test_placement_pins_only_on_few_cores(allowed, engine, client, threads, pinned):
    p = choose(allowed, None)
    assert (p.engine_cpus, p.client_cpus, p.threads, p.pinned) == (engine, client, threads, pinned)
    assert p.why and p.to_dict()["engine_cpus"] == (list(engine) if engine else None)


def test_placement_follows_the_users_choice():
    off = choose([0, 1], "off")
    assert not off.pinned and off.engine_cpus is None and "off" in off.why
    mine = choose([0, 1, 2, 3], "3")
    assert mine.engine_cpus == (3,) and mine.client_cpus == (0, 1, 2) and mine.threads == 1
    both = choose([0, 1, 2, 3], "1,2")
    assert both.engine_cpus == (1, 2) and both.threads == 2 and both.client_cpus == (0, 3)
    with pytest.raises(UserError, match="not 'auto', 'off' or a list of cores"):
        choose([0, 1], "fast")
    with pytest.raises(UserError, match=r"core\(s\) \[5\]"):
        choose([0, 1], "5")


def test_engine_process_runs_on_its_cores():
    import os

    allowed = sorted(os.sched_getaffinity(0))
    core = allowed[-1]
    out = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                         preexec_fn=_preexec([core]), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([core])


def test_client_pin_is_undone():
    import os

    before = os.sched_getaffinity(0)
    core = min(before)
    previous = pin_current_thread([core])
    try:
        assert os.sched_getaffinity(0) == {core}
    finally:
        restore(previous)
    assert os.sched_getaffinity(0) == before
    assert pin_current_thread(None) is None  # nothing to pin: nothing changed


def test_records_jsonl_has_latency_columns_and_typed_text(tmp_path):
    ok = RequestRecord(index=0, warmup=False, scheduled=0.0, input_len=8, requested_output_len=3, sent=1.0,
                       first_token=1.05, end=1.25, token_times=[1.05, 1.15, 1.25], ok=True,
                       output_tokens_server=3, finish_reason="length")
    warm = RequestRecord(index=-1, warmup=True, scheduled=0.0, input_len=8, requested_output_len=3)
    path = tmp_path / "r.records.jsonl"
    with RecordWriter(path, columns={"target": "vllm", "cell_id": ""}) as w:
        w(ok)
        w(warm)
    first, second = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert first["ttft_ms"] == pytest.approx(50.0) and first["e2el_ms"] == pytest.approx(250.0)
    assert first["tpot_ms"] == pytest.approx(100.0)  # (250 - 50) / (3 - 1)
    assert first["target"] == "vllm" and first["cell_id"] == "" and first["warmup"] is False
    assert first["error"] == "" and first["error_detail"] == "" and first["retry_after"] == ""
    assert second["warmup"] is True and second["ttft_ms"] is None and second["finish_reason"] == ""
    back = list(read_records(path))
    assert back == [ok, warm]  # "" reads back as no value


def test_records_load_typed_in_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "r.records.jsonl"
    with RecordWriter(path, columns={"target": "t", "cell_id": ""}) as w:
        for i in range(3):
            w(RequestRecord(index=i, warmup=i == 0, scheduled=0.0, input_len=8, requested_output_len=2, sent=0.0,
                            first_token=0.01, end=0.02, token_times=[0.01, 0.02], ok=True, output_tokens_server=2))
    df = pd.read_json(path, lines=True)
    for name in ("error", "error_detail", "retry_after", "cell_id", "target"):
        assert not pd.api.types.is_float_dtype(df[name]), (name, df[name].dtype)
    assert df["warmup"].dtype == bool and df["warmup"].tolist() == [True, False, False]
    assert df["ttft_ms"].round(6).tolist() == [10.0] * 3


def test_a_python_warning_is_one_clean_line(capsys):
    from infermeter.cli.main import warning_line

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = warning_line
        warnings.warn("only 4 JSONL records qualify for 10 prompts", stacklevel=1)
    err = capsys.readouterr().err
    assert err == "infermeter: warning: only 4 JSONL records qualify for 10 prompts\n"


def test_quick_recipe_timing_is_stated_the_same_everywhere():
    """README, docs/experiments.md and the recipe once gave one minute, 12 s and 8 minutes."""
    from infermeter.experiments.recipes import recipe_text

    places = {
        "README.md": [x for x in (ROOT / "README.md").read_text().splitlines() if "--recipe quick" in x],
        "docs/experiments.md": [x for x in (ROOT / "docs/experiments.md").read_text().splitlines()
                                if "--recipe quick" in x or x.startswith("| `quick`")],
        "recipe": [x for x in recipe_text("quick").splitlines() if x.startswith("#")][:3],
    }
    for where, lines in places.items():
        text = " ".join(lines)
        claims = re.findall(r"\b(\d+(?:\.\d+)?) s\b", text)
        assert claims and float(claims[0]) == 3.0, (where, text)  # the first figure is the claim
        assert "once" in text and "built" in text, where  # the first run builds the engine first
        assert "one-minute" not in text.lower() and "12 s" not in text
