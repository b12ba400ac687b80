"""Byte-exact wire formats of the OpenAI (vLLM flavour) and TGI APIs.

Everything a token event needs that does not change within a request is
precomputed once per request (prefix/suffix bytes) and once per process
(the JSON-encoded token words), so one token event is a few byte
concatenations.
"""

from __future__ import annotations

import orjson

#: Output token texts, cycled: token i has text ``TOKEN_WORDS[i % len]``.
#: Common English words with a leading space: one token each in the usual
#: BPE vocabularies, so re-tokenising the output gives back the count.
TOKEN_WORDS: tuple[str, ...] = (
    " the", " of", " and", " to", " in", " a", " is", " that",
    " for", " it", " as", " with", " was", " on", " be", " at",
)  # fmt: skip
_NW = len(TOKEN_WORDS)
_WORD_JSON: tuple[bytes, ...] = tuple(orjson.dumps(w) for w in TOKEN_WORDS)
#: TGI token ids / logprobs: deterministic per word
TGI_TOKEN_IDS: tuple[int, ...] = tuple(1000 + i for i in range(_NW))
TGI_LOGPROB = -0.125
_TGI_TOKEN_HEAD: tuple[bytes, ...] = tuple(
    b'{"id":%d,"text":%s,"logprob":-0.125,"special":false}' % (TGI_TOKEN_IDS[i], _WORD_JSON[i])
    for i in range(_NW)
)

DONE = b"data: [DONE]\n\n"
BAD_UTF8_DATA = b'{"id": "broken", "choices": [{"text": "\xff\xfe\xc3"}]}'
BAD_JSON_DATA = b'{"id": "broken", "choices": [{"text": "unterminated'
SSE_COMMENT = b": keepalive\n\n"
SSE_PING = b"event: ping\n\n"


def token_text(i: int) -> str:
    """Text of output token ``i`` (0-based)."""
    return TOKEN_WORDS[i % _NW]


