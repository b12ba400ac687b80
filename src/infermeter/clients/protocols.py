"""Request bodies and response interpretation for each wire protocol.

``build_body`` runs before the load starts (bodies are pre-serialised);
``interpret`` runs after a response is complete, never while bytes stream in.
"""

from __future__ import annotations

from typing import Any, Iterable

import orjson

from infermeter.core.exchange import ErrorClass, RawExchange
from infermeter.clients.sse import OversizedEvent, block_data, iter_event_blocks, simple_events
from infermeter.core.protocol import Protocol, RequestOptions
from infermeter.core.records import RequestRecord
from infermeter.core.prompt import Prompt


def _fill_transport(raw: RawExchange, rec: RequestRecord) -> None:
    rec.sent = raw.sent
    rec.headers = raw.headers
    rec.end = rec.body_end = raw.end  # the end of a streamed success is moved to its stream's end
    rec.status = raw.status
    rec.retry_after = raw.retry_after
    if raw.retries:
        rec.anomalies.append("resent on a fresh connection: the server had closed the kept-alive one")
    if raw.error is not None:
        rec.error = raw.error.value
        rec.error_detail = raw.error_detail


#: a body that ends, or a usage chunk that arrives, this long after the stream's last
#: content event is noted as an anomaly (E2EL and TPOT do not include the wait)
LATE_S = 0.05


def _end_by_stream(rec: RequestRecord) -> None:
    """Put a successful stream's end at its last content event (else its end marker).

    The HTTP body's end stays in ``body_end``: a server holding the response
    open after ``[DONE]``, or sending its usage chunk late, does not move it.
    """
    if not rec.ok:
        return
    if rec.token_times:
        rec.end = rec.token_times[-1]
    elif rec.done_time is not None:
        rec.end = rec.done_time
    if rec.end is None:
        return
    if rec.body_end is not None and rec.body_end - rec.end > LATE_S:
        rec.anomalies.append(f"the HTTP body ended over {LATE_S * 1e3:.0f} ms after the stream (not in E2EL)")
    if rec.usage_time is not None and rec.usage_time - rec.end > LATE_S:
        rec.anomalies.append(f"the usage chunk came over {LATE_S * 1e3:.0f} ms after the last token (not in E2EL)")


def _error_message(body: bytes) -> str:
    try:
        obj = orjson.loads(body)
    except ValueError:
        return body[:300].decode("utf-8", errors="replace").strip()
    if isinstance(obj, dict):
        err = obj.get("error", obj.get("detail", obj.get("message", obj)))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)[:300]
    return str(obj)[:300]


def _json_event(data: bytes, rec: RequestRecord) -> dict[str, Any] | None:
    """An event's JSON object; None (and the request marked malformed) when it is not one."""
    try:
        obj = orjson.loads(data)
    except ValueError:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            _fail(rec, ErrorClass.MALFORMED, f"event is not UTF-8 (byte {data[exc.start]:#04x} at offset "
                                             f"{exc.start}): {_show(data)}")
            return None
        _fail(rec, ErrorClass.MALFORMED, f"event is not JSON: {_show(data)}")
        return None
    if not isinstance(obj, dict):
        _fail(rec, ErrorClass.MALFORMED, f"event is not a JSON object: {_show(data)}")
        return None
    return obj


def _show(data: bytes) -> str:
    """The start of an event's data for an error message."""
    return repr(data[:120].decode("utf-8", errors="replace"))


def _fail(rec: RequestRecord, cls: ErrorClass, detail: str) -> None:
    if rec.error is None:  # the first failure is the cause
        rec.error = cls.value
        rec.error_detail = detail[:500]


def _events(raw: RawExchange, rec: RequestRecord) -> Iterable[tuple[float, bytes | None]]:
    """The stream's events as (time, data bytes); an oversized one fails the request,
    keeping the events (timings) before it."""
    simple = simple_events(raw.times, raw.chunks)
    if simple is not None:
        return zip(*simple)
    events: list[tuple[float, bytes | None]] = []
    try:
        for t, block, _terminated in iter_event_blocks(raw.times, raw.chunks):
            events.append((t, block_data(block)))
    except OversizedEvent as exc:
        _fail(rec, ErrorClass.OVERSIZED, str(exc))
    return events


