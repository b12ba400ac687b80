"""Launch profiles: every backend x vendor renders its own flags with explicit values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from infermeter.backends import get_backend
from infermeter.errors import UserError
from infermeter.servers import PROFILES, ServerSettings, Vendor, get_profile
from infermeter.backends.launch import NA

SETTINGS = dict(model="meta-llama/Llama-3.1-8B-Instruct", tensor_parallel=2, max_model_len=8192,
                memory_fraction=0.85, max_batch=64, max_batched_tokens=4096, port=8123, dtype="bfloat16")
COMBOS = [(p, v) for p in PROFILES for v in PROFILES[p].vendors]


def settings(profile: str, vendor: Vendor, **kw) -> ServerSettings:
    base = dict(SETTINGS)
    if profile == "transformers" or vendor is Vendor.CPU:
        base["tensor_parallel"] = 1
    if profile == "llama.cpp":
        base.pop("dtype")
    base.update(kw)
    return ServerSettings(**base)


def pairs(argv: list[str]) -> dict[str, str]:
    """{flag: following word} for every --flag in argv."""
    return {a: argv[i + 1] for i, a in enumerate(argv[:-1]) if a.startswith("-")}


EXPECTED = {  # flag -> value, for SETTINGS (tp 2 on GPUs)
    "vllm": {"--tensor-parallel-size": "2", "--max-model-len": "8192", "--gpu-memory-utilization": "0.85",
             "--max-num-seqs": "64", "--max-num-batched-tokens": "4096", "--port": "8123", "--dtype": "bfloat16",
             "--served-model-name": "meta-llama/Llama-3.1-8B-Instruct"},
    "tgi": {"--num-shard": "2", "--max-total-tokens": "8192", "--max-input-tokens": "8191",
            "--cuda-memory-fraction": "0.85", "--max-concurrent-requests": "64", "--port": "8123",
            "--model-id": "meta-llama/Llama-3.1-8B-Instruct", "--dtype": "bfloat16",
            "--max-batch-prefill-tokens": "8191"},
    "sglang": {"--tp-size": "2", "--context-length": "8192", "--mem-fraction-static": "0.85",
               "--max-running-requests": "64", "--chunked-prefill-size": "4096", "--port": "8123",
               "--model-path": "meta-llama/Llama-3.1-8B-Instruct", "--dtype": "bfloat16"},
    "llama.cpp": {"--parallel": "64", "--ctx-size": str(8192 * 64), "--batch-size": "4096", "--ubatch-size": "512",
                  "--port": "8123"},
    "transformers": {"--cb-max-batch-tokens": "4096", "--port": "8123", "--dtype": "bfloat16"},
}


@pytest.mark.parametrize("name,vendor", COMBOS, ids=[f"{p}-{v.value}" for p, v in COMBOS])
def test_every_profile_renders_its_mapped_flags_with_explicit_values(name, vendor):
    prof = PROFILES[name]
    cmd = prof.command(settings(name, vendor), vendor)
    got = pairs(cmd.argv)
    expected = dict(EXPECTED[name])
    if vendor is Vendor.CPU or name == "transformers":
        expected.pop("--tensor-parallel-size", None)
    for flag, value in expected.items():
        assert got.get(flag) == value, (flag, cmd.shell)
    # the settings every comparison depends on are recorded, applied or explained
    for key in ("model", "port", "tensor_parallel", "max_model_len", "memory_fraction", "max_batch",
                "max_batched_tokens", "prefix_caching"):
        assert key in cmd.applied, (name, key)
    assert cmd.argv[:len(prof.program)] == list(prof.program)


@pytest.mark.parametrize("name", ["vllm", "tgi", "sglang"])
def test_memory_and_batching_are_passed_even_at_default_values(name):
    """vLLM's own defaults moved (gpu_memory_utilization 0.9 -> 0.92; max_num_seqs per GPU): never rely on them."""
    cmd = PROFILES[name].command(ServerSettings(model="m/x"), Vendor.NVIDIA)
    flat = " ".join(cmd.argv)
    mem = {"vllm": "--gpu-memory-utilization 0.9", "tgi": "--cuda-memory-fraction 0.9",
           "sglang": "--mem-fraction-static 0.9"}[name]
    batch = {"vllm": "--max-num-seqs 128", "tgi": "--max-concurrent-requests 128",
             "sglang": "--max-running-requests 128"}[name]
    ctx = {"vllm": "--max-model-len 4096", "tgi": "--max-total-tokens 4096", "sglang": "--context-length 4096"}[name]
    for text in (mem, batch, ctx):
        assert text in flat, (text, flat)


