"""docker run lines and dstack task/service files, per backend x vendor.

The dstack files are validated with dstack's own configuration models when the
``dstack`` package is installed (``pip install -e '.[test,dstack]'``)."""

from __future__ import annotations

import shlex

import pytest
import yaml

from infermeter.cli.main import main
from infermeter.errors import UserError
from infermeter.servers import PROFILES, ServerSettings, Vendor
from infermeter.servers.docker import AMD_DEVICE_FLAGS, docker_argv, render_docker
from infermeter.servers.dstack import dstack_config, render_dstack
from infermeter.servers.dstack_schema import validate_with_dstack
from infermeter.backends import all_backends
from infermeter.servers.images import image_problem, is_rocm_image
from infermeter.servers.lint import lint_text

CONTAINER_COMBOS = [(p, v) for p in PROFILES for v in PROFILES[p].vendors if PROFILES[p].image(v)]
IDS = [f"{p}-{v.value}" for p, v in CONTAINER_COMBOS]


def settings_for(name: str, vendor: Vendor, **kw) -> ServerSettings:
    tp = 1 if name == "transformers" or vendor is Vendor.CPU else 8
    model = "ggml-org/gemma-3-1b-it-GGUF" if name == "llama.cpp" else "meta-llama/Llama-3.1-405B-Instruct"
    base = dict(model=model, tensor_parallel=tp, max_model_len=8192, max_batch=256, port=8000)
    base.update(kw)
    return ServerSettings(**base)


def test_every_image_is_pinned_and_vendor_correct():
    tables = {name: spec.images.by_vendor for name, spec in all_backends().items() if spec.images}
    assert set(tables) >= {"vllm", "tgi", "sglang", "llama.cpp", "transformers"}
    for name, per_vendor in tables.items():
        for vendor, image in per_vendor.items():
            assert image_problem(image) is None, image
            assert ":latest" not in image
            assert is_rocm_image(image) == (vendor is Vendor.AMD), (name, vendor, image)


@pytest.mark.parametrize("image,pinned", [
    ("ghcr.io/huggingface/text-generation-inference:latest", False),
    ("lmsysorg/sglang", False),
    ("vllm/vllm-openai:nightly", False),
    ("ghcr.io/ggml-org/llama.cpp:server-cuda", False),
    ("localhost:5000/vllm", False),
    ("vllm/vllm-openai:v0.11.2", True),
    ("localhost:5000/vllm:v1", True),
    ("vllm/vllm-openai@sha256:" + "a" * 64, True),
])
def test_image_pinning(image, pinned):
    assert (image_problem(image) is None) == pinned


@pytest.mark.parametrize("name,vendor", CONTAINER_COMBOS, ids=IDS)
def test_docker_line(name, vendor):
    prof = PROFILES[name]
    argv, cmd = docker_argv(prof, settings_for(name, vendor, env={"A_SETTING": "1"}), vendor)
    image = prof.image(vendor)
    assert argv[:2] == ["docker", "run"] and image in argv
    if vendor is Vendor.NVIDIA:
        assert argv[argv.index("--gpus") + 1] == str(cmd_tp(name, vendor))
        assert "/dev/kfd" not in argv
    elif vendor is Vendor.AMD:
        joined = " ".join(argv)
        assert " ".join(AMD_DEVICE_FLAGS) in joined and "--gpus" not in argv
        assert is_rocm_image(image)
    else:
        assert "--gpus" not in argv and "/dev/kfd" not in argv
    assert argv[argv.index("-p") + 1] == "8000:8000"
    # secrets by name only, other env with values
    assert "HF_TOKEN" in argv and not any(a.startswith("HF_TOKEN=") for a in argv)
    assert "A_SETTING=1" in argv
    after = argv[argv.index(image) + 1:]
    if cmd.setup:  # transformers serve: pinned install, then the server
        assert argv[argv.index("--entrypoint") + 1] == "bash" and "exec transformers serve" in after[-1]
    elif prof.image_entrypoint:  # TGI, llama.cpp: the image's own entrypoint starts the server
        assert "--entrypoint" not in argv and after == cmd.argv[1:]
    else:
        assert argv[argv.index("--entrypoint") + 1] == cmd.argv[0] and after == cmd.argv[1:]
    text = render_docker(prof, settings_for(name, vendor), vendor)
    words = shlex.split(text.replace("\\\n", " "))
    assert words[:2] == ["docker", "run"] and image in words


def cmd_tp(name: str, vendor: Vendor) -> int:
    return settings_for(name, vendor).tensor_parallel


def test_docker_refuses_a_floating_image():
    with pytest.raises(UserError, match="floating tag"):
        docker_argv(PROFILES["vllm"], ServerSettings(model="m"), Vendor.NVIDIA, image="vllm/vllm-openai:latest")


