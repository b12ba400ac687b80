"""``infermeter run``: one benchmark run.  Flags shared with ``vllm bench serve``
keep vLLM's names and meanings, so existing command lines work."""

from __future__ import annotations

import json
import math
import signal
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from infermeter.cli.app import app
from infermeter.cli.options import parse_kv
from infermeter.cli.progress import live_progress
from infermeter.cli.signals import raise_keyboard_interrupt
from infermeter.cli.summary import print_summary
from infermeter.errors import UserError, safe_text
from infermeter.load.eventloop import use_uvloop
from infermeter.runner.spec import RunSpec
from infermeter.secrets import parse_headers

Opt = typer.Option


@app.command("run", no_args_is_help=False)
def run(
    backend: Annotated[str, Opt("--backend", help="vllm, openai, openai-chat, sglang, llama.cpp, tgi, tensorrt-llm, lmdeploy, transformers")] = "vllm",
    base_url: Annotated[Optional[str], Opt("--base-url", help="Server root, e.g. http://127.0.0.1:8000. Without it (and without --host/--port) infermeter runs its embedded llama-server.")] = None,
    host: Annotated[Optional[str], Opt("--host")] = None,
    port: Annotated[Optional[int], Opt("--port")] = None,
    endpoint: Annotated[Optional[str], Opt("--endpoint", help="/v1/completions, /v1/chat/completions or /generate_stream (default: the backend's)")] = None,
    model: Annotated[Optional[str], Opt("--model", help="Model name (default: the first one the server lists)")] = None,
    served_model_name: Annotated[Optional[str], Opt("--served-model-name")] = None,
    tokenizer: Annotated[Optional[str], Opt("--tokenizer", help="Tokenizer folder/file/hub id (default: the model)")] = None,
    trust_remote_code: Annotated[bool, Opt("--trust-remote-code")] = False,
    dataset_name: Annotated[str, Opt("--dataset-name", help="random, sonnet, sharegpt or jsonl")] = "random",
    dataset_path: Annotated[Optional[str], Opt("--dataset-path")] = None,
    num_prompts: Annotated[int, Opt("--num-prompts", help="Requests to send (a burst of this many when --request-rate is inf)")] = 1000,
    request_rate: Annotated[float, Opt("--request-rate", help="Requests/s; inf sends all at once (or keeps --max-concurrency in flight)")] = math.inf,
    burstiness: Annotated[float, Opt("--burstiness", help="Gamma shape of arrivals: 1 = Poisson")] = 1.0,
    arrival: Annotated[Optional[str], Opt("--arrival", help="poisson, gamma or constant (default from --burstiness)")] = None,
    max_concurrency: Annotated[Optional[int], Opt("--max-concurrency")] = None,
    warmup_requests: Annotated[int, Opt("--warmup-requests", "--num-warmups", help="Requests sent first and not counted")] = 0,
    sonnet_input_len: Annotated[int, Opt("--sonnet-input-len")] = 550,
    sonnet_output_len: Annotated[int, Opt("--sonnet-output-len")] = 150,
    sonnet_prefix_len: Annotated[int, Opt("--sonnet-prefix-len")] = 200,
    random_input_len: Annotated[int, Opt("--random-input-len")] = 1024,
    random_output_len: Annotated[int, Opt("--random-output-len")] = 128,
    random_range_ratio: Annotated[float, Opt("--random-range-ratio")] = 0.0,
    random_prefix_len: Annotated[int, Opt("--random-prefix-len")] = 0,
    sharegpt_output_len: Annotated[Optional[int], Opt("--sharegpt-output-len")] = None,
    ignore_eos: Annotated[bool, Opt("--ignore-eos", help="Ask for exactly the output length (equal work across servers)")] = False,
    temperature: Annotated[float, Opt("--temperature")] = 0.0,
    top_p: Annotated[Optional[float], Opt("--top-p")] = None,
    top_k: Annotated[Optional[int], Opt("--top-k")] = None,
    no_stream: Annotated[bool, Opt("--no-stream", help="Ask for whole responses (TTFT then equals E2EL)")] = False,
    extra_body: Annotated[Optional[str], Opt("--extra-body", help="JSON object merged into every request body")] = None,
    header: Annotated[list[str], Opt("--header", "-H", help="Extra request header 'Name: value' (repeatable)")] = [],
    api_key_env: Annotated[str, Opt("--api-key-env", help="Environment variable holding the API key")] = "OPENAI_API_KEY",
    api_key_file: Annotated[Optional[str], Opt("--api-key-file")] = None,
    seed: Annotated[int, Opt("--seed")] = 0,
    percentile_metrics: Annotated[str, Opt("--percentile-metrics")] = "ttft,tpot,itl,e2el",
    metric_percentiles: Annotated[str, Opt("--metric-percentiles")] = "50,90,95,99",
    goodput: Annotated[list[str], Opt("--goodput", help="SLOs as NAME:MS, e.g. ttft:500 tpot:50")] = [],
    request_timeout: Annotated[float, Opt("--request-timeout", help="Seconds before one request is abandoned")] = 3600.0,
    stall_timeout: Annotated[float, Opt("--stall-timeout", help="Seconds without a byte before a stream counts as stalled")] = 300.0,
    max_errors: Annotated[Optional[int], Opt("--max-errors", help="Stop after more than this many failed requests")] = None,
    max_error_rate: Annotated[Optional[float], Opt("--max-error-rate", help="Stop when the failed fraction exceeds this")] = None,
    save_result: Annotated[bool, Opt("--save-result", help="Accepted for vLLM compatibility: results are always saved")] = True,
    save_detailed: Annotated[bool, Opt("--save-detailed", help="Also keep generated texts in the records file")] = False,
    result_dir: Annotated[str, Opt("--result-dir")] = "results",
    result_filename: Annotated[Optional[str], Opt("--result-filename")] = None,
    metadata: Annotated[list[str], Opt("--metadata", help="KEY=VALUE saved in the result (repeatable)")] = [],
    disable_tqdm: Annotated[bool, Opt("--disable-tqdm", help="No live progress display")] = False,
    engine_model: Annotated[str, Opt("--engine-model", help="Embedded engine's model: tiny, 1b, gemma3-270m")] = "tiny",
    engine_parallel: Annotated[int, Opt("--engine-parallel", help="Embedded engine's continuous-batching slots")] = 8,
    engine_ctx_size: Annotated[Optional[int], Opt("--engine-ctx-size")] = None,
    no_telemetry: Annotated[bool, Opt("--no-telemetry", help="Do not sample GPU memory or the server's /metrics")] = False,
    telemetry_gpu: Annotated[str, Opt("--telemetry-gpu", help="auto, none, nvml, nvidia-smi, amdsmi, amd-smi, rocm-smi, dcgm:URL or agent:URL")] = "auto",
    telemetry_interval: Annotated[float, Opt("--telemetry-interval", help="Seconds between /metrics scrapes")] = 1.0,
    json_summary: Annotated[bool, Opt("--json", help="Print the result JSON's metrics instead of a table")] = False,
    shard: Annotated[Optional[str], Opt("--shard", help="Run slice i of N of the schedule (i from 0), e.g. 0/2; combine with 'infermeter merge'")] = None,
    start_at: Annotated[Optional[float], Opt("--start-at", help="Wall-clock epoch (s) at which the measured window starts; give every shard the same")] = None,
    workers: Annotated[int, Opt("--workers", help="Client processes, each running one shard on its own event loop; results merged")] = 1,
) -> None:
    """Benchmark one server (or the embedded llama-server) and save the results."""
    extra: dict = {}
    if extra_body:
        try:
            extra = json.loads(extra_body)
        except ValueError as exc:
            raise UserError(f"--extra-body is not valid JSON: {exc}", "pass a JSON object, e.g. '{\"top_k\": 1}'")
        if not isinstance(extra, dict):
            raise UserError("--extra-body must be a JSON object", "pass e.g. '{\"top_k\": 1}'")
    spec = RunSpec(
        backend=backend, base_url=base_url, host=host, port=port, endpoint=endpoint, model=model,
        served_model_name=served_model_name, tokenizer=tokenizer, trust_remote_code=trust_remote_code,
        headers=parse_headers(header), api_key_env=api_key_env, api_key_file=api_key_file,
        engine_model=engine_model, engine_parallel=engine_parallel, engine_ctx_size=engine_ctx_size,
        dataset_name=dataset_name, dataset_path=dataset_path,
        sonnet_input_len=sonnet_input_len, sonnet_output_len=sonnet_output_len, sonnet_prefix_len=sonnet_prefix_len,
        random_input_len=random_input_len, random_output_len=random_output_len,
        random_range_ratio=random_range_ratio, random_prefix_len=random_prefix_len,
        sharegpt_output_len=sharegpt_output_len, num_prompts=num_prompts, request_rate=request_rate,
        burstiness=burstiness, arrival=arrival, max_concurrency=max_concurrency,
        warmup_requests=warmup_requests, seed=seed, ignore_eos=ignore_eos, temperature=temperature,
        top_p=top_p, top_k=top_k, stream=not no_stream, extra_body=extra,
        request_timeout=request_timeout, stall_timeout=stall_timeout, max_errors=max_errors,
        max_error_rate=max_error_rate, percentile_metrics=percentile_metrics,
        metric_percentiles=metric_percentiles, goodput=goodput, result_dir=result_dir,
        result_filename=result_filename, metadata=parse_kv(metadata, "--metadata", "gpu=H100"),
        save_generated_text=save_detailed, telemetry=not no_telemetry, telemetry_gpu=telemetry_gpu,
        telemetry_interval=telemetry_interval, progress=not disable_tqdm,
        shard=shard, start_at=start_at, workers=workers,
    )
    execute(spec, json_summary=json_summary)


