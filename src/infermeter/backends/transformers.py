"""``transformers serve``: OpenAI-compatible chat; rejects ``ignore_eos`` (HTTP 422).

Flags (``transformers serve --help``, transformers 5.24): positional model (``id@revision``),
``--continuous-batching``, ``--cb-max-batch-tokens``, ``--cb-max-memory-percent``,
``--dtype``, ``--device``, ``--host``, ``--port``.  It has no flag for the context length,
the number of concurrent sequences, tensor parallelism or prefix caching, and rejects
unknown request fields such as ``ignore_eos`` (HTTP 422).  ``/health``, ``/v1/models``.

Images: there is no official serving image; a pinned PyTorch image plus a pinned
``pip install "transformers[serving]==…"`` at start (``pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime``,
``rocm/pytorch:rocm6.4.1_ubuntu24.04_py3.12_pytorch_release_2.7.1``).
"""

from __future__ import annotations

from pathlib import Path

from infermeter.backends.base import BackendSpec, Images, Launch, LintRules, program_is
from infermeter.backends.launch import add, not_applicable
from infermeter.backends.settings import Vendor
from infermeter.errors import UserError

TRANSFORMERS_VERSION = "5.24.0"


def render(cmd, s, vendor, container, metrics_port):
    if s.tensor_parallel != 1:
        raise UserError("transformers serve runs a model on one device: tensor parallelism is not available",
                        "use --tensor-parallel 1 (or another backend)")
    model = f"{s.model}@{s.revision}" if s.revision and not Path(s.model).exists() else s.model
    add(cmd, "model", model)
    add(cmd, "host", "--host", cmd.host)
    add(cmd, "port", "--port", str(s.port))
    device = "cpu" if vendor is Vendor.CPU else "cuda"
    cmd.argv += ["--device", device]
    add(cmd, "max_batch", "--continuous-batching")
    cmd.applied["max_batch"] = ("not applicable: transformers serve has no limit on concurrent sequences; "
                                "--continuous-batching batches whatever is in flight")
    add(cmd, "max_batched_tokens", "--cb-max-batch-tokens", str(s.max_batched_tokens))
    if vendor is Vendor.CPU:
        not_applicable(cmd, "memory_fraction", "CPU run")
    else:
        add(cmd, "memory_fraction", "--cb-max-memory-percent", str(s.memory_fraction))
    not_applicable(cmd, "max_model_len", "transformers serve takes the model's own context length")
    not_applicable(cmd, "tensor_parallel", "one device (1)")
    not_applicable(cmd, "prefix_caching", "transformers serve has no prefix-caching setting")
    not_applicable(cmd, "served_model_name", "requests name the model; the preloaded one serves them all")
    if s.dtype:
        add(cmd, "dtype", "--dtype", s.dtype)
    if s.tokenizer:
        not_applicable(cmd, "tokenizer", "transformers serve loads the model's processor")
    if container:
        cmd.setup.append(f"pip install --no-cache-dir 'transformers[serving]=={TRANSFORMERS_VERSION}'")
    cmd.notes.append("transformers serve rejects unknown request fields such as ignore_eos (HTTP 422): "
                     "requests carry no ignore_eos, so output may stop at EOS")


LAUNCH = Launch(
    program=("transformers", "serve"), default_port=8000, render=render,
    vendors=(Vendor.CPU, Vendor.NVIDIA, Vendor.AMD), prefix_caching_on="(none)", prefix_caching_off="(none)",
    metrics_path=None, version_args=("version",),
    served_name=lambda settings: settings.model,  # it lists (and answers to) the model it was given
    aliases=("hf",), has_max_model_len=False)

IMAGES = Images({
    Vendor.NVIDIA: "pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime",
    Vendor.AMD: "rocm/pytorch:rocm6.4.1_ubuntu24.04_py3.12_pytorch_release_2.7.1",
}, cuda_only=(r"pytorch/pytorch",))

BACKEND = BackendSpec(
    name="transformers", title="transformers serve", default_endpoint="/v1/chat/completions", ignore_eos=False,
    aliases=("transformers-serve",), note="transformers serve rejects unknown fields such as ignore_eos (HTTP 422)",
    launch=LAUNCH, images=IMAGES,
    lint=LintRules(starts=program_is("transformers", then="serve"), single_gpu=lambda argv: ("", "")))
