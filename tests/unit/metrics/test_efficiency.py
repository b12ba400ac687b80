"""Energy, cost and per-GPU throughput (docs/cost.md): fake NVML and amdsmi counters and a
recorded NVML series give known joules; the arithmetic against a hand computation; the
dstack price read through dstack's own Run model; every n/a with its reason."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from infermeter.errors import FieldError
from infermeter.metrics.efficiency import GpuCount, Price, efficiency
from infermeter.runner.efficiency import efficiency_for
from infermeter.runner.spec import RunSpec
from infermeter.telemetry import read_series
from infermeter.telemetry.amd import AmdSmiLibSampler
from infermeter.telemetry.energy import window_energy
from infermeter.telemetry.nvidia import NvmlSampler
from infermeter.telemetry.session import _gpu_totals
from infermeter.telemetry.summary import summarize_gpus

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "telemetry"
T0 = 1_700_000_000.0
GIB = 1024**3


class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def fake_nvml(counter_mj: list[int], power_mw: int = 350_000) -> types.ModuleType:
    """One GPU whose energy counter reads the next value of ``counter_mj`` at each sample."""
    nv = types.ModuleType("pynvml")
    values = iter(counter_mj)
    probing = {"done": False}

    def energy(h):
        if not probing["done"]:  # the probe in open(): a value, not consumed from the series
            probing["done"] = True
            return counter_mj[0]
        return next(values)

    nv.nvmlInit = nv.nvmlShutdown = lambda: None
    nv.nvmlDeviceGetCount = lambda: 1
    nv.nvmlSystemGetDriverVersion = lambda: "550.90.07"
    nv.nvmlDeviceGetHandleByIndex = lambda i: f"h{i}"
    nv.nvmlDeviceGetName = lambda h: "NVIDIA H100 80GB HBM3"
    nv.nvmlDeviceGetUUID = lambda h: "GPU-0"
    nv.nvmlDeviceGetMemoryInfo = lambda h, version=None: _Obj(total=80 * GIB, used=GIB, free=79 * GIB)
    nv.nvmlDeviceGetUtilizationRates = lambda h: _Obj(gpu=90, memory=50)
    nv.nvmlDeviceGetPowerUsage = lambda h: power_mw
    nv.nvmlDeviceGetTotalEnergyConsumption = energy
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: []
    return nv


def fake_amdsmi(accumulators: list[int], resolution_uj: float = 15.3) -> types.ModuleType:
    lib = types.ModuleType("amdsmi")
    values = iter(accumulators)
    lib.amdsmi_init = lambda flags=None: None
    lib.amdsmi_shut_down = lambda: None
    lib.amdsmi_get_processor_handles = lambda: ["h0"]
    lib.amdsmi_get_gpu_asic_info = lambda h: {"market_name": "AMD Instinct MI300X"}
    lib.amdsmi_get_gpu_vram_usage = lambda h: {"vram_used": 1000, "vram_total": 196592}
    lib.amdsmi_get_gpu_activity = lambda h: {"gfx_activity": 91}
    lib.amdsmi_get_power_info = lambda h: {"average_socket_power": 640}
    lib.amdsmi_get_energy_count = lambda h: {"energy_accumulator": next(values), "counter_resolution": resolution_uj}
    lib.amdsmi_get_gpu_process_list = lambda h: []
    return lib


def _sampled(sampler, times: list[float]) -> list[dict]:
    out = []
    for t in times:
        for s in sampler.sample():
            s["t"] = t
            out.append(s)
    return out


def test_fake_nvml_counter_gives_known_joules(monkeypatch):
    # mJ at t = 0, 1, 2, 3: 350 J a second
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml([1_000_000, 1_350_000, 1_700_000, 2_050_000]))
    s = NvmlSampler()
    assert s.probe().available
    samples = _sampled(s, [T0, T0 + 1, T0 + 2, T0 + 3])
    (g,) = summarize_gpus(samples, window=(T0 + 0.5, T0 + 2.5), origin=T0, intervals={"nvml": 1.0}).values()
    # by hand: counter at 0.5 s = 1175 J, at 2.5 s = 1875 J
    assert g["window"]["energy_method"] == "energy-counter"
    assert g["window"]["energy_j"] == pytest.approx(700.0)


def test_fake_amdsmi_counter_gives_known_joules(monkeypatch):
    # counts x 15.3 uJ: 0, 20e6 counts (306 J), 40e6 (612 J) at t = 0, 1, 2
    monkeypatch.setitem(sys.modules, "amdsmi", fake_amdsmi([0, 20_000_000, 40_000_000]))
    s = AmdSmiLibSampler()
    assert s.probe().available
    samples = _sampled(s, [T0, T0 + 1, T0 + 2])
    (g,) = summarize_gpus(samples, window=(T0, T0 + 2), origin=T0, intervals={"amdsmi": 1.0}).values()
    assert g["window"]["energy_method"] == "energy-counter"
    assert g["window"]["energy_j"] == pytest.approx(612.0)


def test_recorded_nvml_series_gives_known_joules():
    """Recorded by TelemetrySession (0.1 s interval) from an NVML whose counter grows 350 J a
    second and whose power reads 350 W: the window's energy is 350 W x its duration."""
    meta, samples = read_series(FIXTURES / "nvml_series.telemetry.jsonl")
    w = meta["window"]
    window = (w["start_epoch"], w["end_epoch"])
    (g,) = summarize_gpus(samples, window=window, origin=window[0], intervals={"nvml": 0.1}).values()
    assert g["window"]["energy_method"] == "energy-counter"
    assert g["window"]["energy_j"] == pytest.approx(350.0 * w["duration_s"], abs=0.01)
    power = [(s["t"], s["power_w"]) for s in samples]
    got = window_energy([], power, *window, interval=0.1)
    assert got.method == "power-integral" and got.joules == pytest.approx(350.0 * w["duration_s"], abs=0.01)
    # the same series with 1.5 s of its samples lost: n/a with the gap named, not a guess
    holed = [s for s in samples if not window[0] + 0.2 < s["t"] < window[0] + 1.7]
    (h,) = summarize_gpus(holed, window=window, origin=window[0], intervals={"nvml": 0.1}).values()
    assert h["window"]["energy_j"] is None and h["window"]["energy_method"] is None
    assert "gap" in h["window"]["energy_na"]
    totals = _gpu_totals({"0": h}, output_tokens=1000)
    assert totals["window_energy_j"] is None and "GPU 0" in totals["energy_na"]


