"""The embedded engine: llama.cpp's ``llama-server``, built by infermeter, serving
models infermeter generates locally.  The default benchmark target.

* :func:`ensure_llama_server` (``build``): build once into the user cache, reuse after;
* :func:`ensure_model` (``models``): ``tiny`` / ``1b`` generated models, ``gemma3-270m``
  from an optional package;
* :class:`EmbeddedServer` (``server``): run one on loopback, stop it for sure.
"""

from infermeter.embedded.build import LLAMA_CPP_PYTHON_VERSION, ensure_llama_server, llama_server_version
from infermeter.embedded.models import MODELS, ModelFiles, ensure_model
from infermeter.embedded.paths import cache_root
from infermeter.embedded.server import EmbeddedServer

__all__ = [
    "LLAMA_CPP_PYTHON_VERSION",
    "MODELS",
    "EmbeddedServer",
    "ModelFiles",
    "cache_root",
    "ensure_llama_server",
    "ensure_model",
    "llama_server_version",
]