class OpenAIProtocol(Protocol):
    """``/v1/completions`` (``chat=False``) and ``/v1/chat/completions`` (``chat=True``)."""

    def __init__(self, chat: bool, path: str | None = None) -> None:
        self.chat = chat
        self.name = "openai-chat" if chat else "openai"
        self.stream_path = path or ("/v1/chat/completions" if chat else "/v1/completions")

    def build_body(self, prompt: Prompt, opts: RequestOptions) -> bytes:
        body: dict[str, Any] = {"model": opts.model}
        if self.chat:
            body["messages"] = list(prompt.messages) if prompt.messages else [{"role": "user", "content": prompt.text}]
        else:
            body["prompt"] = prompt.text
        if prompt.output_len is not None:
            body["max_tokens"] = prompt.output_len
        if opts.temperature is not None:
            body["temperature"] = opts.temperature
        if opts.top_p is not None:
            body["top_p"] = opts.top_p
        if opts.top_k is not None:
            body["top_k"] = opts.top_k
        if opts.ignore_eos:
            body["ignore_eos"] = True
        body["stream"] = opts.stream
        if opts.stream:
            body["stream_options"] = {"include_usage": True}
        body.update(opts.extra_body)
        return orjson.dumps(body)

    def interpret(self, raw: RawExchange, rec: RequestRecord, opts: RequestOptions) -> None:
        _fill_transport(raw, rec)
        if raw.status is not None and raw.status >= 400:
            rec.error_detail = _error_message(raw.body)
            return
        if raw.status is None:
            return
        if not opts.stream:
            self._interpret_whole(raw, rec)
            return
        events = _events(raw, rec)
        parts: list[str] = []
        done = False
        usage_seen = False
        text_key = "text"
        token_times = rec.token_times
        loads = orjson.loads
        for t, data in events:
            if data is None:
                continue  # comments, keep-alives, named pings
            if data == b"[DONE]":
                if not done:
                    rec.done_time = t
                done = True
                continue
            try:
                obj = loads(data)
            except ValueError:
                obj = None
            if type(obj) is not dict:
                _json_event(data, rec)  # records why
                continue
            if "error" in obj:
                _fail(rec, ErrorClass.SERVER_ERROR, _error_message(data))
                continue
            choices = obj.get("choices")
            if choices:
                if rec.first_choice is None:  # vLLM's TTFT point (see RequestRecord)
                    rec.first_choice = t
                rec.last_choice = t
                rec.choice_events += 1
                choice = choices[0]
                if self.chat:
                    delta = choice.get("delta") or {}
                    text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
                else:
                    text = choice.get(text_key)
                if text:
                    token_times.append(t)
                    parts.append(text)
                reason = choice.get("finish_reason")
                if reason:
                    rec.finish_reason = reason
            usage = obj.get("usage")
            if usage:
                rec.usage_time = t  # the last one: its count is the one kept
                usage_seen = True
                rec.output_tokens_server = usage.get("completion_tokens")
                rec.prompt_tokens_server = usage.get("prompt_tokens")
        rec.output_events = len(rec.token_times)
        rec.first_token = rec.token_times[0] if rec.token_times else None
        rec.generated_text = "".join(parts)
        if not usage_seen:
            rec.anomalies.append("no usage chunk")
        if rec.error is None and not done:
            if rec.finish_reason:
                rec.anomalies.append("stream ended without [DONE]")
            else:
                _fail(rec, ErrorClass.INCOMPLETE, "the stream ended without [DONE] or a finish_reason")
        rec.ok = rec.error is None
        _end_by_stream(rec)

    def _interpret_whole(self, raw: RawExchange, rec: RequestRecord) -> None:
        try:
            obj = orjson.loads(raw.body)
            choice = obj["choices"][0]
            text = choice["message"].get("content") if self.chat else choice.get("text")
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            _fail(rec, ErrorClass.MALFORMED, f"response is not a completion: {raw.body[:120]!r}")
            return
        if rec.error is not None:
            return
        rec.generated_text = text or ""
        rec.finish_reason = choice.get("finish_reason")
        usage = obj.get("usage") or {}
        rec.output_tokens_server = usage.get("completion_tokens")
        rec.prompt_tokens_server = usage.get("prompt_tokens")
        rec.first_token = raw.end  # a whole response: the first token is seen with the last
        rec.token_times = [raw.end] if raw.end is not None else []
        rec.output_events = 1
        rec.ok = True