def test_the_gap_rule():
    pts = [(T0 + t * 0.5, 400.0) for t in range(9)]  # every 0.5 s over 4 s
    assert window_energy([], pts, T0, T0 + 4, interval=0.5).joules == pytest.approx(1600.0)
    # 1.0 s between samples at a 0.5 s interval: under 2.5 intervals, not a gap
    assert window_energy([], pts[:3] + pts[4:], T0, T0 + 4, interval=0.5).joules == pytest.approx(1600.0)
    # 1.5 s at 0.5 s: over 2.5 intervals and at least 1 s: a gap
    gap = window_energy([], pts[:3] + pts[5:], T0, T0 + 4, interval=0.5)
    assert gap.joules is None and "1.50 s gap" in gap.reason
    # 0.5 s and 0.9 s at a 0.1 s interval: over 2.5 intervals but under 1 s: not a gap; 1.2 s is one
    fast = [(T0 + t * 0.1, 400.0) for t in range(41)]
    assert window_energy([], fast[:10] + fast[15:], T0, T0 + 4, interval=0.1).joules == pytest.approx(1600.0)
    assert window_energy([], fast[:10] + fast[18:], T0, T0 + 4, interval=0.1).joules == pytest.approx(1600.0)
    assert window_energy([], fast[:10] + fast[21:], T0, T0 + 4.0, interval=0.1).joules is None
    # the counter is used across no gap either; a window without a sample after its end is n/a
    counter = [(T0 + t, 400.0 * t) for t in range(5)]
    assert window_energy(counter, [], T0, T0 + 4, interval=1.0).method == "energy-counter"
    late = window_energy(counter, [], T0, T0 + 4.5, interval=1.0)
    assert late.joules is None and "before the window's end" in late.reason