@pytest.mark.parametrize("name,on,off", [
    ("vllm", ["--enable-prefix-caching"], ["--no-enable-prefix-caching"]),
    ("sglang", [], ["--disable-radix-cache"]),
    ("llama.cpp", ["--cache-prompt"], ["--no-cache-prompt"]),
])
def test_prefix_caching_flags(name, on, off):
    prof = PROFILES[name]
    vendor = prof.vendors[0]
    argv_on = prof.command(settings(name, vendor, prefix_caching=True), vendor).argv
    argv_off = prof.command(settings(name, vendor, prefix_caching=False), vendor).argv
    for flag in on:
        assert flag in argv_on and flag not in argv_off
    for flag in off:
        assert flag in argv_off and flag not in argv_on


def test_tgi_prefix_caching_is_an_environment_variable():
    on = PROFILES["tgi"].command(settings("tgi", Vendor.AMD, prefix_caching=True), Vendor.AMD)
    off = PROFILES["tgi"].command(settings("tgi", Vendor.AMD), Vendor.AMD)
    assert on.env["PREFIX_CACHING"] == "1" and off.env["PREFIX_CACHING"] == "0"


def test_metrics_are_switched_on_where_a_flag_is_needed():
    assert "--enable-metrics" in PROFILES["sglang"].command(settings("sglang", Vendor.NVIDIA), Vendor.NVIDIA).argv
    assert "--metrics" in PROFILES["llama.cpp"].command(settings("llama.cpp", Vendor.CPU), Vendor.CPU).argv
    assert PROFILES["sglang"].metrics_flag == "--enable-metrics" and PROFILES["llama.cpp"].metrics_flag == "--metrics"
    assert PROFILES["vllm"].metrics_flag is None and PROFILES["vllm"].metrics_path == "/metrics"


def test_llama_cpp_gpu_layers_and_split_follow_the_vendor():
    prof = PROFILES["llama.cpp"]
    cpu = pairs(prof.command(settings("llama.cpp", Vendor.CPU), Vendor.CPU).argv)
    amd = pairs(prof.command(settings("llama.cpp", Vendor.AMD), Vendor.AMD).argv)
    nv1 = pairs(prof.command(settings("llama.cpp", Vendor.NVIDIA, tensor_parallel=1), Vendor.NVIDIA).argv)
    assert cpu["--n-gpu-layers"] == "0" and "--split-mode" not in cpu
    assert amd["--n-gpu-layers"] == "999" and amd["--split-mode"] == "row"
    assert nv1["--split-mode"] == "none"
    with pytest.raises(UserError, match="tensor parallelism"):
        prof.command(ServerSettings(model="x.gguf", tensor_parallel=2), Vendor.CPU)


def test_llama_cpp_names_a_local_gguf_by_its_stem_and_a_repo_by_hf_repo(tmp_path):
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    prof = PROFILES["llama.cpp"]
    local = pairs(prof.command(ServerSettings(model=str(gguf)), Vendor.CPU).argv)
    assert local["--model"] == str(gguf) and local["--alias"] == "tiny"
    inside = pairs(prof.command(ServerSettings(model=str(gguf)), Vendor.CPU, container=True).argv)
    assert inside["--model"] == "/models/tiny.gguf"
    repo = pairs(prof.command(ServerSettings(model="ggml-org/gemma-3-1b-it-GGUF"), Vendor.CPU).argv)
    assert repo["--hf-repo"] == "ggml-org/gemma-3-1b-it-GGUF" and "--model" not in repo


