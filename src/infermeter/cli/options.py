"""Option parsing for the CLI: ``infermeter run``'s vLLM-compatible parser and small helpers.

``infermeter run`` parses its arguments the way ``vllm bench serve`` does: an
argparse parser built from vLLM's own option definitions (cli/vllm_table.py),
so unambiguous prefixes (``--num-prompt=16``), ``--flag=value``, underscores
for dashes and space-separated lists (``--goodput ttft:40 tpot:6``) work as
they do in vLLM, with vLLM's defaults.  infermeter's own options come after;
a prefix that names one vLLM option means that option even where it also
begins one of infermeter's, so no vLLM command line turns ambiguous here.

``run_fields`` turns the parsed options into RunSpec's flat field names.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Any, NoReturn

from infermeter.cli.vllm_table import (
    DATASET_CHOICES,
    OUR_DATASETS,
    PERCENTILE_METRIC_NAMES,
    VLLM_ONLY_BACKENDS,
    VLLM_OPTIONS,
)
from infermeter.errors import FieldError, UserError

HELP_HINT = "see 'infermeter run --help'"


def parse_kv(items: list[str], flag: str, example: str) -> dict[str, str]:
    """``KEY=VALUE`` options as a dict (key and value stripped, as vLLM strips them);
    a malformed one is a one-line error."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{flag} {item!r} is not KEY=VALUE", f"write e.g. {flag} {example}")
        out[key.strip()] = value.strip()
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print usage and exit
        raise UserError(message.replace("\n", " "), HELP_HINT)