RESULT = {"total_output_tokens": 20_000, "completed": 100, "output_throughput": 1000.0,
          "total_token_throughput": 3000.0}


def _telemetry(joules: float | None, gpus: int = 2, **gpu) -> dict:
    return {"enabled": True, "window": {"duration_s": 20.0},
            "gpu": {"available": True, "devices": {str(i): {} for i in range(gpus)}, "window_energy_j": joules,
                    "energy_method": "energy-counter", **gpu}}


def test_arithmetic_against_a_hand_computation():
    # 2 GPUs at $2.50 an hour each: $5/h; 1000 output tok/s -> 3.6M tokens an hour -> $1.3889/Mtok
    block = efficiency(RESULT, _telemetry(12_000.0), Price(2.5, "gpu", "--gpu-price"), GpuCount(2, "telemetry"))
    assert block["node_usd_per_hour"] == 5.0
    assert block["usd_per_million_output_tokens"] == pytest.approx(5.0 / 3.6, rel=1e-5)
    assert block["usd_per_million_total_tokens"] == pytest.approx(5.0 / 10.8, rel=1e-5)
    assert block["output_throughput_per_gpu"] == 500.0
    assert block["energy_per_output_token_j"] == pytest.approx(0.6)  # 12 kJ / 20k tokens
    assert block["output_tokens_per_joule"] == pytest.approx(20_000 / 12_000, rel=1e-5)
    assert block["energy_per_request_j"] == pytest.approx(120.0)
    assert block["mean_power_w"] == pytest.approx(600.0)  # 12 kJ over 20 s, both GPUs
    assert block["energy_method"] == "energy-counter"
    assert block["price"] == {"per_hour": 2.5, "per": "gpu", "source": "--gpu-price"}
    assert block["reasons"] == {}
    node = efficiency(RESULT, _telemetry(12_000.0), Price(8.0, "node", "--gpu-price"), GpuCount(2, "telemetry"))
    assert node["node_usd_per_hour"] == 8.0  # a node price is not multiplied by the GPUs
    assert node["usd_per_million_output_tokens"] == pytest.approx(8.0 / 3.6, rel=1e-5)


def test_not_available_with_reasons():
    block = efficiency(RESULT, {"enabled": False}, None, GpuCount(None))
    assert block["energy_per_output_token_j"] is None and "telemetry was off" in block["reasons"]["energy"]
    assert block["usd_per_million_output_tokens"] is None and "no price" in block["reasons"]["cost"]
    assert block["output_throughput_per_gpu"] is None and "--gpu-count" in block["reasons"]["per_gpu"]
    holed = efficiency(RESULT, _telemetry(None, energy_na="GPU 0: power: samples missing"),
                       Price(2.5, "gpu", "--gpu-price"), GpuCount(None))
    assert holed["energy_j"] is None and "samples missing" in holed["reasons"]["energy"]
    assert holed["usd_per_million_output_tokens"] is None  # per GPU price, no count
    assert "GPU count is unknown" in holed["reasons"]["cost"]
    nogpu = efficiency(RESULT, {"enabled": True, "window": {"duration_s": 1.0},
                                "gpu": {"available": False, "reason": "nvml: not installed"}}, None, GpuCount(None))
    assert "no GPU telemetry (nvml: not installed)" in nogpu["reasons"]["energy"]