def test_transformers_serve_shape():
    prof = PROFILES["transformers"]
    cmd = prof.command(ServerSettings(model="Qwen/Qwen3-0.6B", revision="abc123"), Vendor.NVIDIA)
    assert cmd.argv[:3] == ["transformers", "serve", "Qwen/Qwen3-0.6B@abc123"]
    assert "--continuous-batching" in cmd.argv and pairs(cmd.argv)["--cb-max-memory-percent"] == "0.9"
    assert cmd.applied["max_model_len"].startswith(NA) and cmd.applied["prefix_caching"].startswith(NA)
    assert prof.request_fields() == {"backend": "transformers", "endpoint": "/v1/chat/completions",
                                     "ignore_eos": False}
    with pytest.raises(UserError, match="one device"):
        prof.command(ServerSettings(model="m", tensor_parallel=2), Vendor.NVIDIA)
    container = prof.command(ServerSettings(model="m"), Vendor.AMD, container=True)
    assert container.setup and "transformers[serving]==" in container.setup[0]
    assert container.script()[-1].startswith("exec transformers serve m ")


def test_tgi_raises_prefill_budget_to_the_input_limit_and_says_so():
    cmd = PROFILES["tgi"].command(ServerSettings(model="m", max_model_len=32768, max_batched_tokens=8192),
                                  Vendor.NVIDIA)
    assert pairs(cmd.argv)["--max-batch-prefill-tokens"] == "32767"
    assert any("raised to 32767" in n for n in cmd.notes)
    with pytest.raises(UserError, match="float16 or bfloat16"):
        PROFILES["tgi"].command(ServerSettings(model="m", dtype="float32"), Vendor.NVIDIA)


def test_fixed_output_length_and_info_endpoints_agree_with_the_client_backends():
    assert PROFILES["vllm"].fixed_length == "ignore_eos + max_tokens"
    assert PROFILES["sglang"].ignore_eos and PROFILES["llama.cpp"].ignore_eos
    assert PROFILES["tgi"].fixed_length.startswith("none") and not PROFILES["tgi"].ignore_eos
    assert PROFILES["transformers"].fixed_length.startswith("none")
    for name, path in {"vllm": "/version", "tgi": "/info", "sglang": "/get_server_info", "llama.cpp": "/props"}.items():
        assert PROFILES[name].info_path == path == get_backend(PROFILES[name].backend).version_path


@pytest.mark.parametrize("name", ["vllm", "tgi", "sglang"])
def test_the_linter_reads_back_tp_and_port_from_each_rendered_command(name):
    prof = PROFILES[name]
    cmd = prof.command(settings(name, Vendor.NVIDIA, tensor_parallel=4, port=9001), Vendor.NVIDIA)
    assert prof.flag_value(cmd.argv, prof.tp_flags) == "4"
    assert prof.flag_value(cmd.argv, prof.port_flags) == "9001"


def test_extra_args_are_appended_and_recorded():
    cmd = PROFILES["vllm"].command(ServerSettings(model="m", extra_args=["--enforce-eager"]), Vendor.NVIDIA)
    assert cmd.argv[-1] == "--enforce-eager" and cmd.applied["extra_args"] == "--enforce-eager"


def test_profile_lookup():
    assert get_profile("llamacpp") is PROFILES["llama.cpp"]
    assert get_profile("hf-tgi") is PROFILES["tgi"]
    assert get_profile("transformers-serve") is PROFILES["transformers"]
    with pytest.raises(UserError, match="not known"):
        get_profile("nope")
    with pytest.raises(UserError, match="no cpu launch profile"):
        PROFILES["vllm"].command(ServerSettings(model="m"), Vendor.CPU)


@pytest.mark.parametrize("bad", [
    {"nope": 1},
    {"env": {"MAX-INPUT-TOKEN": "1"}},
    {"env": {"HF_TOKEN": "hf_x"}},
    {"secrets": ["BAD-NAME"]},
    {"dtype": "fp8"},
    {"memory_fraction": 1.5},
    {"max_batch": 0},
    {"env": {"A": "1"}, "secrets": ["A"]},
])
def test_settings_refuse_bad_values(bad):
    with pytest.raises(ValidationError):
        ServerSettings(model="m", **bad)


def test_secrets_are_names_only_in_the_command():
    cmd = PROFILES["vllm"].command(ServerSettings(model="m", secrets=["HF_TOKEN", "WANDB_API_KEY"],
                                                  env={"VLLM_LOGGING_LEVEL": "INFO"}), Vendor.NVIDIA)
    assert cmd.secrets == ["HF_TOKEN", "WANDB_API_KEY"] and cmd.env == {"VLLM_LOGGING_LEVEL": "INFO"}
    assert "HF_TOKEN" not in " ".join(cmd.argv)
