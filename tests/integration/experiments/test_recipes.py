"""The seed recipes run to completion against a server they launch (the embedded engine's
llama-server through the llama.cpp launch profile), warm up once, repeat small points."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from infermeter.cli.main import main
from infermeter.experiments.specfile import spec_from_data
from infermeter.experiments.store import Store
from infermeter.experiments.sweep import run_sweep

pytestmark = pytest.mark.integration

LAUNCH = "llama=launch:llama.cpp,model=tiny"


def results(root: Path) -> list[dict]:
    store = Store(root)
    return [json.loads((root / r["result_path"]).read_text()) for r in store.rows() if r["status"] == "done"]


@pytest.mark.parametrize("recipe, sets, cells", [
    # short prompts, bursts up to 64 (the recipe goes to 2048), small bursts repeated to 8 requests
    ("seed-short", ["load.burst=[1,4,64]", "min_samples=8"], 1 * 8 + 2 + 1),
    # long prompts: the recipe's 10,000 tokens cut to 1,500 so that the test stays short
    ("seed-long", ["load.burst=[1,2]", "workloads.sonnet10k.sonnet_input_len=1500", "min_samples=2",
                   "options.warmup_requests=1"], 2 + 1),
    # single long prompts: 4,096 tokens (the recipe's smallest is 16k), twice
    ("seed-single", ["workloads={in4k: {dataset: random, random_input_len: 4096, random_output_len: 128}}",
                     "repeats=2"], 2),
])
def test_seed_recipe_runs_against_a_launched_engine(recipe, sets, cells, tmp_path, capsys):
    root = tmp_path / recipe
    args = ["sweep", "--recipe", recipe, "--target", LAUNCH, "--output-dir", str(root), "--disable-tqdm"]
    for s in sets:
        args += ["--set", s]
    t0 = time.monotonic()
    assert main(args) == 0
    wall = time.monotonic() - t0
    out = capsys.readouterr()
    runs = results(root)
    assert len(runs) == cells
    # no request was refused: every one completed with its full output (ignore_eos)
    assert all(r["failed"] == 0 and r["completed"] == r["num_prompts"] for r in runs)
    assert all(r["total_output_tokens"] == 128 * r["completed"] for r in runs)
    # the server was started with the limits the cells need
    (startup,) = [json.loads(p.read_text()) for p in (root / "servers").glob("llama-*.json")]
    argv = startup["provenance"]["command"]
    longest = max(r["total_input_tokens"] / r["completed"] for r in runs) + 128
    slots = int(argv[argv.index("--parallel") + 1])
    assert slots == max(r["num_prompts"] for r in runs)
    assert int(argv[argv.index("--ctx-size") + 1]) // slots >= longest
    # one warm-up (the recipe's) for the whole sweep, and the efficiency in the summary and the store
    warmed = [r for r in runs if r["infermeter"]["load"]["warmup_requests"]]
    assert len(warmed) == 1
    (sweep,) = Store(root).sweeps()
    assert sweep["warmup_cells"] == 1 and sweep["cells_run"] == cells
    assert 0 < sweep["efficiency"] <= 1 and f"efficiency {sweep['efficiency'] * 100:.1f} %" in out.out
    print(f"{recipe} reduced: {cells} cells in {wall:.1f} s, efficiency {sweep['efficiency'] * 100:.1f} %")


def test_warm_up_once_per_workload_and_repeats_until_min_samples(test_server, tokenizer_dir, tmp_path, capsys):
    server = test_server(ttft_ms=5, itl_ms=1)
    target = {"url": server.base_url, "backend": "vllm", "model": "test-model", "tokenizer": str(tokenizer_dir)}
    data = {"name": "warm", "output_dir": str(tmp_path / "warm"), "targets": {"s": target},
            "workloads": {"a": {"dataset": "random", "random_input_len": 16, "random_output_len": 4},
                          "b": {"dataset": "random", "random_input_len": 32, "random_output_len": 4}},
            "load": {"burst": [1, 8]}, "min_samples": 4, "options": {"warmup_requests": 3}}
    outcome = run_sweep(spec_from_data(data))
    assert outcome.complete and len(outcome.done) == 2 * (4 + 1)
    store = Store(tmp_path / "warm")
    warmups = {r["cell_id"]: store.read_cell(r["cell_id"])["warmup_requests"] for r in store.rows()}
    assert warmups["s.a.burst-1.r0"] == 3 and warmups["s.b.burst-1.r0"] == 3
    assert sum(warmups.values()) == 6  # no other cell warmed up
    assert outcome.warmups == 2 and outcome.measured_s > 0 and 0 < outcome.efficiency < 1
    assert Store(tmp_path / "warm").sweeps()[0]["efficiency"] == round(outcome.efficiency, 4)
    # ls and show give each repeated point's mean with its interval
    assert main(["ls", str(tmp_path / "warm"), "--points"]) == 0
    out = capsys.readouterr().out
    assert "s.a.burst-1     4         4" in out and "±" in out and "s.a.burst-8" not in out
    assert main(["show", str(tmp_path / "warm"), "s.b.burst-1"]) == 0
    assert "s.b.burst-1" in capsys.readouterr().out
    # a resumed sweep with a budget already spent runs no further extra repeats
    data["min_samples"], data["repeat_budget_s"] = 6, 1e-6
    outcome = run_sweep(spec_from_data(data), resume=True)
    assert outcome.done == [] and len(outcome.not_run) == 4 and outcome.complete