def output_text(n: int, replace: tuple[int, str] | None = None) -> str:
    """Concatenated text of the first ``n`` output tokens.

    ``replace=(i, text)`` substitutes the text of token ``i`` (oversized fault).
    """
    full, rest = divmod(n, _NW)
    text = "".join(TOKEN_WORDS) * full + "".join(TOKEN_WORDS[:rest])
    if replace is not None and 0 <= replace[0] < n:
        i, new = replace
        # every word is short; find token i's offset by summing lengths
        off = len("".join(TOKEN_WORDS)) * (i // _NW) + len("".join(TOKEN_WORDS[: i % _NW]))
        text = text[:off] + new + text[off + len(TOKEN_WORDS[i % _NW]) :]
    return text


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def oversized_text(size: int) -> str:
    """A token text of ``size`` bytes (ASCII)."""
    return " " + "x" * max(0, size - 1)


class StreamFormat:
    """Builds the SSE bytes of one streamed request (subclass per API)."""

    #: bytes written before the first token (in the same write)
    head: bytes = b""

    def token(self, i: int, last: bool) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def token_with_text(self, i: int, text: str, last: bool) -> bytes:  # pragma: no cover
        raise NotImplementedError

    def tail(self, n_sent: int, include_usage: bool, done: bool) -> bytes:
        return b""

    def error_event(self, message: str, error_type: str, code: int) -> bytes:  # pragma: no cover
        raise NotImplementedError


class CompletionsFormat(StreamFormat):
    """``POST /v1/completions`` chunks (object ``text_completion``)."""

    def __init__(self, rid: str, created: int, model: str, prompt_tokens: int, finish: str):
        self._common = b'{"id":%s,"object":"text_completion","created":%d,"model":%s' % (
            orjson.dumps(rid),
            created,
            orjson.dumps(model),
        )
        self._pre = b"data: " + self._common + b',"choices":[{"index":0,"text":'
        self._suf = b',"logprobs":null,"finish_reason":null}]}\n\n'
        self._suf_last = b',"logprobs":null,"finish_reason":%s}]}\n\n' % orjson.dumps(finish)
        self._prompt_tokens = prompt_tokens

    def token(self, i: int, last: bool) -> bytes:
        return self._pre + _WORD_JSON[i % _NW] + (self._suf_last if last else self._suf)

    def token_with_text(self, i: int, text: str, last: bool) -> bytes:
        return self._pre + orjson.dumps(text) + (self._suf_last if last else self._suf)

    def tail(self, n_sent: int, include_usage: bool, done: bool) -> bytes:
        out = b""
        if include_usage:
            out = (
                b"data: "
                + self._common
                + b',"choices":[],"usage":'
                + orjson.dumps(usage_dict(self._prompt_tokens, n_sent))
                + b"}\n\n"
            )
        return out + DONE if done else out

    def error_event(self, message: str, error_type: str, code: int) -> bytes:
        return b"data: " + orjson.dumps(openai_error(message, error_type, code)) + b"\n\n"


class ChatFormat(CompletionsFormat):
    """``POST /v1/chat/completions`` chunks (object ``chat.completion.chunk``)."""

    def __init__(
        self,
        rid: str,
        created: int,
        model: str,
        prompt_tokens: int,
        finish: str,
        role_chunk: bool,
    ):
        self._common = b'{"id":%s,"object":"chat.completion.chunk","created":%d,"model":%s' % (
            orjson.dumps(rid),
            created,
            orjson.dumps(model),
        )
        choices = b"data: " + self._common + b',"choices":[{"index":0,"delta":'
        self._pre = choices + b'{"content":'
        self._suf = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        self._suf_last = b'},"logprobs":null,"finish_reason":%s}]}\n\n' % orjson.dumps(finish)
        self._prompt_tokens = prompt_tokens
        if role_chunk:
            self.head = (
                choices
                + b'{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
            )


class TgiFormat(StreamFormat):
    """``POST /generate_stream`` events (``data:`` without a space, as axum writes)."""

    def __init__(
        self,
        prompt_tokens: int,
        finish: str,
        details: bool,
        replace: tuple[int, str] | None = None,
    ):
        self._prompt_tokens = prompt_tokens
        self._finish = finish
        self._details = details
        self._replace = replace

    def _event(self, i: int, tok: bytes, last: bool) -> bytes:
        if not last:
            return b'data:{"index":%d,"token":%s,"generated_text":null,"details":null}\n\n' % (
                i + 1,
                tok,
            )
        details = b"null"
        if self._details:
            details = orjson.dumps(
                {
                    "finish_reason": self._finish,
                    "generated_tokens": i + 1,
                    "seed": None,
                    "input_length": self._prompt_tokens,
                }
            )
        return b'data:{"index":%d,"token":%s,"generated_text":%s,"details":%s}\n\n' % (
            i + 1,
            tok,
            orjson.dumps(output_text(i + 1, self._replace)),
            details,
        )

    def token(self, i: int, last: bool) -> bytes:
        return self._event(i, _TGI_TOKEN_HEAD[i % _NW], last)

    def token_with_text(self, i: int, text: str, last: bool) -> bytes:
        tok = orjson.dumps(
            {"id": TGI_TOKEN_IDS[i % _NW], "text": text, "logprob": TGI_LOGPROB, "special": False}
        )
        return self._event(i, tok, last)

    def error_event(self, message: str, error_type: str, code: int) -> bytes:
        return b"data:" + orjson.dumps(tgi_error(message, error_type)) + b"\n\n"


def openai_error(message: str, error_type: str, code: int) -> dict:
    """vLLM's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def tgi_error(message: str, error_type: str) -> dict:
    """TGI's error body: ``{"error", "error_type"}``."""
    return {"error": message, "error_type": error_type}


def completions_response(
    rid: str, created: int, model: str, text: str, finish: str, usage: dict | None
) -> dict:
    body: dict = {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def chat_response(
    rid: str, created: int, model: str, text: str, finish: str, usage: dict | None
) -> dict:
    body: dict = {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def tgi_generate_response(
    n: int, finish: str, details: bool, replace: tuple[int, str] | None = None
) -> dict:
    body: dict = {"generated_text": output_text(n, replace)}
    if details:
        tokens = []
        for i in range(n):
            w = i % _NW
            tokens.append(
                {
                    "id": TGI_TOKEN_IDS[w],
                    "text": replace[1] if replace and replace[0] == i else TOKEN_WORDS[w],
                    "logprob": TGI_LOGPROB,
                    "special": False,
                }
            )
        body["details"] = {
            "finish_reason": finish,
            "generated_tokens": n,
            "seed": None,
            "prefill": [],
            "tokens": tokens,
        }
    return body