def test_run_options_state_the_price_basis():
    from infermeter.runner.plan import resolve

    with pytest.raises(FieldError, match="add cost.gpu_price_per gpu") as info:
        resolve(RunSpec.from_flat(dict(gpu_price=2.5)))
    assert info.value.field == "cost.gpu_price_per"
    with pytest.raises(FieldError, match="positive"):
        resolve(RunSpec.from_flat(dict(gpu_price=-1, gpu_price_per="gpu")))
    with pytest.raises(FieldError, match="both give the price"):
        resolve(RunSpec.from_flat(dict(gpu_price=2.5, gpu_price_per="node", dstack_run="vllm")))
    spec = RunSpec.from_flat(dict(gpu_price=2.5, gpu_price_per="gpu", gpu_count=4))
    block = efficiency_for({**RESULT, "infermeter": {"telemetry": _telemetry(1000.0, gpus=8)}}, spec)
    assert block["gpu_count"] == 4 and block["gpu_count_source"] == "--gpu-count"  # stated beats telemetry
    assert block["node_usd_per_hour"] == 10.0
    assert "summed over the 8 GPUs sampled" in block["energy_note"]
    launched = RunSpec.from_flat(dict(gpu_price=2.5, gpu_price_per="gpu", launch_gpu_count=2, cell_id="t.w.burst-1.r0"))
    block = efficiency_for({**RESULT, "infermeter": {"telemetry": _telemetry(1000.0, gpus=8)}}, launched)
    assert (block["gpu_count"], block["gpu_count_source"]) == (2, "launch profile")
    assert block["price"]["source"] == "spec"


# ---------------------------------------------------------------------- dstack
def _dstack_run_doc(price: float, gpus: int, jobs: int = 1) -> dict:
    """A ``dstack run get --json`` document built from dstack's own API objects."""
    pytest.importorskip("dstack")
    import datetime
    import json
    import uuid

    import gpuhunt
    from dstack._internal.core.models.backends.base import BackendType
    from dstack._internal.core.models.configurations import TaskConfiguration
    from dstack._internal.core.models.instances import Gpu, InstanceType, Resources
    from dstack._internal.core.models.resources import ResourcesSpec
    from dstack._internal.core.models.runs import (Job, JobProvisioningData, JobSpec, JobStatus, JobSubmission,
                                                   Requirements, Run, RunSpec as DstackRunSpec, RunStatus)

    now = datetime.datetime.now(datetime.timezone.utc)
    gpu = Gpu(name="H100", memory_mib=81920, vendor=gpuhunt.AcceleratorVendor.NVIDIA)
    job_list = []
    for n in range(jobs):
        data = JobProvisioningData(backend=BackendType.AWS, region="us-east-1", price=price, username="ubuntu",
                                   dockerized=True, instance_id=f"i-{n}",
                                   instance_type=InstanceType(name="p5.48xlarge", resources=Resources(
                                       cpus=192, memory_mib=2_048_000, spot=False, gpus=[gpu] * gpus)))
        sub = JobSubmission(id=uuid.uuid4(), submission_num=0, submitted_at=now, last_processed_at=now,
                            status=JobStatus.RUNNING, job_provisioning_data=data, finished_at=None,
                            termination_reason=None, exit_status=None, job_runtime_data=None)
        spec = JobSpec(job_num=n, job_name=f"vllm-h100-0-{n}", commands=["vllm serve"], env={},
                       image_name="vllm/vllm-openai:v0.11.0", requirements=Requirements(resources=ResourcesSpec()))
        job_list.append(Job(job_spec=spec, job_submissions=[sub]))
    run = Run(id=uuid.uuid4(), project_name="main", user="admin", submitted_at=now, last_processed_at=now,
              status=RunStatus.RUNNING, jobs=job_list, latest_job_submission=job_list[-1].job_submissions[-1],
              run_spec=DstackRunSpec(run_name="vllm-h100", configuration=TaskConfiguration(
                  commands=["vllm serve"], image="vllm/vllm-openai:v0.11.0")))
    return json.loads(run.model_dump_json())


def test_dstack_offer_price_through_dstacks_models():
    from infermeter.servers.dstack_price import offer_of

    offer = offer_of(_dstack_run_doc(98.32, 8))
    assert (offer.run, offer.price_per_hour, offer.gpus) == ("vllm-h100", 98.32, 8)
    assert offer.jobs[0]["backend"] == "aws" and offer.jobs[0]["instance"] == "p5.48xlarge"
    two = offer_of(_dstack_run_doc(98.32, 8, jobs=2))  # two nodes: both offers are paid
    assert (two.price_per_hour, two.gpus) == (pytest.approx(196.64), 16)
    broken = offer_of({"status": "running", "run_spec": {"run_name": "x"}})
    assert broken.price_per_hour is None and "Run model refused" in broken.reason


