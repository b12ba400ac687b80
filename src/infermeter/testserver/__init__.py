"""A controllable streaming LLM server: ground truth for timing and fault tests.

It speaks the OpenAI API as vLLM serves it and the TGI native API, with
injected time-to-first-token (TTFT), inter-token latency (ITL), exact token
counts and every fault a real server shows.  Run it as a process::

    python -m infermeter.testserver --host 127.0.0.1 --port 0 --model test-model \\
        --ttft-ms 50 --itl-ms 5 [--fault 'stall; after=3; seconds=2' ...] [--cpu N]

It prints one line, ``listening on http://HOST:PORT``, once it accepts
connections.  From Python, :func:`run_test_server` starts it in a subprocess
(so its timing is not disturbed by the caller's event loop)::

    with run_test_server(TestServerConfig(ttft_ms=20, itl_ms=2)) as srv:
        ... srv.base_url ... srv.stats() ...

Endpoints
---------
``POST /v1/completions``, ``POST /v1/chat/completions``
    OpenAI, streaming (SSE ``data: {json}\\n\\n``, then ``data: [DONE]\\n\\n``)
    or not.  Body fields used: ``model`` (unknown -> 404 ``NotFoundError``),
    ``prompt`` (string, list of token ids, or list of one string) /
    ``messages``, ``max_tokens`` (chat: ``max_completion_tokens`` first;
    default 16), ``stream``, ``stream_options.include_usage``, ``ignore_eos``.
    Chat streams start with a ``delta: {"role": "assistant", "content": ""}``
    chunk (sent with the first token, as vLLM does); the last token chunk
    carries ``finish_reason``; with ``include_usage`` a chunk with
    ``"choices": []`` and ``usage`` precedes [DONE].
``POST /generate_stream``, ``POST /generate``, ``POST /``
    TGI: ``{"inputs": str, "parameters": {"max_new_tokens", "details"}}``.
    Events are ``data:{json}\\n\\n`` (no space, as axum writes them) with
    ``index`` (1-based), ``token {id, text, logprob, special}``,
    ``generated_text`` and ``details`` null except on the last event
    (``details``: ``finish_reason``, ``generated_tokens``, ``seed``,
    ``input_length``, when ``parameters.details``); no [DONE].
``GET /v1/models``, ``/health``, ``/version``, ``/info`` (TGI), ``/metrics``
    Prometheus text with vLLM names (``vllm:num_requests_running``,
    ``vllm:num_requests_waiting``, ``vllm:prompt_tokens_total``,
    ``vllm:generation_tokens_total``, ...) and ``tgi_queue_size`` /
    ``tgi_batch_current_size``.
``GET /stats[?requests=1]``, ``POST /stats/reset``
    Ground truth (see :class:`~.stats.RequestRecord`): per request arrival,
    schedule, first/last write times (``time.perf_counter()`` — system-wide
    CLOCK_MONOTONIC on Linux, so comparable with a client's perf_counter on
    the same host — and ``time.time()``), tokens sent, outcome; aggregates
    ``ttft_lateness_ms`` (how late the server wrote the first token against
    its own schedule), ``max_token_lateness_ms``, ``queue_wait_ms``,
    ``server_ttft_ms``, counts by outcome/status/fault.  A client may send
    ``X-Request-Id``; it is recorded as ``client_request_id``.  Streaming
    responses carry ``X-Testserver-Seq`` (the record's ``seq``).

Tokens
------
Output token ``i`` has text ``TOKEN_WORDS[i % 16]`` (" the", " of", ...: one
token each in the usual BPE vocabularies); one token = one event.  Count:
``max_tokens`` exactly, unless ``eos_after`` is set and the request does not
say ``ignore_eos`` (TGI has no ignore_eos: ``eos_after`` always applies) —
then ``min(eos_after, max_tokens)`` with finish_reason ``stop``
(TGI ``eos_token``).  Prompt tokens = number of whitespace-separated words
of the prompt (chat: of all message texts; token-id prompts: their count),
times ``prompt_tokens_per_word`` (rounded).  A prompt over ``max_model_len``,
or prompt + explicit ``max_tokens`` over it, is rejected like vLLM does
(400; TGI: 422).

Timing
------
Each request runs on an absolute schedule: ``t0`` = arrival (or the moment
it leaves the ``max_concurrency`` queue, or arrival + ``slow_headers``
delay), ``t_first = t0 + ttft_ms + prompt_tokens * ttft_per_prompt_token_us``,
token ``i`` due at ``t_first + i * itl_ms`` (optional seeded uniform
jitter).  A token is written when due (never earlier than 50 us before); if
the server falls behind, all tokens already due go out in one write (still
separate SSE events) and the lateness is recorded.  Streaming response
headers are sent on arrival, as vLLM does.  Non-streaming responses are sent
when the last token is due.

Faults
------
Chosen per request by the ``X-Test-Fault: MODE[; key=value]...`` header
(wins; ``none`` disables config faults) or by config rules (``faults``; each
applies to every request, to a seeded fraction ``rate``, or to every k-th
request ``every``).  Modes, with their parameters:

- ``http_500`` / ``http_400`` / ``http_429`` / any ``http_NNN`` (400-599):
  that status with an API-shaped JSON error (429/503: ``Retry-After: 1``);
  ``seconds`` delays it.
- ``reset`` (``after``, ``rst``): after ``after`` tokens, at the time the
  next token is due, abort the transport (FIN; ``rst=1``: TCP RST).
- ``stall`` (``after``, ``seconds``): after ``after`` tokens send nothing
  for ``seconds`` (at least, measured from the last write), then finish.
- ``slow_headers`` (``seconds``): response headers ``seconds`` late; the
  whole schedule shifts with them.
- ``bad_json`` (``after``): one extra event whose data is not valid JSON,
  before token ``after``.
- ``no_data`` (``after``, ``kind`` comment|event|both): extra events with
  no ``data:`` line: ``: keepalive`` and/or ``event: ping``.
- ``no_done``: no ``data: [DONE]`` (TGI: the last event lacks
  ``generated_text``/``details``).
- ``no_usage``: no usage chunk even when asked (non-streaming: no ``usage``).
- ``hold_open`` (``seconds``): the stream is complete ([DONE] written) but
  the HTTP body ends ``seconds`` later (default ``delay_s``).
- ``late_usage`` (``seconds``): the usage chunk and [DONE] come ``seconds``
  after the last token (default ``delay_s``); OpenAI streams only.
- ``bad_utf8`` (``after``): one extra event whose data is not UTF-8,
  before token ``after``.
- ``oversized`` (``after``, ``size``): token ``after``'s text is ``size``
  bytes (default 2 MiB); the token count is unchanged.
- ``tgi_overloaded`` (``after``): after ``after`` tokens, an error event
  ``{"error": "Model is overloaded", "error_type": "overloaded"}`` (OpenAI
  endpoints: vLLM's in-stream ``{"error": {...}}`` event, then [DONE]);
  the stream then ends.  Non-streaming: 429 (TGI) / 503 (OpenAI).
- ``die`` (``after``): ``os._exit(die_exit_code)`` mid-stream; only with
  ``allow_die`` (otherwise the request gets a 400).

``after`` defaults to ``fault_after`` (2), ``seconds`` to ``stall_s`` /
``delay_s`` (1.0), ``size`` to ``oversized_bytes``.
"""

from .config import FAULT_MODES, FaultRule, TestServerConfig
from .helper import TestServerHandle, run_test_server, start_test_server
from .protocol import TOKEN_WORDS, output_text, token_text
from .server import APP_KEY, TestServer, create_app, serve

__all__ = [
    "APP_KEY",
    "FAULT_MODES",
    "FaultRule",
    "TOKEN_WORDS",
    "TestServer",
    "TestServerConfig",
    "TestServerHandle",
    "create_app",
    "output_text",
    "run_test_server",
    "serve",
    "start_test_server",
    "token_text",
]
