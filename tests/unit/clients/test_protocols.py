import orjson

from infermeter.core.exchange import ErrorClass, RawExchange
from infermeter.clients.protocols import OpenAIProtocol, TGIProtocol
from infermeter.core.protocol import RequestOptions
from infermeter.core.records import RequestRecord
from infermeter.core.prompt import Prompt

OPTS = RequestOptions(model="m", ignore_eos=True)


def raw_of(events: list[bytes], times=None, status=200, error=None):
    times = times or [float(i + 1) for i in range(len(events))]
    return RawExchange(status=status, sent=0.0, headers=0.5, times=list(times), chunks=list(events),
                       end=times[-1] if times else 1.0, error=error)


def new_rec():
    return RequestRecord(index=0, warmup=False, scheduled=0.0, input_len=4, requested_output_len=3)


def comp(text):
    return b"data: " + orjson.dumps({"choices": [{"index": 0, "text": text, "finish_reason": None}]}) + b"\n\n"


USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}\n\n'
DONE = b"data: [DONE]\n\n"


def test_completions_body_asks_for_usage_and_exact_length():
    body = orjson.loads(OpenAIProtocol(chat=False).build_body(Prompt("hi", 1, 7), OPTS))
    assert body == {"model": "m", "prompt": "hi", "max_tokens": 7, "temperature": 0.0, "ignore_eos": True,
                    "stream": True, "stream_options": {"include_usage": True}}
    chat = orjson.loads(OpenAIProtocol(chat=True).build_body(Prompt("hi", 1, 7), OPTS))
    assert chat["messages"] == [{"role": "user", "content": "hi"}] and "prompt" not in chat


def test_completions_stream_is_interpreted_with_token_times_and_usage():
    rec = new_rec()
    OpenAIProtocol(chat=False).interpret(raw_of([comp("a"), comp("b"), comp("c"), USAGE + DONE]), rec, OPTS)
    assert rec.ok and rec.error is None
    assert rec.token_times == [1.0, 2.0, 3.0] and rec.first_token == 1.0
    assert rec.output_tokens_server == 3 and rec.prompt_tokens_server == 4
    assert rec.generated_text == "abc"


def test_chat_role_chunk_does_not_count_as_first_token():
    role = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    tok = b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":"length"}]}\n\n'
    rec = new_rec()
    OpenAIProtocol(chat=True).interpret(raw_of([role, tok, DONE]), rec, OPTS)
    assert rec.first_token == 2.0 and rec.finish_reason == "length" and rec.ok
    assert "no usage chunk" in rec.anomalies


def test_missing_done_without_finish_reason_is_incomplete():
    rec = new_rec()
    OpenAIProtocol(chat=False).interpret(raw_of([comp("a"), comp("b")]), rec, OPTS)
    assert not rec.ok and rec.error == ErrorClass.INCOMPLETE.value
    assert rec.token_times == [1.0, 2.0]  # timings so far are kept


def test_bad_json_event_and_error_event():
    rec = new_rec()
    OpenAIProtocol(chat=False).interpret(raw_of([comp("a"), b"data: {nope\n\n", DONE]), rec, OPTS)
    assert rec.error == ErrorClass.MALFORMED.value and not rec.ok
    rec = new_rec()
    err = b'data: {"error": {"message": "boom", "code": 500}}\n\n'
    OpenAIProtocol(chat=False).interpret(raw_of([comp("a"), err, DONE]), rec, OPTS)
    assert rec.error == ErrorClass.SERVER_ERROR.value and "boom" in rec.error_detail


def test_http_error_keeps_the_servers_message():
    rec = new_rec()
    raw = raw_of([b'{"error": {"message": "model not found", "type": "NotFoundError"}}'], status=404,
                 error=ErrorClass.HTTP_4XX)
    OpenAIProtocol(chat=False).interpret(raw, rec, OPTS)
    assert rec.error == "http_4xx" and rec.error_detail == "model not found" and rec.status == 404


def test_reset_mid_stream_keeps_partial_timings():
    rec = new_rec()
    OpenAIProtocol(chat=False).interpret(raw_of([comp("a"), comp("b")], error=ErrorClass.RESET), rec, OPTS)
    assert rec.error == "reset" and rec.token_times == [1.0, 2.0] and not rec.ok


def tgi(text, final=False, n=3, special=False):
    ev = {"index": 1, "token": {"id": 1, "text": text, "logprob": 0.0, "special": special},
          "generated_text": "abc" if final else None,
          "details": {"finish_reason": "length", "generated_tokens": n, "seed": None} if final else None}
    return b"data:" + orjson.dumps(ev) + b"\n\n"


def test_tgi_stream_uses_details_for_token_counts():
    rec = new_rec()
    TGIProtocol().interpret(raw_of([tgi("a"), tgi("b"), tgi("c", final=True)]), rec, OPTS)
    assert rec.ok and rec.output_tokens_server == 3 and rec.token_times == [1.0, 2.0, 3.0]
    assert rec.generated_text == "abc" and rec.finish_reason == "length"


def test_tgi_overloaded_error_event():
    rec = new_rec()
    err = b'data:{"error":"Model is overloaded","error_type":"overloaded"}\n\n'
    TGIProtocol().interpret(raw_of([err]), rec, OPTS)
    assert rec.error == ErrorClass.OVERLOADED.value


def test_tgi_body_has_no_ignore_eos_but_details():
    body = orjson.loads(TGIProtocol().build_body(Prompt("hi", 1, 9), OPTS))
    assert body["parameters"]["max_new_tokens"] == 9 and body["parameters"]["details"] is True
    assert "ignore_eos" not in body["parameters"]