def test_dstack_price_in_the_result():
    from infermeter.servers.dstack_price import offer_of

    doc = _dstack_run_doc(98.32, 8)
    calls = []

    def read(name, project):
        calls.append((name, project))
        return offer_of(doc, name)

    spec = RunSpec.from_flat(dict(dstack_run="main/vllm-h100"))
    block = efficiency_for({**RESULT, "infermeter": {"telemetry": _telemetry(None)}}, spec, read_dstack=read)
    assert calls == [("vllm-h100", "main")]
    assert block["price"]["source"] == "dstack" and block["price"]["per"] == "node"
    assert block["price"]["dstack_run"] == "vllm-h100" and block["price"]["per_hour"] == 98.32
    assert (block["gpu_count"], block["gpu_count_source"]) == (8, "dstack offer")
    # $98.32/h at 1000 tok/s: 98.32 / 3.6 dollars per million output tokens
    assert block["usd_per_million_output_tokens"] == pytest.approx(98.32 / 3.6, rel=1e-5)
    assert block["output_throughput_per_gpu"] == 125.0
    pending = efficiency_for(RESULT, spec, read_dstack=lambda n, p: offer_of({}, n))
    assert pending["usd_per_million_output_tokens"] is None and "dstack" in pending["reasons"]["cost"]


# ---------------------------------------------------------------------- where the figures are read
def _run_result(j_per_tok: float | None, usd: float | None, *, tput: float = 1000.0, target: str = "a") -> dict:
    reasons = {} if usd is not None else {"cost": "no price: give --gpu-price"}
    return {"completed": 10, "failed": 0, "num_prompts": 10, "duration": 10.0, "total_output_tokens": 80,
            "request_throughput": 1.0, "output_throughput": tput, "total_token_throughput": 2 * tput,
            "backend": "vllm", "model_id": "m", "ttfts": [0.1] * 10, "itls": [[0.01] * 7] * 10, "errors": [""] * 10,
            "infermeter": {"work": {"exact": True}, "validity": {"label": "VALID", "reasons": []},
                           "load": {"mode": "concurrency", "value": 8}, "target": {"name": target},
                           "efficiency": {"output_throughput_per_gpu": tput / 2, "energy_per_output_token_j": j_per_tok,
                                         "output_tokens_per_joule": 1 / j_per_tok if j_per_tok else None,
                                         "usd_per_million_output_tokens": usd, "reasons": reasons}}}


def test_compare_judges_the_figures_over_repeats(tmp_path):
    import json

    from infermeter.reports.compare import compare_groups
    from infermeter.reports.compare_sides import Group, load_runs

    def runs(prefix: str, values: list[tuple[float, float | None]]) -> Group:
        out = []
        for i, (j, usd) in enumerate(values):
            path = tmp_path / f"{prefix}{i}.json"
            path.write_text(json.dumps(_run_result(j, usd)))
            out.extend(load_runs(str(path)))
        return Group(("x",), out)

    a = runs("a", [(0.50, 1.0), (0.51, 1.01), (0.49, 0.99)])
    b = runs("b", [(0.40, None), (0.41, None), (0.39, None)])
    comp = compare_groups(a, b)  # the default keys take the figures either side has
    energy = comp.verdict("energy_per_output_token_j")
    assert energy.verdict == "better" and "Welch" in energy.method  # less energy per token is better
    cost = comp.verdict("usd_per_million_output_tokens")
    assert cost.verdict == "no verdict" and cost.reason == "n/a in B: no price: give --gpu-price"
    assert cost.a == pytest.approx(1.0) and cost.b is None  # shown, without a verdict
    single = compare_groups(Group(("x",), a.runs[:1]), Group(("x",), b.runs[:1]))
    assert "2+ repeats" in single.verdict("energy_per_output_token_j").reason


