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