class TGIProtocol(Protocol):
    """TGI's native ``/generate_stream`` (and ``/generate`` without streaming)."""

    name = "tgi"

    def __init__(self, path: str = "/generate_stream") -> None:
        self.stream_path = path

    def build_body(self, prompt: Prompt, opts: RequestOptions) -> bytes:
        params: dict[str, Any] = {"details": True, "decoder_input_details": False}
        if prompt.output_len is not None:
            params["max_new_tokens"] = prompt.output_len
        if opts.temperature:
            params["do_sample"] = True
            params["temperature"] = opts.temperature
        else:
            params["do_sample"] = False
        if opts.top_p is not None:
            params["top_p"] = opts.top_p
        if opts.top_k is not None:
            params["top_k"] = opts.top_k
        params.update(opts.extra_body)
        return orjson.dumps({"inputs": prompt.text, "parameters": params, "stream": opts.stream})

    def interpret(self, raw: RawExchange, rec: RequestRecord, opts: RequestOptions) -> None:
        _fill_transport(raw, rec)
        if raw.status is not None and raw.status >= 400:
            rec.error_detail = _error_message(raw.body)
            if "overloaded" in (rec.error_detail or "").lower():
                rec.error = ErrorClass.OVERLOADED.value
            return
        if raw.status is None:
            return
        if not opts.stream:
            try:
                obj = orjson.loads(raw.body)
                if isinstance(obj, list):
                    obj = obj[0]
                rec.generated_text = obj["generated_text"]
            except (ValueError, KeyError, IndexError, TypeError):
                _fail(rec, ErrorClass.MALFORMED, f"response is not a TGI generation: {raw.body[:120]!r}")
                return
            details = obj.get("details") or {}
            rec.output_tokens_server = details.get("generated_tokens")
            rec.finish_reason = details.get("finish_reason")
            rec.first_token = raw.end
            rec.token_times = [raw.end] if raw.end is not None else []
            rec.output_events = 1
            rec.ok = rec.error is None
            return
        events = _events(raw, rec)
        parts: list[str] = []
        final = False
        for t, data in events:
            if data is None:
                continue
            obj = _json_event(data, rec)
            if obj is None:
                continue
            if "error" in obj:
                cls = ErrorClass.OVERLOADED if obj.get("error_type") == "overloaded" else ErrorClass.SERVER_ERROR
                _fail(rec, cls, f"{obj.get('error_type', 'error')}: {obj.get('error')}")
                continue
            token = obj.get("token")
            if token is not None:
                rec.token_times.append(t)
                if not token.get("special"):
                    parts.append(token.get("text") or "")
            if obj.get("generated_text") is not None:
                if not final:
                    rec.done_time = t
                final = True
                details = obj.get("details") or {}
                if details:
                    rec.usage_time = t
                    rec.output_tokens_server = details.get("generated_tokens")
                    rec.finish_reason = details.get("finish_reason")
        rec.output_events = len(rec.token_times)
        rec.first_token = rec.token_times[0] if rec.token_times else None
        rec.generated_text = "".join(parts)
        if rec.error is None and not final:
            _fail(rec, ErrorClass.INCOMPLETE, "the stream ended before the final event with generated_text")
        rec.ok = rec.error is None
        _end_by_stream(rec)


def make_protocol(kind: str, endpoint: str) -> Protocol:
    if kind == "tgi":
        return TGIProtocol(endpoint)
    return OpenAIProtocol(chat=(kind == "openai-chat"), path=endpoint)
