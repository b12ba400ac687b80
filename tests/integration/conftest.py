"""Fixtures for runs against real servers on loopback."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def llama():
    """The embedded llama-server (built once per machine) with the tiny model, 4 slots: (server, model files)."""
    from infermeter.embedded.build import ensure_llama_server
    from infermeter.embedded.models import ensure_model
    from infermeter.embedded.server import EmbeddedServer

    binary = ensure_llama_server()
    model = ensure_model("tiny")
    with EmbeddedServer(model, parallel=4, binary=binary) as server:
        yield server, model