# infermeter's own options: (flags, argparse kwargs); the field each sets is its dest (OWN_FIELDS: else).
OWN_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--arrival",), dict(choices=["poisson", "gamma", "constant"], default=None,
                          help="poisson, gamma or constant arrivals (default from --burstiness)")),
    (("--rate-schedule",), dict(choices=["vllm", "unscaled"], default="vllm",
                                help="vllm: rescale drawn arrival times so the last lands at N/rate (vLLM's "
                                     "schedule); unscaled: the plain Poisson/gamma process")),
    (("--no-stream-response",), dict(action="store_true",
                                     help="ask for whole (non-streamed) responses; TTFT then equals E2EL")),
    (("--warmup-requests",), dict(type=int, default=None, help="same as --num-warmups")),
    (("--api-key-env",), dict(default="OPENAI_API_KEY", help="environment variable holding the API key")),
    (("--api-key-file",), dict(default=None, help="file holding the API key")),
    (("--request-timeout",), dict(type=float, default=3600.0, help="seconds before one request is abandoned")),
    (("--transport",), dict(choices=["fast", "aiohttp"], default="fast",
                            help="fast: the asyncio.Protocol client that stamps each read as it arrives (default); "
                                 "aiohttp: the aiohttp client, for comparison")),
    (("--stall-timeout",), dict(type=float, default=300.0,
                                help="seconds without a byte before a stream counts as stalled")),
    (("--max-errors",), dict(type=int, default=None, help="stop after more than this many failed requests")),
    (("--max-error-rate",), dict(type=float, default=None, help="stop when the failed fraction exceeds this")),
    (("--client-error-tolerance",), dict(type=float, default=5.0,
                                         help="percent the client's own lag may move TTFT or ITL before the run "
                                              "is INVALID (docs/validity.md)")),
    (("--engine-model",), dict(default="tiny", help="embedded engine's model: tiny, 1b, gemma3-270m")),
    (("--engine-parallel",), dict(type=int, default=8, help="embedded engine's continuous-batching slots")),
    (("--engine-ctx-size",), dict(type=int, default=None, help="embedded engine's context size")),
    (("--engine-cpus",), dict(default="auto", help="embedded engine's cores: auto (on 2-3 cores the engine and "
                                                  "the client get their own), off, or a list such as 0 or 0,1")),
    (("--no-telemetry",), dict(action="store_true", help="do not sample GPU memory or the server's /metrics")),
    (("--telemetry-gpu",), dict(default="auto", help="auto, none, nvml, nvidia-smi, amdsmi, amd-smi, "
                                                     "rocm-smi, dcgm:URL or agent:URL")),
    (("--telemetry-interval",), dict(type=float, default=1.0, help="seconds between /metrics scrapes")),
    (("--gpu-price",), dict(type=float, default=None, metavar="PER_HOUR",
                            help="dollars per hour, for the cost per million tokens (docs/cost.md); "
                                 "say per what with --gpu-price-per")),
    (("--gpu-price-per",), dict(choices=["gpu", "node"], default=None,
                                help="--gpu-price is per GPU-hour (gpu) or for the whole machine (node)")),
    (("--gpu-count",), dict(type=int, default=None,
                            help="GPUs serving the model (default: from GPU telemetry or the dstack offer)")),
    (("--dstack-run",), dict(default=None, metavar="[PROJECT/]NAME",
                             help="the dstack run serving the model: its offer price is the price")),
    (("--json",), dict(action="store_true", dest="json_summary",
                       help="print the result JSON's metrics instead of a table")),
    (("--shard",), dict(default=None, help="run slice i of N of the schedule, e.g. 0/2")),
    (("--start-at",), dict(type=float, default=None, help="wall-clock epoch (s) at which the window starts")),
    (("--workers",), dict(type=int, default=1, help="client processes, each running one shard")),
    (("--progress-interval",), dict(type=float, default=None, metavar="SECONDS",
                                    help="write a plain key=value progress line to stderr every SECONDS "
                                         "(with or without a terminal; docs/cli.md)")),
    (("--overwrite",), dict(action="store_true",
                            help="replace an existing --result-filename (without it, an existing file is refused)")),
    # workloads and load shapes (docs/workloads.md)
    (("--prefix-groups",), dict(type=int, default=8, help="shared-prefix: groups, each with its own prefix")),
    (("--prefix-len",), dict(type=int, default=512, help="shared-prefix: tokens of each group's shared prefix")),
    (("--question-len",), dict(type=int, default=128, help="shared-prefix: tokens of each request's own question")),
    (("--prefix-output-len",), dict(type=int, default=128, help="shared-prefix: output tokens per request")),
    (("--multi-turn-output-len",), dict(type=int, default=None,
                                        help="multi-turn: output tokens per turn (default: the dataset answer's)")),
    (("--multi-turn-max-turns",), dict(type=int, default=None, help="multi-turn: keep each conversation's first N turns")),
    (("--multi-turn-history",), dict(choices=["server", "dataset"], default="server",
                                     help="multi-turn: later turns carry the server's answers (default) or the dataset's")),
    (("--multi-turn-think-time",), dict(type=float, default=0.0,
                                        help="multi-turn: seconds between a turn's end and the next turn")),
    (("--trace-format",), dict(choices=["auto", "mooncake", "burstgpt", "azure"], default="auto",
                               help="trace: the file's format (auto: from its first line)")),
    (("--trace-speed",), dict(type=float, default=1.0, help="trace: replay speed factor (2: twice as fast)")),
    (("--trace-block-size",), dict(type=int, default=None,
                                   help="trace: tokens per Mooncake hash block (default 512; bundled traces: theirs)")),
    (("--trace-output-len",), dict(type=int, default=None, help="trace: output tokens per request (default: the trace's)")),
    (("--rate-steps",), dict(default=None, help="step load: comma-separated rates, e.g. 2,4,8 (with --step-hold-s)")),
    (("--step-hold-s",), dict(type=float, default=None, help="step load: seconds each rate of --rate-steps is held")),
    (("--duration",), dict(type=float, default=None,
                           help="run for this many seconds (no request is sent after it; the count is open)")),
    (("--duration-grace",), dict(type=float, default=30.0,
                                 help="seconds requests in flight at --duration get before they are cut off")),
)

# infermeter's own options whose destination is not the RunSpec field they set.
OWN_FIELDS = {"--no-telemetry": "telemetry", "--no-stream-response": "stream", "--overwrite": "if_exists"}

WORKLOAD_DATASETS = ("shared-prefix", "multi-turn", "trace")  # infermeter's own, beside jsonl


def _flags_by_field() -> dict[str, str]:
    """RunSpec field (flat name) -> the flag that sets it, from the option definitions above;
    where several do, the one spelt like the field (``--warmup-requests``, not ``--num-warmups``)."""
    from infermeter.runner.spec import FIELD_SECTION

    setters: dict[str, list[str]] = {}
    for o in VLLM_OPTIONS:
        for name in o.fields:
            setters.setdefault(name, []).append(o.flag)
    for flags, kw in OWN_OPTIONS:
        name = OWN_FIELDS.get(flags[0]) or kw.get("dest") or flags[0][2:].replace("-", "_")
        if name in FIELD_SECTION:
            setters.setdefault(name, []).append(flags[0])
    own = lambda name: "--" + name.replace("_", "-")  # noqa: E731
    return {name: own(name) if own(name) in flags else flags[0] for name, flags in setters.items()}


