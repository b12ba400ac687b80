"""``infermeter serve PROFILE``: start a server under test with explicit settings, or
render how to start it (``--print command|docker|dstack|dstack-service|json``).

Locally it runs until Ctrl-C (or SIGTERM), then stops the server's whole process group.
With ``--where dstack`` it submits a dstack task/service, waits until it runs and
answers, and stops it (saving its logs) on Ctrl-C.  See docs/servers.md.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from infermeter.cli.app import app
from infermeter.cli.options import parse_kv
from infermeter.errors import UserError, user_error_from_validation

Opt = typer.Option
PRINTS = ("command", "docker", "dstack", "dstack-task", "dstack-service", "json")


@app.command("serve", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def serve(
    ctx: typer.Context,
    profile: Annotated[str, typer.Argument(help="vllm, tgi, sglang, llama.cpp or transformers")],
    model: Annotated[Optional[str], Opt("--model", help="Model id or path (llama.cpp: a .gguf file, a HF repo, or the embedded engine's tiny/1b)")] = None,
    vendor: Annotated[Optional[str], Opt("--vendor", help="nvidia, amd or cpu (default: this machine's for local runs, nvidia for --print)")] = None,
    tensor_parallel: Annotated[int, Opt("--tensor-parallel", "-tp", help="GPUs per model instance")] = 1,
    max_model_len: Annotated[Optional[int], Opt("--max-model-len", help="Longest sequence (prompt + output tokens); default 4096, or what --for needs")] = None,
    memory_fraction: Annotated[float, Opt("--memory-fraction", help="Fraction of each GPU's memory the server may use")] = 0.9,
    max_batch: Annotated[Optional[int], Opt("--max-batch", help="Most sequences decoded concurrently (TGI: requests admitted); default 128, or what --for needs")] = None,
    fit: Annotated[Optional[str], Opt("--for", help="A recipe name or experiment spec file: max_model_len and max_batch fit its cells (longest request, largest burst)")] = None,
    max_batched_tokens: Annotated[int, Opt("--max-batched-tokens", help="Most tokens per scheduler step (prefill chunk)")] = 8192,
    port: Annotated[int, Opt("--port")] = 8000,
    prefix_caching: Annotated[bool, Opt("--prefix-caching/--no-prefix-caching", help="Reuse KV cache across shared prefixes")] = False,
    dtype: Annotated[Optional[str], Opt("--dtype", help="auto, float16, bfloat16 or float32 (default: the model's)")] = None,
    revision: Annotated[Optional[str], Opt("--revision")] = None,
    tokenizer: Annotated[Optional[str], Opt("--tokenizer")] = None,
    served_model_name: Annotated[Optional[str], Opt("--served-model-name")] = None,
    env: Annotated[list[str], Opt("--env", "-e", help="NAME=VALUE for the server (non-secret; repeatable)")] = [],
    secret: Annotated[list[str], Opt("--secret", help="Env NAME passed by name only (repeatable; default HF_TOKEN)")] = [],
    extra_arg: Annotated[list[str], Opt("--extra-arg", help="One more server argument (repeatable); or give them after --")] = [],
    print_what: Annotated[Optional[str], Opt("--print", help="Render instead of running: command, docker, dstack (task), dstack-service or json")] = None,
    where: Annotated[str, Opt("--where", help="local, or dstack (submit a task/service and wait until it answers)")] = "local",
    kind: Annotated[str, Opt("--kind", help="dstack: task or service")] = "task",
    image: Annotated[Optional[str], Opt("--image", help="Container image (default: the profile's pinned image for --vendor)")] = None,
    gpu: Annotated[Optional[str], Opt("--gpu", help="dstack GPU name (default: H100 for nvidia, MI300X for amd)")] = None,
    name: Annotated[Optional[str], Opt("--name", help="Container / dstack run name")] = None,
    project: Annotated[Optional[str], Opt("--project", help="dstack project")] = None,
    output: Annotated[Optional[Path], Opt("--output", "-o", help="Write what --print renders to this file")] = None,
    host: Annotated[str, Opt("--host", help="Local: address to listen on")] = "127.0.0.1",
    executable: Annotated[Optional[str], Opt("--executable", help="Local: the server program to run")] = None,
    log_file: Annotated[Optional[Path], Opt("--log-file", help="Local: server log (default: a temporary file)")] = None,
    provenance_file: Annotated[Optional[Path], Opt("--provenance", help="Write the provenance JSON here once ready")] = None,
    startup_timeout: Annotated[float, Opt("--startup-timeout", help="Seconds to wait until the server answers")] = 900.0,
) -> None:
    """Start a server under test with explicit settings (or --print how to start it)."""
    from pydantic import ValidationError

    from infermeter.servers import ServerSettings, Vendor, get_profile

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    prof = get_profile(profile)
    if print_what is not None and print_what not in PRINTS:
        raise UserError(f"--print {print_what!r} is not known", f"use one of: {', '.join(PRINTS)}")
    if where not in ("local", "dstack"):
        raise UserError(f"--where {where!r} is not known", "use local or dstack")
    if kind not in ("task", "service"):
        raise UserError(f"--kind {kind!r} is not known", "use task or service")
    if not model:
        raise UserError("--model is required", f"e.g. infermeter serve {prof.name} --model Qwen/Qwen3-0.6B")
    extra = [*extra_arg, *ctx.args]
    local = print_what is None and where == "local"
    if vendor is None:
        if local:
            from infermeter.servers.local import detect_vendor

            vend = detect_vendor()
        else:
            vend = Vendor.CPU if prof.vendors == (Vendor.CPU,) else Vendor.NVIDIA
    else:
        try:
            vend = Vendor(vendor.lower())
        except ValueError:
            raise UserError(f"--vendor {vendor!r} is not known", "use nvidia, amd or cpu") from None
    limits = {k: v for k, v in (("max_model_len", max_model_len), ("max_batch", max_batch)) if v is not None}
    if fit is not None:
        limits = _fit_limits(fit, prof, limits, err)
    try:
        settings = ServerSettings(
            model=model, revision=revision, tokenizer=tokenizer, served_model_name=served_model_name,
            tensor_parallel=tensor_parallel, memory_fraction=memory_fraction, **limits,
            max_batched_tokens=max_batched_tokens, port=port, prefix_caching=prefix_caching,
            dtype=dtype, extra_args=extra, env=parse_kv(env, "--env", "VLLM_LOGGING_LEVEL=INFO"), secrets=secret or ["HF_TOKEN"])
    except ValidationError as exc:
        raise user_error_from_validation(exc, "see 'infermeter serve --help'") from None
    if local and prof.name == "llama.cpp":
        from infermeter.servers.local import embedded_model

        settings = embedded_model(settings)  # --model tiny/1b: the embedded engine's generated models

    if print_what is not None:
        text = _render(print_what, prof, settings, vend, image=image, gpu=gpu, name=name, kind=kind)
        if output is not None:
            output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
            err.print(f"wrote {escape(str(output))}")
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return

    if where == "dstack":
        from infermeter.servers.dstack import DstackServer

        server = DstackServer(prof, settings, vend, kind=kind, project=project, startup_timeout=startup_timeout,
                              log=lambda msg: err.print(escape(msg)), image=image, gpu=gpu, name=name)
    else:
        from infermeter.servers.local import LocalServer

        server = LocalServer(prof, settings, vendor=vend, host=host, executable=executable, log_path=log_file,
                             startup_timeout=startup_timeout)
    _run_until_interrupted(server, prof, err, provenance_file)


def _fit_limits(fit: str, prof, limits: dict[str, int], err: Console) -> dict[str, int]:
    """``--for``: the limits the experiment's cells need, the flags given kept (refused where too small)."""
    from infermeter.experiments.recipes import recipe_names
    from infermeter.experiments.serverlimits import fit_settings, needs
    from infermeter.experiments.specfile import load_spec

    if fit in recipe_names() and not Path(fit).exists():
        from infermeter.experiments.recipes import load_recipe

        spec = load_recipe(fit)
    else:
        spec, _text = load_spec(fit)
    need = needs(spec, chat="chat" in prof.endpoint)
    fitted, notes = fit_settings(limits, prof, need, where="--")
    for note in notes:
        err.print(f"--for {escape(fit)}: {escape(note)}")
    return {k: int(v) for k, v in fitted.items()}


