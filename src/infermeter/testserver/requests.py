"""What a request asks for: the OpenAI and TGI bodies parsed into a generation, and API-shaped errors."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from . import protocol as P
from .config import TestServerConfig

OPENAI = "openai"
TGI = "tgi"

_OPENAI_ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    408: "RequestTimeoutError",
    413: "BadRequestError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}
_TGI_ERROR_TYPES = {
    400: "validation",
    422: "validation",
    424: "generation",
    429: "overloaded",
    500: "generation",
    503: "overloaded",
}


class Reject(Exception):
    """Validation failure: answer ``status`` with an API-shaped error."""

    def __init__(self, status: int, message: str, error_type: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


@dataclass(slots=True)
class Gen:
    api: str  # OPENAI | TGI
    chat: bool
    stream: bool
    model: str
    prompt_tokens: int
    max_tokens: int
    n: int
    finish: str
    include_usage: bool
    details: bool
    compat_list: bool  # TGI "POST /" non-streaming answers a list


def count_words(text: str) -> int:
    return len(text.split())


def parse_request(
    cfg: TestServerConfig, models: Container[str], body: dict, api: str, chat: bool,
    stream: bool | None, compat: bool,
) -> Gen:
    """The generation a request asks for, or :class:`Reject` with the API's own error."""
    if api == OPENAI:
        model = body.get("model")
        if model is None:
            model = cfg.model
        elif model not in models:
            raise Reject(404, f"The model `{model}` does not exist.", "NotFoundError")
        if chat:
            words = _chat_words(body.get("messages"))
            max_tokens = body.get("max_completion_tokens")
            if max_tokens is None:
                max_tokens = body.get("max_tokens")
        else:
            words = _prompt_words(body.get("prompt"))
            max_tokens = body.get("max_tokens")
        do_stream = bool(body.get("stream", False))
        so = body.get("stream_options") or {}
        include_usage = bool(isinstance(so, dict) and so.get("include_usage"))
        ignore_eos = bool(body.get("ignore_eos", False))
        details = False
    else:
        model = cfg.model
        inputs = body.get("inputs")
        if not isinstance(inputs, str):
            raise Reject(422, "Input validation error: `inputs` must be a string")
        words = count_words(inputs)
        params = body.get("parameters") or {}
        if not isinstance(params, dict):
            raise Reject(422, "Input validation error: `parameters` must be an object")
        max_tokens = params.get("max_new_tokens")
        do_stream = bool(body.get("stream", False)) if stream is None else stream
        include_usage = False
        ignore_eos = False
        details = bool(params.get("details", False))
    ptoks = words if cfg.prompt_tokens_per_word == 1.0 else round(
        words * cfg.prompt_tokens_per_word
    )  # fmt: skip
    explicit = max_tokens is not None
    if not explicit:
        max_tokens = cfg.default_max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        if api == OPENAI:
            raise Reject(400, f"max_tokens must be at least 1, got {max_tokens}.")
        raise Reject(
            422, "Input validation error: `max_new_tokens` must be strictly positive"
        )
    limit = cfg.max_model_len
    if api == OPENAI:
        if ptoks > limit:
            raise Reject(
                400,
                f"This model's maximum context length is {limit} tokens. However, your "
                f"request has {ptoks} input tokens. Please reduce the length of the "
                "input messages.",
            )
        if explicit and ptoks + max_tokens > limit:
            raise Reject(
                400,
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {ptoks + max_tokens} tokens ({ptoks} in the messages, "
                f"{max_tokens} in the completion). Please reduce the length of the "
                "messages or completion.",
            )
    elif ptoks + max_tokens > limit:
        raise Reject(
            422,
            f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= "
            f"{limit}. Given: {ptoks} `inputs` tokens and {max_tokens} `max_new_tokens`",
        )
    n = max_tokens
    if cfg.eos_after is not None and not ignore_eos and cfg.eos_after < max_tokens:
        n = cfg.eos_after
    if n == max_tokens:
        finish = "length"
    else:
        finish = "stop" if api == OPENAI else "eos_token"
    return Gen(
        api=api,
        chat=chat,
        stream=do_stream,
        model=model,
        prompt_tokens=ptoks,
        max_tokens=max_tokens,
        n=n,
        finish=finish,
        include_usage=include_usage,
        details=details,
        compat_list=compat,
    )


def error_response(
    api: str,
    status: int,
    message: str,
    error_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    if api == OPENAI:
        body = P.openai_error(
            message, error_type or _OPENAI_ERROR_TYPES.get(status, "Error"), status
        )
    else:
        body = P.tgi_error(message, error_type or _TGI_ERROR_TYPES.get(status, "error"))
    return json_response(body, status=status, headers=headers)


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    h = {"Content-Type": "application/json"}
    if headers:
        h.update(headers)
    return web.Response(body=orjson.dumps(obj), status=status, headers=h)


def _prompt_words(prompt: Any) -> int:
    if isinstance(prompt, str):
        return count_words(prompt)
    if isinstance(prompt, list):
        if prompt and all(isinstance(x, int) and not isinstance(x, bool) for x in prompt):
            return len(prompt)  # token ids
        if len(prompt) == 1:
            return _prompt_words(prompt[0])
        raise Reject(400, "the test server supports one prompt per request")
    raise Reject(400, "`prompt` must be a string, a list of token ids or a list of one string")


def _chat_words(messages: Any) -> int:
    if not isinstance(messages, list) or not messages:
        raise Reject(400, "`messages` must be a non-empty list")
    words = 0
    for m in messages:
        if not isinstance(m, dict):
            raise Reject(400, "each message must be an object")
        content = m.get("content")
        if isinstance(content, str):
            words += count_words(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    words += count_words(part["text"])
    return words