def execute(spec: RunSpec, *, json_summary: bool = False) -> None:
    from infermeter.runner.execute import execute_run

    # A pipe or file gets wide lines rather than rich's 80-column default.
    console = Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() else 120)
    err = Console(stderr=True, highlight=False)

    def log(msg: str) -> None:  # messages may quote the server (model names): no markup, no escapes
        err.print(f"[dim]{escape(safe_text(msg))}[/dim]", markup=True, highlight=False)

    def engine_progress(phase: str, done: int | None, total: int | None) -> None:
        if done is not None and total:
            err.print(f"[dim]engine: {phase} {done}/{total}[/dim]")
        else:
            err.print(f"[dim]engine: {phase}[/dim]")

    use_uvloop()
    # SIGTERM outside the load (preflight, engine start) unwinds like Ctrl-C: servers
    # are stopped, one line is printed, exit 130.  During the load the runner's own
    # handler stops it gracefully and saves a partial result.
    try:
        previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        report = execute_run(
            spec, argv=["infermeter", *sys.argv[1:]],
            progress=live_progress(err) if spec.progress else None,
            engine_progress=engine_progress, log=log,
        )
    except KeyboardInterrupt:  # outside the load (typer would turn it into a silent exit 130)
        print("infermeter: interrupted", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if json_summary:
        keys = {k: v for k, v in report.result.items() if k not in ("input_lens", "output_lens", "ttfts", "itls", "errors", "infermeter")}
        print(json.dumps(keys, indent=2))
    else:
        print_summary(console, report.result, str(report.result_path), str(report.records_path))
    if report.server_log:
        console.print(f"Server log: {report.server_log}")
    code = exit_code_for(report.result)
    if code:
        raise typer.Exit(code)


EXIT_OK = 0
EXIT_REQUEST_ERRORS = 5  # the run finished; some requests failed
EXIT_STOPPED = 6  # a stop rule (--max-errors, --max-error-rate) ended the run early
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM: completed requests and a partial result are saved


def exit_code_for(result: dict) -> int:
    stopped = result["infermeter"].get("stopped_early")
    if stopped:
        return EXIT_INTERRUPTED if stopped.startswith(("interrupted", "terminated")) else EXIT_STOPPED
    if result.get("failed"):
        return EXIT_REQUEST_ERRORS
    return EXIT_OK