def _render(what: str, prof, settings, vend, *, image, gpu, name, kind) -> str:
    if what == "command":
        cmd = prof.command(settings, vend, host="0.0.0.0")
        env = " ".join(f"{k}={v}" for k, v in cmd.env.items())
        return (env + " " if env else "") + cmd.shell
    if what == "json":
        cmd = prof.command(settings, vend, host="0.0.0.0")
        data = cmd.to_dict() | {"image": image or prof.image(vend), "ready": list(prof.ready_paths),
                                "info": prof.info_path, "metrics": prof.metrics_path,
                                "metrics_flag": prof.metrics_flag, "fixed_output_length": prof.fixed_length}
        return json.dumps(data, indent=2)
    if what == "docker":
        from infermeter.servers.docker import render_docker

        return render_docker(prof, settings, vend, image=image, name=name)
    from infermeter.servers.dstack import render_dstack

    return render_dstack(prof, settings, vend, kind="service" if what == "dstack-service" else kind,
                         image=image, gpu=gpu, name=name)


def _run_until_interrupted(server, prof, err: Console, provenance_file: Path | None) -> None:
    from infermeter.runner.target import open_target

    def _sigterm(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    previous_int = signal.getsignal(signal.SIGINT)
    try:
        previous = signal.signal(signal.SIGTERM, _sigterm)
    except ValueError:  # not the main thread
        previous = None
    try:
        err.print(f"starting {prof.title} ...")
        try:
            with open_target(server):  # stopped however the block ends
                record = server.provenance()
                if provenance_file is not None:
                    provenance_file.write_text(json.dumps(record, indent=2), encoding="utf-8")
                err.print(f"ready: {escape(server.base_url)} model {escape(server.model_name)} "
                          f"({prof.title} {escape(str(record.get('server_version')))}, after {server.ready_after_s:.1f} s)")
                err.print(f"command: {escape(' '.join(record.get('command') or []))}")
                if getattr(server, "log_path", None):
                    err.print(f"log: {escape(str(server.log_path))}")
                err.print("Ctrl-C stops it")
                # From here Ctrl-C / SIGTERM only set a flag: an exception raised at an arbitrary point
                # of Popen.wait can leave its internal lock held, and the stop would then wait in vain.
                stop = threading.Event()
                _set_handlers(lambda signum, frame: stop.set())  # noqa: ARG005
                while not stop.wait(1.0):
                    rc = server.poll() if hasattr(server, "poll") else None
                    if rc is not None:
                        from infermeter.servers.local import ServerLaunchError, log_tail

                        raise ServerLaunchError(f"{prof.title} exited with status {rc}: {log_tail(server.log_path)} "
                                                f"(log: {server.log_path})", "see the log")
        except KeyboardInterrupt:
            pass
        err.print(f"stopped {prof.title}")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)


def _set_handlers(handler) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread
            return
