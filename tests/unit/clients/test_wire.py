"""Wire-level honesty without a server: URL redaction, the stream's end, undecodable bytes."""

from __future__ import annotations

import pytest

from infermeter.secrets import redact_argv, redact_tree, redact_url


@pytest.mark.parametrize("url, shown", [
    ("http://user:pw@host:8000/v1", "http://host:8000/v1"),
    ("http://host/v1?token=abc&model=m", "http://host/v1?token=<redacted>&model=m"),
    ("http://h/?key=1&api_key=2&apikey=3&secret=4&password=5&sig=6&signature=7&access_token=8&auth=9",
     "http://h/?key=<redacted>&api_key=<redacted>&apikey=<redacted>&secret=<redacted>&password=<redacted>"
     "&sig=<redacted>&signature=<redacted>&access_token=<redacted>&auth=<redacted>"),
    ("https://s3/x?X-Amz-Credential=a&X-Amz-Signature=b&X-Amz-Date=c",
     "https://s3/x?X-Amz-Credential=<redacted>&X-Amz-Signature=<redacted>&X-Amz-Date=c"),
    ("http://u:p@[::1]:9000/?token=t", "http://[::1]:9000/?token=<redacted>"),
    ("http://host:8000", "http://host:8000"),
])
def test_redact_url_drops_userinfo_and_secret_query_values(url, shown):
    assert redact_url(url) == shown


def test_redact_tree_reaches_every_string_and_header():
    data = {"target": {"url": "http://u:pw1@h/x", "headers": {"Authorization": "Bearer pw2", "X-Team": "a"}},
            "notes": ["see http://h/?token=pw3 there", 3, None]}
    out = redact_tree(data)
    text = repr(out)
    assert "pw1" not in text and "pw2" not in text and "pw3" not in text
    assert out["target"]["headers"]["X-Team"] == "a" and out["notes"][1:] == [3, None]
    assert data["target"]["url"] == "http://u:pw1@h/x"  # the input is not changed


def test_redact_argv_drops_query_tokens():
    assert redact_argv(["run", "--base-url", "http://h:1?token=abc"]) == ["run", "--base-url", "http://h:1?token=<redacted>"]


def test_url_credentials_become_a_basic_header_or_clash_with_another():
    from infermeter.errors import UserError
    from infermeter.secrets import url_credentials

    url, headers = url_credentials("http://a:b@h:1/x?q=1", {"X": "y"})
    assert url == "http://h:1/x?q=1" and headers == {"X": "y", "Authorization": "Basic YTpi"}
    assert url_credentials("http://h:1", {}) == ("http://h:1", {})
    with pytest.raises(UserError) as exc:
        url_credentials("http://a:b@h:1", {"authorization": "Bearer k"})
    assert "user:password" in str(exc.value) and "b@" not in str(exc.value)


def test_an_event_that_is_not_utf8_is_called_so_not_json():
    from infermeter.clients.protocols import OpenAIProtocol
    from infermeter.core.exchange import RawExchange
    from infermeter.core.protocol import RequestOptions
    from infermeter.core.records import RequestRecord

    body = b'data: {"choices": [{"text": "\xff\xfe"}]}\n\ndata: [DONE]\n\n'
    raw = RawExchange(status=200, sent=0.0, times=[0.1], chunks=[body], end=0.2)
    rec = RequestRecord(index=0, warmup=False, scheduled=0.0, input_len=1, requested_output_len=2)
    OpenAIProtocol(chat=False).interpret(raw, rec, RequestOptions(model="m"))
    assert rec.error == "malformed" and rec.error_detail.startswith("event is not UTF-8")