@pytest.mark.parametrize("kind", ["task", "service"])
@pytest.mark.parametrize("name,vendor", CONTAINER_COMBOS, ids=IDS)
def test_dstack_file_is_accepted_by_dstack(name, vendor, kind):
    pytest.importorskip("dstack")
    conf = dstack_config(PROFILES[name], settings_for(name, vendor), vendor, kind=kind)
    check = validate_with_dstack(conf)
    assert check.available and check.errors == [], check.errors


@pytest.mark.parametrize("kind", ["task", "service"])
@pytest.mark.parametrize("name,vendor", CONTAINER_COMBOS, ids=IDS)
def test_dstack_file_passes_the_linter(name, vendor, kind):
    prof = PROFILES[name]
    s = settings_for(name, vendor)
    text = render_dstack(prof, s, vendor, kind=kind)
    assert yaml.safe_load(text) == dstack_config(prof, s, vendor, kind=kind)
    findings = lint_text(text, f"{name}.dstack.yml")
    assert findings == [], [f.format() for f in findings]


@pytest.mark.parametrize("name,vendor", CONTAINER_COMBOS, ids=IDS)
def test_dstack_file_contents(name, vendor, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_thisMustNeverAppearInAnyFile1234567")
    prof = PROFILES[name]
    s = settings_for(name, vendor)
    text = render_dstack(prof, s, vendor, kind="service")
    conf = yaml.safe_load(text)
    assert "hf_thisMustNeverAppear" not in text
    assert "HF_TOKEN" in conf["env"]  # by name: dstack takes the value from the submitting shell
    assert conf["image"] == prof.image(vendor) and conf["port"] == 8000 and conf["model"] == prof.served_name(s)
    gpu = conf["resources"]["gpu"]
    if vendor is Vendor.AMD:
        assert gpu == f"MI300X:{s.tensor_parallel}" and is_rocm_image(conf["image"])
    elif vendor is Vendor.NVIDIA:
        assert gpu == f"H100:{s.tensor_parallel}"
    else:
        assert gpu == 0
    script = " && ".join(conf["commands"])
    for flag in prof.command(s, vendor, container=True).argv[1:]:
        assert flag in script


def test_dstack_gpu_name_and_task_ports():
    conf = dstack_config(PROFILES["vllm"], ServerSettings(model="m", tensor_parallel=4, port=8100), "nvidia",
                         gpu="A100", name="my-vllm")
    assert conf["resources"]["gpu"] == "A100:4" and conf["ports"] == [8100] and conf["name"] == "my-vllm"
    with pytest.raises(UserError, match="run name"):
        dstack_config(PROFILES["vllm"], ServerSettings(model="m"), "nvidia", name="Bad_Name")


def test_dstack_models_reject_the_invalid_env_name():
    pytest.importorskip("dstack")
    check = validate_with_dstack({"type": "task", "image": "x:1", "commands": ["a"], "env": ["MAX-INPUT-TOKEN=1"]})
    assert check.errors and any(loc and loc[0] == "env" for loc, _ in check.errors)


def test_serve_print_renders_without_starting_anything(capsys, tmp_path):
    assert main(["serve", "vllm", "--model", "m/x", "-tp", "2", "--print", "command"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("vllm serve m/x ") and "--tensor-parallel-size 2" in out
    assert main(["serve", "tgi", "--model", "m/x", "--vendor", "amd", "-tp", "8", "--print", "dstack"]) == 0
    conf = yaml.safe_load(capsys.readouterr().out)
    assert conf["resources"]["gpu"] == "MI300X:8" and conf["image"].endswith("-rocm")
    target = tmp_path / "svc.dstack.yml"
    assert main(["serve", "sglang", "--model", "m/x", "--print", "dstack-service", "-o", str(target)]) == 0
    assert yaml.safe_load(target.read_text())["type"] == "service"
    assert main(["serve", "sglang", "--model", "m/x", "--vendor", "amd", "--print", "docker", "--",
                 "--attention-backend", "triton"]) == 0
    out = capsys.readouterr().out
    assert "--device /dev/kfd" in out and out.rstrip().endswith("--attention-backend triton")


def test_serve_errors_are_one_line(capsys):
    assert main(["serve", "nope", "--model", "m", "--print", "command"]) == 2
    assert main(["serve", "vllm", "--model", "m", "--print", "docker", "--image", "vllm/vllm-openai:latest"]) == 2
    assert main(["serve", "vllm", "--model", "m", "--memory-fraction", "1.5", "--print", "command"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("infermeter: error: ") for line in err)
    assert "floating tag" in err[1] and "--memory-fraction" in err[2]
