"""Every ``vllm bench serve`` option, as ``infermeter run`` treats it: the one table
that the parser (cli/options.py), docs/cli.md and the tests all read.

The option names, types, defaults, ``nargs`` and choices are transcribed from
vLLM's own argument definitions (``add_cli_args`` in vllm/benchmarks/serve.py and
``add_dataset_parser`` in vllm/benchmarks/datasets, see ``VLLM_SOURCE``), so
that ``infermeter run`` parses a vLLM command line exactly as vLLM does.

``status`` is one of

* ``same``: same name, same default, same meaning;
* ``different``: accepted, but something differs; ``note`` says what and how;
* ``rejected``: a value other than the default fails with one line saying why
  and what to use instead (``note``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

VLLM_SOURCE = ("vLLM main: vllm/benchmarks/serve.py at commit 009e6d4a1cd6 (add_cli_args), "
               "vllm/benchmarks/datasets/arg_utils.py at commit 237145ea190a (add_dataset_parser), "
               "vllm/benchmarks/lib/endpoint_request_func.py at commit 02cfb534df56 (request bodies)")

# Backends ``vllm bench serve --backend`` accepts and infermeter cannot drive (pooling, audio).
VLLM_ONLY_BACKENDS = ("openai-audio", "openai-embeddings", "openai-embeddings-chat", "openai-embeddings-clip",
                      "openai-embeddings-vlm2vec", "infinity-embeddings", "infinity-embeddings-clip",
                      "vllm-pooling", "vllm-rerank")
# Backends vLLM sends sampling parameters to (its OPENAI_COMPATIBLE_BACKENDS).
OPENAI_COMPATIBLE = ("vllm", "openai", "openai-chat")
DATASET_CHOICES = ("sharegpt", "burstgpt", "sonnet", "random", "random-mm", "random-rerank", "hf", "custom",
                   "prefix_repetition", "spec_bench", "txt-slices")
OUR_DATASETS = ("sharegpt", "sonnet", "random", "custom")
PERCENTILE_METRIC_NAMES = ("ttft", "tpot", "itl", "e2el", "client_queue_time", "e2el_including_client_queue")


def _json(text: str) -> Any:
    return json.loads(text)


_json.__name__ = "JSON"  # argparse names the type in its error: "invalid JSON value"


@dataclass(frozen=True)
class VOpt:
    flag: str
    kwargs: dict[str, Any]
    status: str  # same | different | rejected
    note: str = ""
    fields: tuple[str, ...] = field(default=())  # the RunSpec fields it sets (flat names)

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    @property
    def default(self) -> Any:
        kw = self.kwargs
        if kw.get("action") == "store_true":
            return kw.get("default", False)
        return kw.get("default")


def _o(flag: str, status: str, note: str = "", fields: tuple[str, ...] = (), **kwargs: Any) -> VOpt:
    return VOpt(flag, kwargs, status, note, fields)


_UNSUPPORTED_DATASET = "only used by a vLLM dataset infermeter does not have"
_FLAG = "store_true"

VLLM_OPTIONS: tuple[VOpt, ...] = (
    # -- add_dataset_parser ------------------------------------------------------
    _o("--seed", "different", "same default and role (seeds the prompts and the arrival times); the draws "
       "come from numpy's Generator, not vLLM's global random state, so the same seed gives different "
       "(equally distributed) prompts and times", ("seed",), type=int, default=0),
    _o("--num-prompts", "same", "", ("num_prompts",), type=int, default=1000),
    _o("--dataset-name", "different", "sharegpt, sonnet, random and custom as in vLLM (custom: see "
       "--skip-chat-template); burstgpt, random-mm, random-rerank, hf, prefix_repetition, spec_bench and "
       "txt-slices are rejected (no such workload); infermeter adds jsonl", ("dataset_name",),
       type=str, default="random"),
    _o("--no-stream", "same", "vLLM: do not load a Hugging Face dataset in streaming mode; infermeter's "
       "datasets are local files read whole, so it changes nothing (infermeter's non-streaming requests are "
       "--no-stream-response)", (), action=_FLAG),
    _o("--dataset-path", "same", "the file for sharegpt, custom and sonnet (a text file of lines); refused "
       "with random, as vLLM refuses it", ("dataset_path",), type=str, default=None),
    _o("--no-oversample", "rejected", "infermeter reuses prompts (in seeded order) when the file has fewer "
       "than --num-prompts and notes it in the result; pass a --num-prompts no larger than the file's "
       "prompt count", type=None, action=_FLAG),
    _o("--skip-chat-template", "same", "custom prompts are sent as written: infermeter never applies a chat "
       "template client-side (without this flag vLLM templates custom prompts for /v1/completions: that "
       "case differs)", (), action=_FLAG),
    _o("--disable-shuffle", "rejected", "infermeter always takes dataset samples in a seeded shuffled order; "
       "fix the order with --seed", action=_FLAG),
    _o("--custom-output-len", "same", "max_tokens of every custom request (256 as in vLLM)",
       ("custom_output_len",), type=int, default=256),
    _o("--spec-bench-output-len", "rejected", _UNSUPPORTED_DATASET + " (spec_bench)", type=int, default=256),
    _o("--spec-bench-category", "rejected", _UNSUPPORTED_DATASET + " (spec_bench)", type=str, default=None),
    _o("--sonnet-input-len", "same", "", ("sonnet_input_len",), type=int, default=550),
    _o("--sonnet-output-len", "same", "", ("sonnet_output_len",), type=int, default=150),
    _o("--sonnet-prefix-len", "same", "", ("sonnet_prefix_len",), type=int, default=200),
    _o("--sharegpt-output-len", "same", "", ("sharegpt_output_len",), type=int, default=None),
    _o("--blazedit-min-distance", "rejected", _UNSUPPORTED_DATASET + " (hf blazedit)", type=float, default=0.0),
    _o("--blazedit-max-distance", "rejected", _UNSUPPORTED_DATASET + " (hf blazedit)", type=float, default=1.0),
    _o("--random-input-len", "same", "", ("random_input_len",), type=int, default=1024),
    _o("--random-output-len", "same", "", ("random_output_len",), type=int, default=128),
    _o("--random-range-ratio", "same", "", ("random_range_ratio",), type=float, default=0.0),
    _o("--random-prefix-len", "same", "", ("random_prefix_len",), type=int, default=0),
    _o("--random-batch-size", "rejected", "embeddings benchmarks only; infermeter measures generation",
       type=int, default=1),
    _o("--no-reranker", "rejected", "reranker benchmarks only; infermeter measures generation", action=_FLAG),
    _o("--random-mm-base-items-per-request", "rejected", _UNSUPPORTED_DATASET + " (random-mm)", type=int,
       default=None),
    _o("--random-mm-num-mm-items-range-ratio", "rejected", _UNSUPPORTED_DATASET + " (random-mm)", type=float,
       default=None),
    _o("--random-mm-limit-mm-per-prompt", "rejected", _UNSUPPORTED_DATASET + " (random-mm)", type=str,
       default=None),
    _o("--random-mm-bucket-config", "rejected", _UNSUPPORTED_DATASET + " (random-mm)", type=str, default=None),
    _o("--hf-subset", "rejected", _UNSUPPORTED_DATASET + " (hf)", type=str, default=None),
    _o("--hf-split", "rejected", _UNSUPPORTED_DATASET + " (hf)", type=str, default=None),
    _o("--hf-name", "rejected", _UNSUPPORTED_DATASET + " (hf)", type=str, default=None),
    _o("--hf-output-len", "rejected", _UNSUPPORTED_DATASET + " (hf)", type=int, default=None),
    _o("--prefix-repetition-prefix-len", "rejected", _UNSUPPORTED_DATASET + " (prefix_repetition); "
       "--random-prefix-len gives a shared prefix", type=int, default=256),
    _o("--prefix-repetition-suffix-len", "rejected", _UNSUPPORTED_DATASET + " (prefix_repetition)", type=int,
       default=256),
    _o("--prefix-repetition-num-prefixes", "rejected", _UNSUPPORTED_DATASET + " (prefix_repetition)", type=int,
       default=10),
    _o("--prefix-repetition-output-len", "rejected", _UNSUPPORTED_DATASET + " (prefix_repetition)", type=int,
       default=128),
    # -- add_cli_args ------------------------------------------------------------
    _o("--label", "same", "the result's \"label\" key and the result file's prefix (default: the backend)",
       ("label",), type=str, default=None),
    _o("--backend", "different", "default openai as in vLLM; vllm, openai and openai-chat mean what they "
       "mean there; vLLM's audio, embeddings, pooling and rerank backends are rejected (infermeter measures "
       "generation); infermeter adds sglang, llama.cpp, tgi, tensorrt-llm, lmdeploy, transformers",
       ("backend",), type=str, default="openai"),
    _o("--base-url", "same", "", ("base_url",), type=str, default=None),
    _o("--host", "different", "vLLM's default target is 127.0.0.1:8000; without --base-url, --host and "
       "--port infermeter starts its embedded llama-server instead (pass --port 8000 for vLLM's target)",
       ("host",), type=str, default=None),
    _o("--port", "different", "see --host: no default port; with --host alone the port is 8000",
       ("port",), type=int, default=None),
    _o("--endpoint", "different", "vLLM's default is /v1/completions for every backend (openai-chat then "
       "fails); infermeter's default is the backend's own path (/v1/chat/completions for openai-chat, "
       "/generate_stream for tgi)", ("endpoint",), type=str, default=None),
    _o("--header", "different", "KEY=VALUE pairs, space-separated, as in vLLM ('Name: value' and the short "
       "spelling -H are accepted too; a repeated --header adds its pairs where vLLM keeps only the last)",
       ("headers",), metavar="KEY=VALUE", nargs="*", action="extend", short=("-H",)),
    _o("--max-concurrency", "same", "", ("max_concurrency",), type=int, default=None),
    _o("--model", "same", "default: the server's first model; the result's model_id holds --model, "
       "the requests carry --served-model-name when given", ("model",), type=str, default=None),
    _o("--input-len", "same", "sets --random-input-len (the only input length vLLM maps it to)",
       ("random_input_len",), type=int, default=None),
    _o("--output-len", "same", "sets --random-output-len, --sharegpt-output-len and --custom-output-len "
       "(vLLM also maps it to datasets infermeter does not have)",
       ("random_output_len", "sharegpt_output_len", "custom_output_len"), type=int, default=None),
    _o("--tokenizer", "same", "", ("tokenizer",), type=str, default=None),
    _o("--tokenizer-mode", "different", "auto and hf load the Hugging Face tokenizer, as vLLM's auto does "
       "for non-Mistral models; mistral, deepseek_v32 and plugin modes are rejected (use --tokenizer with a "
       "Hugging Face tokenizer)", (), type=str, default="auto"),
    _o("--use-beam-search", "same", "accepted and unused, as in vLLM's serve benchmark", (), action=_FLAG),
    _o("--logprobs", "same", "sent as \"logprobs\" in /v1/completions bodies (vLLM's chat requests do not "
       "carry it either)", ("extra_body",), type=int, default=None),
    _o("--request-rate", "same", "vLLM's schedule: drawn intervals rescaled so the last send lands at "
       "N/rate; infermeter's --rate-schedule unscaled keeps the plain process; the result records which "
       "ran and the scheduled offered rate", ("request_rate",), type=float, default=float("inf")),
    _o("--burstiness", "same", "1 Poisson, other values gamma, inf constant intervals", ("burstiness",),
       type=float, default=1.0),
    _o("--probe-request-rate", "rejected", "no side probe requests; run a second infermeter run at a low "
       "--request-rate beside the load to measure the stall", type=float, default=0.0),
    _o("--disable-tqdm", "same", "no live progress display", ("progress",), action=_FLAG),
    _o("--num-warmups", "different", "warm-up requests are sent and not counted, as in vLLM, but each is its "
       "own prompt of the workload (vLLM repeats the first prompt), and they are sent at once (vLLM caps "
       "them by --max-concurrency)", ("warmup_requests",), type=int, default=0),
    _o("--profile", "rejected", "starts vLLM's torch profiler on the server; run the profiler with vLLM's "
       "own tools", action=_FLAG),
    _o("--save-result", "same", "writes the result JSON to --result-dir (without it, the result and records "
       "are kept out of the way under the user cache, and the path is printed)", (), action=_FLAG),
    _o("--save-detailed", "different", "adds generated_texts (and the texts in the records); the other "
       "per-request lists (input_lens, ttfts, itls, errors...) are always written, where vLLM writes them "
       "only with this flag", ("save_generated_text",), action=_FLAG),
    _o("--append-result", "same", "appends the result JSON to the result file (a new line each run)", (),
       action=_FLAG),
    _o("--metadata", "same", "KEY=VALUE pairs saved as top-level keys of the result", ("metadata",),
       metavar="KEY=VALUE", nargs="*"),
    _o("--result-dir", "same", "default: the current directory", ("result_dir",), type=str, default=None),
    _o("--result-filename", "different", "default as vLLM's: {label}-{request_rate}qps[-concurrency{N}]-{model}-"
       "{date}.json (label and model made safe for a file name; a name taken in the same second gets -2, -3, "
       "...); vLLM overwrites an existing file, infermeter refuses it unless --overwrite (or --append-result) is "
       "given, and the name must be a plain file name inside --result-dir", ("result_filename",), type=str,
       default=None),
    _o("--ignore-eos", "same", "sent as ignore_eos; forced on for --dataset-name random, as vLLM forces it",
       ("ignore_eos",), action=_FLAG),
    _o("--self-timed", "rejected", "only for vLLM's timed_trace dataset, which infermeter does not have",
       action="BooleanOptionalAction", default=None),
    _o("--percentile-metrics", "same", "default ttft,tpot,itl; selects the console table and the result "
       "JSON's keys; client_queue_time and e2el_including_client_queue are rejected (the queue wait is in "
       "the records, queued to sent)", ("percentile_metrics",), type=str, default=None),
    _o("--metric-percentiles", "same", "default 99", ("metric_percentiles",), type=str, default="99"),
    _o("--goodput", "same", "KEY:VALUE pairs (ttft, tpot, e2el in ms), space-separated", ("goodput",),
       nargs="+"),
    _o("--request-id-prefix", "rejected", "infermeter sends no request-id header of its own; add a fixed "
       "header with --header if the server needs one", type=str, default=None),
    _o("--top-p", "same", "sent only when given", ("top_p",), type=float, default=None),
    _o("--top-k", "same", "sent only when given", ("top_k",), type=int, default=None),
    _o("--min-p", "same", "sent only when given", ("extra_body",), type=float, default=None),
    _o("--temperature", "same", "sent only when given (no temperature: the server's default)",
       ("temperature",), type=float, default=None),
    _o("--frequency-penalty", "same", "sent only when given", ("extra_body",), type=float, default=None),
    _o("--presence-penalty", "same", "sent only when given", ("extra_body",), type=float, default=None),
    _o("--repetition-penalty", "same", "sent only when given", ("extra_body",), type=float, default=None),
    _o("--served-model-name", "same", "the model name the requests carry", ("served_model_name",), type=str,
       default=None),
    _o("--lora-modules", "rejected", "no per-request LoRA choice; benchmark one adapter by passing its name "
       "as --served-model-name", nargs="+", default=None),
    _o("--lora-assignment", "rejected", "see --lora-modules", type=str, default="random"),
    _o("--ramp-up-strategy", "same", "linear or exponential, vLLM's per-request rates; no rescaling under a "
       "ramp", ("ramp_up_strategy",), type=str, default=None, choices=["linear", "exponential"]),
    _o("--ramp-up-start-rps", "same", "", ("ramp_up_start_rps",), type=int, default=None),
    _o("--ramp-up-end-rps", "same", "", ("ramp_up_end_rps",), type=int, default=None),
    _o("--ready-check-timeout-sec", "rejected", "infermeter probes the server once before the load and "
       "fails at once when it is not ready; start the run once the server is up (infermeter serve waits "
       "for readiness)", type=int, default=0),
    _o("--chat-template-kwargs", "rejected", "infermeter never renders chat templates for custom prompts; "
       "pass server-side template options with --extra-body '{\"chat_template_kwargs\": {...}}'",
       type=str, default=None),
    _o("--extra-body", "same", "a JSON object merged into every body (it overrides the sampling flags, as in "
       "vLLM)", ("extra_body",), type=_json, default=None),
    _o("--skip-tokenizer-init", "rejected", "infermeter needs the tokenizer to build prompts of exact "
       "lengths; point --tokenizer at a local tokenizer instead", action=_FLAG),
    _o("--insecure", "rejected", "infermeter always verifies TLS certificates; use http:// or add the "
       "server's CA to the system's trust store", action=_FLAG),
    _o("--plot-timeline", "rejected", "draw charts with 'infermeter report' from the saved result",
       action=_FLAG),
    _o("--timeline-itl-thresholds", "rejected", "see --plot-timeline", type=str, default="25,50"),
    _o("--plot-dataset-stats", "rejected", "see --plot-timeline", action=_FLAG),
    # vLLM registers it for the datasets that load remote code; serve.py reads it for the tokenizer
    _o("--trust-remote-code", "same", "", ("trust_remote_code",), action=_FLAG),
)

BY_FLAG: dict[str, VOpt] = {o.flag: o for o in VLLM_OPTIONS}


def markdown_table() -> str:
    """The docs/cli.md table, generated from VLLM_OPTIONS (a test keeps the doc in step)."""
    lines = ["| `vllm bench serve` option | vLLM default | infermeter | how / why |", "|---|---|---|---|"]
    for o in VLLM_OPTIONS:
        default = "—" if o.default is None else ("off" if o.kwargs.get("action") == _FLAG else o.default)
        note = o.note.replace("|", "\\|") or "—"
        lines.append(f"| `{o.flag}` | {default} | {o.status} | {note} |")
    return "\n".join(lines)
