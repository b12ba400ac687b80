"""cli.summary: the run's summary block."""

from __future__ import annotations

from infermeter.cli.summary import efficiency_lines


def test_energy_and_cost_with_nothing_measured_is_one_short_row():
    # A CPU machine with no price: before, three n/a rows and an 8-line list of missing GPU libraries.
    eff = {"output_throughput_per_gpu": None, "energy_per_output_token_j": None,
           "usd_per_million_output_tokens": None,
           "reasons": {"per_gpu": "GPU count unknown: no GPU telemetry or launch profile; give --gpu-count",
                       "energy": "no GPU telemetry (nvml: nvidia-ml-py is not installed (ModuleNotFoundError: No "
                                 "module named 'pynvml'); pip install nvidia-ml-py; nvidia-smi: nvidia-smi is not "
                                 "on PATH; amdsmi: amdsmi does not import)",
                       "cost": "no price: give --gpu-price PER_HOUR --gpu-price-per gpu|node, or --dstack-run NAME"}}
    lines: list[str] = []
    efficiency_lines(eff, lines)
    assert lines[1].split()[-1] == "n/a" and lines[1].startswith("Per GPU, energy, cost")
    text = " ".join(x.strip() for x in lines[2:])
    assert "no GPU telemetry" in text and "nvml" not in text and "--gpu-price" in text
    assert text.count("no GPU telemetry") == 1  # the per-GPU reason already says it
    assert max(len(x) for x in lines) <= 80 and len(lines) <= 6


def test_a_measured_figure_keeps_its_rows():
    eff = {"output_throughput_per_gpu": 100.0, "gpu_count": 2, "gpu_count_source": "--gpu-count",
           "energy_per_output_token_j": None, "usd_per_million_output_tokens": None,
           "reasons": {"energy": "no GPU telemetry", "cost": "no price"}}
    lines: list[str] = []
    efficiency_lines(eff, lines)
    assert any(x.startswith("Output tok/s per GPU") and "100.00" in x for x in lines)
    assert any(x.startswith("Energy per output token (J)") and x.endswith("n/a") for x in lines)
