"""The backend registry: one module per server, read by every consumer.

A module dropped into ``infermeter.backends`` is picked up everywhere (request shaping,
the /metrics map, the launch profile, images and lint) with no other edit.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import infermeter.backends as backends_pkg
from infermeter.backends import all_backends, find_backend, get_backend, get_profile, profiles, protocol_for
from infermeter.backends.base import BackendSpec
from infermeter.backends.launch import NA
from infermeter.errors import UserError
from infermeter.servers import ServerSettings, Vendor
from infermeter.servers.docker import docker_argv
from infermeter.servers.dstack import render_dstack
from infermeter.servers.images import default_image, image_family, image_problem
from infermeter.servers.lint import _server, lint_text
from infermeter.telemetry import backends as telemetry_backends
from infermeter.telemetry import prom

PACKAGE = Path(backends_pkg.__file__).parent
SETTINGS = ("model", "port", "served_model_name", "tensor_parallel", "max_model_len", "memory_fraction",
            "max_batch", "max_batched_tokens", "prefix_caching")


def test_every_module_of_the_package_is_a_registered_backend():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - backends_pkg.CONTRACT_MODULES - {"__init__"}
    assert modules == {"vllm", "tgi", "sglang", "llamacpp", "transformers", "tensorrt_llm", "lmdeploy", "openai"}
    assert set(all_backends()) == {"vllm", "tgi", "sglang", "llama.cpp", "transformers", "tensorrt-llm",
                                   "lmdeploy", "openai", "openai-chat"}
    assert set(profiles()) == {"vllm", "tgi", "sglang", "llama.cpp", "transformers"}


@pytest.mark.parametrize("alias,name", [("llamacpp", "llama.cpp"), ("LLAMA-CPP", "llama.cpp"), ("llama_cpp", "llama.cpp"),
                                        ("trt-llm", "tensorrt-llm"), ("hf-tgi", "tgi"),
                                        ("text-generation-inference", "tgi"), ("transformers-serve", "transformers")])
def test_aliases_name_one_backend_everywhere(alias, name):
    assert get_backend(alias).name == name
    if name in profiles():
        assert get_profile(alias).name == name
    if get_backend(name).metrics is not None:
        assert telemetry_backends.metric_map(alias) is get_backend(name).metrics


def test_unknown_backend_is_one_line_naming_the_known_ones():
    with pytest.raises(UserError) as err:
        get_backend("vllmm")
    assert "'vllmm' is not known" in err.value.problem and "vllm" in err.value.fix and "tgi" in err.value.fix
    with pytest.raises(UserError, match="profile 'tensorrt-llm' is not known"):
        get_profile("tensorrt-llm")  # a backend infermeter drives but does not launch
    assert find_backend(None) is None and find_backend("nope") is None


@pytest.mark.parametrize("name", sorted(all_backends()))
def test_request_shaping_of_each_backend(name):
    spec = get_backend(name)
    assert spec.protocol == protocol_for(spec.default_endpoint)
    method = spec.fixed_length_method()
    assert (method == "ignore_eos + max_tokens") == (spec.ignore_eos and spec.protocol != "tgi")
    assert method.startswith("none: ") or method == "ignore_eos + max_tokens"


def test_only_the_servers_without_ignore_eos_say_so():
    no_eos = {n for n, s in all_backends().items() if not s.ignore_eos}
    assert no_eos == {"tgi", "transformers"}
    assert get_backend("tgi").fixed_length_method("openai-chat") == "none: tgi has no ignore_eos; " \
        "generation may stop at EOS before max_tokens"


@pytest.mark.parametrize("name", sorted(n for n, s in all_backends().items() if s.metrics))
def test_each_metric_map_is_found_by_name_and_by_its_own_names(name):
    mmap = get_backend(name).metrics
    assert mmap.backend == name and telemetry_backends.metric_map(name) is mmap
    body = "".join(f"{n} 1\n" for s in mmap.series for n in s.names[:1])
    assert telemetry_backends.detect(prom.parse(body)) is mmap
    assert mmap.wanted() <= telemetry_backends.all_wanted()


def test_vllm_is_detected_before_tgi_style_gauges():
    body = "tgi_queue_size 3\nvllm:num_requests_running 2\n"
    assert telemetry_backends.detect(prom.parse(body)).backend == "vllm"


@pytest.mark.parametrize("name", sorted(profiles()))
def test_each_profile_renders_every_setting_and_lints_clean(name):
    profile = get_profile(name)
    vendor = Vendor.NVIDIA if Vendor.NVIDIA in profile.vendors else profile.vendors[0]
    tp = 1 if name in ("transformers", "llama.cpp") else 2
    settings = ServerSettings(model="org/model", tensor_parallel=tp, port=profile.default_port)
    cmd = profile.command(settings, vendor)
    assert set(SETTINGS) <= set(cmd.applied), set(SETTINGS) - set(cmd.applied)
    assert all(v.startswith(NA) or v for v in cmd.applied.values())
    assert _server([cmd.shell])[0] is profile  # lint recognises the command it renders
    image = default_image(name, vendor)
    assert image_problem(image) is None and image == profile.image(vendor)
    if profile.spec.images.family:
        assert name in image_family(image)
    text = render_dstack(profile, settings, vendor)
    assert [f.format() for f in lint_text(text, use_dstack=False) if f.severity == "error"] == []


# -- a backend dropped into the package ---------------------------------------------------------------

FAKE = '''
"""FakeServe: a made-up OpenAI-compatible server, to prove one file is enough."""
from infermeter.backends.base import (BackendSpec, Images, Launch, LintRules, MetricMap, counter, gauge,
                                      program_is)
from infermeter.backends.launch import add, not_applicable
from infermeter.backends.settings import Vendor


def render(cmd, s, vendor, container, metrics_port):
    add(cmd, "model", "--model", s.model)
    add(cmd, "port", "--listen", str(s.port))
    add(cmd, "max_batch", "--slots", str(s.max_batch))
    not_applicable(cmd, "max_model_len", "FakeServe reads it from the model")


BACKEND = BackendSpec(
    name="fakeserve", title="FakeServe", default_endpoint="/v1/chat/completions", ignore_eos=False,
    aliases=("fake-serve",), version_path="/about",
    metrics=MetricMap("fakeserve_", (gauge("running", "fakeserve_active"), counter("requests", "fakeserve_done"))),
    launch=Launch(program=("fakeserve", "run"), default_port=7777, render=render, vendors=(Vendor.NVIDIA,),
                  prefix_caching_on="(always)", prefix_caching_off="(never)", port_flags=("--listen",)),
    images=Images({Vendor.NVIDIA: "example.org/fakeserve:1.2.3"}, family=r"fakeserve"),
    lint=LintRules(starts=program_is("fakeserve", then="run"), needs_gpu=True),
    version_from_info=lambda info: info.get("release"))
'''


@pytest.fixture
def dropped_in(tmp_path, monkeypatch):
    """Add a module to the package (its search path), the way a new file in src/ would be."""
    added: list[str] = []

    def drop(module: str, source: str) -> None:
        folder = tmp_path / "more_backends"
        folder.mkdir(exist_ok=True)
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
        if str(folder) not in backends_pkg.__path__:
            monkeypatch.setattr(backends_pkg, "__path__", [*backends_pkg.__path__, str(folder)])
        added.append(f"infermeter.backends.{module}")
        backends_pkg.reload()

    yield drop
    for name in added:
        sys.modules.pop(name, None)
    monkeypatch.undo()
    backends_pkg.reload()


def test_a_module_dropped_into_the_package_is_picked_up_everywhere(dropped_in):
    dropped_in("fakeserve", FAKE)
    spec = get_backend("fake-serve")
    assert isinstance(spec, BackendSpec) and spec.name == "fakeserve" and spec.protocol == "openai-chat"
    assert spec.fixed_length_method().startswith("none: fakeserve has no ignore_eos")
    # the /metrics map
    assert telemetry_backends.metric_map("fakeserve") is spec.metrics
    values, matched = telemetry_backends.normalize(prom.parse("fakeserve_active 4\nfakeserve_done 9\n"),
                                                   telemetry_backends.detect(prom.parse("fakeserve_active 4\n")))
    assert values == {"running": 4.0, "requests": 9.0} and matched["running"] == "fakeserve_active"
    # the launch profile and image
    profile = get_profile("fakeserve")
    cmd = profile.command(ServerSettings(model="org/m", port=7000, max_batch=8))
    assert cmd.argv == ["fakeserve", "run", "--model", "org/m", "--listen", "7000", "--slots", "8"]
    assert cmd.applied["max_model_len"].startswith(NA)
    assert default_image("fakeserve", Vendor.NVIDIA) == "example.org/fakeserve:1.2.3"
    assert profile.request_fields() == {"backend": "fakeserve", "endpoint": "/v1/chat/completions",
                                        "ignore_eos": False}
    # version probe, as provenance reads it
    from infermeter.servers.provenance import version_from_info
    assert version_from_info("fakeserve", {"release": "0.9"}) == "0.9"
    # lint: it is recognised, needs GPUs, listens on its --listen port, and its image family is known
    task = ("type: task\nimage: vllm/vllm-openai:v0.11.2\ncommands:\n  - fakeserve run --model m --listen 9000\n"
            "ports:\n  - 8000\n")
    found = {(f.key, f.problem) for f in lint_text(task, use_dstack=False) if f.severity == "error"}
    assert any(k == "resources" and "FakeServe needs GPUs" in p for k, p in found), found
    assert any(k == "ports[0]" and "FakeServe listens on 9000 (--listen 9000)" in p for k, p in found), found
    assert any(k == "image" and "the commands start FakeServe but" in p and "vLLM image" in p for k, p in found)
    # and it is gone again once the file is
    backends_pkg.__path__[:] = backends_pkg.__path__[:1]
    backends_pkg.reload()
    assert find_backend("fakeserve") is None


def test_a_backend_module_must_define_backend(dropped_in):
    with pytest.raises(TypeError, match="must define BACKEND"):
        dropped_in("nothing_here", "X = 1\n")
        all_backends()


def test_two_modules_cannot_claim_one_name(dropped_in):
    with pytest.raises(ValueError, match="'vllm' is already taken"):
        dropped_in("vllm_again", "from infermeter.backends.base import BackendSpec\n"
                                 "BACKEND = BackendSpec(name='vllm', default_endpoint='/v1/completions', "
                                 "ignore_eos=True)\n")
        all_backends()


# -- docs/backends.md: the worked example works as documented -----------------------------------------

DOC = Path(__file__).resolve().parents[3] / "docs" / "backends.md"


def _blocks(kind: str) -> list[str]:
    import re

    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), re.S)


def test_the_documented_example_backend_works_as_documented(dropped_in, tmp_path, monkeypatch, capsys):
    from infermeter.cli.main import main

    (module,) = _blocks("python")
    (task,) = _blocks("yaml")
    dropped_in("aphrodite", module)
    spec = get_backend("aphrodite-engine")
    assert spec.name == "aphrodite" and spec.ignore_eos and spec.protocol == "openai"
    assert spec.version_path == "/version" and spec.launch.default_port == 2242
    assert telemetry_backends.metric_map("aphrodite") is spec.metrics
    scrape = prom.parse("aphrodite:num_requests_running 3\naphrodite:gpu_cache_usage_perc 0.25\n"
                        "vllm_unrelated 1\n")
    assert telemetry_backends.detect(scrape) is spec.metrics
    assert telemetry_backends.normalize(scrape, spec.metrics)[0] == {"running": 3.0, "kv_usage": 0.25}
    argv, _ = docker_argv(get_profile("aphrodite"), ServerSettings(model="Qwen/Qwen3-0.6B"), Vendor.NVIDIA)
    assert argv[argv.index("alpindale/aphrodite-openai:v0.6.4") + 1] == "--model"  # the ENTRYPOINT is the program
    (tmp_path / "aphrodite-task.dstack.yml").write_text(task)
    monkeypatch.chdir(tmp_path)
    sessions = _blocks("console")
    assert len(sessions) == 2
    for session in sessions:
        command, *expected = session.strip("\n").split("\n")
        assert command.startswith("$ infermeter ")
        main(command.split()[2:])
        out = capsys.readouterr()
        assert (out.out + out.err).strip("\n").split("\n") == expected, command
