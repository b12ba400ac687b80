"""``docker run`` lines for a launch profile, per GPU vendor.

NVIDIA: ``--gpus N`` (NVIDIA Container Toolkit).  AMD: ``--device /dev/kfd --device
/dev/dri --group-add video --security-opt seccomp=unconfined`` (the flags TGI's, vLLM's
and AMD's ROCm docs give) and a ROCm image.  All: ``--ipc=host`` and a shared-memory
size (tensor parallelism talks through /dev/shm), the API port published as-is, the
Hugging Face cache mounted, secrets passed by NAME (``-e HF_TOKEN``: docker copies the
value from the calling shell, the line never holds it).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from infermeter.backends import Profile
from infermeter.backends.launch import LaunchCommand
from infermeter.backends.settings import ServerSettings, Vendor
from infermeter.errors import UserError
from infermeter.servers.images import default_image, image_problem

AMD_DEVICE_FLAGS = ["--device", "/dev/kfd", "--device", "/dev/dri", "--group-add", "video",
                    "--security-opt", "seccomp=unconfined"]
HF_CACHE = "$HOME/.cache/huggingface:/root/.cache/huggingface"  # left for the shell to expand


def docker_argv(profile: Profile, settings: ServerSettings, vendor: Vendor | str, *,
                image: str | None = None, name: str | None = None,
                shm_size: str = "16g") -> tuple[list[str], LaunchCommand]:
    """(docker argv, the server command inside it)."""
    vendor = Vendor(vendor)
    image = image or default_image(profile.name, vendor)
    problem = image_problem(image)
    if problem:
        raise UserError(problem, "pin an explicit versioned tag (or a digest)")
    cmd = profile.command(settings, vendor, host="0.0.0.0", container=True)
    argv = ["docker", "run", "--rm", "--name", name or f"infermeter-{profile.name.replace('.', '')}"]
    if vendor is Vendor.NVIDIA:
        argv += ["--gpus", str(settings.tensor_parallel)]
    elif vendor is Vendor.AMD:
        argv += list(AMD_DEVICE_FLAGS)
    argv += ["--ipc=host", "--shm-size", shm_size, "-p", f"{settings.port}:{settings.port}"]
    if profile.model_dir and any(a.startswith(profile.model_dir + "/") for a in cmd.argv):
        folder = Path(settings.model).expanduser().resolve().parent
        argv += ["-v", f"{folder}:{profile.model_dir}:ro"]
    else:
        argv += ["-v", HF_CACHE]
    for key, value in cmd.env.items():
        argv += ["-e", f"{key}={value}"]
    for key in cmd.secrets:
        argv += ["-e", key]
    if cmd.setup:
        argv += ["--entrypoint", "bash", image, "-c", " && ".join(cmd.script())]
    elif profile.image_entrypoint:  # the image's ENTRYPOINT is the whole program: pass only its arguments
        argv += [image, *cmd.argv[len(profile.container_program or profile.program):]]
    else:
        argv += ["--entrypoint", cmd.argv[0], image, *cmd.argv[1:]]
    return argv, cmd


def render_docker(profile: Profile, settings: ServerSettings, vendor: Vendor | str, **kw) -> str:
    """The ``docker run`` line, one option per line, ready to paste into a shell."""
    argv, _ = docker_argv(profile, settings, vendor, **kw)
    words = [arg if arg == HF_CACHE else shlex.quote(arg) for arg in argv]
    lines: list[str] = []
    i = 0
    while i < len(words):  # "--flag value" pairs stay on one line
        word = words[i]
        if word.startswith("-") and i + 1 < len(words) and not words[i + 1].startswith("-") and i > 1:
            lines.append(f"{word} {words[i + 1]}")
            i += 2
        else:
            lines.append(word)
            i += 1
    head = " ".join(lines[:2])
    return " \\\n  ".join([head, *lines[2:]])