FLAG_OF_FIELD = _flags_by_field()


def flag_name(path: str) -> str:
    """A field path (``load.num_prompts``) as ``infermeter run`` spells it (``--num-prompts``);
    a field no flag sets keeps its path."""
    return FLAG_OF_FIELD.get(path.rpartition(".")[2], path)


def worded_for_cli(err: FieldError) -> UserError:
    """A FieldError raised below the CLI, in the CLI's words."""
    return err.worded(flag_name, HELP_HINT)


def _rate_steps(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--rate-steps {text!r} is not a list of rates", "write e.g. --rate-steps 2,4,8") from None


def _workload_fields(ns: argparse.Namespace) -> dict[str, Any]:
    """The fields of docs/workloads.md's workloads and load shapes."""
    names = ("prefix_groups", "prefix_len", "question_len", "prefix_output_len", "multi_turn_output_len",
             "multi_turn_max_turns", "multi_turn_history", "multi_turn_think_time", "trace_format", "trace_speed",
             "trace_block_size", "trace_output_len", "step_hold_s", "duration", "duration_grace")
    return {**{n: getattr(ns, n) for n in names}, "rate_steps": _rate_steps(ns.rate_steps)}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="infermeter run", allow_abbrev=False, add_help=True,
                     description="Benchmark one server (or the embedded llama-server). Options shared with "
                                 "'vllm bench serve' keep vLLM's names, defaults and meanings (docs/cli.md).")
    vllm = parser.add_argument_group("vllm bench serve options")
    for o in VLLM_OPTIONS:
        kw = dict(o.kwargs)
        if kw.get("action") == "BooleanOptionalAction":
            kw["action"] = argparse.BooleanOptionalAction
        if kw.get("type") is None:
            kw.pop("type", None)
        note = {"same": "", "different": "differs from vLLM: ", "rejected": "not supported: "}[o.status]
        kw["help"] = (note + o.note) if (note or o.note) else None
        short = kw.pop("short", ())  # infermeter's own short spellings, which vLLM does not define
        vllm.add_argument(o.flag, *short, **kw)
    own = parser.add_argument_group("infermeter options")
    for flags, kw in OWN_OPTIONS:
        own.add_argument(*flags, **kw)
    return parser


