"""LMDeploy's OpenAI-compatible server (``lmdeploy serve api_server``): honours ``ignore_eos``.

infermeter sends load to it at a URL; it has no launch profile, metric map or image here.
"""

from __future__ import annotations

from infermeter.backends.base import BackendSpec

BACKEND = BackendSpec(name="lmdeploy", title="LMDeploy", default_endpoint="/v1/completions", ignore_eos=True)
