"""Shared fixtures: the project's generated tokenizer and the in-tree test server."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer_dir():
    """The embedded engine's trained BPE tokenizer (trained once, cached in the user cache)."""
    from infermeter.embedded.tokenizer import ensure_tokenizer

    folder, _key = ensure_tokenizer()
    return folder


@pytest.fixture
def test_server():
    """Factory: start the in-tree streaming test server in a subprocess with given settings."""
    from infermeter.testserver.helper import run_test_server

    handles = []

    def start(**config):
        handle = run_test_server(**config)
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()
