"""Any OpenAI-compatible server, with vLLM's request semantics (``ignore_eos`` accepted).

``openai`` sends completions (``/v1/completions``), ``openai-chat`` chat completions
(``/v1/chat/completions``).  Their ``/metrics`` (if any) are recognised from the names
the server exports.
"""

from __future__ import annotations

from infermeter.backends.base import BackendSpec

BACKENDS = (
    BackendSpec(name="openai", default_endpoint="/v1/completions", ignore_eos=True, version_path="/version",
                note="any OpenAI-compatible server (vLLM semantics)"),
    BackendSpec(name="openai-chat", default_endpoint="/v1/chat/completions", ignore_eos=True,
                version_path="/version", note="any OpenAI-compatible chat server"),
)