def _option_strings(parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    vllm = [o.flag for o in VLLM_OPTIONS] + ["--no-self-timed"]
    own = [s for a in parser._actions for s in a.option_strings if s.startswith("--") and s not in vllm]
    return vllm, own


def normalize(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """vLLM's spelling rules: underscores in option names read as dashes, and a unique prefix of a
    vLLM option names it (checked against vLLM's options first, then infermeter's)."""
    vllm, own = _option_strings(parser)
    every = set(vllm) | set(own)
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            out.extend(argv[i:])
            break
        if not arg.startswith("--") or arg == "--":
            out.append(arg)
            continue
        key, eq, value = arg.partition("=")
        key = key.replace("_", "-")
        if key not in every:
            hits = [o for o in vllm if o.startswith(key)] or [o for o in own if o.startswith(key)]
            if len(hits) > 1:
                raise UserError(f"ambiguous option: {key} could match {', '.join(hits)}", HELP_HINT)
            if hits:
                key = hits[0]
        out.append(key + eq + value)
    return out


def parse_run_args(argv: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(RunSpec fields, CLI-only settings) from ``infermeter run``'s arguments."""
    parser = build_parser()
    ns = parser.parse_args(normalize(list(argv), parser))
    return run_fields(ns), cli_settings(ns)


def _given(ns: argparse.Namespace, dest: str, default: Any) -> bool:
    value = getattr(ns, dest)
    if isinstance(default, float) and isinstance(value, float) and math.isnan(default):
        return not math.isnan(value)
    return value != default


def _reject_unsupported(ns: argparse.Namespace) -> None:
    for o in VLLM_OPTIONS:
        if o.status == "rejected" and _given(ns, o.dest, o.default):
            raise UserError(f"{o.flag} is not supported by infermeter run: {o.note.split(';')[0]}",
                            o.note.split(";", 1)[1].strip() if ";" in o.note else "leave it out")


def _headers(items: list[str]) -> dict[str, str]:
    from infermeter.secrets import check_headers

    out: dict[str, str] = {}
    for item in items:
        eq, colon = item.find("="), item.find(":")
        sep = "=" if eq > 0 and (colon < 0 or eq < colon) else ":"
        name, found, value = item.partition(sep)
        if not found or not name.strip():
            raise UserError(f"--header {item!r} is not KEY=VALUE", "write e.g. --header x-team=infra")
        out[name.strip()] = value.strip()
    check_headers(out)
    return out


def _protocol(backend: str, endpoint: str | None) -> str:
    from infermeter.backends import get_backend, protocol_for

    b = get_backend(backend)
    kind = protocol_for(endpoint or b.default_endpoint)
    return "openai-chat" if b.name == "openai-chat" and kind == "openai" else kind


def run_fields(ns: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as RunSpec's flat field names, with vLLM's rules applied:
    --input-len/--output-len mapping, ignore_eos forced for random, sampling flags sent only
    when given (and merged under --extra-body), model_id from --model."""
    backend = ns.backend
    if backend in VLLM_ONLY_BACKENDS:
        raise UserError(f"--backend {backend} is not supported by infermeter run: it benchmarks pooling/audio "
                        "endpoints, infermeter measures generation", "use --backend openai or openai-chat")
    dataset = ns.dataset_name
    ours = ("jsonl",) + WORKLOAD_DATASETS
    if dataset not in DATASET_CHOICES and dataset not in ours:
        raise UserError(f"--dataset-name {dataset!r} is not a choice",
                        f"choose from {', '.join(OUR_DATASETS + ours)}")
    if dataset not in OUR_DATASETS and dataset not in ours:
        raise UserError(f"--dataset-name {dataset} is not supported by infermeter run: no such workload",
                        f"use one of {', '.join(OUR_DATASETS)}, or jsonl for a file of prompts")
    _reject_unsupported(ns)
    if dataset == "random" and ns.dataset_path is not None:  # vLLM refuses the pair the same way
        raise UserError(f"cannot use the 'random' dataset with --dataset-path {ns.dataset_path}",
                        "pass the dataset's --dataset-name (sharegpt, custom, sonnet)")
    if ns.tokenizer_mode not in ("auto", "hf"):
        raise UserError(f"--tokenizer-mode {ns.tokenizer_mode} is not supported by infermeter run",
                        "leave it at auto (Hugging Face tokenizers) and pass --tokenizer")
    metrics = ns.percentile_metrics or "ttft,tpot,itl"
    for name in metrics.split(","):
        if name.strip() in PERCENTILE_METRIC_NAMES[4:]:
            raise UserError(f"--percentile-metrics {name.strip()} is not supported by infermeter run",
                            "the client queue wait is in the per-request records (sent minus queued)")
    extra = ns.extra_body if ns.extra_body is not None else {}
    if not isinstance(extra, dict):
        raise UserError("--extra-body must be a JSON object", "pass e.g. '{\"top_k\": 1}'")
    sampling = {k: getattr(ns, k) for k in ("min_p", "frequency_penalty", "presence_penalty",
                                              "repetition_penalty") if getattr(ns, k) is not None}
    if sampling and backend == "tgi":
        raise UserError(f"--{next(iter(sampling)).replace('_', '-')} is not a TGI parameter",
                        "these sampling flags are for OpenAI-compatible backends")
    if ns.logprobs is not None and _protocol(backend, ns.endpoint) == "openai":
        sampling["logprobs"] = ns.logprobs  # vLLM puts logprobs in completions bodies only
    fields: dict[str, Any] = {
        "backend": backend, "base_url": ns.base_url, "host": ns.host, "port": ns.port, "endpoint": ns.endpoint,
        "model": ns.model, "served_model_name": ns.served_model_name, "tokenizer": ns.tokenizer,
        "trust_remote_code": ns.trust_remote_code, "headers": _headers(ns.header or []),
        "api_key_env": ns.api_key_env, "api_key_file": ns.api_key_file,
        "engine_model": ns.engine_model, "engine_parallel": ns.engine_parallel,
        "engine_ctx_size": ns.engine_ctx_size, "engine_cpus": ns.engine_cpus,
        "dataset_name": dataset, "dataset_path": ns.dataset_path,
        "sonnet_input_len": ns.sonnet_input_len, "sonnet_output_len": ns.sonnet_output_len,
        "sonnet_prefix_len": ns.sonnet_prefix_len, "random_input_len": ns.random_input_len,
        "random_output_len": ns.random_output_len, "random_range_ratio": ns.random_range_ratio,
        "random_prefix_len": ns.random_prefix_len, "sharegpt_output_len": ns.sharegpt_output_len,
        "custom_output_len": ns.custom_output_len,
        "num_prompts": ns.num_prompts, "request_rate": ns.request_rate, "burstiness": ns.burstiness,
        "arrival": ns.arrival, "rate_schedule": ns.rate_schedule, "max_concurrency": ns.max_concurrency,
        "ramp_up_strategy": ns.ramp_up_strategy, "ramp_up_start_rps": ns.ramp_up_start_rps,
        "ramp_up_end_rps": ns.ramp_up_end_rps,
        "warmup_requests": ns.warmup_requests if ns.warmup_requests is not None else ns.num_warmups,
        "seed": ns.seed, "ignore_eos": ns.ignore_eos or dataset == "random",
        "temperature": ns.temperature, "top_p": ns.top_p, "top_k": ns.top_k,
        "stream": not ns.no_stream_response, "extra_body": {**sampling, **extra},
        "request_timeout": ns.request_timeout, "stall_timeout": ns.stall_timeout, "transport": ns.transport,
        "max_errors": ns.max_errors, "max_error_rate": ns.max_error_rate,
        "client_error_tolerance": ns.client_error_tolerance,
        "telemetry": not ns.no_telemetry, "telemetry_gpu": ns.telemetry_gpu,
        "telemetry_interval": ns.telemetry_interval,
        "percentile_metrics": metrics, "metric_percentiles": ns.metric_percentiles,
        "goodput": list(ns.goodput or []), "result_filename": ns.result_filename,
        "metadata": parse_kv(ns.metadata or [], "--metadata", "version=0.3.3"),
        "save_generated_text": ns.save_detailed, "progress": not ns.disable_tqdm,
        "progress_interval": ns.progress_interval, "label": ns.label,
        "shard": ns.shard, "start_at": ns.start_at, "workers": ns.workers,
        "gpu_price": ns.gpu_price, "gpu_price_per": ns.gpu_price_per, "gpu_count": ns.gpu_count,
        "dstack_run": ns.dstack_run,
        **_workload_fields(ns),
    }
    if ns.input_len is not None:
        fields["random_input_len"] = ns.input_len
    if ns.output_len is not None:
        for name in ("random_output_len", "sharegpt_output_len", "custom_output_len"):
            fields[name] = ns.output_len
    fields.update(_result_place(ns))
    return fields


def unsaved_dir() -> Path:
    """Where a run without --save-result keeps its result and records (out of the working directory)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "infermeter" / "unsaved-runs"


def vllm_result_filename(ns: argparse.Namespace, model: str, date: str) -> str:
    """vLLM's default result file name (compute_result_filename in vllm/benchmarks/serve.py), with the
    label and model made safe for a file name (storage/names.py ``slug``)."""
    from infermeter.storage.names import slug

    label = slug(ns.label or ns.backend, empty="run")
    conc = f"-concurrency{ns.max_concurrency}" if ns.max_concurrency is not None else ""
    base = slug(model.split("/")[-1])
    if ns.ramp_up_strategy is not None:
        return (f"{label}-ramp-up-{ns.ramp_up_strategy}-{ns.ramp_up_start_rps}qps-{ns.ramp_up_end_rps}qps"
                f"{conc}-{base}-{date}.json")
    return f"{label}-{ns.request_rate}qps{conc}-{base}-{date}.json"


def date_stamp() -> str:
    """The date part of generated result names, to the second (as vLLM's)."""
    from datetime import datetime

    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _result_place(ns: argparse.Namespace) -> dict[str, Any]:
    """Where the run's own files go.  A run never replaces another run's files: generated
    names take the next free name; an explicit ``--result-filename`` in --result-dir that
    exists is refused unless ``--overwrite``; the unsaved-runs cache never overwrites."""
    if ns.overwrite and ns.append_result:
        raise UserError("--overwrite and --append-result contradict each other",
                        "pass --append-result to add the result to the file, or --overwrite to replace it")
    saving = ns.save_result and not ns.append_result
    out: dict[str, Any] = {"result_dir": (ns.result_dir or ".") if saving else str(unsaved_dir()),
                           "if_exists": "next"}
    if ns.result_filename is None and ns.model is not None:
        out["result_filename"] = vllm_result_filename(ns, ns.model, date_stamp())
    elif saving and ns.result_filename is not None:
        out["if_exists"] = "overwrite" if ns.overwrite else "refuse"
    return out


def cli_settings(ns: argparse.Namespace) -> dict[str, Any]:
    """What the command itself does with the result (not part of the run's spec)."""
    return {"json_summary": ns.json_summary, "save_result": ns.save_result, "append_result": ns.append_result,
            "result_dir": ns.result_dir or "."}