def test_store_columns_report_tables_and_chart(tmp_path):
    from infermeter.cli.store_cmd import format_table
    from infermeter.experiments.store import headline
    from infermeter.reports.data import cell_from_result
    from infermeter.reports.efficiency_charts import efficiency_charts
    from infermeter.reports.tables import all_cells_table, comparison_tables

    row = headline(_run_result(0.0123, 2.5))
    assert row["energy_per_output_token_j"] == 0.0123 and row["usd_per_million_output_tokens"] == 2.5
    assert row["output_throughput_per_gpu"] == 500.0
    table = format_table([{"cell_id": "c", **row}, {"cell_id": "d", **headline(_run_result(None, None))}])
    head = table[0].split()
    assert head[-4:] == ["tok/s/GPU", "J/tok", "$/Mtok", "flags"]
    assert table[1].split()[-3:] == ["500", "0.0123", "2.5"] and table[2].split()[-3:] == ["500", "-", "-"]
    cells = []
    for target, scale in (("a", 1.0), ("b", 1.5)):
        for c in (1, 4):
            r = _run_result(0.01 * scale * c, 2.0 * scale / c, target=target)
            r["infermeter"]["load"] = {"mode": "concurrency", "value": c}
            cells.append(cell_from_result(r, {"cell_id": f"{target}.w.concurrency-{c}.r0", "target": target,
                                              "workload": "w", "load_mode": "concurrency", "load_value": c,
                                              "repeat": 0}))
    all_cells = all_cells_table(cells)
    assert all_cells.columns[-4:] == ["tok/s per GPU", "J/token", "$/Mtok", "flags"]
    assert all_cells.rows[0][-3][0] == "0.01"  # three significant digits, not rounded away
    titles = {t.metric: t for t in comparison_tables(cells)}
    assert "energy_per_output_token_j" in titles and "usd_per_million_output_tokens" in titles
    assert titles["usd_per_million_output_tokens"].note.startswith("lower is better")
    (chart,) = efficiency_charts(cells)
    assert chart.id == "efficiency-w-concurrency" and chart.png.startswith(b"\x89PNG")
    assert efficiency_charts([cell_from_result(_run_result(None, None), {"cell_id": "x", "target": "a",
                                                                         "workload": "w"})]) == []


def test_sweep_targets_state_price_and_gpus():
    from infermeter.experiments.cells import build_plan, fingerprint, runspec_from_settings
    from infermeter.experiments.spec import ExperimentSpec

    def spec(**target) -> ExperimentSpec:
        return ExperimentSpec.model_validate({
            "name": "e", "targets": {"t": {"url": "http://127.0.0.1:8000", **target}},
            "workloads": {"w": {"dataset": "random"}}, "load": {"burst": [1]}})

    with pytest.raises(ValueError, match="gpu_price needs gpu_price_per"):
        spec(gpu_price=2.0)
    (cell,) = build_plan(spec(gpu_price=2.0, gpu_price_per="gpu", gpu_count=4))
    run = runspec_from_settings(cell.settings, base_url="http://127.0.0.1:8000", tokenizer=None, result_dir="r")
    assert (run.cost.gpu_price, run.cost.gpu_price_per, run.cost.gpu_count) == (2.0, "gpu", 4)
    (plain,) = build_plan(spec())
    assert fingerprint(cell.settings) == fingerprint(plain.settings)  # a price is not what is measured


def test_dstack_run_get_through_the_cli(tmp_path, monkeypatch):
    import json
    import os

    from infermeter.runner.efficiency import read_offer

    doc = tmp_path / "run.json"
    doc.write_text(json.dumps(_dstack_run_doc(12.5, 1)))
    script = tmp_path / "dstack"
    script.write_text(f"#!{sys.executable}\nimport sys\nargs = sys.argv[1:]\n"
                      f"if args[:2] == ['run', 'get'] and args[2] == 'vllm-h100':\n"
                      f"    print(open({str(doc)!r}).read()); sys.exit(0)\n"
                      f"print('Run vllm-x not found'); sys.exit(1)\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    offer = read_offer("vllm-h100")
    assert (offer.price_per_hour, offer.gpus, offer.reason) == (12.5, 1, None)
    missing = read_offer("vllm-x")
    assert missing.price_per_hour is None and "not found" in missing.reason
